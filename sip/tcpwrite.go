package sip

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The write side of a TCP connection (issue 19: every load bound holds).
// No goroutine handling input ever waits on a TCP peer: the single UDP
// reader forwarding a request to a phone registered over TCP, a TCP
// reader answering, a proxy timer. A write tries the socket at once
// without blocking; what the kernel does not take is copied to the
// connection's write queue, in order, and later writes queue behind it.
// The queue is bounded (tcpQueueMessages of the largest messages); a
// write past the bound gives the connection up. The poller flushes the
// queue when the socket is writable (EPOLLOUT, watched only while bytes
// wait), and gives the connection up when its queue has not moved for
// sip.tcp_write_timeout (no byte taken by the kernel, none acknowledged
// by the peer). While bytes wait, the connection's own requests are not
// read: they wait in the kernel, so that a peer that sends without
// reading the answers is held back by TCP, not by memory here.

// tcpQueueMessages bounds a connection's write queue: at most this many
// of the largest messages (sip.max_message_size), 32 KB at the default,
// wait for a peer whose kernel buffers are full. It holds the answers to
// one read of pipelined requests (a turn stops reading once answers
// queue) and the requests forwarded to the phone meanwhile; a peer that
// lets more pile up is given up. With sip.tcp_max_connections
// connections (64 shipped), 2 MB at most over all of them, and only while
// peers stall, for sip.tcp_write_timeout each.
const tcpQueueMessages = 4

// defaultQueueMax is the bound of a connection never entered (a test's):
// sip.max_message_size's default.
const defaultQueueMax = tcpQueueMessages * 8192

// errQueueFull: a write would take the connection's write queue past its
// bound; the connection is given up.
var errQueueFull = errors.New("sip: tcp write queue full: the peer does not read")

// errStalled: the write queue did not move for sip.tcp_write_timeout.
var errStalled = errors.New("sip: tcp write queue did not move for sip.tcp_write_timeout")

// writeQueue is what waits for a peer, made when the kernel first leaves
// bytes of a write and dropped once they have gone: the bytes, in order,
// when the queue last moved (bytes taken or acknowledged, or its start)
// and the bytes the peer had acknowledged then (TCP_INFO).
type writeQueue struct {
	b          []byte
	progressAt time.Time
	acked      uint64
}

// queueMax is the connection's write queue bound in bytes, read at each
// write (a reload applies it).
func (t *tcpConn) queueMax() int {
	if t.poll == nil {
		return defaultQueueMax
	}
	return tcpQueueMessages * t.poll.s.config().MaxMessageSize
}

// now is the connection's clock (the real one unless a test set one).
func (t *tcpConn) now() time.Time {
	if t.clk == nil {
		return time.Now()
	}
	return t.clk.Now()
}

// write sends b to the peer, never waiting for it: what the kernel does
// not take at once is copied to the write queue (b is the caller's to
// reuse on return), which the poller flushes when the socket is
// writable. A write fails, and gives the connection up (kill), when the
// socket has failed (the peer reset it) or when the queue would pass its
// bound even after the kernel took what it could of it (the socket may
// have room no reader has flushed into yet): then it is counted as
// stalled (sip.shed.tcp_stalled,
// "overload"), as a queue that does not move is (flush). A write to a
// connection given up fails at once (errDeadConn). Writes from several
// goroutines keep their order on the connection: each is whole before
// the next starts, and nothing goes to the socket before what waits.
func (t *tcpConn) write(b []byte) error {
	if t.dead.Load() {
		return errDeadConn
	}
	first, err := t.enqueue(b)
	switch {
	case err == nil:
		if first && t.poll != nil {
			t.poll.rearm(t) // watch EPOLLOUT
		}
	case errors.Is(err, errDeadConn):
	default:
		t.kill(errors.Is(err, errQueueFull))
	}
	return err
}

// enqueue sends what the socket takes of b at once and queues the rest;
// first: the queue was empty before.
func (t *tcpConn) enqueue(b []byte) (first bool, err error) {
	t.wmu.Lock()
	defer t.wmu.Unlock() // deferred: a panic (a connection without a socket) leaves it unlocked
	if t.dead.Load() {
		return false, errDeadConn
	}
	if len(b) == 0 {
		return false, nil
	}
	// queueMax reads the settings (a lock): only once bytes wait, not
	// on the straight-through path.
	if t.wq != nil && len(t.wq.b)+len(b) > t.queueMax() {
		// Past the bound unless the socket has room the poller has not
		// used yet (the peer read; no reader has flushed since): the
		// kernel gets what waits first, and a peer that reads is kept.
		if _, err := t.pushLocked(t.now()); err != nil {
			return false, err
		}
	}
	if t.wq == nil {
		n, err := t.sendNow(b)
		if err != nil {
			return false, fmt.Errorf("sip: tcp write to %s: %w", t.remote, err)
		}
		b = b[n:]
		if len(b) == 0 {
			return false, nil // the common case: nothing queued, nothing allocated
		}
		first = true
		t.wq = &writeQueue{}
		t.moved(t.now())
	}
	limit := t.queueMax()
	if len(t.wq.b)+len(b) > limit {
		return false, errQueueFull
	}
	t.wq.b = appendBounded(t.wq.b, b, limit)
	t.queued.Store(int64(len(t.wq.b)))
	return first, nil
}

