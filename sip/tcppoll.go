package sip

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/supervisor"
)

// No goroutine per idle TCP peer (issue 19). Every connection, idle or
// not, is parked in one epoll set watched by one goroutine (tcpPoller.run);
// a connection that becomes readable, or whose timeout passed, is handed
// to a reader, of which at most sip.tcp_readers run at once, started when
// work is queued and ended when none is left. A reader reads without
// blocking (syscall.RawConn.Read with a callback that reads once) until
// the socket would block, handles every complete message, and parks the
// connection again. An idle connection costs its socket, its tcpConn and
// its place in the set: no goroutine, no stack, no buffer (see buffers.go
// for the one an incomplete message holds).
//
// Writes never block either (tcpwrite.go): what the kernel does not take
// waits in the connection's bounded write queue. A connection with bytes
// queued is parked watching EPOLLOUT instead of input (its requests wait
// in the kernel until its answers have gone: TCP holds back a peer that
// does not read), with the deadline at which its queue is given up
// unless it moves (sip.tcp_write_timeout); a reader that takes it, on
// either, flushes the queue first and reads only once it has drained.
// The set watches EPOLLIN again when the queue is empty.

// tcpReaders bounds the goroutines reading TCP connections at once
// (sip.tcp_readers, read at each hand-off, so a reload applies it). A
// reader is held only while a message is handled, never by a peer that
// does not read (an answer it does not take is queued on its
// connection), so two serve every connection of a router; the default's
// third and fourth keep a peer sending a burst from delaying the others.
func (p *tcpPoller) tcpReaders() int { return max(p.s.config().TCPReaders, 1) }

// maxReadsPerTurn bounds the reads a reader makes on one connection
// before it parks it again and takes the next: a peer that sends without
// pause cannot keep the others waiting.
const maxReadsPerTurn = 8

// maxPollWait bounds a wait of the poller; the eventfd wakes it earlier
// for a stop or for a deadline earlier than the one it sleeps toward.
const maxPollWait = time.Minute

// pollEvents are the events a parked connection waits for: data, the
// peer's close (EPOLLRDHUP) or an error (EPOLLERR and EPOLLHUP are always
// reported). One-shot: a connection is handed to one reader at a time,
// and the reader arms it again when it parks it.
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// pollOutEvents are the events a connection with bytes in its write queue
// waits for: room in the socket's buffer, or an error or reset (EPOLLERR,
// EPOLLHUP: the flush fails and gives it up). Not input, nor the peer's
// half close (level-triggered, either would hand it to readers again and
// again while its queue cannot move): those are read once it has drained.
const pollOutEvents = unix.EPOLLOUT | unix.EPOLLONESHOT

// events is what tc waits for: its write queue's room while bytes wait,
// else input.
func (tc *tcpConn) events() uint32 {
	if tc.queued.Load() > 0 {
		return pollOutEvents
	}
	return pollEvents
}

// wakeID is the event data of the poller's own eventfd; connections are
// numbered from 1.
const wakeID = 0

// tcpPoller is one listener's epoll set of TCP connections, its poller
// goroutine and its readers.
type tcpPoller struct {
	s      *Server
	w      *supervisor.Worker
	epfd   int
	wakefd int
	wg     sync.WaitGroup // the poller and its readers

	mu      sync.Mutex
	conns   map[int32]*tcpConn // every connection of this set, parked or not
	nextID  int32
	queue   []*tcpConn // connections ready for a reader
	readers int        // readers running
	idle    []*reader  // the ended readers' buffers, for the next ones
	stopped bool
	// nextScan is when the earliest parked deadline falls (the poller
	// looks for timed-out connections then); waiting is whether the
	// poller sleeps toward it, so that an earlier deadline must wake it.
	nextScan time.Time
	waiting  bool
}

// newTCPPoller makes the epoll set and starts its poller goroutine on w,
// supervised: a panic in it restarts the worker.
func newTCPPoller(s *Server, w *supervisor.Worker) (*tcpPoller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("sip: tcp epoll set: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("sip: tcp poller eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeID}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("sip: tcp poller eventfd: %w", err)
	}
	p := &tcpPoller{s: s, w: w, epfd: epfd, wakefd: wakefd, conns: map[int32]*tcpConn{},
		nextScan: time.Now().Add(maxPollWait)}
	p.wg.Add(1)
	w.Go(func() {
		defer p.wg.Done()
		p.run()
	})
	return p, nil
}

