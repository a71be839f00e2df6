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
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/supervisor"
)

// tcpConn is one connection a phone opened; answers and requests for that
// phone go back on it.
type tcpConn struct {
	c      net.Conn
	remote netip.AddrPort
	local  netip.Addr
	alias  netip.AddrPort // the Contact address last seen on it (tcpMu held)
	// w is the worker serving it: its messages' CPU counts in main's
	// cpu_pct (BeginCPU), as the UDP readers' threads do.
	w *supervisor.Worker

	// Its place in the poller's epoll set (tcppoll.go).
	rc syscall.RawConn
	id int32
	// parked and deadline are the poller's (its mu held): parked while
	// in the set waiting, deadline when it is handed to a reader if
	// nothing comes.
	parked   bool
	deadline time.Time
	// armErr is why its events could not be armed again (set by the
	// poller, p.mu held, before it hands it to the reader that closes
	// it; nil: armed).
	armErr error
	// The framing state, the reader's that holds the connection: the
	// incomplete rest of what arrived (nil between messages: an idle
	// connection holds no buffer), when the message being read began
	// (zero between messages) and when data last arrived.
	pending    []byte
	msgStart   time.Time
	lastActive time.Time

	// dead: a write failed and the connection is given up (kill).
	dead atomic.Bool
	// onStall counts and logs a connection given up as stalled, and
	// writeTO is sip.tcp_write_timeout; set by addConn before the
	// connection is shared, as are rc and poll.
	onStall func()
	writeTO func() time.Duration
	// poll is the epoll set it waits in (nil: none, a test's; its
	// server's sip.max_message_size sets the write queue's bound).
	poll *tcpPoller

	// The write side (tcpwrite.go), under wmu: the write queue (nil
	// when nothing waits), and the send callback and its results, made
	// once per connection so that a write allocates nothing.
	wmu      sync.Mutex
	wq       *writeQueue
	sendFn   func(fd uintptr) bool
	sendBuf  []byte
	sendN    int
	sendErrn syscall.Errno
	// queued is len(wq.b) and stallAt when the queue is given up unless
	// it moves (nanoseconds after born, the connection's entry: a
	// monotonic time); both readable without wmu, by the poller, which
	// watches EPOLLOUT and sets the connection's deadline by them.
	queued  atomic.Int64
	stallAt atomic.Int64
	born    time.Time
	// clk is the write queue's clock (nil: the real one; a test's fake).
	clk clock.Clock
}

// dialTimeout bounds the making of a connection to a phone.
const dialTimeout = 2 * time.Second

// tcpSendBuffer is the kernel's send buffer on every SIP TCP connection,
// accepted or dialled (SO_SNDBUF, set in addConn; Linux doubles it for
// its bookkeeping: 64 KB of kernel memory). Left to itself the kernel
// grows it for a peer that does not read (autotuning, up to tcp_wmem's
// 4 MB; 1.6 MB was seen on loopback) before a byte waits in the write
// queue, whose bound and stall rule apply only after that: 64
// connections could hold more than a 64 MB router has. 32 KB is 4 of
// the largest messages at the default sip.max_message_size, as the write
// queue holds: SIP sends a few messages at a time on a connection, and
// 32 KB in flight on a mesh link of 200 ms round trip is 160 KB/s, far
// more than signalling needs. A larger message is sent in parts, the
// rest waiting in the write queue.
const tcpSendBuffer = 32 << 10

// errDeadConn: the connection was given up after a write failed; later
// writes fail at once.
var errDeadConn = errors.New("sip: tcp connection given up after a failed write")

// writeTimeout is sip.tcp_write_timeout, read each time the write
// queue moves (a reload applies it); 2 s when the connection was never
// entered (a test's).
func (t *tcpConn) writeTimeout() time.Duration {
	if t.writeTO == nil {
		return 2 * time.Second
	}
	return max(t.writeTO(), time.Second)
}

