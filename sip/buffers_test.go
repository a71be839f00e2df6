package sip

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/config"
)

// idleConns opens n TCP connections to addr from raw sockets (no Go
// memory on the client side, so that the heap measured is the server's)
// and closes them when the test ends.
func idleConns(t *testing.T, addr string, n int) []int {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	fds := make([]int, 0, n)
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
			t.Fatal(err)
		}
	}
	return fds
}

// heapAndStacks is the live heap and the goroutine stacks after a
// collection: the memory a connection could hold in the process.
func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// pollerOf is the epoll set serving s's TCP connections.
func pollerOf(s *Server) *tcpPoller {
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	return s.tcpServe.poll
}

// servingPoller waits (bounded) until s serves TCP and returns its epoll
// set.
func servingPoller(t *testing.T, s *Server) *tcpPoller {
	t.Helper()
	var p *tcpPoller
	within(t, 30*time.Second, "TCP served", func() bool { p = pollerOf(s); return p != nil })
	return p
}

// TestIdleTCPConnectionsHoldNoGoroutine: 64 idle TCP connections (the
// shipped sip.tcp_max_connections) add no goroutine (before: one each,
// blocked in Read, with a 2 KB buffer, a 2 KB chunk and a reader's
// buffers), hold no read buffer, and each costs the server less than
// maxHeapPerIdleConn of heap and stacks; then closing them from the peer
// frees them (EPOLLRDHUP) and the server keeps none.
func TestIdleTCPConnectionsHoldNoGoroutine(t *testing.T) {
	const n = 64
	// The measured figure is about 0.6 KB (the connection's descriptor,
	// its addresses, its tcpConn and table entries); before this change
	// it was about 13 KB.
	const maxHeapPerIdleConn = 2048
	s, addr := serve(t, func(c *config.SIP) { c.TCPMaxConnections = n })
	p := servingPoller(t, s)
	// A first connection made and closed: whatever the first one starts
	// once (a reader, its buffers) is not counted per connection.
	warm, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	warm.Write([]byte(strings.ReplaceAll(optionsTCP, "%s", "warm") + "Content-Length: 0\r\n\r\n"))
	warm.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := warm.Read(make([]byte, 1500)); n == 0 {
		t.Fatal("no answer on the warm-up connection")
	}
	warm.Close()
	within(t, 10*time.Second, "the warm-up connection to close", func() bool { return statusInt(s, "tcp_connections") == 0 })

	goBefore := runtime.NumGoroutine()
	memBefore := heapAndStacks()
	fds := idleConns(t, addr, n)
	within(t, 10*time.Second, "64 connections accepted", func() bool { return statusInt(s, "tcp_connections") == n })
	memAfter := heapAndStacks()
	goAfter := runtime.NumGoroutine()
	perConn := (int64(memAfter) - int64(memBefore)) / n
	t.Logf("%d idle TCP connections: goroutines %d -> %d; heap+stacks %d -> %d B (%d B per connection)",
		n, goBefore, goAfter, memBefore, memAfter, perConn)
	if goAfter-goBefore > s.config().TCPReaders {
		t.Errorf("goroutines grew by %d for %d idle connections, bound %d", goAfter-goBefore, n, s.config().TCPReaders)
	}
	if perConn > maxHeapPerIdleConn {
		t.Errorf("%d B of heap and stacks per idle connection, bound %d", perConn, maxHeapPerIdleConn)
	}
	p.mu.Lock()
	held := 0
	for _, tc := range p.conns {
		if tc.pending != nil {
			held++
		}
	}
	parked, conns := 0, len(p.conns)
	for _, tc := range p.conns {
		if tc.parked {
			parked++
		}
	}
	p.mu.Unlock()
	if conns != n || parked != n || held != 0 {
		t.Errorf("epoll set: %d connections, %d parked, %d holding a buffer; want %d, %d, 0", conns, parked, held, n, n)
	}

	// The peers close: each is freed, out of the set and the tables.
	for _, fd := range fds {
		unix.Shutdown(fd, unix.SHUT_WR)
	}
	within(t, 10*time.Second, "the closed connections freed", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.conns) == 0 && statusInt(s, "tcp_connections") == 0
	})
}

// TestTCPIncompleteMessageBuffers: a connection holds a buffer only while
// a message on it is incomplete. A message larger than a pooled chunk,
// sent in pieces, is read whole and answered; afterwards the connection
// holds nothing (the large buffer is not kept). A header that does not
// end within sip.tcp_header_timeout is counted as malformed, the
// connection closed and its chunk given back.
func TestTCPIncompleteMessageBuffers(t *testing.T) {
	s, addr := serve(t, func(c *config.SIP) { c.MaxMessageSize = 16384 })
	p := servingPoller(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pad := "Subject: " + strings.Repeat("x", 3*chunkSize) + "\r\n"
	msg := strings.ReplaceAll(optionsTCP, "%s", "big") + pad + "Content-Length: 0\r\n\r\n"
	onlyConn := func() *tcpConn {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, tc := range p.conns {
			return tc
		}
		return nil
	}
	// In pieces, each waited for: the message is incomplete in between.
	for i := 0; i < len(msg); i += chunkSize / 2 {
		c.Write([]byte(msg[i:min(i+chunkSize/2, len(msg))]))
		if i+chunkSize/2 >= len(msg) {
			break
		}
		within(t, 5*time.Second, "the piece read", func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, tc := range p.conns {
				return tc.parked && len(tc.pending) == i+chunkSize/2
			}
			return false
		})
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	nr, _ := c.Read(buf)
	if !strings.HasPrefix(string(buf[:nr]), "SIP/2.0 200") {
		t.Fatalf("answer to a %d-byte message sent in pieces: %q", len(msg), status(string(buf[:nr])))
	}
	within(t, 5*time.Second, "the connection parked without a buffer", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, tc := range p.conns {
			return tc.parked && tc.pending == nil
		}
		return false
	})
	if onlyConn() == nil {
		t.Fatal("the connection was closed")
	}

	outcomesAddUp(t, s)

	// A header that stops: closed at sip.tcp_header_timeout, counted.
	s, addr = serve(t, func(c *config.SIP) { c.TCPHeaderTimeout = 1 })
	malformed := s.malformed.Load()
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9"))
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c2); err != nil {
		t.Fatalf("the slow header's connection was not closed: %v", err)
	}
	if got := s.malformed.Load(); got != malformed+1 {
		t.Errorf("malformed %d after the slow header, want %d", got, malformed+1)
	}
	if s.chunks.idle() == 0 {
		t.Error("the slow header's chunk was not given back to the pool")
	}
	outcomesAddUp(t, s)
}