// moved notes that the write queue moved at now (bytes taken by the
// kernel, or acknowledged by the peer; or the queue began): it is given
// up if it does not move again within sip.tcp_write_timeout (wmu held,
// wq not nil).
func (t *tcpConn) moved(now time.Time) {
	t.wq.progressAt = now
	t.wq.acked, _ = t.bytesAcked()
	t.stallAt.Store(int64(now.Add(t.writeTimeout()).Sub(t.born)))
}

// stallDeadline is when the write queue is given up unless it moves, on
// the poller's clock (read without wmu: the poller sets its deadline by
// it).
func (t *tcpConn) stallDeadline() time.Time {
	return t.born.Add(time.Duration(t.stallAt.Load()))
}

// appendBounded appends b to q, growing it to at most max bytes of
// capacity (len(q)+len(b) <= max): a queue never holds more memory than
// its bound.
func appendBounded(q, b []byte, max int) []byte {
	if len(q)+len(b) <= cap(q) {
		return append(q, b...)
	}
	n := min(max, 2*(len(q)+len(b)))
	nq := make([]byte, len(q), n)
	copy(nq, q)
	return append(nq, b...)
}

// flush sends what the write queue holds, without blocking, and reports
// whether bytes still wait and when they are given up unless they move
// (stallAt); ok false: the connection is given up (kill), because its
// socket failed, or its queue made no progress (no byte taken, none
// acknowledged) for sip.tcp_write_timeout (counted as stalled). A peer
// that takes bytes, however slowly, is kept.
func (t *tcpConn) flush() (pending bool, stallAt time.Time, ok bool) {
	pending, stallAt, err := t.flushQueue(t.now())
	if err != nil {
		if !errors.Is(err, errDeadConn) {
			t.kill(errors.Is(err, errStalled))
		}
		return false, time.Time{}, false
	}
	return pending, stallAt, true
}

// flushQueue is flush's work, under wmu, at now: an error gives the
// connection up.
func (t *tcpConn) flushQueue(now time.Time) (bool, time.Time, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.dead.Load() {
		return false, time.Time{}, errDeadConn
	}
	q := t.wq
	if q == nil {
		return false, time.Time{}, nil
	}
	n, err := t.pushLocked(now)
	if err != nil {
		return false, time.Time{}, err
	}
	if t.wq == nil {
		return false, time.Time{}, nil // drained
	}
	if n == 0 {
		if a, ok := t.bytesAcked(); ok && a != q.acked {
			t.moved(now) // the peer reads: the kernel's buffer empties
		} else if !now.Before(q.progressAt.Add(t.writeTimeout())) {
			return false, time.Time{}, errStalled
		} else {
			// Not moved, within the timeout as it is now: the deadline
			// the poller parks it by follows a reload that raised it
			// (else it stays the old one, passed, and the poller hands
			// the connection back at once, again and again).
			t.stallAt.Store(int64(q.progressAt.Add(t.writeTimeout()).Sub(t.born)))
		}
	}
	return true, t.stallDeadline(), nil
}

// pushLocked gives the kernel what the write queue holds, without
// waiting, and returns how many bytes it took (wmu held, wq not nil):
// the queue is released when it drains, else it moved at now if bytes
// went. flush calls it when the socket is writable, and a write that
// would take the queue past its bound, first.
func (t *tcpConn) pushLocked(now time.Time) (int, error) {
	q := t.wq
	n, err := t.sendNow(q.b)
	if err != nil {
		return 0, fmt.Errorf("sip: tcp write to %s: %w", t.remote, err)
	}
	if n == len(q.b) {
		t.dropQueue() // drained: its storage goes
		return n, nil
	}
	q.b = q.b[n:]
	t.queued.Store(int64(len(q.b)))
	if n > 0 {
		t.moved(now)
	}
	return n, nil
}

// dropQueue releases the write queue (wmu held).
func (t *tcpConn) dropQueue() {
	t.wq = nil
	t.queued.Store(0)
}

// releaseQueue releases the write queue of a connection closed or given
// up.
func (t *tcpConn) releaseQueue() {
	t.wmu.Lock()
	t.dropQueue()
	t.wmu.Unlock()
}

// sendNow writes what the socket takes of b without waiting (one write
// on the descriptor, non-blocking like every socket the net package
// makes; the runtime's poller is never waited on) and returns how many
// bytes it took: 0 when its buffer is full (EAGAIN). wmu held: the send
// callback and its results are the connection's, made once, so that a
// write allocates nothing.
func (t *tcpConn) sendNow(b []byte) (int, error) {
	if t.sendFn == nil {
		t.sendFn = func(fd uintptr) bool {
			for {
				n, err := unix.Write(int(fd), t.sendBuf)
				// Its error is an errno, kept as one: no interface
				// in the connection.
				e, _ := err.(syscall.Errno)
				if err != nil && e == 0 {
					e = unix.EIO // not expected of write(2)
				}
				t.sendN, t.sendErrn = max(n, 0), e
				if e != unix.EINTR {
					return true
				}
			}
		}
	}
	t.sendBuf = b
	cerr := t.rc.Write(t.sendFn)
	n, errn := t.sendN, t.sendErrn
	t.sendBuf, t.sendN, t.sendErrn = nil, 0, 0
	switch {
	case cerr != nil:
		return 0, cerr
	case errn == unix.EAGAIN:
		return 0, nil
	case errn != 0:
		return 0, errn
	}
	return n, nil
}

// rawConn is a connection's descriptor, for the poller and for writes
// that do not block.
func rawConn(c net.Conn) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.New("sip: tcp connection without a descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("sip: tcp connection: %w", err)
	}
	return rc, nil
}
