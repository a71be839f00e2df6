package sip

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/internal/clock"
)

// stalledTCPPhone registers user over TCP on a connection with the least
// receive window (and the server's send buffer on it at the least, so
// that the kernel's autotuning does not take megabytes first), then
// pipelines OPTIONS without reading the answers until the server stops
// reading it (its writes no longer go through) with answers waiting in
// the connection's write queue: the peer stalls the server's writes.
func stalledTCPPhone(t *testing.T, s *Server, addr, user string) (net.Conn, *tcpConn) {
	t.Helper()
	c := dialSmallWindow(t, addr)
	t.Cleanup(func() { c.Close() })
	tc := serverConnOf(t, s, c)
	smallSendBuffer(t, tc)
	me := c.LocalAddr().String()
	msg := strings.ReplaceAll(reg(user, "Contact: <sip:"+user+"@"+me+";transport=tcp>\r\n", "Expires: 600\r\n"), "SIP/2.0/UDP {me}", "SIP/2.0/TCP "+me)
	c.Write([]byte(msg))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if r := readSIP(bufio.NewReader(c)); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register over tcp: %q", r)
	}
	// Bounded: a server that reads everything (it never does: its
	// answers fill the window) would fail the test, not hang it.
	for turn := range 20000 {
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Write(pipelinedOptions(fmt.Sprintf("%s-%d", user, turn), 40))
		if isTimeout(err) && tc.queued.Load() > 0 {
			return c, tc
		}
		if err != nil && !isTimeout(err) {
			t.Fatalf("the stalled phone's requests: %v", err)
		}
	}
	t.Fatal("the server read every request of a peer that reads no answer")
	return nil, nil
}

// TestTCPStalledPeerDoesNotHoldUDP: a phone registered over TCP stops
// reading (its window full of answers) and a UDP phone calls it. Before,
// the UDP reader forwarding the INVITE waited on the stalled connection
// (its write lock, held by a TCP reader blocked in its own write, then
// its own write) for up to 4 times sip.tcp_write_timeout, so no UDP
// phone was answered meanwhile. Now the INVITE is queued on the
// connection and the UDP reader goes on: the caller's REGISTER and
// OPTIONS are answered while the peer is still stalled and not given up.
func TestTCPStalledPeerDoesNotHoldUDP(t *testing.T) {
	// The longest timeout: a write blocked on the peer would hold the
	// UDP reader past every liveness bound below.
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TCPWriteTimeout = 60 })
	_, tc := stalledTCPPhone(t, s, addr, "1002")
	caller := newPhone(t, "127.0.0.1")
	for i := range 3 {
		caller.send(addr, invite("1002", addr, ""))
		caller.send(addr, reg(fmt.Sprintf("20%d", i), "Contact: <sip:x@{me}>\r\n", ""))
		if r := caller.recvAnswer(15*time.Second, "REGISTER"); !strings.HasPrefix(r, "SIP/2.0 200") {
			t.Fatalf("UDP REGISTER %d while the TCP phone is stalled: %q", i, status(r))
		}
		caller.send(addr, options(fmt.Sprintf("udp-%d", i)))
		if r := caller.recvAnswer(15*time.Second, "OPTIONS"); !strings.HasPrefix(r, "SIP/2.0 200") {
			t.Fatalf("UDP OPTIONS %d while the TCP phone is stalled: %q", i, status(r))
		}
	}
	if n := s.Status().Shed.TCPStalled; n != 0 {
		t.Errorf("sip.shed.tcp_stalled %d while the peer is within sip.tcp_write_timeout, want 0", n)
	}
	// The INVITEs the UDP reader forwarded wait in the stalled
	// connection's queue, behind the answers.
	var q string
	tc.wmu.Lock()
	if tc.wq != nil {
		q = string(tc.wq.b)
	}
	tc.wmu.Unlock()
	if n := strings.Count(q, "INVITE sip:1002@"); n != 3 {
		t.Errorf("%d forwarded INVITEs in the stalled connection's write queue (%d bytes), want 3", n, len(q))
	}
}

// recvAnswer returns the next final answer to a request of method (the
// INVITE's, a 100 Trying, skipped), or "" after wait.
func (p *phone) recvAnswer(wait time.Duration, method string) string {
	end := time.Now().Add(wait)
	for time.Now().Before(end) {
		m := p.recv(time.Until(end))
		if strings.HasPrefix(m, "SIP/2.0 ") && !strings.HasPrefix(m, "SIP/2.0 1") && strings.Contains(m, " "+method+"\r\n") {
			return m
		}
	}
	return ""
}

