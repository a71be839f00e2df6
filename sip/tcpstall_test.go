package sip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/supervisor"
)

// nonReader is a TCP peer that sends pipelined OPTIONS without pause and
// never reads an answer, its receive window shrunk to the least the
// kernel allows.
func nonReader(t *testing.T, addr string, name string, done <-chan struct{}, wg *sync.WaitGroup) {
	c := dialSmallWindow(t, addr)
	t.Cleanup(func() { c.Close() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for turn := 0; ; turn++ {
			select {
			case <-done:
				return
			default:
			}
			b := pipelinedOptions(fmt.Sprintf("%s-%d", name, turn), 80)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(b); err != nil && !isTimeout(err) {
				return // the server gave it up
			}
		}
	}()
}

// TestTCPNonReadingPeersDoNotStallReaders: as many peers as there are TCP
// readers flood pipelined requests and never read the answers. Before,
// each answer waited writeTimeout in the reader that wrote it, so every
// reader stayed held and no other TCP phone was served, with nothing
// counted. Now an answer the peer does not take waits in its write
// queue (no reader is held), its requests are no longer read, and a
// queue that does not move for sip.tcp_write_timeout gives the
// connection up: a fifth, well-behaved TCP client gets its OPTIONS and
// REGISTER answered, and each non-reading peer is counted once in
// sip.shed.tcp_stalled, which raises "overload".
func TestTCPNonReadingPeersDoNotStallReaders(t *testing.T) {
	s, addr, al := serveAlerts(t, func(c *config.SIP) { c.TCPWriteTimeout = 1 })
	readers := s.config().TCPReaders
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(done); wg.Wait() }()
	for i := range readers {
		nonReader(t, addr, fmt.Sprintf("flood%d", i), done, &wg)
	}
	// Every flooding peer has answers waiting on its connection, or was
	// given up for it (before: a reader held writing to each).
	within(t, 60*time.Second, "every non-reading peer's answers waiting", func() bool {
		return queuedConns(s)+int(s.Status().Shed.TCPStalled) >= readers
	})
	ua := newTCPUA(t, addr)
	ua.c.Write([]byte(strings.ReplaceAll(optionsTCP, "%s", "good") + "Content-Length: 0\r\n\r\n"))
	if ans := ua.recv(15*time.Second, "SIP/2.0"); !strings.HasPrefix(ans, "SIP/2.0 200") || !strings.Contains(ans, "branch=z9hG4bK-clgood\r\n") {
		t.Fatalf("the well-behaved client's OPTIONS: %q", ans)
	}
	local := ua.addr()
	ua.c.Write([]byte("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP " + local + ";branch=z9hG4bK-reg1\r\n" +
		"From: <sip:1001@127.0.0.1>;tag=r1\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: reg-good\r\nCSeq: 1 REGISTER\r\n" +
		"Contact: <sip:1001@" + local + ";transport=tcp>\r\nExpires: 300\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"))
	if ans := ua.recv(15*time.Second, "SIP/2.0"); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("the well-behaved client's REGISTER: %q", ans)
	}
	givenUp(t, s, al, int64(readers), 1) // the well-behaved client is left
}

// TestTCPSlowReaderIsNotGivenUp: a peer that stops reading for a moment
// (a radio link that drops) while answers queue is not given up as long
// as it reads again within sip.tcp_write_timeout. Before, a write that
// took 2 s in all, whatever went through, gave the connection up, reset
// and counted in sip.shed.tcp_stalled. The pause here (3 s) is longer
// than that and shorter than the configured 5 s.
func TestTCPSlowReaderIsNotGivenUp(t *testing.T) {
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TCPWriteTimeout = 5 })
	c := dialSmallWindow(t, addr)
	defer c.Close()
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for turn := 0; ; turn++ {
			select {
			case <-stop:
				return
			default:
			}
			b := pipelinedOptions(fmt.Sprintf("slow-%d", turn), 40)
			c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.Write(b); err != nil && !isTimeout(err) {
				return
			}
		}
	}()
	// The answers fill the socket buffers: some wait in its write queue
	// (before: a reader waited in its write).
	within(t, 60*time.Second, "answers to the paused peer waiting", func() bool { return queuedConns(s) > 0 })
	close(stop)
	<-sent
	time.Sleep(3 * time.Second) // the peer's link is down
	buf := make([]byte, 64<<10)
	got := 0
	for {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.Read(buf)
		got += n
		if isTimeout(err) {
			break // all read: the server waits for more
		}
		if err != nil {
			t.Fatalf("after %d bytes of answers: %v (the server gave the peer up)", got, err)
		}
	}
	if n := s.Status().Shed.TCPStalled; n != 0 || got == 0 {
		t.Errorf("sip.shed.tcp_stalled %d, %d bytes of answers read; want 0 and some", n, got)
	}
}

