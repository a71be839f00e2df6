// Package sip is phonebookd's SIP core (the "main" worker), sized for a
// 64 MB router: a stateless registrar and a proxy per RFC 3261 section 16.
//
// REGISTER, OPTIONS and every rejected request are parsed once and
// answered from the socket's goroutine; nothing of them is kept but the
// binding a REGISTER asks for, so memory does not depend on the request
// rate or on how many addresses send. Forwarded INVITEs are stateful in a
// table bounded by sip.max_transactions, on RFC 3261 timers; other
// requests and responses are forwarded statelessly. Past any bound the
// server sheds (503 with Retry-After, or a refused connection), counts it
// by cause, and raises the "overload" condition while it does. Phones
// register without authentication (the mesh trust model).
package sip

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/loglimit"
	"github.com/aredn/phonebookd/internal/siphash"
	"github.com/aredn/phonebookd/supervisor"
	"golang.org/x/sys/unix"
)

// Alerts is health.Alerts: the one interface every owner of conditions
// is given.
type Alerts = health.Alerts

// Causes of shed work, as counted in "phonebook status" sip.shed.
const (
	ShedRegistrations  = iota // new phone past sip.max_bindings: 503
	ShedTransactions          // INVITE past sip.max_transactions: 503
	ShedCalls                 // new call past sip.max_calls: 503
	ShedTCPConnections        // connection past sip.tcp_max_connections: closed
	ShedMessageSize           // message past sip.max_message_size: 513 or dropped
	ShedStray                 // response that is not ours: dropped
	ShedReceiveQueue          // datagram the kernel dropped at a full receive queue (a flood)
	ShedTxPerSource           // INVITE past sip.max_transactions_per_source: 503
	ShedCallsPerSource        // new call past sip.max_calls_per_source: 503
	ShedTCPStalled            // TCP connection whose write queue took no byte in sip.tcp_write_timeout, or would pass its bound: closed
	numShed
)

var shedNames = [numShed]string{"registrations", "transactions", "calls", "tcp_connections", "message_size", "stray_responses",
	"receive_queue", "transactions_per_source", "calls_per_source", "tcp_stalled"}

// The tables whose being full raises "sip_table_full" (keyed by name).
const (
	tableTransactions = iota
	tableCalls
	numTables
)

var tableNames = [numTables]string{"transactions", "calls"}

// callEntry is one call in the calls table. A call enters it when its
// INVITE's 2xx is relayed and is confirmed when the ACK passes (the
// proxy Record-Routes, so the ACK comes through it); one never ACKed is
// freed after 64*T1, as RFC 3261's Timers H and L (RFC 6026) give up on
// it, so that a host answering 200 and never ACKing cannot hold the
// table.
type callEntry struct {
	src       netip.Addr // the caller's address: the per-source share
	started   time.Time
	confirmed bool
	timer     *time.Timer // frees the call unless confirmed
}

// StaleCall: a call without BYE for this long is swept (the phones lost
// each other, or a BYE was lost on a radio link).
const StaleCall = 6 * time.Hour

// Period is the main worker's heartbeat period: each period main beats if
// no handler has been on one message for longer (see Run), and an OPTIONS
// of its own goes through the real socket and handler to exercise them.
const Period = 2 * time.Second

// Server is the registrar/proxy.
type Server struct {
	log    *slog.Logger
	logs   *loglimit.Limiter
	rates  *health.Rates
	alerts Alerts
	token  string
	// secret keys the MAC in the branches this proxy creates, so that a
	// response can be told from a forged one; new at every start
	// (getrandom), never stored.
	secret siphash.Key

	cfgMu sync.Mutex
	cfg   config.SIP

	mu       sync.Mutex
	aors     map[string]*aor
	persist  persistState // the binding table's save state (persist.go)
	calls    map[uint64]*callEntry
	callsSrc map[netip.Addr]int // calls per source address
	names    map[string]bool
	ownAddrs map[netip.Addr]bool
	bound    netip.AddrPort
	port     atomic.Uint32
	udp      atomic.Pointer[udpSock]
	// boundFrom is the sip.listen setting bound is served from (s.mu);
	// the configured one differs while a new address cannot be bound.
	boundFrom string
	// relisten wakes Run to bind a changed sip.listen.
	relisten chan struct{}
	// ifaces lists this host's addresses (net.InterfaceAddrs; a test
	// makes it fail). While it fails ifacesErr is set, "interfaces_unreadable"
	// raised, and own addresses are found by ownByBindTest, remembered in
	// ownByBind (bounded by maxOwnByBind).
	ifaces    func() ([]net.Addr, error)
	ifacesErr bool
	ownByBind map[netip.Addr]bool

	txMu   sync.Mutex
	txUp   map[string]*proxyTx
	txDown map[string]*proxyTx
	txSrc  map[netip.Addr]int // transactions per source address

	fullMu sync.Mutex // orders the raising and clearing of sip_table_full
	full   [numTables]bool

	probeMu  sync.Mutex
	probes   map[string]chan int
	probeSeq atomic.Uint64

	tcpMu    sync.Mutex
	tcpConns map[netip.AddrPort]*tcpConn
	// tcpAlias maps the address a phone advertises in its Contact (its
	// listening port) to the connection it sent that request on: at most
	// one alias per connection, removed with it.
	tcpAlias map[netip.AddrPort]*tcpConn
	// tcpSuperseded holds the connections whose address another
	// connection entered later took in tcpConns (see addConn): still
	// open and served until they close, so counted with tcpConns
	// (tcpCountLocked) against sip.tcp_max_connections.
	tcpSuperseded map[*tcpConn]struct{}
	tcpServe      tcpServing // how a connection is served (set by acceptTCP)
	// tcpLn is the installed endpoint's TCP listener (install): only its
	// acceptor may set tcpServe.
	tcpLn net.Listener
	// faults are failures a test injects, set before Run (nil: none).
	faults  tcpFaults
	dialing atomic.Int64 // outgoing connections being made

	registers atomic.Int64
	// messages counts every message a reader delimited (a datagram, a
	// framed or refused stream message, a stream message cut short);
	// each ends as exactly one of handled, malformed, shed for its size
	// or a handler panic, so that the four add up to it.
	messages     atomic.Int64
	handled      atomic.Int64
	malformed    atomic.Int64
	callsTotal   atomic.Int64
	evicted      atomic.Int64
	acceptErrors atomic.Int64
	dialErrors   atomic.Int64 // connections to phones (dialTCP) that failed: the connect, or their entry into the epoll set
	pollErrors   atomic.Int64 // connections closed because the epoll set could not arm them again
	shed         [numShed]atomic.Int64
	forged       atomic.Int64 // responses whose branch MAC did not verify
	callsExpired atomic.Int64 // calls freed because their 2xx was never ACKed

	readers []*reader
	ready   chan struct{}

	// udpBufs are the UDP readers' receive buffers (buffers.go), chunks
	// the TCP connections' buffers for an incomplete message.
	udpBufs udpBufs
	chunks  chunkPool

	// panics: recovered handler panics (see recover.go).
	panics panicState
	// stuck, in fault builds only, makes the handler hang (see faults_on.go).
	stuck atomic.Pointer[chan struct{}]
}

