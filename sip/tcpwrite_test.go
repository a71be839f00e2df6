package sip

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
)

// TestTCPWriteTimeoutRaisedWhileQueued: sip.tcp_write_timeout raised by
// a reload while a queue waits (2 s to 60 s here). The flush at the old
// deadline keeps the queue (it is within the new timeout) and the
// connection is parked until the new deadline. Before, the deadline the
// poller parks it by (stallAt) stayed the old one, already passed, so
// the poller handed the connection back to a reader at once, again and
// again, spinning a core until the new timeout passed.
func TestTCPWriteTimeoutRaisedWhileQueued(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_800_000_000, 0))
	_, tc, stalls := queuedPair(t, fake)
	var to atomic.Int64
	to.Store(int64(2 * time.Second))
	tc.writeTO = func() time.Duration { return time.Duration(to.Load()) }
	to.Store(int64(60 * time.Second)) // the reload
	fake.Advance(2 * time.Second)     // the old deadline
	pending, stallAt, ok := tc.flush()
	if !ok || !pending || stalls.Load() != 0 {
		t.Fatalf("within the raised timeout: ok %v, pending %v, %d stalls; want kept", ok, pending, stalls.Load())
	}
	if want := tc.born.Add(60 * time.Second); !stallAt.Equal(want) {
		t.Errorf("flush: given up at born+%v unless it moves, want born+60s", stallAt.Sub(tc.born))
	}
	// What the poller parks it by (turn parks it at stallAt).
	if d := tc.parkDeadline(stallAt); !d.After(fake.Now()) {
		t.Errorf("parked until born+%v, now is born+%v: handed back to a reader at once (a spin)", d.Sub(tc.born), fake.Now().Sub(tc.born))
	}
}

// TestTCPWriteQueueFullTriesTheSocketFirst: a queue at its bound whose
// peer has read since (the socket has room) but which no reader has
// flushed yet (the readers are busy, or the EPOLLOUT event has not come
// in). A write that would pass the bound first gives the kernel what
// waits; the peer reads, so it is kept: the write queues, nothing is
// counted as stalled. Before, the write past the bound gave the
// connection up and counted it in sip.shed.tcp_stalled although the
// socket took bytes at once.
func TestTCPWriteQueueFullTriesTheSocketFirst(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_800_000_000, 0))
	c, tc, stalls := queuedPair(t, fake)
	const size = 500
	bound := tc.queueMax()
	for i := 1_000_000; tc.queued.Load()+size <= int64(bound); i++ {
		if err := tc.write(numbered(0, i, size)); err != nil {
			t.Fatal(err)
		}
	}
	// The peer reads what reached it, until nothing more comes: the
	// server's kernel has sent it all, its send buffer is empty.
	buf := make([]byte, 4096)
	got := 0
	for {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		got += n
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				break
			}
			t.Fatal(err)
		}
	}
	if got == 0 {
		t.Fatal("the peer read nothing")
	}
	if err := tc.write(numbered(1, 0, size)); err != nil {
		t.Fatalf("a write past the bound of a queue the socket could take (the peer read %d B): %v", got, err)
	}
	if n := stalls.Load(); n != 0 || tc.dead.Load() {
		t.Errorf("%d stalls counted, given up %v, for a peer that reads; want 0, kept", n, tc.dead.Load())
	}
	if q := tc.queued.Load(); q > int64(bound) {
		t.Errorf("%d B queued, bound %d", q, bound)
	}
}

// sendBufferOf is the kernel's send buffer on tc (SO_SNDBUF as getsockopt
// reports it: twice what was set, on Linux).
func sendBufferOf(t *testing.T, tc *tcpConn) int {
	t.Helper()
	var n int
	var err error
	if cerr := tc.rc.Control(func(fd uintptr) { n, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) }); cerr != nil || err != nil {
		t.Fatal(cerr, err)
	}
	return n
}