// wake interrupts the poller's wait.
func (p *tcpPoller) wake() {
	one := [8]byte{1} // eventfd counts in host order; any non-zero value wakes
	unix.Write(p.wakefd, one[:])
}

// stop ends the poller and its readers, waits for them, closes every
// connection left in the set and releases the set. Called once, when the
// listener has closed.
func (p *tcpPoller) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.wake()
	p.wg.Wait()
	p.mu.Lock()
	conns := p.conns
	p.conns = map[int32]*tcpConn{}
	p.mu.Unlock()
	for _, tc := range conns {
		p.release(tc)
	}
	unix.Close(p.epfd)
	unix.Close(p.wakefd)
}

// add enters a connection into the set, parked until it is readable or
// idle for sip.tcp_idle_timeout. It fails when the poller has stopped or
// the connection has no descriptor to watch.
func (p *tcpPoller) add(tc *tcpConn) error {
	if tc.rc == nil {
		return errors.New("sip: tcp connection without a descriptor")
	}
	now := time.Now()
	tc.lastActive = now
	deadline := now.Add(p.idleTimeout())
	p.mu.Lock()
	// Entered, armed and parked under the lock: stop (which closes the
	// set) cannot come between, nor the poller see its event unparked.
	if p.stopped {
		p.mu.Unlock()
		return errNoTCP
	}
	p.nextID++
	if p.nextID <= wakeID {
		p.nextID = wakeID + 1
	}
	for p.conns[p.nextID] != nil { // after a wrap: skip numbers in use
		p.nextID++
	}
	tc.id = p.nextID
	if err := p.ctl(tc, unix.EPOLL_CTL_ADD); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("sip: tcp connection into the epoll set: %w", err)
	}
	p.conns[tc.id] = tc
	tc.parked, tc.deadline = true, tc.parkDeadline(deadline)
	p.noteDeadlineLocked(tc.deadline)
	p.mu.Unlock()
	return nil
}

// parkDeadline is when a parked connection is handed to a reader if no
// event comes: the reader's deadline (idle or header timeout), or sooner
// when bytes wait in its write queue, at which time the queue is given up
// unless it moved.
func (tc *tcpConn) parkDeadline(deadline time.Time) time.Time {
	if tc.queued.Load() > 0 {
		if sa := tc.stallDeadline(); sa.Before(deadline) {
			return sa
		}
	}
	return deadline
}

// rearm applies a change of tc's write queue (its first bytes queued, or
// released by kill) to a parked connection: the events it waits for and
// its deadline. One held by a reader gets both when it is parked (park
// reads the queue under p.mu, after the change).
func (p *tcpPoller) rearm(tc *tcpConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || !tc.parked || p.conns[tc.id] != tc {
		return
	}
	if d := tc.parkDeadline(tc.deadline); d.Before(tc.deadline) {
		tc.deadline = d
		p.noteDeadlineLocked(d)
	}
	p.armLocked(tc)
}

// armLocked arms a parked connection's events again (p.mu held). When
// that fails (epoll_ctl EPOLL_CTL_MOD: memory short, or the connection
// closed under it) no event can come for it: it would sit, unread and
// counted against sip.tcp_max_connections, until its deadline (for ever
// while it carries a binding, whose keep-alives it could not read). It
// is handed to a reader at once instead, which closes it (turn).
func (p *tcpPoller) armLocked(tc *tcpConn) {
	var err error
	if f := p.s.faults.pollArm; f != nil {
		err = f(tc)
	}
	if err == nil {
		err = p.ctl(tc, unix.EPOLL_CTL_MOD)
	}
	if err == nil {
		return
	}
	tc.armErr = err
	tc.parked = false
	p.enqueueLocked(tc)
}

// noteDeadlineLocked makes the poller look for timed-out connections by
// deadline, waking it if it sleeps toward a later time (p.mu held: stop
// cannot have closed the eventfd).
func (p *tcpPoller) noteDeadlineLocked(deadline time.Time) {
	if deadline.Before(p.nextScan) {
		p.nextScan = deadline
		if p.waiting {
			p.wake()
		}
	}
}

func (p *tcpPoller) idleTimeout() time.Duration {
	return time.Duration(p.s.config().TCPIdleTimeout) * time.Second
}