// queuedConns counts s's TCP connections with bytes in their write
// queue (read under each one's lock).
func queuedConns(s *Server) int {
	s.tcpMu.Lock()
	conns := make([]*tcpConn, 0, len(s.tcpConns))
	for _, tc := range s.tcpConns {
		conns = append(conns, tc)
	}
	s.tcpMu.Unlock()
	n := 0
	for _, tc := range conns {
		tc.wmu.Lock()
		if tc.wq != nil && len(tc.wq.b) > 0 {
			n++
		}
		tc.wmu.Unlock()
	}
	return n
}

// serveFaults runs a server on loopback, under a supervisor, with a
// condition recorder and the failures f injected before it starts
// (none: serveAlerts).
func serveFaults(t testing.TB, mod func(*config.SIP), f tcpFaults) (*Server, string, *condLog) {
	return serveWith(t, mod, func(s *Server) { s.faults = f })
}

// serveWith runs a server on loopback, under a supervisor, with a
// condition recorder, its settings changed by mod and the server by
// prep (failures to inject, a fixed branch token: what must be set
// before it runs) before it starts; either may be nil.
func serveWith(t testing.TB, mod func(*config.SIP), prep func(*Server)) (*Server, string, *condLog) {
	cfg := config.Defaults().SIP
	cfg.Listen = "127.0.0.1:0"
	if mod != nil {
		mod(&cfg)
	}
	al := newCondLog()
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), al)
	if prep != nil {
		prep(s)
	}
	sup := supervisor.New(supervisor.Options{MaxRestarts: 1, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "main", Period: Period, Run: s.Run})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		// Bounded: a worker that cannot stop (a lock left held) fails
		// the test instead of hanging it.
		wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
		defer wcancel()
		if !sup.Wait(wctx) {
			t.Error("the worker did not stop")
		}
	})
	sup.Start(ctx)
	return s, s.Addr(), al
}

// TestTCPPollFailureIsNotALimitShed: a connection the epoll set cannot
// take is closed and counted as a TCP accept error, not as shed at
// sip.tcp_max_connections (before: counted and logged as refused at the
// limit, which it was not); the next connection is served.
func TestTCPPollFailureIsNotALimitShed(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	s, addr, _ := serveFaults(t, nil, tcpFaults{pollAdd: func(*tcpConn) error {
		if fail.Load() {
			return errors.New("epoll_ctl: no space left on device")
		}
		return nil
	}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the connection not served was not closed: %v", err)
	}
	st := s.Status()
	if st.Shed.TCPConnections != 0 || st.TCPAcceptErrors != 1 {
		t.Errorf("sip.shed.tcp_connections %d, tcp_accept_errors %d; want 0 and 1", st.Shed.TCPConnections, st.TCPAcceptErrors)
	}
	fail.Store(false)
	ua := newTCPUA(t, addr)
	ua.c.Write([]byte(strings.ReplaceAll(optionsTCP, "%s", "after") + "Content-Length: 0\r\n\r\n"))
	if ans := ua.recv(15*time.Second, "SIP/2.0"); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("OPTIONS after: %q", ans)
	}
}