// bytesAcked is how many bytes the peer has acknowledged on the
// connection (TCP_INFO); false where the kernel does not say.
func (t *tcpConn) bytesAcked() (uint64, bool) {
	if t.rc == nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var err error
	if t.rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }) != nil || err != nil {
		return 0, false
	}
	return info.Bytes_acked, true
}

// kill gives the connection up after a failed write: later writes fail
// at once, what it had not sent is discarded (its write queue released,
// and linger 0: a reset, not kernel memory held for a peer that does not
// read), and its reading side is shut, so that its reader, or the poller
// if it is parked (the shutdown makes it readable, and it is watched for
// input again), finds its end and drops it. A connection stalled (its
// write queue full, or not moving for sip.tcp_write_timeout) is counted
// as shed (sip.shed.tcp_stalled, "overload"); one whose write failed
// because the peer closed is not. Called without wmu held.
func (t *tcpConn) kill(stalled bool) {
	if !t.dead.CompareAndSwap(false, true) {
		return
	}
	t.releaseQueue()
	if c, ok := t.c.(*net.TCPConn); ok {
		c.SetLinger(0)
		c.CloseRead()
	} else if t.c != nil {
		t.c.Close()
	}
	if t.poll != nil {
		t.poll.rearm(t)
	}
	if stalled && t.onStall != nil {
		t.onStall()
	}
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
		// net's OpError would say "listen tcp4 X" again: keep its cause
		// ("bind: address already in use"), still EADDRINUSE underneath.
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err
		}
		return nil, fmt.Errorf("listen tcp %s: %w", bound, err)
	}
	return ln, nil
}

// tcpConnTo finds the open connection to an address: one whose far end
// is a, or one on which a request advertised a as its Contact.
func (s *Server) tcpConnTo(a netip.AddrPort) *tcpConn {
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	if tc := s.tcpConns[a]; tc != nil {
		return tc
	}
	return s.tcpAlias[a]
}

// flowTo is the connection a request to a phone at a goes on (RFC 3261
// 18.1.1, RFC 5626's flow): a connection to or aliased to a, else the
// connection of a binding registered over TCP whose Contact is a, while
// it is open. nil: there is none.
func (s *Server) flowTo(a netip.AddrPort) *tcpConn {
	s.tcpMu.Lock()
	tc, none := s.tcpConns[a], len(s.tcpConns) == 0
	if tc == nil {
		tc = s.tcpAlias[a]
	}
	s.tcpMu.Unlock()
	if tc != nil || none {
		return tc
	}
	var src netip.AddrPort
	now := time.Now()
	s.mu.Lock()
	for _, r := range s.aors {
		for _, c := range r.contacts {
			if c.transport == "TCP" && c.target == a && c.expires.After(now) {
				src = c.source
			}
		}
	}
	s.mu.Unlock()
	if !src.IsValid() {
		return nil
	}
	return s.tcpConnTo(src)
}

// aliasConn notes that a phone advertised contact (its listening
// address) on a connection, so that requests to it take that connection.
func (s *Server) aliasConn(tc *tcpConn, contact netip.AddrPort) {
	if tc == nil || !contact.IsValid() || contact == tc.remote {
		return
	}
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	if tc.alias == contact || s.tcpConns[tc.remote] != tc {
		return // known, or the connection is gone
	}
	if tc.alias.IsValid() && s.tcpAlias[tc.alias] == tc {
		delete(s.tcpAlias, tc.alias)
	}
	tc.alias = contact
	s.tcpAlias[contact] = tc
}