// ctl adds, arms again or removes a connection's descriptor.
func (p *tcpPoller) ctl(tc *tcpConn, op int) error {
	var err error
	cerr := tc.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: tc.events(), Fd: tc.id}
		err = unix.EpollCtl(p.epfd, op, int(fd), &ev)
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// park marks a connection as waiting, with the deadline at which it is
// handed to a reader even if nothing arrives (sooner while bytes wait in
// its write queue: parkDeadline), and arms its events (a one-shot event
// fired when it was taken): input, or room for its write queue. The
// caller, its reader, owns the connection until then and must not touch
// it after.
func (p *tcpPoller) park(tc *tcpConn, deadline time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return // stop closes it
	}
	tc.parked, tc.deadline = true, tc.parkDeadline(deadline)
	p.noteDeadlineLocked(tc.deadline)
	// Armed under p.mu, as rearm does: the events armed last follow the
	// write queue as it is now, and its event finds it parked. A failure
	// hands it to a reader, which closes it.
	p.armLocked(tc)
}

// enqueueLocked queues a connection for a reader and starts one if fewer
// than sip.tcp_readers run (p.mu held).
func (p *tcpPoller) enqueueLocked(tc *tcpConn) {
	p.queue = append(p.queue, tc)
	// A new reader whenever fewer run: those that run may be busy with
	// a burst of another peer's messages (never waiting for a peer: a
	// write queues what the peer does not take). One that finds the
	// queue empty ends at once.
	if p.readers >= p.tcpReaders() {
		return
	}
	p.readers++
	var r *reader
	if n := len(p.idle); n > 0 {
		r, p.idle[n-1] = p.idle[n-1], nil
		p.idle = p.idle[:n-1]
	} else {
		r = newReader(p.s, chunkSize)
	}
	p.wg.Add(1)
	p.w.Go(func() {
		defer p.wg.Done()
		p.read(r)
	})
}

// run is the poller goroutine: it waits for events and deadlines and
// hands the connections to readers, until stop. p.mu is taken only in
// helpers that release it deferred: a panic in them (recovered by the
// worker's Go, which restarts the worker) leaves it unlocked, so stop
// still returns.
func (p *tcpPoller) run() {
	events := make([]unix.EpollEvent, 32)
	for {
		wait, ok := p.beforeWait()
		if !ok {
			return
		}
		ms := int((wait + time.Millisecond - 1) / time.Millisecond)
		n, err := unix.EpollWait(p.epfd, events, max(ms, 0))
		if err != nil && err != unix.EINTR {
			// Not expected of a valid set; do not spin on it.
			p.s.logs.Log(slog.LevelWarn, "tcp-poll", "sip: tcp epoll wait failed", "err", err.Error())
			time.Sleep(100 * time.Millisecond)
		}
		p.afterWait(events[:max(n, 0)])
	}
}

// beforeWait hands the connections whose deadline passed to readers and
// returns how long the poller may wait; false: it stopped.
func (p *tcpPoller) beforeWait() (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return 0, false
	}
	if f := p.s.faults.pollRun; f != nil {
		f()
	}
	now := time.Now()
	if !now.Before(p.nextScan) {
		p.scanLocked(now)
	}
	p.waiting = true
	return p.nextScan.Sub(now), true
}

// afterWait hands the connections whose events came to readers.
func (p *tcpPoller) afterWait(events []unix.EpollEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiting = false
	for _, ev := range events {
		if ev.Fd == wakeID {
			var b [8]byte
			unix.Read(p.wakefd, b[:])
			continue
		}
		// A connection closed since is gone from conns; one a reader
		// holds (taken at its deadline while armed) is armed again
		// when it is parked, and the event comes again if data waits.
		if tc := p.conns[ev.Fd]; tc != nil && tc.parked {
			tc.parked = false
			p.enqueueLocked(tc)
		}
	}
}

// scanLocked hands the parked connections whose deadline passed to
// readers and sets nextScan to the earliest deadline left (p.mu held).
// It looks at every connection, bounded by sip.tcp_max_connections, once
// per deadline that falls, not per event.
func (p *tcpPoller) scanLocked(now time.Time) {
	next := now.Add(maxPollWait)
	for _, tc := range p.conns {
		if !tc.parked {
			continue
		}
		if !now.Before(tc.deadline) {
			tc.parked = false
			p.enqueueLocked(tc)
			continue
		}
		if tc.deadline.Before(next) {
			next = tc.deadline
		}
	}
	p.nextScan = next.Add(scanSlack)
}

// scanSlack: a scan comes this long after the earliest deadline, so that
// the connections whose deadlines fall close together (each is its last
// data plus the same timeout) are taken by one scan, not one each.
const scanSlack = 250 * time.Millisecond