// TestTCPPollerPanicReleasesItsLock: a panic in the poller goroutine
// while it holds the poller's lock restarts the worker, and the restart
// completes: the poller's stop takes the lock, which the panic released
// (before: left locked, stop and the worker's end waited for ever), and
// TCP is served again.
func TestTCPPollerPanicReleasesItsLock(t *testing.T) {
	var armed atomic.Bool
	s, addr, _ := serveFaults(t, nil, tcpFaults{pollRun: func() {
		if armed.CompareAndSwap(true, false) {
			panic("injected: the tcp poller")
		}
	}})
	p := servingPoller(t, s)
	armed.Store(true)
	// Its event ends the poller's wait. The poller may wake by itself
	// first (a deadline) and panic before this connection is taken: the
	// restart then closes the listener under it, and the connect fails
	// (reset), which is no failure of the test.
	if c, err := net.Dial("tcp", addr); err == nil {
		defer c.Close()
		c.Write([]byte("\r\n\r\n"))
	}
	within(t, 30*time.Second, "the poller panicked", func() bool { return !armed.Load() })
	within(t, 60*time.Second, "TCP served by the restarted worker", func() bool {
		q := pollerOf(s)
		if q == nil || q == p {
			return false
		}
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			return false
		}
		defer c.Close()
		c.Write([]byte(strings.ReplaceAll(optionsTCP, "%s", "restarted") + "Content-Length: 0\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 12)
		_, err = io.ReadFull(c, b)
		return err == nil && string(b) == "SIP/2.0 200 "
	})
}

// acceptorsRunning counts the goroutines in acceptTCP.
func acceptorsRunning() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "sip.(*Server).acceptTCP(")
}

// TestTCPStaleAcceptorDoesNotReplaceTheNewOne: the acceptor of a listener
// that a rebind closed, still backing off because its epoll set could
// not be made, must not install its set once it can: before, it
// replaced the new listener's, then (its Accept failing on the closed
// listener) cleared it, so that every later connection was refused. And
// the sip_accept_errors it raised ends with it (before: raised for good).
func TestTCPStaleAcceptorDoesNotReplaceTheNewOne(t *testing.T) {
	var mu sync.Mutex
	var first net.Listener
	var release atomic.Bool
	s, addr, al := serveFaults(t, nil, tcpFaults{newPoller: func(ln net.Listener) error {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = ln
		}
		if ln == first && !release.Load() {
			return errors.New("epoll_create1: too many open files")
		}
		return nil
	}})
	within(t, 10*time.Second, "the first acceptor backing off", func() bool { return s.Status().TCPAcceptErrors > 0 })
	within(t, 10*time.Second, "sip_accept_errors raised", func() bool { return al.isActive("sip_accept_errors") })
	cfg := s.config()
	cfg.Listen = "127.0.0.2:0"
	s.Configure(cfg)
	within(t, 10*time.Second, "the new address served over TCP", func() bool {
		return strings.HasPrefix(s.Status().Listen, "127.0.0.2:") && pollerOf(s) != nil
	})
	release.Store(true)
	within(t, 30*time.Second, "the old acceptor ended", func() bool { return acceptorsRunning() == 1 })
	// Its condition ends with it (before: left raised for good).
	if al.isActive("sip_accept_errors") {
		t.Error("sip_accept_errors still raised after the acceptor that raised it ended")
	}
	now := s.Addr()
	if now == addr {
		t.Fatalf("not rebound: %s", now)
	}
	ua := newTCPUA(t, now)
	ua.c.Write([]byte(strings.ReplaceAll(optionsTCP, "%s", "rebound") + "Content-Length: 0\r\n\r\n"))
	if ans := ua.recv(15*time.Second, "SIP/2.0"); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("OPTIONS over TCP to the new address: %q", ans)
	}
}

// TestTCPReadersLoweredRetireWhileBusy: sip.tcp_readers lowered by a
// reload applies to the readers running, not only to the next ones:
// with work queued, a reader past the new limit ends when it takes its
// next connection, down to the limit, and the buffers kept for later
// readers are trimmed to it. Before, the readers ran on while the queue
// was busy and the buffers of the old number were kept.
func TestTCPReadersLoweredRetireWhileBusy(t *testing.T) {
	cfg := config.Defaults().SIP
	cfg.TCPReaders = 2
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), newCondLog())
	p := &tcpPoller{s: s, readers: 8}
	for range 8 {
		p.queue = append(p.queue, &tcpConn{})
		p.idle = append(p.idle, &reader{})
	}
	ended := 0
	for range 8 {
		if _, ok := p.next(&reader{}); !ok {
			ended++
		}
	}
	if p.readers != 2 || ended != 6 {
		t.Errorf("%d readers left (%d ended) with work queued, want the limit 2", p.readers, ended)
	}
	if len(p.idle) > 2 {
		t.Errorf("%d idle readers' buffers kept, want at most 2", len(p.idle))
	}
}