// dropConn forgets a closed connection and its alias. When it was the
// connection to its address, the one to the same address entered last
// before it that is still open (superseded by it, see addConn) is that
// connection again: requests for the address find the connection the
// phone still has open, not a new one dialled beside it.
func (s *Server) dropConn(tc *tcpConn) {
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	if s.tcpConns[tc.remote] == tc {
		delete(s.tcpConns, tc.remote)
		var next *tcpConn
		for o := range s.tcpSuperseded { // bounded by sip.tcp_max_connections; empty but for a collision
			if o.remote == tc.remote && (next == nil || o.born.After(next.born)) {
				next = o
			}
		}
		if next != nil {
			delete(s.tcpSuperseded, next)
			s.tcpConns[next.remote] = next
		}
	} else {
		delete(s.tcpSuperseded, tc)
	}
	if tc.alias.IsValid() && s.tcpAlias[tc.alias] == tc {
		delete(s.tcpAlias, tc.alias)
	}
}

// tcpCountLocked is the number of connections open and served: those
// in tcpConns and those superseded there (tcpMu held). It is what
// sip.tcp_max_connections bounds and the status reports.
func (s *Server) tcpCountLocked() int {
	return len(s.tcpConns) + len(s.tcpSuperseded)
}

// isFlow reports whether tc is the connection to its address, the one
// requests for the address take (not one superseded, nor one gone).
func (s *Server) isFlow(tc *tcpConn) bool {
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	return s.tcpConns[tc.remote] == tc
}

// tcpServing is what serving a connection needs, set while the TCP
// listener runs: the worker and the epoll set its connections wait in.
type tcpServing struct {
	w    *supervisor.Worker
	poll *tcpPoller
	open bool
}

// tcpFaults are failures of the TCP poller a test injects (nil: none),
// set before Run and only read after.
type tcpFaults struct {
	// pollAdd, when it returns an error, fails a connection's entry into
	// the epoll set with it.
	pollAdd func(*tcpConn) error
	// pollArm, when it returns an error, fails the arming of a parked
	// connection's events again (epoll_ctl EPOLL_CTL_MOD) with it.
	pollArm func(*tcpConn) error
	// pollRun is called by the poller goroutine with the poller's lock
	// held, before each wait: a panic there.
	pollRun func()
	// newPoller, when it returns an error, fails the making of the epoll
	// set for the listener ln with it.
	newPoller func(ln net.Listener) error
}

// tcpListening reports whether ln is the installed endpoint's listener
// (a rebind or restart installs another).
func (s *Server) tcpListening(ln net.Listener) bool {
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	return s.tcpLn == ln
}

// closeTCP closes every connection (the worker is stopping, or a
// rebind); none is added after it. The closed endpoint's listener is no
// longer the installed one from here, not only once install sets the
// next: an old acceptor checking in between does not pass.
func (s *Server) closeTCP() {
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	s.tcpServe.open = false
	s.tcpLn = nil
	for _, c := range s.tcpConns {
		c.c.Close()
	}
	for c := range s.tcpSuperseded {
		c.c.Close()
	}
}

// errTCPLimit: sip.tcp_max_connections connections are open.
var errTCPLimit = errors.New("sip: at sip.tcp_max_connections")

// errFlowOpen: a connection dialled to a phone found one to its address
// entered meanwhile (requests for it dialled at the same time).
var errFlowOpen = errors.New("sip: a connection to the address is open already")