// New prepares a server; Run listens.
func New(cfg config.SIP, log *slog.Logger, rates *health.Rates, alerts Alerts) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The token needs only to differ between starts and from another
	// phonebookd on the path: math/rand/v2's functions draw from the
	// runtime's ChaCha8 generator, seeded from the kernel at start.
	var tok [4]byte
	binary.LittleEndian.PutUint32(tok[:], rand.Uint32())
	s := &Server{cfg: cfg, log: log, logs: loglimit.New(log, 5, time.Minute, nil), rates: rates, alerts: alerts,
		token: hex.EncodeToString(tok[:]), aors: map[string]*aor{}, calls: map[uint64]*callEntry{}, callsSrc: map[netip.Addr]int{},
		names: map[string]bool{}, ownAddrs: map[netip.Addr]bool{}, ifaces: net.InterfaceAddrs, ownByBind: map[netip.Addr]bool{},
		txUp: map[string]*proxyTx{}, txDown: map[string]*proxyTx{}, txSrc: map[netip.Addr]int{}, probes: map[string]chan int{},
		tcpConns: map[netip.AddrPort]*tcpConn{}, tcpAlias: map[netip.AddrPort]*tcpConn{}, tcpSuperseded: map[*tcpConn]struct{}{}, ready: make(chan struct{}), relisten: make(chan struct{}, 1)}
	secret, err := siphash.RandomKey()
	if err != nil {
		// As crypto/rand would: without random bytes no branch can be
		// signed, and this is at start, not input from the network.
		panic(fmt.Sprintf("sip: %v", err))
	}
	s.secret = secret
	return s
}

func (s *Server) config() config.SIP {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	return s.cfg
}

// Configure applies reloaded settings. A changed listen address is bound
// by the running worker (Run), the old one serving until the new one is
// bound; the message size applies when the worker restarts.
func (s *Server) Configure(cfg config.SIP) {
	s.cfgMu.Lock()
	cfg.MaxMessageSize = s.cfg.MaxMessageSize
	changed := cfg.Listen != s.cfg.Listen
	s.cfg = cfg
	s.cfgMu.Unlock()
	if changed {
		s.kickRelisten()
	}
}

// Addr is the bound UDP address once Run has started listening.
func (s *Server) Addr() string {
	<-s.ready
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bound.String()
}

// advertise is our address when no arrival address is known (probes):
// the bound one, or with a wildcard the first non-loopback IPv4.
func (s *Server) advertise() netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.bound.Addr(); a.IsValid() && !a.IsUnspecified() {
		return a
	}
	best := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	for a := range s.ownAddrs {
		if a.Is4() && !a.IsLoopback() && (best.IsLoopback() || a.Less(best)) {
			best = a
		}
	}
	return best
}

// refreshNames re-reads this node's addresses and names, so that a phone
// addressing the node by a new address is recognised without a restart.
func (s *Server) refreshNames() {
	addrs, err := s.interfaceAddrs()
	names := map[string]bool{"localhost": true}
	for a := range addrs {
		names[a.String()] = true
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		h = strings.ToLower(h)
		names[h] = true
		names[h+"."+strings.ToLower(s.config().DNSSuffix)] = true
	}
	s.mu.Lock()
	was := s.ifacesErr
	s.ownAddrs, s.names, s.ifacesErr = addrs, names, err != nil
	clear(s.ownByBind)
	s.mu.Unlock()
	switch {
	case err != nil && !was:
		s.log.Warn("sip: this host's addresses cannot be read; own addresses are tested by binding them", "err", err)
		s.alerts.SetUnhealthy(health.InterfacesUnreadable, "", health.Args{health.ArgError: err.Error()})
	case err == nil && was:
		s.alerts.SetHealthy(health.InterfacesUnreadable, "")
	}
}

// reader owns one goroutine's buffers: nothing is allocated per message
// but the message's one string.
type reader struct {
	s     *Server
	buf   []byte
	ubuf  *udpBuf // buf's mapping, for a UDP reader (nil: buf is a heap slice)
	oobIn []byte
	name  rawName
	oob   oobCache
	msg   Msg
	out   []byte
	extra []byte
	via   []byte
	// busy is when the message being handled arrived (unix ns, 0 idle):
	// the heartbeat checks that no handler is stuck.
	busy atomic.Int64
	// rejected: the message being handled was answered as malformed.
	rejected bool
}