// TestTCPSendBufferBounded: the kernel's send buffer on an accepted and
// on a dialled SIP connection is tcpSendBuffer (Linux reports it
// doubled), not the kernel's default that autotuning grows to megabytes
// for a peer that does not read before anything waits in the write
// queue.
func TestTCPSendBufferBounded(t *testing.T) {
	s, addr, _ := serveAlerts(t, nil)
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := sendBufferOf(t, serverConnOf(t, s, c)); n != 2*tcpSendBuffer {
		t.Errorf("accepted connection: SO_SNDBUF %d, want %d", n, 2*tcpSendBuffer)
	}

	phone, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	go func() {
		if pc, err := phone.Accept(); err == nil {
			t.Cleanup(func() { pc.Close() })
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc, err := s.dialTCP(ctx, netip.MustParseAddrPort(phone.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	if n := sendBufferOf(t, tc); n != 2*tcpSendBuffer {
		t.Errorf("dialled connection: SO_SNDBUF %d, want %d", n, 2*tcpSendBuffer)
	}
}

// TestTCPKeepAliveAnswerAllocatesNothing: a keep-alive (a double CRLF)
// is answered with a single CRLF that goes straight through, with no
// allocation: phones send one every 30 s or so on every connection.
// Before, the CRLF answered was a new slice each time (the write keeps
// its argument for the send callback, so a literal escaped to the heap).
func TestTCPKeepAliveAnswerAllocatesNothing(t *testing.T) {
	s := New(config.Defaults().SIP, nil, health.NewRates(health.SystemClock{}), newCondLog())
	r := newReader(s, chunkSize)
	tc := discardingConn(t)
	in := []byte("\r\n\r\n")
	s.frame(r, tc, in, 8192) // the send callback, made once per connection
	allocs := testing.AllocsPerRun(200, func() {
		if rest, _, ok := s.frame(r, tc, in, 8192); !ok || len(rest) != 0 {
			t.Fatalf("a keep-alive: rest %q, ok %v", rest, ok)
		}
	})
	if tc.queued.Load() != 0 {
		t.Fatalf("%d B queued to a peer that reads", tc.queued.Load())
	}
	if allocs != 0 {
		t.Errorf("%v allocations per keep-alive answered, want 0", allocs)
	}
}

// TestTCPQueueOnIdleConnectionFlushedWhenWritable: a write queues on a
// connection parked for input (idle: nothing comes from the peer) and
// the peer then reads. The write arms EPOLLOUT on the parked connection,
// so the queue is flushed as the peer reads, with no input from it and
// long before sip.tcp_write_timeout (60 s here) would hand it to a
// reader. Without that arming the queue would wait for the timeout.
func TestTCPQueueOnIdleConnectionFlushedWhenWritable(t *testing.T) {
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TCPWriteTimeout = 60 })
	c := dialSmallWindow(t, addr)
	defer c.Close()
	tc := serverConnOf(t, s, c)
	smallSendBuffer(t, tc)
	p := servingPoller(t, s)
	within(t, 30*time.Second, "the connection parked for input", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return tc.parked
	})
	sent := 0
	for i := 0; tc.queued.Load() == 0; i++ {
		if i == 100000 {
			t.Fatal("the kernel took every write of a peer that reads nothing")
		}
		if err := tc.write(numbered(0, i, 500)); err != nil {
			t.Fatal(err)
		}
		sent += 500
	}
	// The peer reads everything; the last message is due within the
	// read deadline (well under the 60 s stall timeout).
	got := 0
	buf := make([]byte, 4096)
	for got < sent {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d of %d B: %v (queued %d B: not flushed while the peer reads)", got, sent, err, tc.queued.Load())
		}
		got += n
	}
	// The flush that sent the last bytes releases the queue after them.
	within(t, 30*time.Second, "the queue released", func() bool { n, capacity := queueOf(tc); return n == 0 && capacity == 0 })
}