// serverConnOf waits (bounded) until s serves the connection whose
// client end is c and returns it.
func serverConnOf(t *testing.T, s *Server, c net.Conn) *tcpConn {
	t.Helper()
	a := netip.MustParseAddrPort(c.LocalAddr().String())
	var tc *tcpConn
	within(t, 30*time.Second, "the connection served", func() bool { tc = s.tcpConnTo(a); return tc != nil })
	return tc
}

// queueOf is tc's write queue's length and capacity, read under its
// lock.
func queueOf(tc *tcpConn) (n, capacity int) {
	tc.wmu.Lock()
	defer tc.wmu.Unlock()
	if tc.wq == nil {
		return 0, 0
	}
	return len(tc.wq.b), cap(tc.wq.b)
}

// numbered is message i of writer w, n bytes long with its CRLF: the
// reader checks each arrives whole and in order.
func numbered(w, i, n int) []byte {
	head := fmt.Sprintf("w%d-%06d:", w, i)
	return []byte(head + strings.Repeat("x", n-len(head)-2) + "\r\n")
}

// TestTCPWriteQueueBounded: writes to a peer that reads nothing (the
// least receive window), faster than any stall timeout, as the UDP path
// forwarding to it would make them. Each returns at once; what the
// kernel does not take queues, never more than the bound (length and
// capacity, read under the connection's lock after each write); the
// write past it gives the connection up: counted once in
// sip.shed.tcp_stalled, "overload" raised, its queue released, later
// writes refused at once, and the connection dropped.
func TestTCPWriteQueueBounded(t *testing.T) {
	s, addr, al := serveAlerts(t, func(c *config.SIP) { c.TCPWriteTimeout = 60 })
	c := dialSmallWindow(t, addr)
	defer c.Close()
	tc := serverConnOf(t, s, c)
	bound := tcpQueueMessages * s.config().MaxMessageSize
	if tc.queueMax() != bound {
		t.Fatalf("queue bound %d, want %d", tc.queueMax(), bound)
	}
	var err error
	most, writes := 0, 0
	for i := range 100000 {
		if err = tc.write(numbered(0, i, 700)); err != nil {
			break
		}
		writes++
		n, capacity := queueOf(tc)
		if n > bound || capacity > bound {
			t.Fatalf("write %d: %d bytes queued in %d of capacity, bound %d", i, n, capacity, bound)
		}
		most = max(most, n)
	}
	t.Logf("%d writes of 700 B went through or queued (at most %d B queued) before the bound gave the peer up", writes, most)
	if !errors.Is(err, errQueueFull) {
		t.Fatalf("the write past the bound: %v, want errQueueFull", err)
	}
	if most == 0 || most+700 <= bound-700 {
		t.Errorf("at most %d B queued before the bound %d gave the peer up: the queue was not filled", most, bound)
	}
	if n, capacity := queueOf(tc); n != 0 || capacity != 0 || tc.queued.Load() != 0 {
		t.Errorf("the queue of a connection given up holds %d B (capacity %d), want released", n, capacity)
	}
	if err := tc.write([]byte("OPTIONS\r\n")); !errors.Is(err, errDeadConn) {
		t.Errorf("a write after the connection was given up: %v, want errDeadConn", err)
	}
	givenUp(t, s, al, 1, 0)
}

// givenUp waits for what a server does once it gave stalled TCP peers
// up: sip.shed.tcp_stalled at stalled (one per peer), "overload" raised
// and left connections in its table.
func givenUp(t *testing.T, s *Server, al *condLog, stalled int64, left int32) {
	t.Helper()
	within(t, 30*time.Second, "every stalled peer given up", func() bool { return s.Status().Shed.TCPStalled >= stalled })
	if n := s.Status().Shed.TCPStalled; n != stalled {
		t.Errorf("sip.shed.tcp_stalled %d, want %d (one per stalled peer)", n, stalled)
	}
	within(t, 30*time.Second, "overload raised", func() bool { return al.isActive("overload") })
	within(t, 30*time.Second, "the stalled connections dropped", func() bool { return s.Status().TCPConnections == left })
}