// newReader makes a reader; size > 0 gives it a heap buffer of that size
// (a TCP reader's chunk, see tcppoll.go; tests that drive handle
// directly), 0 none (the UDP reader's is a mapping, set by serve).
func newReader(s *Server, size int) *reader {
	r := &reader{s: s, oobIn: make([]byte, 128),
		msg: Msg{Headers: make([]Header, 0, 24)}, out: make([]byte, 0, 1500), extra: make([]byte, 0, 512), via: make([]byte, 0, 64)}
	if size > 0 {
		r.buf = make([]byte, size)
	}
	return r
}

// endpoint is what the server listens on: one sip.listen setting bound
// to its UDP socket, its TCP listener (nil with TCP off) and the client
// socket the heartbeat's OPTIONS go from.
type endpoint struct {
	addr  string // the setting it was bound from
	bound netip.AddrPort
	udp   *udpSock
	ln    net.Listener
	probe *net.UDPConn
	// drain receives the self-probe's answers, which are dropped: a
	// short buffer (the rest of a datagram is discarded by the kernel),
	// kept here so that each period allocates none.
	drain [64]byte
}

func (e *endpoint) close() {
	e.udp.Close()
	if e.ln != nil {
		e.ln.Close()
	}
	e.probe.Close()
}

// listenAt binds a sip.listen address for UDP and, with tcp, TCP on the
// same port.
func listenAt(addr string, tcp bool) (*endpoint, error) {
	return bindPair(addr, tcp, listenTCP)
}

// anyPortTries bounds how many ports a sip.listen with port 0 tries
// before its TCP half is reported busy.
const anyPortTries = 16

// bindPair binds addr for UDP and, with tcp, TCP on the port UDP got
// (listen binds the TCP half). Port 0 asks for any port: the kernel
// picks the UDP port alone, and the same number may be taken for TCP,
// so another port is tried, up to anyPortTries; a fixed port is tried
// once, its error reported as it is.
func bindPair(addr string, tcp bool, listen func(netip.AddrPort) (net.Listener, error)) (*endpoint, error) {
	anyPort := false
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		anyPort = ap.Port() == 0
	}
	var ep *endpoint
	for try := 1; ; try++ {
		udp, err := listenUDP(addr)
		if err != nil {
			return nil, fmt.Errorf("sip: %w", err) // listenUDP names the address
		}
		ep = &endpoint{addr: addr, bound: udp.LocalAddr(), udp: udp}
		if !tcp {
			break
		}
		if ep.ln, err = listen(ep.bound); err == nil {
			break
		}
		udp.Close()
		if !anyPort || !errors.Is(err, unix.EADDRINUSE) || try == anyPortTries {
			return nil, fmt.Errorf("sip: %w", err) // listenTCP names the address
		}
	}
	var err error
	if ep.probe, err = selfProbeSocket(ep.bound); err != nil {
		ep.udp.Close()
		if ep.ln != nil {
			ep.ln.Close()
		}
		return nil, fmt.Errorf("sip: self-probe socket: %w", err)
	}
	return ep, nil
}

// Run is the "main" worker: it serves until ctx ends. A listen address
// that cannot be bound is a health.Blocked error: the supervisor retries
// it with backoff and reports it, never exits for it.
//
// A changed sip.listen (Configure) is bound on the running worker; while
// the new address cannot be bound the old one keeps serving and
// "sip_listen" names the address (retried every 15 periods).
//
// Its heartbeat follows the handlers' progress, not an answer that queues
// behind a flood: each Period main beats if every reader is waiting for a
// datagram or has been on its current message for at most half a Period
// (see progress).
// A reader that keeps completing messages is alive however deep the queue
// behind it (that is overload: shed, counted, "overload"); one held on a
// single message is a hang, and main stops beating.
func (s *Server) Run(ctx context.Context, w *supervisor.Worker) error {
	cfg := s.config()
	ep, err := listenAt(cfg.Listen, cfg.TCPMaxConnections > 0)
	if err != nil {
		// A restarted worker whose new address cannot be bound goes back
		// to the one it served on: the old address keeps serving.
		prev, prevBound := s.listening()
		if prev == "" || prev == cfg.Listen {
			return supervisor.Blocked(err)
		}
		old, oerr := reopen(prev, prevBound, cfg.TCPMaxConnections > 0)
		if oerr != nil {
			return supervisor.Blocked(err)
		}
		s.listenFailed(cfg.Listen, old, err)
		ep = old
	}
	s.install(ep)
	s.refreshNames()
	s.resetCalls() // a restart starts with no calls: no phantom calls
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}

	var wg sync.WaitGroup
	readers := s.serve(ctx, w, ep, &wg)
	stop := func() {
		ep.close()
		s.closeTCP()
		wg.Wait()
	}
	tick := time.NewTicker(Period)
	defer tick.Stop()
	var lastShed [numShed]int64
	var drops uint32 // the socket's own count of datagrams the kernel dropped
	overloaded, atCapacity := false, false
	n := 0
	// No beat before the first look at the readers (a restart of a stuck
	// handler must not look alive); main's own OPTIONS goes in first.
	s.exercise(ep)
	for {
		select {
		case <-ctx.Done():
			stop()
			return nil
		case <-s.relisten:
			next, err := s.rebind(ep)
			if err != nil {
				stop()
				return supervisor.Blocked(err)
			}
			if next != ep {
				ep, drops = next, 0
				readers = s.serve(ctx, w, ep, &wg)
				s.exercise(ep)
			}
			continue
		case <-tick.C:
		}
		if ok, why := progress(readers, time.Now()); ok {
			w.Beat()
		} else {
			s.logs.Log(slog.LevelWarn, "stuck", "sip: a handler is stuck; main not beating", "why", why)
		}
		s.exercise(ep)
		if d, ok := ep.udp.drops(); ok {
			if d != drops { // uint32 arithmetic: right across the kernel's wrap
				s.shed[ShedReceiveQueue].Add(int64(d - drops))
			}
			drops = d
		}
		overloaded, atCapacity = s.checkOverload(&lastShed, overloaded, atCapacity)
		if n++; n%15 == 0 {
			s.refreshNames()
			if s.config().Listen != ep.addr {
				s.kickRelisten() // retry an address that could not be bound
			}
		}
	}
}

