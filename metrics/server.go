package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
)

// Server answers GET /metrics over plain HTTP/1.1, one request per
// connection. It is a few dozen lines rather than net/http, which would
// add TLS and HTTP/2 to a router's flash for one read-only page. Every
// resource is bounded: connections at once (Limits.MaxConnections), per
// source address (Limits.PerSource), the request header (8 KiB) and the
// time a whole request may take to arrive (Limits.RequestTimeout).
//
// A few slow clients cannot starve scrapes from another address: a
// source holds at most PerSource connections, and when every slot is
// held, a newcomer takes the slot of a connection still waiting for its
// request from the source holding the most (the oldest of those), as
// long as that source holds more than the newcomer's. Turned away or cut
// off, a connection is counted by cause, and the "metrics_refused"
// condition is raised for RefusedWindow after the last.
type Server struct {
	Render func(refused int64) []byte
	Log    *slog.Logger
	// Clock times the request deadline and the condition's window; nil
	// is the real clock.
	Clock clock.Clock
	// Alerts receives the "metrics_refused" condition; nil raises none.
	Alerts Alerts

	served, busy, perSource, evicted, timedOut, panics atomic.Int64

	mu    sync.Mutex
	open  int                // connections holding a slot
	bySrc map[netip.Addr]int // slots per source address (entries only while held)
	// strikes counts, per source, connections turned away, cut off or
	// timed out since its last answered request (maxStrikeSources).
	strikes map[netip.Addr]int32
	conns   map[*tracked]struct{}
	seq     uint64

	alertMu   sync.Mutex
	alertOpen bool      // the condition is raised, its window running
	pending   int64     // turned away in the current window
	lastSrc   string    // the source of the last one turned away
	lastRaise time.Time // when the condition's figures were last sent
}

// Alerts is health.Alerts: the one interface every owner of conditions
// is given.
type Alerts = health.Alerts

// Limits are the listener's bounds (UCI section metrics).
type Limits struct {
	MaxConnections int           // scrapes served at once (max_connections)
	PerSource      int           // connections one source address may hold (max_connections_per_source)
	RequestTimeout time.Duration // a whole request must arrive within it (request_timeout)
}

// Stats are the listener's counters, for "phonebook status" (metrics)
// and the exposition.
type Stats struct {
	Served    int64 // requests answered (any status)
	Busy      int64 // refused at accept: every slot held by connections that could not give way
	PerSource int64 // refused at accept: the source already held max_connections_per_source
	Evicted   int64 // waiting for their request, cut off to give a slot to another source
	TimedOut  int64 // the request did not arrive within request_timeout
	Panics    int64 // connections whose handling panicked: dropped, the listener serves on
	Open      int   // connections held now
}

// Refused counts the scrapes turned away: refused at accept or cut off
// for another source's.
func (st Stats) Refused() int64 { return st.Busy + st.PerSource + st.Evicted }

// Refused counts connections turned away (Stats.Refused).
func (s *Server) Refused() int64 { return s.Stats().Refused() }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	open := s.open
	s.mu.Unlock()
	return Stats{Served: s.served.Load(), Busy: s.busy.Load(), PerSource: s.perSource.Load(), Evicted: s.evicted.Load(), TimedOut: s.timedOut.Load(), Panics: s.panics.Load(), Open: open}
}

// RefusedWindow is how long "metrics_refused" stays raised after the
// last scrape turned away.
const RefusedWindow = time.Minute

const (
	maxRequest = 8 << 10
	// DefaultRequestTimeout applies when Limits leave it 0.
	DefaultRequestTimeout = 2 * time.Second
)

// tracked is a connection holding a slot.
type tracked struct {
	conn     net.Conn
	src      netip.Addr
	seq      uint64 // accept order: the oldest gives way first
	reading  bool   // its request has not arrived yet
	released bool   // its slot is free again
	evicted  bool   // cut off for another source's scrape
}

var past = time.Unix(1, 0)

// Serve answers on ln until ctx ends, and closes it.
func (s *Server) Serve(ctx context.Context, ln net.Listener, lim Limits) error {
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	lim.MaxConnections = max(lim.MaxConnections, 1)
	lim.PerSource = max(lim.PerSource, 1)
	if lim.RequestTimeout <= 0 {
		lim.RequestTimeout = DefaultRequestTimeout
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				s.Log.Debug("metrics accept", "err", err)
				select { // out of descriptors: back off, do not spin
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("metrics accept: %w", err)
		}
		tc := s.admit(conn, lim)
		if tc == nil {
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.release(tc)
			defer s.recoverPanic()
			s.serve(tc, lim.RequestTimeout)
		}()
	}
}