// resident counts the pages of b in memory (mincore).
func resident(t *testing.T, b []byte) int {
	t.Helper()
	page := unix.Getpagesize()
	vec := make([]byte, (len(b)+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// TestUDPLargeDatagramReadWholeAndGivenBack: the UDP reader's buffer is
// sip.max_message_size of address space of which only the first page
// stays resident. A datagram of three pages is read whole (answered
// 200, not 513 or 400) and the pages it touched past the first are given
// back; a datagram past sip.max_message_size is refused (513) and
// counted as shed for its size, never parsed cut short.
func TestUDPLargeDatagramReadWholeAndGivenBack(t *testing.T) {
	page := unix.Getpagesize()
	s, addr := serve(t, func(c *config.SIP) { c.MaxMessageSize = 60000 })
	var r *reader
	within(t, 5*time.Second, "the UDP reader", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.readers) > 0 {
			r = s.readers[0]
		}
		return r != nil
	})
	if r.ubuf == nil || !r.ubuf.mapped {
		t.Fatal("the UDP reader's buffer is not a mapping")
	}
	ph := newPhone(t, "127.0.0.1")
	if ans := ph.roundTrip(addr, options("small")); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("small OPTIONS: %q", status(ans))
	}
	pad := "Subject: " + strings.Repeat("x", 3*page) + "\r\n"
	big := strings.Replace(options("big"), "Content-Length: 0", pad+"Content-Length: 0", 1)
	if ans := ph.roundTrip(addr, big); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("OPTIONS of %d bytes: %q", len(big), status(ans))
	}
	within(t, 5*time.Second, "the large datagram's pages given back", func() bool { return resident(t, r.ubuf.b) <= 1 })

	shed := s.Shed()["message_size"]
	huge := strings.Replace(options("huge"), "Content-Length: 0", "Subject: "+strings.Repeat("x", 61000)+"\r\nContent-Length: 0", 1)
	if ans := ph.roundTrip(addr, huge); !strings.HasPrefix(ans, "SIP/2.0 513") {
		t.Fatalf("datagram of %d bytes past sip.max_message_size: %q", len(huge), status(ans))
	}
	if got := s.Shed()["message_size"]; got != shed+1 {
		t.Errorf("shed message_size %d, want %d", got, shed+1)
	}
	within(t, 5*time.Second, "the refused datagram's pages given back", func() bool { return resident(t, r.ubuf.b) <= 1 })
	outcomesAddUp(t, s)
}

// TestTCPKeepAliveAndPipelining: the framing through the epoll set's
// readers, in pieces. A keep-alive ping ("\r\n\r\n") split across two
// writes gets its pong ("\r\n"), and while only its start has come the
// connection holds a few bytes, not a chunk; three requests, two whole
// and the third's start in one write and its end in another, get three
// answers; then the connection holds nothing.
func TestTCPKeepAliveAndPipelining(t *testing.T) {
	s, addr := serve(t, nil)
	p := servingPoller(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	held := func(want func(pending []byte) bool) func() bool {
		return func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, tc := range p.conns {
				return tc.parked && want(tc.pending)
			}
			return false
		}
	}
	c.Write([]byte("\r\n"))
	within(t, 5*time.Second, "half a ping held in a few bytes", held(func(b []byte) bool { return len(b) == 2 && cap(b) < chunkSize }))
	c.Write([]byte("\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	pong := make([]byte, 2)
	if _, err := io.ReadFull(c, pong); err != nil || string(pong) != "\r\n" {
		t.Fatalf("pong %q, %v", pong, err)
	}
	msg := func(id string) string { return strings.ReplaceAll(optionsTCP, "%s", id) + "Content-Length: 0\r\n\r\n" }
	third := msg("p3")
	c.Write([]byte(msg("p1") + msg("p2") + third[:40]))
	within(t, 5*time.Second, "the third request's start held", held(func(b []byte) bool { return string(b) == third[:40] }))
	c.Write([]byte(third[40:]))
	ua := &tcpUA{t: t, c: c, r: bufio.NewReader(c), in: make(chan string, 8)}
	go ua.read()
	for _, id := range []string{"p1", "p2", "p3"} {
		ans := ua.recv(5*time.Second, "SIP/2.0")
		if !strings.HasPrefix(ans, "SIP/2.0 200") || !strings.Contains(ans, "branch=z9hG4bK-cl"+id+"\r\n") {
			t.Fatalf("answer for %s: %q", id, ans)
		}
	}
	within(t, 5*time.Second, "the connection parked without a buffer", held(func(b []byte) bool { return b == nil }))
	outcomesAddUp(t, s)
}