// serve starts an endpoint's readers and TCP acceptor, which end when its
// sockets close, and returns the readers for the heartbeat.
func (s *Server) serve(ctx context.Context, w *supervisor.Worker, ep *endpoint, wg *sync.WaitGroup) []*reader {
	// One reader: threads blocked in recvmsg on one UDP socket are all
	// woken for every datagram, so a second reader doubled the CPU per
	// REGISTER (26-32 us against 12-14 us measured at 5,000/s). One
	// reader answers some 70,000 datagrams a second here; should a node
	// ever need more, SO_REUSEPORT sockets, one per reader, would scale.
	const n = 1
	readers := make([]*reader, n)
	size := s.config().MaxMessageSize
	for i := range readers {
		r := newReader(s, 0)
		u := s.udpBufs.get(size)
		r.buf, r.ubuf = u.b[:size], u
		readers[i] = r
		wg.Add(1)
		w.GoThread(func() {
			defer wg.Done()
			defer s.udpBufs.put(u)
			r.serveUDP(ep.udp)
		})
	}
	if ep.ln != nil {
		wg.Add(1)
		w.Go(func() { defer wg.Done(); s.acceptTCP(ctx, ep.ln, w) })
	}
	s.mu.Lock()
	s.readers = readers
	s.mu.Unlock()
	s.log.Info("sip listening", "udp", ep.bound.String(), "tcp", ep.ln != nil, "readers", n)
	return readers
}

// install makes ep the address the server answers, sends and advertises
// from.
func (s *Server) install(ep *endpoint) {
	s.mu.Lock()
	s.bound, s.boundFrom = ep.bound, ep.addr
	s.mu.Unlock()
	s.port.Store(uint32(ep.bound.Port()))
	s.udp.Store(ep.udp)
	s.tcpMu.Lock()
	s.tcpLn = ep.ln
	s.tcpMu.Unlock()
}

// listening is the sip.listen setting the server last served on ("" before
// it first listened) and the address it was bound to.
func (s *Server) listening() (string, netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.boundFrom, s.bound
}

// reopen binds the address a setting was bound to before (the same port
// when the setting said port 0), so that phones find it where it was.
func reopen(setting string, bound netip.AddrPort, tcp bool) (*endpoint, error) {
	ep, err := listenAt(bound.String(), tcp)
	if err != nil {
		return nil, err
	}
	ep.addr = setting
	return ep, nil
}

// kickRelisten asks Run to bind the configured address.
func (s *Server) kickRelisten() {
	select {
	case s.relisten <- struct{}{}:
	default:
	}
}

// rebind moves the server from cur to the sip.listen address now
// configured and returns the endpoint it serves on: the new one, or cur
// (with "sip_listen" raised) when the new address cannot be bound. The
// new sockets are bound before the old ones close; an address that
// overlaps the old one (127.0.0.1:5060 to 0.0.0.0:5060) can only be bound
// once the old one is closed, and the old one is bound again at once if
// it fails. Only if that too fails (another program took the port in
// between) is the error returned, for the supervisor to retry.
func (s *Server) rebind(cur *endpoint) (*endpoint, error) {
	cfg := s.config()
	if cfg.Listen == cur.addr {
		s.alerts.SetHealthy(health.SIPListen, "")
		return cur, nil
	}
	tcp := cfg.TCPMaxConnections > 0
	next, err := listenAt(cfg.Listen, tcp)
	if err != nil && errors.Is(err, unix.EADDRINUSE) && overlaps(cfg.Listen, cur.bound) {
		cur.close()
		s.closeTCP()
		if next, err = listenAt(cfg.Listen, tcp); err != nil {
			old, oerr := reopen(cur.addr, cur.bound, cur.ln != nil)
			if oerr != nil {
				return nil, fmt.Errorf("%w; and the old address again: %w", err, oerr)
			}
			s.install(old)
			s.listenFailed(cfg.Listen, old, err)
			return old, nil
		}
	} else if err != nil {
		s.listenFailed(cfg.Listen, cur, err)
		return cur, nil
	} else {
		cur.close()
		s.closeTCP()
	}
	s.install(next)
	s.alerts.SetHealthy(health.SIPListen, "")
	s.log.Info("sip: listen address changed", "from", cur.bound.String(), "to", next.bound.String())
	return next, nil
}

// overlaps reports whether a listen setting shares cur's port and could
// collide with it (the same address or a wildcard).
func overlaps(setting string, cur netip.AddrPort) bool {
	ap, err := netip.ParseAddrPort(setting)
	if err != nil || ap.Port() != cur.Port() {
		return false
	}
	a, b := ap.Addr().Unmap(), cur.Addr().Unmap()
	return a == b || a.IsUnspecified() || b.IsUnspecified()
}

