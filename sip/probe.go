package sip

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// maxProbes bounds the OPTIONS probes waiting for an answer at once.
const maxProbes = 64

// Probe sends OPTIONS to a configured target (host:port) over UDP from
// the server's own socket and returns the round-trip time. Any final
// response proves the target alive, whatever its code (a SIP server
// answering 404 to an OPTIONS without a user part is up); only no answer
// before ctx ends or a transport error is a failure.
func (s *Server) Probe(ctx context.Context, target string) (time.Duration, error) {
	if s.udp.Load() == nil {
		return 0, ErrNotRunning
	}
	dst, err := probeDest(ctx, target)
	if err != nil {
		return 0, err
	}
	return s.probe(ctx, dst, "sip:"+dst.String(), nil)
}

// ProbeBinding sends OPTIONS to a registered phone as it registered: its
// Contact URI (user part and parameters included) as Request-URI, over
// its transport. A phone registered over TCP is probed over the
// connection it registered on while that is open, else over a new
// connection to its contact (after a restart no flow survives). As with
// Probe, any final response (404, 486 included) proves the phone alive.
func (s *Server) ProbeBinding(ctx context.Context, b Binding) (time.Duration, error) {
	if s.udp.Load() == nil {
		return 0, ErrNotRunning
	}
	dst, err := probeDest(ctx, b.Addr)
	if err != nil {
		return 0, err
	}
	if b.Transport != "TCP" {
		return s.probe(ctx, dst, b.Contact, nil)
	}
	if tc := s.tcpConnTo(b.Source); tc != nil {
		rtt, err := s.probe(ctx, dst, b.Contact, tc)
		if err == nil || ctx.Err() != nil || errors.Is(err, errProbesFull) {
			return rtt, err
		}
		// The flow broke as it was written to: its contact still may answer.
	}
	return s.probeNewTCP(ctx, dst, b.Contact)
}