// recoverPanic, deferred by a connection's goroutine, ends that
// connection instead of the process should a request make it panic:
// counted (Stats.Panics), logged for the first and every 100th.
func (s *Server) recoverPanic() {
	if v := recover(); v != nil {
		if n := s.panics.Add(1); n%100 == 1 {
			s.Log.Error("metrics: a request made the listener panic; connection dropped, serving on", "panic", fmt.Sprint(v), "count", n)
		}
	}
}

// sourceOf is the connection's source address (the zero Addr for a
// listener that is not TCP: all such clients share one cap).
func sourceOf(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// admit gives conn a slot, or returns nil (counted) when its source is at
// its cap or no slot can be freed for it.
func (s *Server) admit(conn net.Conn, lim Limits) *tracked {
	src := sourceOf(conn)
	s.mu.Lock()
	if s.bySrc == nil {
		s.bySrc, s.conns, s.strikes = map[netip.Addr]int{}, map[*tracked]struct{}{}, map[netip.Addr]int32{}
	}
	if s.bySrc[src] >= lim.PerSource {
		s.strikeLocked(src)
		s.mu.Unlock()
		s.perSource.Add(1)
		s.shed(src)
		return nil
	}
	var victim *tracked
	if s.open >= lim.MaxConnections {
		for c := range s.conns {
			if c.reading && s.outranks(c, src) && (victim == nil || s.outranks(c, victim.src) || !s.outranks(victim, c.src) && c.seq < victim.seq) {
				victim = c
			}
		}
		if victim == nil {
			s.strikeLocked(src)
			s.mu.Unlock()
			s.busy.Add(1)
			s.shed(src)
			return nil
		}
		victim.evicted = true
		s.strikeLocked(victim.src)
		s.releaseLocked(victim)
		victim.conn.SetReadDeadline(past) // its reader returns at once
	}
	s.seq++
	tc := &tracked{conn: conn, src: src, seq: s.seq, reading: true}
	s.conns[tc] = struct{}{}
	s.open++
	s.bySrc[src]++
	s.mu.Unlock()
	if victim != nil {
		s.evicted.Add(1)
		s.shed(victim.src)
	}
	return tc
}

// outranks reports whether held connection c should give way to a
// newcomer from src (s.mu held): its source was turned away more often
// since its last answered request, or as often while holding more
// slots. A scraper whose requests are answered has no strikes, so
// sources that keep slots without finishing a request can never take
// its slot away, and it can always take theirs.
func (s *Server) outranks(c *tracked, src netip.Addr) bool {
	a, b := s.strikes[c.src], s.strikes[src]
	return a > b || a == b && s.bySrc[c.src] > s.bySrc[src]
}

// maxStrikeSources bounds the sources whose strikes are remembered.
const maxStrikeSources = 256

// strikeLocked counts one turned-away or timed-out connection against
// src (s.mu held). The table is bounded: full, it forgets the source
// with the fewest strikes.
func (s *Server) strikeLocked(src netip.Addr) {
	if _, ok := s.strikes[src]; !ok && len(s.strikes) >= maxStrikeSources {
		var least netip.Addr
		n := int32(math.MaxInt32)
		for a, k := range s.strikes {
			if k < n {
				least, n = a, k
			}
		}
		delete(s.strikes, least)
	}
	if s.strikes[src] < math.MaxInt32 {
		s.strikes[src]++
	}
}

func (s *Server) release(tc *tracked) {
	s.mu.Lock()
	s.releaseLocked(tc)
	s.mu.Unlock()
}

// releaseLocked frees tc's slot once (s.mu held).
func (s *Server) releaseLocked(tc *tracked) {
	if tc.released {
		return
	}
	tc.released = true
	delete(s.conns, tc)
	s.open--
	if s.bySrc[tc.src]--; s.bySrc[tc.src] <= 0 {
		delete(s.bySrc, tc.src)
	}
}

// shed raises "metrics_refused" for a scrape turned away (from src):
// at once, then with fresh figures at most once a second, for
// RefusedWindow after the last.
func (s *Server) shed(src netip.Addr) {
	if s.Alerts == nil {
		return
	}
	s.alertMu.Lock()
	defer s.alertMu.Unlock()
	s.pending++
	s.lastSrc = src.String()
	now := s.clock().Now()
	if s.alertOpen && now.Sub(s.lastRaise) < time.Second {
		return
	}
	s.raiseLocked(now)
	if !s.alertOpen {
		s.alertOpen = true
		s.clock().AfterFunc(RefusedWindow, s.windowEnd)
	}
}

// raiseLocked raises the condition with the listener's figures (alertMu
// held).
func (s *Server) raiseLocked(now time.Time) {
	st := s.Stats()
	s.Alerts.SetUnhealthy(health.MetricsRefused, "", health.Args{
		health.ArgCount: strconv.FormatInt(st.Refused(), 10),
		health.ArgWhat:  s.lastSrc,
		health.ArgDetail: fmt.Sprintf("%d at the per-source cap, %d with every slot busy, %d cut off waiting for their request; %d timed out",
			st.PerSource, st.Busy, st.Evicted, st.TimedOut),
	})
	s.lastRaise = now
}

// windowEnd keeps the condition for another window when scrapes were
// turned away in the one that ended, and clears it otherwise.
func (s *Server) windowEnd() {
	s.alertMu.Lock()
	defer s.alertMu.Unlock()
	if s.pending > 0 {
		s.pending = 0
		s.raiseLocked(s.clock().Now())
		s.clock().AfterFunc(RefusedWindow, s.windowEnd)
		return
	}
	s.alertOpen = false
	s.Alerts.SetHealthy(health.MetricsRefused, "")
}

func (s *Server) clock() clock.Clock {
	if s.Clock == nil {
		return clock.Real{}
	}
	return s.Clock
}

// isTemporary: out of descriptors, which frees itself as connections end.
func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// serve reads one request within timeout and answers it within timeout.
// The deadline runs on the server's clock: when it passes, the
// connection's deadline is set in the past, which ends a blocked read or
// write at once.
func (s *Server) serve(tc *tracked, timeout time.Duration) {
	conn := tc.conn
	defer conn.Close()
	var expired atomic.Bool
	deadline := s.clock().AfterFunc(timeout, func() {
		expired.Store(true)
		conn.SetDeadline(past)
	})
	method, target, err := readRequest(bufio.NewReaderSize(&limited{r: conn, n: maxRequest}, 1024))
	deadline.Stop()
	s.mu.Lock()
	tc.reading = false
	evicted := tc.evicted
	if err != nil {
		// Its slot is free at once: a connection on its way out must not
		// hold a slot that no newcomer can take.
		s.releaseLocked(tc)
		if !evicted && expired.Load() {
			s.strikeLocked(tc.src)
		}
	} else {
		delete(s.strikes, tc.src) // a whole request arrived in time
	}
	s.mu.Unlock()
	switch {
	case evicted: // counted by admit
		return
	case err != nil && expired.Load():
		s.timedOut.Add(1)
		return
	case err != nil:
		return
	}
	deadline = s.clock().AfterFunc(timeout, func() { conn.SetDeadline(past) })
	defer deadline.Stop()
	status, ctype, body := "200 OK", ContentType, []byte(nil)
	switch {
	case method != "GET" && method != "HEAD":
		status, ctype, body = "405 Method Not Allowed", "text/plain", []byte("GET /metrics only\n")
	case target != "/metrics" && !strings.HasPrefix(target, "/metrics?"):
		status, ctype, body = "404 Not Found", "text/plain", []byte("GET /metrics only\n")
	default:
		body = s.Render(s.Refused())
	}
	s.served.Add(1)
	fmt.Fprintf(conn, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n", status, ctype, len(body))
	if method != "HEAD" {
		conn.Write(body)
	}
	// The slot is free before the client reads the end of its answer,
	// so that a scraper's next request never finds its own last one
	// still holding it.
	s.release(tc)
}

// readRequest reads a request line and its headers (ignored) from a
// client on the network: a malformed or oversized request is an error,
// never a panic.
func readRequest(r *bufio.Reader) (method, target string, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", "", err
	}
	for { // the headers, read and ignored within the reader's limit
		h, err := r.ReadString('\n')
		if err != nil {
			return "", "", err
		}
		if h == "\r\n" || h == "\n" {
			break
		}
	}
	method, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok || !ok2 || !strings.HasPrefix(proto, "HTTP/1.") {
		return "", "", errors.New("not an HTTP/1 request line")
	}
	return method, target, nil
}

// limited stops reading after n bytes.
type limited struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("request too large")
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}