// listenFailed raises "sip_listen": the configured address cannot be
// bound and the server still answers on the old one.
func (s *Server) listenFailed(addr string, serving *endpoint, err error) {
	s.logs.Log(slog.LevelError, "listen", "sip: new listen address cannot be bound; the old one keeps serving",
		"listen", addr, "serving", serving.bound.String(), "err", err.Error())
	s.alerts.SetUnhealthy(health.SIPListen, "", health.Args{health.ArgPath: addr, health.ArgError: err.Error(), health.ArgDetail: serving.bound.String()})
}

// selfProbeSocket is a client socket on the listener's own address
// family, from which the heartbeat's OPTIONS go.
func selfProbeSocket(bound netip.AddrPort) (*net.UDPConn, error) {
	if bound.Addr().Unmap().Is4() {
		return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	}
	return net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
}

// exercise sends one OPTIONS through the real socket and handler each
// period, so that a handler that would hang (a lock never released) is
// caught even when no phone sends anything. Its answers are read and
// dropped: whether one came does not decide liveness, since under a flood
// the OPTIONS waits behind thousands of datagrams or is dropped with them.
func (s *Server) exercise(ep *endpoint) {
	c, bound := ep.probe, ep.bound
	c.SetReadDeadline(time.Now()) // drain what came since the last period
	for {
		if _, err := c.Read(ep.drain[:]); err != nil {
			break
		}
	}
	to := bound
	if a := bound.Addr(); a.IsUnspecified() {
		if a.Is4() {
			to = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), bound.Port())
		} else {
			to = netip.AddrPortFrom(netip.IPv6Loopback(), bound.Port())
		}
	}
	seq := s.probeSeq.Add(1)
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	id := "selfprobe-" + s.token + "-" + strconv.FormatUint(seq, 10)
	msg := "OPTIONS sip:" + to.String() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + local.String() + ";branch=z9hG4bK" + id +
		"\r\nMax-Forwards: 70\r\nFrom: <sip:selfprobe@" + local.String() + ">;tag=" + s.token + "\r\nTo: <sip:" + to.String() +
		">\r\nCall-ID: " + id + "\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	c.WriteToUDPAddrPort([]byte(msg), to) // a failure shows as no progress, or not at all: it does not judge
}

// progress judges the readers at a tick: alive when each is waiting for
// a datagram or has been on its current message for at most half a
// Period. A reader that keeps completing messages under a flood is on
// each for microseconds, however deep the queue behind it; one held on a
// single message is a hang. (Half a Period, not "finished one since the
// last look": a restarted instance whose handler is stuck at once must
// not beat at its first look, or the watchdogs would be re-armed.)
func progress(readers []*reader, now time.Time) (bool, string) {
	for _, r := range readers {
		if b := r.busy.Load(); b != 0 && time.Duration(now.UnixNano()-b) > Period/2 {
			return false, "a SIP handler has been on one message for " + time.Duration(now.UnixNano()-b).Round(time.Millisecond).String()
		}
	}
	return true, ""
}

// checkOverload raises "overload" while anything is shed and
// "sip_capacity" while registrations are full; each only on a change.
func (s *Server) checkOverload(last *[numShed]int64, overloaded, atCapacity bool) (bool, bool) {
	var grew []string
	for i := range s.shed {
		if i == ShedStray {
			continue
		}
		if v := s.shed[i].Load(); v != last[i] {
			grew = append(grew, fmt.Sprintf("%s %d", shedNames[i], v-last[i]))
			last[i] = v
		}
	}
	if len(grew) > 0 {
		s.alerts.SetUnhealthy(health.Overload, "", health.Args{health.ArgDetail: Period.String(), health.ArgError: strings.Join(grew, ", ")})
		overloaded = true
	} else if overloaded {
		s.alerts.SetHealthy(health.Overload, "")
		overloaded = false
	}
	cfg := s.config()
	s.mu.Lock()
	full := len(s.aors) >= cfg.MaxBindings
	s.mu.Unlock()
	switch {
	case full && !atCapacity:
		s.alerts.SetUnhealthy(health.SIPCapacity, "", health.Args{health.ArgLimit: strconv.Itoa(cfg.MaxBindings)})
	case !full && atCapacity:
		s.alerts.SetHealthy(health.SIPCapacity, "")
	}
	return overloaded, full
}

func (s *Server) shedCount(cause int) { s.shed[cause].Add(1) }

// sipError counts an error the server answered or met.
func (s *Server) sipError() { s.rates.Add(health.CategorySIP, 1) }

// serveUDP reads datagrams until the socket closes.
func (r *reader) serveUDP(u *udpSock) {
	for {
		n, from, local, err := u.read(&r.name, r.buf, r.oobIn)
		switch {
		case errors.Is(err, net.ErrClosed):
			return
		case err == errTruncated:
			r.s.messages.Add(1)
			r.s.shedCount(ShedMessageSize)
			r.s.logs.Log(slog.LevelWarn, "message-size", "sip: datagram too large; answered 513", "from", from.String())
			if b := badRequest(r.out[:0], string(r.buf[:n]), 513, "Message Too Large", from); b != nil {
				r.out = b
				u.write(b, from, local, &r.oob)
			}
			r.giveBack(n)
			continue
		case err != nil:
			continue // ICMP errors of earlier sends, and the like
		}
		r.handle(r.buf[:n], peer{addr: from, local: local})
		r.giveBack(n)
	}
}

// giveBack releases the pages of the receive buffer past the first that
// a datagram of n bytes touched: a large message's memory is not kept.
func (r *reader) giveBack(n int) {
	if r.ubuf != nil {
		r.ubuf.giveBack(n)
	}
}