// probeDest resolves host:port (port 5060 when absent).
func probeDest(ctx context.Context, target string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		host, port = target, "5060"
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return netip.AddrPort{}, fmt.Errorf("probe %s: bad port", target)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ap, rerr := resolve(ctx, net.JoinHostPort(host, port))
		if rerr != nil {
			return netip.AddrPort{}, fmt.Errorf("probe %s: %w", target, rerr)
		}
		ip = ap.Addr()
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

// probeBranch is a new probe's branch: ours (the Via prefix), counted, and
// with random bits so that it cannot be guessed from the previous one.
func (s *Server) probeBranch() string {
	// The random bits stop a forger off the path from guessing the next
	// probe's branch (and answering for a phone that is gone). That needs
	// bits an observer of the previous branches cannot predict, not a
	// secret key: math/rand/v2's functions draw from the runtime's
	// ChaCha8 generator, seeded per thread from the kernel at start.
	var r [4]byte
	binary.LittleEndian.PutUint32(r[:], rand.Uint32())
	return s.viaPrefix() + "p" + strconv.FormatUint(s.probeSeq.Add(1), 10) + "x" + hex.EncodeToString(r[:])
}

// probeMessage is the OPTIONS a probe sends.
func (s *Server) probeMessage(uri, transport string, local netip.Addr, branch string) []byte {
	via := string(s.selfVia(nil, local))
	return []byte("OPTIONS " + uri + " SIP/2.0\r\nVia: SIP/2.0/" + transport + " " + via + ";branch=" + branch +
		";rport\r\nMax-Forwards: 70\r\nFrom: <sip:phonebookd@" + via + ">;tag=" + s.token + "\r\nTo: <" + uri +
		">\r\nCall-ID: " + branch + "\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
}

// errProbesFull: maxProbes are waiting for an answer already.
var errProbesFull = errors.New("too many probes in flight")

// errNoAnswer wraps the end of a probe's time.
func errNoAnswer(err error) error { return fmt.Errorf("no answer to OPTIONS: %w", err) }

// probe sends OPTIONS over UDP (retransmitted as RFC 3261 Timer E) or over
// an open TCP connection (sent once), and waits for any final response,
// which the server's readers hand over through probeAnswer.
func (s *Server) probe(ctx context.Context, dst netip.AddrPort, uri string, tc *tcpConn) (time.Duration, error) {
	branch := s.probeBranch()
	ch := make(chan int, 1)
	s.probeMu.Lock()
	if len(s.probes) >= maxProbes {
		s.probeMu.Unlock()
		return 0, errProbesFull
	}
	s.probes[branch] = ch
	s.probeMu.Unlock()
	defer func() {
		s.probeMu.Lock()
		delete(s.probes, branch)
		s.probeMu.Unlock()
	}()
	transport, local := "UDP", netip.Addr{}
	if tc != nil {
		transport, local = "TCP", tc.local
	}
	msg := s.probeMessage(uri, transport, local, branch)
	t0 := time.Now()
	interval := s.t1()
	for {
		var err error
		if tc != nil {
			err = tc.write(msg)
		} else {
			err = s.send(peer{addr: dst}, msg, nil)
		}
		if err != nil {
			return 0, fmt.Errorf("probe %s over %s: %w", dst, transport, err)
		}
		if tc != nil { // a reliable transport is not retransmitted (RFC 3261 17.1.2.2)
			select {
			case <-ch:
				return time.Since(t0), nil
			case <-ctx.Done():
				return 0, errNoAnswer(ctx.Err())
			}
		}
		t := time.NewTimer(interval)
		select {
		case <-ch:
			t.Stop()
			return time.Since(t0), nil
		case <-ctx.Done():
			t.Stop()
			return 0, errNoAnswer(ctx.Err())
		case <-t.C:
			interval = min(2*interval, 4*time.Second) // Timer E
		}
	}
}

// probeNewTCP probes over a connection of its own to dst, read here
// (not by the server's readers) and closed when the probe ends.
func (s *Server) probeNewTCP(ctx context.Context, dst netip.AddrPort, uri string) (time.Duration, error) {
	t0 := time.Now()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		if ctx.Err() != nil {
			return 0, errNoAnswer(ctx.Err())
		}
		return 0, fmt.Errorf("probe %s over a new TCP connection: %w", dst, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	branch := s.probeBranch()
	if _, err := c.Write(s.probeMessage(uri, "TCP", local, branch)); err != nil {
		return 0, fmt.Errorf("probe %s over TCP: %w", dst, err)
	}
	limit := s.config().MaxMessageSize
	// A pooled chunk, grown only for an answer larger than it and given
	// back when the probe ends (buffers.go).
	buf := s.chunks.get()
	defer func() { s.chunks.put(buf) }()
	var m Msg
	for {
		if end := bytes.Index(buf, []byte("\r\n\r\n")); end >= 0 {
			head := end + 4
			body, ok := probeBodyLen(buf[:head], limit-head)
			if !ok {
				return 0, fmt.Errorf("probe %s over TCP: malformed or oversized answer", dst)
			}
			if len(buf) >= head+body {
				raw := string(buf[:head+body])
				buf = append(buf[:0], buf[head+body:]...)
				if Parse(raw, &m) == nil && !m.Request && m.Status >= 200 {
					if v, err := m.TopVia(); err == nil && v.Branch() == branch {
						return time.Since(t0), nil
					}
				}
				continue // a provisional answer, or a request of the phone's
			}
		}
		if len(buf) > limit {
			return 0, fmt.Errorf("probe %s over TCP: answer larger than %d bytes", dst, limit)
		}
		if len(buf) == cap(buf) {
			grown := s.growPending(buf, limit)
			s.chunks.put(buf)
			buf = grown
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if ctx.Err() != nil {
				return 0, errNoAnswer(ctx.Err())
			}
			return 0, fmt.Errorf("probe %s over TCP: %w", dst, err)
		}
	}
}

// probeBodyLen reads the Content-Length of a header section, 0 when
// absent; ok is false when it is malformed or above limit (checked
// before it is used in any arithmetic).
func probeBodyLen(head []byte, limit int) (int, bool) {
	for _, line := range strings.Split(string(head), "\r\n") {
		name, value, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		name = strings.TrimSpace(name)
		if !strings.EqualFold(name, "content-length") && !strings.EqualFold(name, "l") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(value), 10, 31)
		if err != nil || int(n) > limit {
			return 0, false
		}
		return int(n), true
	}
	return 0, true
}

// probeAnswer delivers the answer to a probe; reports whether it was one.
// Any final response counts: the probe asks only whether something
// answers at the contact.
func (s *Server) probeAnswer(branch string, m *Msg) bool {
	s.probeMu.Lock()
	ch, ok := s.probes[branch]
	s.probeMu.Unlock()
	if ok && m.Status >= 200 {
		select {
		case ch <- m.Status:
		default:
		}
	}
	return ok
}