// addConn enters a connection and starts serving it (parked in the
// poller's epoll set: no goroutine of its own) and returns the
// connection that serves. It fails with errNoTCP when TCP is stopped,
// errTCPLimit at sip.tcp_max_connections, or the poller's error when the
// connection cannot enter its set: only the limit is a shed connection.
// A connection dialled (to a phone) to an address that one open already
// goes to or is aliased to is not entered: errFlowOpen, with the open
// one, so that each connection served is in the table and counted
// against sip.tcp_max_connections (the table holds one per address).
//
// An accepted connection from an address a connection open already goes
// to (a phone that binds its outgoing connections to its listening port,
// SO_REUSEPORT, connecting while one we dialled to that port is open; or
// one that reconnects from the same port before its old connection's
// close was read) takes the address: it is the flow the phone opened
// last, on which it expects requests (RFC 5626). The older stays open
// and served, counted in tcpSuperseded, because the transactions sent
// on it get their responses on it (RFC 3261 18.2.2); no longer the
// address's connection, it no longer carries the phone's binding, so
// its idle timeout closes it once quiet (turn). Before, the newer
// replaced it in the table: it stayed open and served but was counted
// nowhere, past sip.tcp_max_connections.
func (s *Server) addConn(tc *tcpConn, dialled bool) (*tcpConn, error) {
	rc, err := rawConn(tc.c)
	if err != nil {
		return nil, err
	}
	if err := setSendBuffer(rc); err != nil {
		return nil, err
	}
	s.tcpMu.Lock()
	sv := s.tcpServe
	if !sv.open || sv.poll == nil {
		s.tcpMu.Unlock()
		return nil, errNoTCP
	}
	if dialled {
		old := s.tcpConns[tc.remote]
		if old == nil {
			old = s.tcpAlias[tc.remote]
		}
		if old != nil {
			s.tcpMu.Unlock()
			return old, errFlowOpen
		}
	}
	if s.tcpCountLocked() >= s.config().TCPMaxConnections {
		s.tcpMu.Unlock()
		return nil, errTCPLimit
	}
	// Set before it is shared: a writer finds it in the table.
	tc.rc, tc.poll, tc.born = rc, sv.poll, tc.now()
	if old := s.tcpConns[tc.remote]; old != nil {
		s.tcpSuperseded[old] = struct{}{} // accepted from its address: see above
	}
	s.tcpConns[tc.remote] = tc
	tc.w = sv.w
	tc.onStall = func() {
		s.shedCount(ShedTCPStalled)
		s.logs.Log(slog.LevelWarn, "tcp-stalled", "sip: tcp peer does not read its answers; closed", "from", tc.remote.String())
	}
	tc.writeTO = func() time.Duration { return time.Duration(s.config().TCPWriteTimeout) * time.Second }
	s.tcpMu.Unlock()
	if s.faults.pollAdd != nil {
		err = s.faults.pollAdd(tc)
	}
	if err == nil {
		err = sv.poll.add(tc)
	}
	if err != nil {
		s.dropConn(tc)
		return nil, err
	}
	return tc, nil
}

// setSendBuffer bounds a connection's kernel send buffer to
// tcpSendBuffer.
func setSendBuffer(rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, tcpSendBuffer)
	}); cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sip: tcp send buffer: %w", err)
	}
	return nil
}

// notServed counts and logs a connection addConn refused, by its reason
// and whether it was dialled (to a phone) or accepted.
func (s *Server) notServed(tc *tcpConn, dialled bool, err error) {
	dir := "from"
	if dialled {
		dir = "to"
	}
	switch {
	case errors.Is(err, errTCPLimit):
		s.shedCount(ShedTCPConnections)
		s.logs.Log(slog.LevelWarn, "tcp-limit", "sip: tcp connection refused at sip.tcp_max_connections", dir, tc.remote.String())
	case errors.Is(err, errNoTCP), errors.Is(err, net.ErrClosed):
		// TCP stops (the worker, a rebind): nothing failed. Its closeTCP
		// may close a connection entered in the table before it is in
		// the epoll set, whose entry then fails as closed.
	case dialled:
		// The epoll set could not take it (descriptors or memory short):
		// a connection to a phone not made, counted with the connects
		// that failed; not an accept's failure, which
		// tcp_accept_errors and sip_accept_errors are about.
		s.dialErrors.Add(1)
		s.logs.Log(slog.LevelWarn, "tcp-poll", "sip: tcp connection dialled not served", "to", tc.remote.String(), "err", err.Error())
	default:
		// The epoll set could not take it (descriptors or memory short):
		// an error of serving connections, as an accept's is.
		s.acceptErrors.Add(1)
		s.logs.Log(slog.LevelWarn, "tcp-poll", "sip: tcp connection not served", "from", tc.remote.String(), "err", err.Error())
	}
}