// next takes a queued connection; a reader ends (false) when none is
// queued, the poller stopped, or more readers run than sip.tcp_readers (a
// reload lowered it: the others, at least one, go on with the queue),
// leaving its buffers for the next one. The ended readers' buffers kept
// are bounded by sip.tcp_readers as it is now.
func (p *tcpPoller) next(r *reader) (*tcpConn, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	limit := p.tcpReaders()
	if len(p.idle) > limit {
		clear(p.idle[limit:])
		p.idle = p.idle[:limit]
	}
	if len(p.queue) == 0 || p.stopped || p.readers > limit {
		p.readers--
		if len(p.idle) < limit {
			p.idle = append(p.idle, r)
		}
		return nil, false
	}
	tc := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	if len(p.queue) == 0 {
		p.queue = nil // the backing array is not kept growing at its tail
	}
	return tc, true
}

// read is a reader goroutine: it serves queued connections until none is
// left.
func (p *tcpPoller) read(r *reader) {
	for {
		tc, ok := p.next(r)
		if !ok {
			return
		}
		p.turn(r, tc)
	}
}

// turn serves one connection until it would block: it reads, frames and
// handles what arrived, applies the timeouts, and parks it again or
// closes it. A panic in the framing (a handler's own is recovered per
// message in handle) is recovered and counted, and closes this
// connection only, whose framing is lost.
func (p *tcpPoller) turn(r *reader, tc *tcpConn) {
	s := p.s
	parked := false
	defer func() {
		if v := recover(); v != nil {
			s.handlerPanic(v, debug.Stack())
		}
		if !parked {
			p.drop(tc)
		}
	}()
	if err := tc.armErr; err != nil {
		// Its events could not be armed again (armLocked): it can no
		// longer be read, and is closed. Counted unless it was closed
		// already (the worker stops, a rebind): that failed nothing.
		if !errors.Is(err, net.ErrClosed) {
			s.pollErrors.Add(1)
			s.logs.Log(slog.LevelWarn, "tcp-poll", "sip: tcp connection cannot be watched for input; closed", "peer", tc.remote.String(), "err", err.Error())
		}
		return
	}
	// Its write queue first: its requests are read once their answers
	// have gone. A queue that has not moved for sip.tcp_write_timeout
	// gives it up here (kill), at the deadline park set.
	pending, stallAt, ok := tc.flush()
	if !ok {
		return
	}
	if pending {
		parked = true
		p.park(tc, stallAt)
		return
	}
	cfg := s.config()
	idle := time.Duration(cfg.TCPIdleTimeout) * time.Second
	headerTimeout := time.Duration(cfg.TCPHeaderTimeout) * time.Second
	for range maxReadsPerTurn {
		scratch := tc.pending == nil
		buf := tc.pending
		if scratch {
			buf = r.buf[:0]
		} else if len(buf) == cap(buf) {
			buf = s.growPending(buf, cfg.MaxMessageSize)
			s.chunks.put(tc.pending) // copied: a chunk goes back
			tc.pending = buf
		}
		n, err := readOnce(tc.rc, buf[len(buf):cap(buf)])
		if tc.dead.Load() {
			// Given up by another goroutine (a write to it failed): what
			// it sent is neither handled nor counted.
			return
		}
		if err == unix.EAGAIN {
			break
		}
		if err == nil && n == 0 {
			err = io.EOF
		}
		if err != nil {
			if len(trimCRLF(buf)) > 0 {
				s.incomplete(tc, err)
			}
			return
		}
		data := buf[len(buf) : len(buf)+n]
		buf = buf[:len(buf)+n]
		now := time.Now()
		tc.lastActive = now
		if tc.msgStart.IsZero() && !isKeepalive(data) {
			tc.msgStart = now
		}
		rest, handled, ok := s.frame(r, tc, buf, cfg.MaxMessageSize)
		if !ok {
			return
		}
		switch {
		case len(trimCRLF(rest)) == 0:
			tc.msgStart = time.Time{}
		case handled:
			tc.msgStart = now // the next message began with this read
		}
		tc.pending = s.keepRest(buf, scratch, rest)
		if tc.queued.Load() > 0 {
			// The peer does not take its answers as fast as it sends:
			// what else it sent waits in the kernel (parked watching
			// EPOLLOUT) until they have gone, so that its queue holds
			// the answers to one read at most.
			break
		}
	}
	now := time.Now()
	if !tc.msgStart.IsZero() {
		deadline := tc.msgStart.Add(headerTimeout)
		if !now.Before(deadline) {
			if !tc.dead.Load() {
				s.incomplete(tc, errHeaderTimeout)
			}
			return
		}
		parked = true
		p.park(tc, deadline)
		return
	}
	deadline := tc.lastActive.Add(idle)
	if !now.Before(deadline) {
		if !s.isFlow(tc) || !s.carriesBinding(tc.remote, now) {
			// Idle for sip.tcp_idle_timeout: closed. One superseded at
			// its address (addConn) is not the phone's flow, whatever
			// binding its address carries.
			return
		}
		// The phone registered on this connection: it is its flow (RFC
		// 5626), the only way requests reach it, kept while the binding
		// lives however quiet it is.
		tc.lastActive = now
		deadline = now.Add(idle)
	}
	parked = true
	p.park(tc, deadline)
}