// TestTCPWriteQueueKeepsOrder: four goroutines (the UDP reader, TCP
// readers and timers write to one connection so) write numbered
// messages to a peer that reads slowly through the least receive window,
// each pacing itself to half the queue's bound as a forwarding peer
// would not need to; answers queue, are flushed as the peer reads, and
// every message arrives whole, each writer's in order, with nothing
// given up.
func TestTCPWriteQueueKeepsOrder(t *testing.T) {
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TCPWriteTimeout = 10 })
	c := dialSmallWindow(t, addr)
	defer c.Close()
	tc := serverConnOf(t, s, c)
	smallSendBuffer(t, tc)
	const writers, each, size = 4, 300, 300
	var most atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				for tc.queued.Load() > int64(tc.queueMax()/2) {
					time.Sleep(time.Millisecond)
				}
				if err := tc.write(numbered(w, i, size)); err != nil {
					errs <- fmt.Errorf("writer %d, message %d: %w", w, i, err)
					return
				}
				if q := tc.queued.Load(); q > most.Load() {
					most.Store(q)
				}
			}
		}()
	}
	// The slow reader: a few hundred bytes at a time, with pauses.
	next := make([]int, writers)
	rd := bufio.NewReaderSize(&slowReader{c: c}, 256)
	for got := 0; got < writers*each; got++ {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d messages: %v (sip.shed.tcp_stalled %d)", got, err, s.Status().Shed.TCPStalled)
		}
		var w, i int
		if _, err := fmt.Sscanf(line, "w%d-%06d:", &w, &i); err != nil || w < 0 || w >= writers || len(line) != size || line != string(numbered(w, i, size)) {
			t.Fatalf("message %d cut or mixed: %.40q (%d B)", got, line, len(line))
		}
		if i != next[w] {
			t.Fatalf("writer %d: message %d arrived where %d was due", w, i, next[w])
		}
		next[w]++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if most.Load() == 0 {
		t.Error("nothing was ever queued: the test did not exercise the write queue")
	}
	if n := s.Status().Shed.TCPStalled; n != 0 {
		t.Errorf("sip.shed.tcp_stalled %d for a peer that reads, want 0", n)
	}
	within(t, 30*time.Second, "the queue drained and released", func() bool { n, capacity := queueOf(tc); return n == 0 && capacity == 0 })
}

// slowReader reads at most 200 bytes at a time, pausing between reads.
type slowReader struct{ c net.Conn }

func (r *slowReader) Read(b []byte) (int, error) {
	time.Sleep(200 * time.Microsecond)
	return r.c.Read(b[:min(len(b), 200)])
}

// smallSendBuffer shrinks the server's send buffer on tc to the least the
// kernel allows (no autotuning up to megabytes on loopback): what the
// peer does not read queues after a few KB.
func smallSendBuffer(t *testing.T, tc *tcpConn) {
	t.Helper()
	var err error
	if cerr := tc.rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 1) }); cerr != nil || err != nil {
		t.Fatal(cerr, err)
	}
}

// queuedPair is a connection accepted from a client with the least
// receive window that never reads, as a tcpConn outside any server, on
// the fake clock clk, with its queue filled: the client end, the
// connection, and the count of stalls it reported.
func queuedPair(t *testing.T, clk clock.Clock) (net.Conn, *tcpConn, *atomic.Int64) {
	t.Helper()
	var c net.Conn
	sc, rc := acceptedConn(t, func(addr string) net.Conn { c = dialSmallWindow(t, addr); return c })
	stalls := &atomic.Int64{}
	tc := &tcpConn{c: sc, rc: rc, clk: clk, born: clk.Now(),
		writeTO: func() time.Duration { return 2 * time.Second }, onStall: func() { stalls.Add(1) }}
	smallSendBuffer(t, tc)
	for i := 0; tc.queued.Load() < 8192; i++ {
		if i == 100000 {
			t.Fatal("the kernel took every write of a peer that reads nothing")
		}
		if err := tc.write(numbered(0, i, 500)); err != nil {
			t.Fatal(err)
		}
	}
	return c, tc, stalls
}