// errNoTCP: no connection could be made (TCP off, at its bound, or too
// many being made at once).
var errNoTCP = errors.New("sip: no TCP connection can be opened")

// dialTCP opens a connection to a phone whose flow has closed (RFC 3261
// 18.1.1: a request to a ;transport=tcp URI with no connection open
// opens one), bounded like accepted ones and by sip.tcp_max_connections
// dials at once; it is served like an accepted one, so the phone's
// answers and requests come back on it. A connection open to the address
// already is returned as is. A connect that fails, and a connection the
// epoll set cannot take, are counted as dial errors (tcp_dial_errors),
// never as accept errors.
func (s *Server) dialTCP(ctx context.Context, addr netip.AddrPort) (*tcpConn, error) {
	if tc := s.flowTo(addr); tc != nil {
		return tc, nil
	}
	s.tcpMu.Lock()
	open := s.tcpServe.open
	s.tcpMu.Unlock()
	if !open {
		return nil, errNoTCP
	}
	if n := s.dialing.Add(1); n > int64(s.config().TCPMaxConnections) {
		s.dialing.Add(-1)
		s.shedCount(ShedTCPConnections)
		return nil, errNoTCP
	}
	defer s.dialing.Add(-1)
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		s.dialErrors.Add(1)
		return nil, fmt.Errorf("sip: connect to %s: %w", addr, err)
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	tc := &tcpConn{c: c, remote: addr, local: local}
	served, err := s.addConn(tc, true)
	if errors.Is(err, errFlowOpen) {
		// Another request for the phone dialled it at the same time and
		// entered its connection first: that one serves, this one goes.
		c.Close()
		return served, nil
	}
	if err != nil {
		// Counted before it is closed: a peer that sees the close and
		// reads the status finds it counted.
		s.notServed(tc, true, err)
		c.Close()
		return nil, fmt.Errorf("sip: connect to %s: %w", addr, errors.Join(errNoTCP, err))
	}
	return tc, nil
}