// TestTCPReadersLoweredUnderLoad: raised then lowered while TCP clients
// flood pipelined requests (and read their answers), the readers running
// fall to the new sip.tcp_readers and never exceed it after.
func TestTCPReadersLoweredUnderLoad(t *testing.T) {
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TCPReaders = 8 })
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(done); wg.Wait() }()
	for i := range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Add(2)
		go func() { // drain the answers
			defer wg.Done()
			io.Copy(io.Discard, c)
		}()
		go func() {
			defer wg.Done()
			defer c.Close()
			for turn := 0; ; turn++ {
				select {
				case <-done:
					return
				default:
				}
				b := pipelinedOptions(fmt.Sprintf("load%d-%d", i, turn), 20)
				if _, err := c.Write(b); err != nil {
					return
				}
			}
		}()
	}
	readers := func() int {
		p := pollerOf(s)
		if p == nil {
			return 0
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.readers
	}
	within(t, 60*time.Second, "more than 2 readers under load", func() bool { return readers() > 2 })
	cfg := s.config()
	cfg.TCPReaders = 2
	s.Configure(cfg)
	within(t, 60*time.Second, "the readers down to 2", func() bool { return readers() <= 2 })
	for range 200 {
		if n := readers(); n > 2 {
			t.Fatalf("%d readers after sip.tcp_readers was lowered to 2", n)
		}
		runtime.Gosched()
	}
}

// TestTCPDeadConnInputNotHandled: what a connection given up by another
// goroutine (a write to it failed) still has buffered is neither handled
// nor counted: a complete request, a malformed one, one too large, a
// keep-alive. Before, each was handled and counted (messages, malformed,
// sip.shed.message_size) on a connection already closed.
func TestTCPDeadConnInputNotHandled(t *testing.T) {
	cfg := config.Defaults().SIP
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), newCondLog())
	r := newReader(s, chunkSize)
	for _, in := range []string{
		strings.ReplaceAll(optionsTCP, "%s", "dead") + "Content-Length: 0\r\n\r\n",
		"OPTIONS sip:x SIP/2.0\r\nContent-Length: nine\r\n\r\n",
		"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999\r\n\r\n",
		strings.Repeat("x", cfg.MaxMessageSize+1),
		"\r\n\r\n",
	} {
		tc := &tcpConn{remote: netip.MustParseAddrPort("127.0.0.1:5999")}
		tc.dead.Store(true)
		if _, handled, ok := s.frame(r, tc, []byte(in), cfg.MaxMessageSize); handled || ok {
			t.Errorf("%.30q on a dead connection: handled %v, ok %v; want neither", in, handled, ok)
		}
	}
	st := s.Status()
	if m := s.messages.Load(); m != 0 || s.malformed.Load() != 0 || st.Shed.MessageSize != 0 {
		t.Errorf("messages %d, malformed %d, shed message_size %d on a dead connection; want 0", m, s.malformed.Load(), st.Shed.MessageSize)
	}
}

// TestCloseTCPUninstallsTheListener: once closeTCP has run (a rebind
// closing the old endpoint), its listener is no longer the installed
// one, before install sets the next. Before, it stayed installed in
// between, so an old acceptor checking then went on as if it served.
func TestCloseTCPUninstallsTheListener(t *testing.T) {
	s := New(config.Defaults().SIP, nil, health.NewRates(health.SystemClock{}), newCondLog())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s.install(&endpoint{ln: ln})
	if !s.tcpListening(ln) {
		t.Fatal("not installed")
	}
	s.closeTCP()
	if s.tcpListening(ln) {
		t.Error("the closed endpoint's listener is still the installed one")
	}
}

// pipelinedOptions is n OPTIONS for one write, Call-IDs prefix-0 to
// prefix-(n-1): a peer that pipelines a batch per turn.
func pipelinedOptions(prefix string, n int) []byte {
	var b strings.Builder
	for i := range n {
		b.WriteString(strings.ReplaceAll(optionsTCP, "%s", fmt.Sprintf("%s-%d", prefix, i)) + "Content-Length: 0\r\n\r\n")
	}
	return []byte(b.String())
}

// dialSmallWindow connects to addr with the receive window shrunk to the
// least the kernel allows: a peer whose answers queue at once.
func dialSmallWindow(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1)
		})
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