// errHeaderTimeout: a message did not arrive whole within
// sip.tcp_header_timeout of its first byte.
var errHeaderTimeout = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string   { return "sip.tcp_header_timeout passed" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// drop closes a connection that its reader owns and forgets it.
func (p *tcpPoller) drop(tc *tcpConn) {
	p.mu.Lock()
	if p.conns[tc.id] == tc {
		delete(p.conns, tc.id)
	}
	p.mu.Unlock()
	p.release(tc)
}

// release closes a connection no one else holds: out of the set, out of
// the server's tables, its buffer back to the pool, its write queue
// released (after the close: a write that comes later fails, none
// queues again).
func (p *tcpPoller) release(tc *tcpConn) {
	if tc.rc != nil {
		p.ctl(tc, unix.EPOLL_CTL_DEL) // closing would remove it too; a closed one has nothing to remove
	}
	p.s.chunks.put(tc.pending)
	tc.pending = nil
	p.s.dropConn(tc)
	tc.c.Close()
	tc.releaseQueue()
}

// readOnce reads what the socket holds into b without blocking: EAGAIN
// when it holds nothing. The callback returns true, so the runtime's
// poller is never waited on: the epoll set is what waits.
func readOnce(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var err error
	cerr := rc.Read(func(fd uintptr) bool {
		for {
			n, err = unix.Read(int(fd), b)
			if err != unix.EINTR {
				return true
			}
		}
	})
	if cerr != nil {
		return 0, cerr
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// growPending is a buffer for an incomplete message that did not fit its
// buffer: a pooled chunk for the few bytes of a keep-alive's start, else
// twice as large, never above what the largest message and one more byte
// need (a header section that long is refused).
func (s *Server) growPending(b []byte, maxSize int) []byte {
	if cap(b) < chunkSize {
		return append(s.chunks.get(), b...)
	}
	n := min(2*cap(b), maxSize+1)
	if n <= cap(b) {
		n = cap(b) + chunkSize // at the bound already: framing refuses it on this read
	}
	nb := make([]byte, len(b), n)
	copy(nb, b)
	return nb
}

// keepRest keeps the incomplete rest of what a connection sent after its
// complete messages were handled (rest, a part of buf, what was read):
// nothing when there is none (a pooled buffer goes back), in a pooled
// chunk when it came in the reader's own buffer (scratch) or when a large
// message's buffer is no longer needed, else moved to the front of buf.
func (s *Server) keepRest(buf []byte, scratch bool, rest []byte) []byte {
	pending := buf
	if len(rest) == 0 {
		if !scratch {
			s.chunks.put(pending)
		}
		return nil
	}
	if len(trimCRLF(rest)) == 0 {
		// The start of a keep-alive (at most three bytes of "\r\n\r\n"):
		// a few bytes, not a chunk, on a connection otherwise idle.
		nb := append(make([]byte, 0, 8), rest...)
		if !scratch {
			s.chunks.put(pending)
		}
		return nb
	}
	if scratch || cap(pending) > chunkSize && len(rest) <= chunkSize/2 {
		nb := s.chunks.get()
		if len(rest) > cap(nb) {
			nb = make([]byte, 0, len(rest)+chunkSize)
		}
		nb = append(nb, rest...)
		if !scratch {
			s.chunks.put(pending) // dropped if not a chunk
		}
		return nb
	}
	return pending[:copy(pending[:cap(pending)], rest)]
}

// trimCRLF is b without its leading CRs and LFs (keep-alives).
func trimCRLF(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	return b
}