// acceptTCP accepts connections up to sip.tcp_max_connections; past it a
// connection is closed at once and counted. Accept errors (EMFILE under a
// descriptor limit) back off, 5 ms doubling to 1 s, and raise
// "sip_accept_errors" until an accept succeeds again: the worker never
// fails for them. An acceptor that ends (stopped, or rebound while it
// backed off) clears the condition it raised.
func (s *Server) acceptTCP(ctx context.Context, ln net.Listener, w *supervisor.Worker) {
	var delay time.Duration
	failing := false
	defer func() {
		if failing {
			s.alerts.SetHealthy(health.SIPAcceptErrors, "")
		}
	}()
	// backOff counts and logs a failure, raises the condition once, and
	// waits 5 ms doubling to 1 s; false when ctx ended meanwhile.
	backOff := func(level slog.Level, msg string, err error) bool {
		s.acceptErrors.Add(1)
		s.logs.Log(level, "accept", msg, "err", err.Error())
		if !failing {
			failing = true
			s.alerts.SetUnhealthy(health.SIPAcceptErrors, "", health.Args{health.ArgError: err.Error()})
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
			return true
		}
	}
	var poll *tcpPoller
	for poll == nil {
		if !s.tcpListening(ln) {
			return // rebound while it backed off: another acceptor serves
		}
		var p *tcpPoller
		var err error
		if f := s.faults.newPoller; f != nil {
			err = f(ln)
		}
		if err == nil {
			p, err = newTCPPoller(s, w)
		}
		if err == nil {
			poll = p
			break
		}
		// The descriptors or memory an epoll set needs are short: as
		// for accept errors, back off and say so.
		if !backOff(slog.LevelError, "sip: tcp epoll set cannot be made; backing off", err) {
			return
		}
	}
	// The set goes with the listener: its connections are closed when
	// the listener is (Run's stop, a rebind).
	defer poll.stop()
	s.tcpMu.Lock()
	if s.tcpLn != ln {
		// Rebound (or restarted) while the set was being made: the
		// installed endpoint's acceptor serves; its set is not replaced.
		s.tcpMu.Unlock()
		return
	}
	s.tcpServe = tcpServing{w: w, poll: poll, open: true}
	s.tcpMu.Unlock()
	defer func() {
		s.tcpMu.Lock()
		if s.tcpServe.poll == poll {
			s.tcpServe.poll = nil
		}
		s.tcpMu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			if !backOff(slog.LevelWarn, "sip: tcp accept failed; backing off", err) {
				return
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
		if _, err := s.addConn(tc, false); err != nil {
			s.notServed(tc, false, err) // counted before the peer sees the close
			c.Close()
		}
	}
}

// frame handles the complete messages at the start of buf, what one
// connection sent, and returns the incomplete rest (a part of buf) and
// whether it handled any. A message's header must arrive within
// sip.tcp_header_timeout of its first byte and a connection without a
// message for sip.tcp_idle_timeout is closed unless a phone registered on
// it and its binding lives (both applied by the poller's reader, turn).
// Nothing larger than max (sip.max_message_size) is read: 513, and the
// connection closed (ok false). A Content-Length that cannot be believed
// (see bodyLength) is answered 400 and closes the connection, since where
// the next message starts is unknown. A message cut short by the peer's
// close or a timeout is counted as malformed (incomplete).
func (s *Server) frame(r *reader, tc *tcpConn, buf []byte, max int) (rest []byte, handled, ok bool) {
	from := peer{addr: tc.remote, local: tc.local, tcp: tc}
	for {
		if tc.dead.Load() {
			// Given up (a write failed, here or in another goroutine):
			// what it sent is not handled nor counted; its reader drops it.
			return nil, handled, false
		}
		// Leading CRLFs are keep-alives: a double CRLF gets a single one.
		for len(buf) > 0 && (buf[0] == '\r' || buf[0] == '\n') {
			if tc.dead.Load() {
				return nil, handled, false
			}
			if bytes.HasPrefix(buf, []byte("\r\n\r\n")) {
				// In the reader's own buffer, free between messages: a
				// literal would be a new slice per keep-alive (write
				// keeps its argument for the send callback).
				r.out = append(r.out[:0], "\r\n"...)
				tc.write(r.out)
				buf = buf[4:]
				continue
			}
			if len(buf) < 4 && bytes.Equal(buf, []byte("\r\n\r\n")[:len(buf)]) {
				return buf, handled, true // the rest of a keep-alive may follow
			}
			buf = buf[1:]
		}
		if len(buf) == 0 {
			return buf, handled, true
		}
		end := bytes.Index(buf, []byte("\r\n\r\n"))
		if end < 0 {
			if len(buf) > max {
				if tc.dead.Load() {
					return nil, handled, false
				}
				s.tooLarge(r, tc, buf)
				return nil, handled, false
			}
			return buf, handled, true
		}
		head := end + 4
		cl, err := headerLength(buf[:head])
		if tc.dead.Load() {
			return nil, handled, false
		}
		if err != nil {
			s.messages.Add(1)
			s.malformed.Add(1)
			r.malformed(string(buf[:head]), from, err)
			return nil, handled, false
		}
		// cl has at most 9 digits and head is under the size bound: the
		// comparison is made without adding them.
		if cl > max-head {
			if tc.dead.Load() {
				return nil, handled, false
			}
			s.tooLarge(r, tc, buf[:head])
			return nil, handled, false
		}
		if len(buf) < head+cl {
			return buf, handled, true
		}
		span := tc.w.BeginCPU()
		r.handle(buf[:head+cl], from)
		span.End()
		buf = buf[head+cl:]
		handled = true
		if tc.dead.Load() {
			// Its answer could not be written: what else it sent
			// is not handled, its reader drops it.
			return nil, handled, false
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
