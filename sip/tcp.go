package sip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/supervisor"
)

// tcpConn is one connection a phone opened; answers and requests for that
// phone go back on it.
type tcpConn struct {
	c      net.Conn
	remote netip.AddrPort
	local  netip.Addr
	wmu    sync.Mutex
}

// writeTimeout bounds a write to a peer that does not read.
const writeTimeout = 2 * time.Second

func (t *tcpConn) write(b []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := t.c.Write(b)
	return err
}

// listenTCP listens for SIP over TCP on the UDP listener's bound
// address. A wildcard IPv6 address ("[::]") listens dual-stack, IPv4
// clients included, as the UDP socket does; a wildcard or specific IPv4
// address listens on IPv4 only, a specific IPv6 address on it alone.
// (The "tcp6" network would make "[::]" IPv6-only.)
func listenTCP(bound netip.AddrPort) (net.Listener, error) {
	network := "tcp6"
	switch a := bound.Addr(); {
	case a.Unmap().Is4():
		network = "tcp4"
		bound = netip.AddrPortFrom(a.Unmap(), bound.Port())
	case a.IsUnspecified():
		network = "tcp" // Go listens on an AF_INET6 socket with IPV6_V6ONLY off
	}
	ln, err := net.Listen(network, bound.String())
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", bound, err)
	}
	return ln, nil
}

func (s *Server) tcpConnTo(a netip.AddrPort) *tcpConn {
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	return s.tcpConns[a]
}

// closeTCP closes every connection (the worker is stopping).
func (s *Server) closeTCP() {
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	for _, c := range s.tcpConns {
		c.c.Close()
	}
}

// acceptTCP accepts connections up to sip.tcp_max_connections; past it a
// connection is closed at once and counted. Accept errors (EMFILE under a
// descriptor limit) back off, 5 ms doubling to 1 s, and raise
// "sip_accept_errors" until an accept succeeds again: the worker never
// fails for them.
func (s *Server) acceptTCP(ctx context.Context, ln net.Listener, w *supervisor.Worker, wg *sync.WaitGroup) {
	var delay time.Duration
	failing := false
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			s.acceptErrors.Add(1)
			s.logs.Log(slog.LevelWarn, "accept", "sip: tcp accept failed; backing off", "err", err.Error())
			if !failing {
				failing = true
				s.alerts.SetUnhealthy(health.SIPAcceptErrors, "", health.Args{health.ArgError: err.Error()})
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		if failing {
			failing = false
			s.alerts.SetHealthy(health.SIPAcceptErrors, "")
		}
		remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		tc := &tcpConn{c: c, remote: netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()), local: local}
		s.tcpMu.Lock()
		full := len(s.tcpConns) >= s.config().TCPMaxConnections
		if !full {
			s.tcpConns[tc.remote] = tc
		}
		s.tcpMu.Unlock()
		if full {
			s.shedCount(ShedTCPConnections)
			s.logs.Log(slog.LevelWarn, "tcp-limit", "sip: tcp connection refused at sip.tcp_max_connections", "from", tc.remote.String())
			c.Close()
			continue
		}
		wg.Add(1)
		w.Go(func() {
			defer wg.Done()
			s.serveTCPRecovered(tc)
			s.tcpMu.Lock()
			if s.tcpConns[tc.remote] == tc {
				delete(s.tcpConns, tc.remote)
			}
			s.tcpMu.Unlock()
			c.Close()
		})
	}
}

// serveTCPRecovered serves one connection; a panic in its framing (a
// handler's own is recovered per message in handle) is recovered and
// counted, and closes this connection only, whose framing is lost.
func (s *Server) serveTCPRecovered(tc *tcpConn) {
	defer s.recoverPanic()
	s.serveTCP(tc)
}