// isKeepalive: CRLF keep-alives (RFC 5626) are not messages.
func isKeepalive(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// handle parses and answers one message. It is the one place where a
// message's outcome is counted (see done), and a panic in handling it is
// recovered there: the message is dropped and counted, and the reader
// goes on with the next.
func (r *reader) handle(data []byte, from peer) {
	if isKeepalive(data) {
		return
	}
	s := r.s
	s.messages.Add(1)
	now := time.Now()
	r.busy.Store(now.UnixNano())
	r.rejected = false
	defer r.done()
	s.faultHook()
	// The message's strings alias the reader's buffer, valid while it is
	// handled: whatever outlives the handler (a binding, a transaction)
	// is cloned where it is kept, so a message costs no allocation.
	raw := unsafe.String(&data[0], len(data))
	m := &r.msg
	if err := Parse(raw, m); err != nil {
		r.malformed(raw, from, err)
		return
	}
	if !m.Request {
		r.response(m, from)
		return
	}
	if m.Version != "SIP/2.0" { // RFC 3261 8.2.2.x: 505
		if m.Method != "ACK" {
			r.reply(m, from, 505, "Version Not Supported", nil)
		}
		s.sipError()
		return
	}
	if err := m.CheckRequest(); err != nil {
		if err == ErrCSeqMethod && !implemented(m.Method) {
			// RFC 4475 3.1.2.18: an unknown method is 501 whatever its
			// CSeq says, the answer that stays right once it is known.
			r.reject(m, from, 501, "Not Implemented", "method")
			return
		}
		r.malformed(m.Raw, from, err)
		return
	}
	if u, err := ParseURI(m.URI); err != nil {
		if err == ErrScheme {
			r.reject(m, from, 416, "Unsupported URI Scheme", "scheme")
		} else {
			r.malformed(m.Raw, from, err)
		}
		return
	} else if u.Headers != "" { // RFC 3261 19.1.1, RFC 4475 3.1.2.11
		r.malformed(m.Raw, from, perr("headers in the Request-URI"))
		return
	}
	switch m.Method {
	case "REGISTER", "OPTIONS":
		// This server answers both itself and supports no extension:
		// any Require (RFC 3261 8.2.2.3) or Proxy-Require (16.3 item 5)
		// is refused, naming the option tags (RFC 4475 3.3.5).
		if m.Has("require") || m.Has("proxy-require") {
			r.reject(m, from, 420, "Bad Extension", "require", r.appendUnsupported(m))
			return
		}
	}
	switch m.Method {
	case "REGISTER":
		transport := "UDP"
		if from.tcp != nil {
			transport = "TCP"
		}
		res := s.register(m, from.addr, from.local, transport, now, r.extra[:0])
		if res.shed {
			s.shedCount(ShedRegistrations)
		}
		if res.code >= 400 {
			s.sipError()
		}
		r.reply(m, from, res.code, res.reason, res.extra)
	case "OPTIONS":
		r.reply(m, from, 200, "OK", append(r.extra[:0], "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER\r\nAccept: application/sdp\r\n"...))
	case "INVITE", "ACK", "BYE", "CANCEL":
		r.proxyRequest(m, from, now)
	default:
		r.reject(m, from, 501, "Not Implemented", "method")
	}
}

// done ends the handling of one message: it counts the outcome and, when
// the handler panicked, recovers, so that no message can end the
// process or stop the reader (recover works here: done is the deferred
// function itself).
func (r *reader) done() {
	r.busy.Store(0)
	if v := recover(); v != nil {
		r.s.handlerPanic(v, debug.Stack())
		return
	}
	if r.rejected {
		r.s.malformed.Add(1)
	} else {
		r.s.handled.Add(1)
	}
}

// reply sends this server's answer to a request (never to an ACK).
func (r *reader) reply(m *Msg, to peer, code int, reason string, extra []byte) {
	if m.Method == "ACK" {
		return
	}
	r.out = appendResponse(r.out[:0], m, code, reason, to.addr, extra)
	if err := r.s.send(to, r.out, &r.oob); err != nil {
		r.s.logs.Log(slog.LevelDebug, "send", "sip: answer not sent", "to", to.addr.String(), "err", err)
	}
}

// reject answers an error, counts it, and logs one short rate-limited
// line for its cause; extra, if any, are header lines of the answer.
func (r *reader) reject(m *Msg, to peer, code int, reason, cause string, extra ...[]byte) {
	r.s.sipError()
	r.s.logs.Log(slog.LevelInfo, cause, "sip: request refused", "code", code, "from", to.addr.String(), "msg", m.Describe())
	var x []byte
	if len(extra) > 0 {
		x = extra[0]
	}
	r.reply(m, to, code, reason, x)
}

// appendUnsupported writes the Unsupported header of a 420: every
// option tag of the request's Require and Proxy-Require lines (RFC 3261
// 20.40), into the reader's extra buffer.
func (r *reader) appendUnsupported(m *Msg) []byte {
	b := append(r.extra[:0], "Unsupported: "...)
	n := 0
	for _, name := range [...]string{"require", "proxy-require"} {
		for it := m.iter(name); it.next(); {
			if n > 0 {
				b = append(b, ", "...)
			}
			b = append(b, it.val...)
			n++
		}
	}
	return append(b, "\r\n"...)
}

// implemented reports the methods this server handles; others get 501.
func implemented(method string) bool {
	switch method {
	case "REGISTER", "OPTIONS", "INVITE", "ACK", "BYE", "CANCEL":
		return true
	}
	return false
}

// malformed answers 400 where there is a Via to answer to, marks the
// message malformed (counted by done, or by the stream framing that
// refused it), and logs a short line (never the message).
func (r *reader) malformed(raw string, from peer, err error) {
	s := r.s
	r.rejected = true
	s.sipError()
	s.logs.Log(slog.LevelWarn, "malformed", "sip: malformed message", "from", from.addr.String(), "err", err.Error(), "bytes", len(raw))
	if b := badRequest(r.out[:0], raw, 400, "Bad Request", from.addr); b != nil {
		r.out = b
		s.send(from, b, &r.oob)
	}
}

// send writes a message to a peer.
func (s *Server) send(p peer, b []byte, cache *oobCache) error {
	if p.tcp != nil {
		return p.tcp.write(b)
	}
	u := s.udp.Load()
	if u == nil {
		return ErrNotRunning
	}
	if cache == nil {
		cache = &oobCache{}
	}
	return u.write(b, p.addr, p.local, cache)
}

// startCall enters a call whose INVITE was answered 2xx, from the
// caller at src; it stays unconfirmed until its ACK passes and is freed
// after 64*T1 without one. Past sip.max_calls it is not kept.
func (s *Server) startCall(callID string, src netip.Addr) {
	if callID == "" {
		return
	}
	h := fnv64(callID)
	cfg := s.config()
	s.mu.Lock()
	if _, ok := s.calls[h]; ok {
		s.mu.Unlock()
		return
	}
	if len(s.calls) >= cfg.MaxCalls { // answered past the bound: not tracked
		s.mu.Unlock()
		s.tableFull(tableCalls, cfg.MaxCalls)
		return
	}
	e := &callEntry{src: src, started: time.Now()}
	s.calls[h] = e
	s.callsSrc[src]++
	n := len(s.calls)
	e.timer = time.AfterFunc(64*s.t1(), func() { defer s.recoverPanic(); s.expireCall(h, e) })
	s.mu.Unlock()
	s.callsTotal.Add(1)
	if n >= cfg.MaxCalls {
		s.tableFull(tableCalls, cfg.MaxCalls)
	}
}

// expireCall frees a call whose 2xx was never ACKed.
func (s *Server) expireCall(h uint64, e *callEntry) {
	s.mu.Lock()
	if s.calls[h] != e || e.confirmed {
		s.mu.Unlock()
		return
	}
	s.dropCallLocked(h, e)
	n := len(s.calls)
	s.mu.Unlock()
	s.callsExpired.Add(1)
	s.logs.Log(slog.LevelInfo, "call-unacked", "sip: call freed: its 2xx was never ACKed within 64*T1")
	s.tableFreed(tableCalls, n, s.config().MaxCalls)
}

// dropCallLocked removes a call (s.mu held).
func (s *Server) dropCallLocked(h uint64, e *callEntry) {
	delete(s.calls, h)
	if e.timer != nil {
		e.timer.Stop()
	}
	if s.callsSrc[e.src]--; s.callsSrc[e.src] <= 0 {
		delete(s.callsSrc, e.src)
	}
}

// confirmCall marks a call established: its ACK passed.
func (s *Server) confirmCall(callID string) {
	s.mu.Lock()
	if e := s.calls[fnv64(callID)]; e != nil && !e.confirmed {
		e.confirmed = true
		e.timer.Stop()
	}
	s.mu.Unlock()
}

func (s *Server) endCall(callID string) {
	h := fnv64(callID)
	s.mu.Lock()
	e := s.calls[h]
	if e != nil {
		s.dropCallLocked(h, e)
	}
	n := len(s.calls)
	s.mu.Unlock()
	if e != nil {
		s.tableFreed(tableCalls, n, s.config().MaxCalls)
	}
}

// resetCalls forgets every call (the worker starts).
func (s *Server) resetCalls() {
	s.mu.Lock()
	for _, e := range s.calls {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	s.calls, s.callsSrc = map[uint64]*callEntry{}, map[netip.Addr]int{}
	s.mu.Unlock()
}

func (s *Server) activeCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// callsFrom is how many calls a source address holds.
func (s *Server) callsFrom(src netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callsSrc[src]
}

// tableFull raises "sip_table_full" for a table that reached its bound.
func (s *Server) tableFull(table, limit int) {
	s.fullMu.Lock()
	defer s.fullMu.Unlock()
	if s.full[table] || s.alerts == nil {
		return
	}
	s.full[table] = true
	s.alerts.SetUnhealthy(health.SIPTableFull, tableNames[table], health.Args{health.ArgLimit: strconv.Itoa(limit)})
}

// tableFreed clears "sip_table_full" once a table is below its bound.
func (s *Server) tableFreed(table, n, limit int) {
	s.fullMu.Lock()
	defer s.fullMu.Unlock()
	if !s.full[table] || n >= limit {
		return
	}
	s.full[table] = false
	s.alerts.SetHealthy(health.SIPTableFull, tableNames[table])
}

// Sweep drops expired bindings and stale calls (the safety worker's
// hygiene) and reports how many of each: a confirmed call without BYE
// for StaleCall, and (should its timer have been lost) an unconfirmed
// one past 64*T1.
func (s *Server) Sweep(now time.Time) (bindings, calls int) {
	unacked := 64 * s.t1()
	s.mu.Lock()
	bindings = s.sweepLocked(now, 0)
	for id, e := range s.calls {
		if age := now.Sub(e.started); age > StaleCall || (!e.confirmed && age > unacked) {
			s.dropCallLocked(id, e)
			calls++
		}
	}
	n := len(s.calls)
	s.mu.Unlock()
	if calls > 0 {
		s.tableFreed(tableCalls, n, s.config().MaxCalls)
	}
	return bindings, calls
}

// Counts reports registered users and active calls.
func (s *Server) Counts() (registered, active int) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.aors {
		for _, c := range a.contacts {
			if c.expires.After(now) {
				registered++
				break
			}
		}
	}
	return registered, len(s.calls)
}

// Shed returns the shed counters by cause name.
func (s *Server) Shed() map[string]int64 {
	out := make(map[string]int64, numShed)
	for i := range s.shed {
		out[shedNames[i]] = s.shed[i].Load()
	}
	return out
}

// Status is the sip section of "phonebook status": read as fields by
// the metrics and the page, encoded by each front through its json tags.
type Status struct {
	Listen              string     `json:"listen"`
	RegisteredUsers     int32      `json:"registered_users"`
	Bindings            int32      `json:"bindings"`
	ActiveCalls         int32      `json:"active_calls"`
	MaxBindings         int32      `json:"max_bindings"`
	Transactions        int32      `json:"transactions"`
	TCPConnections      int32      `json:"tcp_connections"`
	RegistrationsTotal  int64      `json:"registrations_total"`
	RejectedAtCapacity  int64      `json:"rejected_at_capacity"`
	MessagesTotal       int64      `json:"messages_total"`
	HandledTotal        int64      `json:"handled_total"`
	MalformedTotal      int64      `json:"malformed_total"`
	HandlerPanics       int64      `json:"handler_panics"`
	CallsTotal          int64      `json:"calls_total"`
	EvictedContacts     int64      `json:"evicted_contacts"`
	TCPAcceptErrors     int64      `json:"tcp_accept_errors"`
	TCPDialErrors       int64      `json:"tcp_dial_errors"` // connections to phones not made (unreachable, refused, timed out) or not served (the epoll set); not accepts
	TCPPollErrors       int64      `json:"tcp_poll_errors"` // connections closed because the epoll set could not watch them again (epoll_ctl EPOLL_CTL_MOD failed: memory short)
	ForgedResponses     int64      `json:"forged_responses"`
	CallsExpiredUnacked int64      `json:"calls_expired_unacked"`
	Shed                ShedCounts `json:"shed"`
}

// ShedCounts are the shed counters by cause, in the order of the causes.
type ShedCounts struct {
	Registrations         int64 `json:"registrations"`
	Transactions          int64 `json:"transactions"`
	Calls                 int64 `json:"calls"`
	TCPConnections        int64 `json:"tcp_connections"`
	MessageSize           int64 `json:"message_size"`
	StrayResponses        int64 `json:"stray_responses"`
	ReceiveQueue          int64 `json:"receive_queue"`
	TransactionsPerSource int64 `json:"transactions_per_source"`
	CallsPerSource        int64 `json:"calls_per_source"`
	TCPStalled            int64 `json:"tcp_stalled"`
}

// Causes lists the counters with their causes' names (as in
// shedNames), in order: the metrics' labels.
func (c *ShedCounts) Causes() [numShed]ShedCause {
	return [numShed]ShedCause{{shedNames[ShedRegistrations], c.Registrations}, {shedNames[ShedTransactions], c.Transactions},
		{shedNames[ShedCalls], c.Calls}, {shedNames[ShedTCPConnections], c.TCPConnections}, {shedNames[ShedMessageSize], c.MessageSize},
		{shedNames[ShedStray], c.StrayResponses}, {shedNames[ShedReceiveQueue], c.ReceiveQueue},
		{shedNames[ShedTxPerSource], c.TransactionsPerSource}, {shedNames[ShedCallsPerSource], c.CallsPerSource},
		{shedNames[ShedTCPStalled], c.TCPStalled}}
}

// ShedCause is one shed counter with its cause's name.
type ShedCause struct {
	Cause string
	Count int64
}

// Status is the sip section of "phonebook status".
func (s *Server) Status() Status {
	reg, active := s.Counts()
	cfg := s.config()
	s.mu.Lock()
	addr := s.bound.String()
	contacts := 0
	for _, a := range s.aors {
		contacts += len(a.contacts)
	}
	s.mu.Unlock()
	s.tcpMu.Lock()
	conns := s.tcpCountLocked()
	s.tcpMu.Unlock()
	sh := func(i int) int64 { return s.shed[i].Load() }
	return Status{
		Listen:              addr,
		RegisteredUsers:     int32(reg),
		Bindings:            int32(contacts),
		ActiveCalls:         int32(active),
		MaxBindings:         int32(cfg.MaxBindings),
		Transactions:        int32(s.Transactions()),
		TCPConnections:      int32(conns),
		RegistrationsTotal:  s.registers.Load(),
		RejectedAtCapacity:  sh(ShedRegistrations),
		MessagesTotal:       s.messages.Load(),
		HandledTotal:        s.handled.Load(),
		MalformedTotal:      s.malformed.Load(),
		HandlerPanics:       s.panics.count.Load(),
		CallsTotal:          s.callsTotal.Load(),
		EvictedContacts:     s.evicted.Load(),
		TCPAcceptErrors:     s.acceptErrors.Load(),
		TCPDialErrors:       s.dialErrors.Load(),
		TCPPollErrors:       s.pollErrors.Load(),
		ForgedResponses:     s.forged.Load(),
		CallsExpiredUnacked: s.callsExpired.Load(),
		Shed: ShedCounts{Registrations: sh(ShedRegistrations), Transactions: sh(ShedTransactions), Calls: sh(ShedCalls),
			TCPConnections: sh(ShedTCPConnections), MessageSize: sh(ShedMessageSize), StrayResponses: sh(ShedStray),
			ReceiveQueue: sh(ShedReceiveQueue), TransactionsPerSource: sh(ShedTxPerSource), CallsPerSource: sh(ShedCallsPerSource),
			TCPStalled: sh(ShedTCPStalled)},
	}
}

// ErrNotRunning: the server is not (yet) up, so nothing was sent.
var ErrNotRunning = errors.New("sip server not running")