// TestTCPWriteQueueStall: the stall rule on the fake clock. A queue that
// takes no byte and sees none acknowledged is kept for
// sip.tcp_write_timeout (2 s here), then given up: counted as stalled
// once, its queue released. One whose peer reads is kept past it, for 2
// s after each time it moved.
func TestTCPWriteQueueStall(t *testing.T) {
	t.Run("no progress", func(t *testing.T) {
		fake := clock.NewFake(time.Unix(1_800_000_000, 0))
		_, tc, stalls := queuedPair(t, fake)
		fake.Advance(1900 * time.Millisecond)
		pending, stallAt, ok := tc.flush()
		if !ok || !pending || !stallAt.Equal(tc.born.Add(2*time.Second)) {
			t.Fatalf("before the timeout: pending %v, ok %v, given up at %v (want born+2s)", pending, ok, stallAt.Sub(tc.born))
		}
		fake.Advance(100 * time.Millisecond)
		if _, _, ok := tc.flush(); ok || !tc.dead.Load() {
			t.Fatal("a queue that did not move for sip.tcp_write_timeout was kept")
		}
		if n, capacity := queueOf(tc); n != 0 || capacity != 0 || stalls.Load() != 1 {
			t.Errorf("given up: %d B queued (capacity %d), %d stalls counted; want released, 1", n, capacity, stalls.Load())
		}
	})
	t.Run("slow reader", func(t *testing.T) {
		fake := clock.NewFake(time.Unix(1_800_000_000, 0))
		c, tc, stalls := queuedPair(t, fake)
		buf := make([]byte, 1000)
		for round := range 4 {
			fake.Advance(1500 * time.Millisecond)
			tc.wmu.Lock()
			before := tc.wq.acked
			tc.wmu.Unlock()
			// The peer reads a little; the kernel sends more and the peer
			// acknowledges it.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(buf); err != nil {
				t.Fatal(err)
			}
			within(t, 10*time.Second, "the peer's acknowledgement", func() bool { a, _ := tc.bytesAcked(); return a != before })
			pending, stallAt, ok := tc.flush()
			if !ok || !pending {
				t.Fatalf("round %d (%v after the queue began): ok %v, pending %v; a peer that reads was given up or drained", round, fake.Now().Sub(tc.born), ok, pending)
			}
			if want := fake.Now().Add(2 * time.Second); !stallAt.Equal(want) {
				t.Fatalf("round %d: given up at %v unless it moves, want 2 s from now", round, stallAt.Sub(tc.born))
			}
		}
		// The peer stops reading: once what its last read let through
		// is acknowledged (stable over a few checks), a flush notes it,
		// and 2 s later the queue is given up.
		last, same := uint64(0), 0
		within(t, 10*time.Second, "the acknowledgements settled", func() bool {
			a, _ := tc.bytesAcked()
			if a == last {
				same++
			} else {
				last, same = a, 0
			}
			return same >= 5
		})
		if _, _, ok := tc.flush(); !ok {
			t.Fatal("given up at once when the peer stopped reading")
		}
		fake.Advance(2 * time.Second)
		if _, _, ok := tc.flush(); ok || stalls.Load() != 1 {
			t.Errorf("the peer stopped reading for 2 s: kept %v, %d stalls counted; want given up, 1", ok, stalls.Load())
		}
	})
}

// TestTCPQueuedPeerResetReleased: a peer that resets its connection
// while answers wait for it is dropped (the EPOLLOUT watch reports the
// error, the flush fails), its queue released, and it is not counted as
// stalled: it did not stall, it left.
func TestTCPQueuedPeerResetReleased(t *testing.T) {
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TCPWriteTimeout = 60 })
	c := dialSmallWindow(t, addr)
	tc := serverConnOf(t, s, c)
	for i := 0; tc.queued.Load() == 0; i++ {
		if i == 100000 {
			t.Fatal("the kernel took every write of a peer that reads nothing")
		}
		if err := tc.write(numbered(0, i, 500)); err != nil {
			t.Fatal(err)
		}
	}
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // a reset
	within(t, 30*time.Second, "the reset connection dropped", func() bool { return s.Status().TCPConnections == 0 })
	if n, capacity := queueOf(tc); n != 0 || capacity != 0 {
		t.Errorf("%d B queued (capacity %d) on a dropped connection, want released", n, capacity)
	}
	if n := s.Status().Shed.TCPStalled; n != 0 {
		t.Errorf("sip.shed.tcp_stalled %d for a peer that reset, want 0", n)
	}
}

// TestTCPWriteStraightThroughAllocatesNothing: a write the kernel takes
// whole (the common case) allocates nothing: no copy, no closure.
func TestTCPWriteStraightThroughAllocatesNothing(t *testing.T) {
	tc := discardingConn(t)
	msg := numbered(0, 0, 400)
	tc.write(msg) // the send callback, made once per connection
	allocs := testing.AllocsPerRun(200, func() {
		if err := tc.write(msg); err != nil {
			t.Fatal(err)
		}
	})
	if tc.queued.Load() != 0 {
		t.Fatalf("%d B queued to a peer that reads: not the straight-through case", tc.queued.Load())
	}
	if allocs != 0 {
		t.Errorf("%v allocations per write that goes straight through, want 0", allocs)
	}
}

// discardingConn is the server side of a loopback TCP connection, on a
// fake clock and not entered in any server, whose peer reads and
// discards all it is sent: every write can go straight through.
func discardingConn(t *testing.T) *tcpConn {
	t.Helper()
	sc, rc := acceptedConn(t, func(addr string) net.Conn {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		go io.Copy(io.Discard, c)
		return c
	})
	fake := clock.NewFake(time.Unix(1_800_000_000, 0))
	return &tcpConn{c: sc, rc: rc, clk: fake, born: fake.Now()}
}

// acceptedConn is the server side of a loopback TCP connection that dial
// makes to a fresh listener, and its raw conn; both ends are closed when
// the test ends.
func acceptedConn(t *testing.T, dial func(addr string) net.Conn) (net.Conn, syscall.RawConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := dial(ln.Addr().String())
	t.Cleanup(func() { c.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	rc, err := rawConn(sc)
	if err != nil {
		t.Fatal(err)
	}
	return sc, rc
}