// serveTCP frames messages on one connection: a message's header must
// arrive within sip.tcp_header_timeout of its first byte, a connection
// without a message for sip.tcp_idle_timeout is closed, and nothing larger
// than sip.max_message_size is read (513, then closed). A Content-Length
// that cannot be believed (see bodyLength) is answered 400 and closes the
// connection, since where the next message starts is unknown. A message
// cut short by the peer's close or a timeout is counted as malformed.
func (s *Server) serveTCP(tc *tcpConn) {
	cfg := s.config()
	idle := time.Duration(cfg.TCPIdleTimeout) * time.Second
	headerTimeout := time.Duration(cfg.TCPHeaderTimeout) * time.Second
	r := newReader(s, 0)
	buf := make([]byte, 0, 2048)
	chunk := make([]byte, 2048)
	from := peer{addr: tc.remote, local: tc.local, tcp: tc}
	for {
		// Leading CRLFs are keep-alives: a double CRLF gets a single one.
		for len(buf) > 0 && (buf[0] == '\r' || buf[0] == '\n') {
			if bytes.HasPrefix(buf, []byte("\r\n\r\n")) {
				tc.write([]byte("\r\n"))
				buf = buf[4:]
				continue
			}
			if len(buf) < 4 && bytes.Equal(buf, []byte("\r\n\r\n")[:len(buf)]) {
				break // the rest of a keep-alive may follow
			}
			buf = buf[1:]
		}
		var msgStart time.Time
		if len(buf) > 0 && buf[0] != '\r' && buf[0] != '\n' {
			msgStart = time.Now()
		}
		end := -1
		for {
			if end = bytes.Index(buf, []byte("\r\n\r\n")); end >= 0 {
				break
			}
			if len(buf) > cfg.MaxMessageSize {
				s.tooLarge(r, tc, buf)
				return
			}
			deadline := time.Now().Add(idle)
			if !msgStart.IsZero() {
				deadline = msgStart.Add(headerTimeout)
			}
			tc.c.SetReadDeadline(deadline)
			n, err := tc.c.Read(chunk)
			if n > 0 && msgStart.IsZero() && !isKeepalive(chunk[:n]) {
				msgStart = time.Now()
			}
			buf = append(buf, chunk[:n]...)
			if err != nil {
				if len(bytes.TrimLeft(buf, "\r\n")) > 0 {
					s.incomplete(tc, err)
				}
				return
			}
			if n > 0 && len(bytes.TrimLeft(buf, "\r\n")) == 0 {
				break // keep-alive only: handled at the top
			}
		}
		if end < 0 {
			continue
		}
		head := end + 4
		cl, err := headerLength(buf[:head])
		if err != nil {
			s.messages.Add(1)
			s.malformed.Add(1)
			r.malformed(string(buf[:head]), from, err)
			return
		}
		// cl has at most 9 digits and head is under the size bound: the
		// comparison is made without adding them.
		if cl > cfg.MaxMessageSize-head {
			s.tooLarge(r, tc, buf[:head])
			return
		}
		for len(buf) < head+cl {
			tc.c.SetReadDeadline(msgStart.Add(headerTimeout))
			n, err := tc.c.Read(chunk)
			buf = append(buf, chunk[:n]...)
			if err != nil && len(buf) < head+cl {
				s.incomplete(tc, err)
				return
			}
		}
		r.handle(buf[:head+cl], from)
		buf = append(buf[:0], buf[head+cl:]...)
		if cap(buf) > 4*2048 { // do not keep a large message's buffer
			buf = append(make([]byte, 0, 2048), buf...)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tooLarge answers 513 (where a Via can be read) and counts the message
// and the shed.
func (s *Server) tooLarge(r *reader, tc *tcpConn, head []byte) {
	s.messages.Add(1)
	s.shedCount(ShedMessageSize)
	s.logs.Log(slog.LevelWarn, "message-size", "sip: tcp message too large; closed", "from", tc.remote.String())
	if b := badRequest(nil, string(head), 513, "Message Too Large", tc.remote); b != nil {
		tc.write(b)
	}
}

// incomplete counts a message the peer did not finish (it closed, or a
// timeout passed) as malformed: it was delimited by the connection's end.
func (s *Server) incomplete(tc *tcpConn, err error) {
	s.messages.Add(1)
	s.malformed.Add(1)
	if isTimeout(err) {
		s.logs.Log(slog.LevelInfo, "tcp-slow", "sip: tcp message not complete in time; closed", "from", tc.remote.String())
	} else {
		s.logs.Log(slog.LevelInfo, "tcp-cut", "sip: tcp message cut short by the peer; dropped", "from", tc.remote.String())
	}
}
