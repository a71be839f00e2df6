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
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/loglimit"
	"github.com/aredn/phonebookd/supervisor"
	"github.com/aredn/phonebookd/ubus"
)

// Alerts receives conditions for the health system: a code and its
// arguments; the health registry writes the words.
type Alerts interface {
	SetUnhealthy(code string, args health.Args)
	SetHealthy(code string)
}

// Causes of shed work, as counted in "phonebook status" sip.shed.
const (
	ShedRegistrations  = iota // new phone past sip.max_bindings: 503
	ShedTransactions          // INVITE past sip.max_transactions: 503
	ShedCalls                 // new call past sip.max_calls: 503
	ShedTCPConnections        // connection past sip.tcp_max_connections: closed
	ShedMessageSize           // message past sip.max_message_size: 513 or dropped
	ShedStray                 // response that is not ours: dropped
	ShedTxPerSource           // INVITE past sip.max_transactions_per_source: 503
	ShedCallsPerSource        // new call past sip.max_calls_per_source: 503
	numShed
)

var shedNames = [numShed]string{"registrations", "transactions", "calls", "tcp_connections", "message_size", "stray_responses",
	"transactions_per_source", "calls_per_source"}

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

// Period is the main worker's heartbeat period: each period a self-probe
// goes through the real socket and handler, and only its answer beats.
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
	// (crypto/rand), never stored.
	secret [32]byte

	cfgMu sync.Mutex
	cfg   config.SIP

	mu       sync.Mutex
	aors     map[string]*aor
	calls    map[uint64]*callEntry
	callsSrc map[netip.Addr]int // calls per source address
	names    map[string]bool
	ownAddrs map[netip.Addr]bool
	bound    netip.AddrPort
	port     atomic.Uint32
	udp      atomic.Pointer[udpSock]

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
	tcpServe tcpServing   // how a connection is served (set by acceptTCP)
	dialing  atomic.Int64 // outgoing connections being made

	registers    atomic.Int64
	malformed    atomic.Int64
	callsTotal   atomic.Int64
	evicted      atomic.Int64
	acceptErrors atomic.Int64
	shed         [numShed]atomic.Int64
	forged       atomic.Int64 // responses whose branch MAC did not verify
	callsExpired atomic.Int64 // calls freed because their 2xx was never ACKed

	readers []*reader
	ready   chan struct{}
	// stuck, in fault builds only, makes the handler hang (see faults_on.go).
	stuck atomic.Pointer[chan struct{}]
}

// New prepares a server; Run listens.
func New(cfg config.SIP, log *slog.Logger, rates *health.Rates, alerts Alerts) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var tok [4]byte
	rand.Read(tok[:])
	s := &Server{cfg: cfg, log: log, logs: loglimit.New(log, 5, time.Minute, nil), rates: rates, alerts: alerts,
		token: hex.EncodeToString(tok[:]), aors: map[string]*aor{}, calls: map[uint64]*callEntry{}, callsSrc: map[netip.Addr]int{},
		names: map[string]bool{}, ownAddrs: map[netip.Addr]bool{},
		txUp: map[string]*proxyTx{}, txDown: map[string]*proxyTx{}, txSrc: map[netip.Addr]int{}, probes: map[string]chan int{},
		tcpConns: map[netip.AddrPort]*tcpConn{}, tcpAlias: map[netip.AddrPort]*tcpConn{}, ready: make(chan struct{})}
	rand.Read(s.secret[:])
	return s
}

func (s *Server) config() config.SIP {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	return s.cfg
}

// Configure applies reloaded settings; the listen address and the socket
// sizes apply when the worker restarts.
func (s *Server) Configure(cfg config.SIP) {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	cfg.Listen, cfg.MaxMessageSize = s.cfg.Listen, s.cfg.MaxMessageSize
	s.cfg = cfg
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
	addrs := interfaceAddrs()
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
	s.ownAddrs, s.names = addrs, names
	s.mu.Unlock()
}

// reader owns one goroutine's buffers: nothing is allocated per message
// but the message's one string.
type reader struct {
	s     *Server
	buf   []byte
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
}

func newReader(s *Server, size int) *reader {
	return &reader{s: s, buf: make([]byte, size), oobIn: make([]byte, 128),
		msg: Msg{Headers: make([]Header, 0, 24)}, out: make([]byte, 0, 1500), extra: make([]byte, 0, 512), via: make([]byte, 0, 64)}
}

// Run is the "main" worker: it serves until ctx ends. A listen address
// that cannot be bound is a health.Blocked error: the supervisor retries
// it with backoff and reports it, never exits for it.
func (s *Server) Run(ctx context.Context, w *supervisor.Worker) error {
	cfg := s.config()
	udp, err := listenUDP(cfg.Listen)
	if err != nil {
		return supervisor.Blocked(fmt.Errorf("sip: listen udp %s: %w", cfg.Listen, err))
	}
	bound := udp.LocalAddr()
	var ln net.Listener
	if cfg.TCPMaxConnections > 0 {
		network := "tcp4"
		if !bound.Addr().Unmap().Is4() {
			network = "tcp6"
		}
		ln, err = net.Listen(network, bound.String())
		if err != nil {
			udp.Close()
			return supervisor.Blocked(fmt.Errorf("sip: listen tcp %s: %w", bound, err))
		}
	}
	probe, err := s.selfProbeSocket(bound)
	if err != nil {
		udp.Close()
		if ln != nil {
			ln.Close()
		}
		return fmt.Errorf("sip: self-probe socket: %w", err)
	}
	s.mu.Lock()
	s.bound = bound
	s.mu.Unlock()
	s.port.Store(uint32(bound.Port()))
	s.udp.Store(udp)
	s.refreshNames()
	s.resetCalls() // a restart starts with no calls: no phantom calls
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}

	var wg sync.WaitGroup
	// One reader: threads blocked in recvmsg on one UDP socket are all
	// woken for every datagram, so a second reader doubled the CPU per
	// REGISTER (26-32 us against 12-14 us measured at 5,000/s). One
	// reader answers some 70,000 datagrams a second here; should a node
	// ever need more, SO_REUSEPORT sockets, one per reader, would scale.
	const n = 1
	readers := make([]*reader, n)
	for i := range readers {
		r := newReader(s, cfg.MaxMessageSize)
		readers[i] = r
		wg.Add(1)
		w.GoThread(func() { defer wg.Done(); r.serveUDP(udp) })
	}
	s.mu.Lock()
	s.readers = readers
	s.mu.Unlock()
	if ln != nil {
		wg.Add(1)
		w.Go(func() { defer wg.Done(); s.acceptTCP(ctx, ln, w, &wg) })
	}
	s.log.Info("sip listening", "udp", bound.String(), "tcp", ln != nil, "readers", n)

	stop := func() {
		udp.Close()
		if ln != nil {
			ln.Close()
		}
		probe.Close()
		s.closeTCP()
		wg.Wait()
	}
	var lastShed [numShed]int64
	overloaded, atCapacity := false, false
	tick := 0
	for {
		if ok, why := s.selfProbe(ctx, probe, bound, readers); ok {
			w.Beat()
		} else if ctx.Err() == nil {
			s.logs.Log(slog.LevelWarn, "self-probe", "sip: self-probe failed; main not beating", "why", why)
		}
		if ctx.Err() != nil {
			stop()
			return nil
		}
		overloaded, atCapacity = s.checkOverload(&lastShed, overloaded, atCapacity)
		if tick++; tick%15 == 0 {
			s.refreshNames()
		}
	}
}

// selfProbeSocket is a client socket on the listener's own address
// family, from which the heartbeat's OPTIONS go.
func (s *Server) selfProbeSocket(bound netip.AddrPort) (*net.UDPConn, error) {
	if bound.Addr().Unmap().Is4() {
		return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	}
	return net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
}

// selfProbe sends one OPTIONS through the real socket and handler and
// waits up to a period for its answer; it succeeds only if the answer
// came and no handler has been busy for a period (a stuck handler).
func (s *Server) selfProbe(ctx context.Context, c *net.UDPConn, bound netip.AddrPort, readers []*reader) (bool, string) {
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
	deadline := time.Now().Add(Period)
	c.SetReadDeadline(deadline)
	if _, err := c.WriteToUDPAddrPort([]byte(msg), to); err != nil {
		return false, err.Error()
	}
	buf := make([]byte, 2048)
	answered := false
	for !answered {
		n, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return false, "stopping"
			}
			return false, "no answer to the self-probe within " + Period.String()
		}
		answered = strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") && strings.Contains(string(buf[:n]), id)
	}
	// Wait out the rest of the period (a beat per period), waking for a stop.
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(deadline)):
	}
	now := time.Now().UnixNano()
	for _, r := range readers {
		if b := r.busy.Load(); b != 0 && time.Duration(now-b) > Period {
			return false, "a SIP handler has been busy for " + time.Duration(now-b).Round(time.Millisecond).String()
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
		s.alerts.SetUnhealthy("overload", health.Args{health.ArgDetail: Period.String(), health.ArgError: strings.Join(grew, ", ")})
		overloaded = true
	} else if overloaded {
		s.alerts.SetHealthy("overload")
		overloaded = false
	}
	cfg := s.config()
	s.mu.Lock()
	full := len(s.aors) >= cfg.MaxBindings
	s.mu.Unlock()
	switch {
	case full && !atCapacity:
		s.alerts.SetUnhealthy("sip_capacity", health.Args{health.ArgLimit: strconv.Itoa(cfg.MaxBindings)})
	case !full && atCapacity:
		s.alerts.SetHealthy("sip_capacity")
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
			r.s.shedCount(ShedMessageSize)
			r.s.logs.Log(slog.LevelWarn, "message-size", "sip: datagram too large; answered 513", "from", from.String())
			if b := badRequest(r.out[:0], string(r.buf[:n]), 513, "Message Too Large", from); b != nil {
				r.out = b
				u.write(b, from, local, &r.oob)
			}
			continue
		case err != nil:
			continue // ICMP errors of earlier sends, and the like
		}
		r.handle(r.buf[:n], peer{addr: from, local: local})
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

// handle parses and answers one message.
func (r *reader) handle(data []byte, from peer) {
	if isKeepalive(data) {
		return
	}
	s := r.s
	now := time.Now()
	r.busy.Store(now.UnixNano())
	defer r.busy.Store(0)
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
		r.malformed(m.Raw, from, err)
		return
	}
	if _, err := ParseURI(m.URI); err != nil {
		if err == ErrScheme {
			r.reject(m, from, 416, "Unsupported URI Scheme", "scheme")
		} else {
			r.malformed(m.Raw, from, err)
		}
		return
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
// line for its cause.
func (r *reader) reject(m *Msg, to peer, code int, reason, cause string) {
	r.s.sipError()
	r.s.logs.Log(slog.LevelInfo, cause, "sip: request refused", "code", code, "from", to.addr.String(), "msg", m.Describe())
	r.reply(m, to, code, reason, nil)
}

// malformed answers 400 where there is a Via to answer to, counts it,
// and logs a short line (never the message).
func (r *reader) malformed(raw string, from peer, err error) {
	s := r.s
	s.malformed.Add(1)
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
	e.timer = time.AfterFunc(64*s.t1(), func() { s.expireCall(h, e) })
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
	s.alerts.SetUnhealthy("sip_table_full:"+tableNames[table], health.Args{health.ArgLimit: strconv.Itoa(limit)})
}

// tableFreed clears "sip_table_full" once a table is below its bound.
func (s *Server) tableFreed(table, n, limit int) {
	s.fullMu.Lock()
	defer s.fullMu.Unlock()
	if !s.full[table] || n >= limit {
		return
	}
	s.full[table] = false
	s.alerts.SetHealthy("sip_table_full:" + tableNames[table])
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

// Status is the sip section of "phonebook status".
func (s *Server) Status() ubus.Value {
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
	conns := len(s.tcpConns)
	s.tcpMu.Unlock()
	shed := ubus.Tbl("shed")
	for i := range s.shed {
		shed.List = append(shed.List, ubus.I64(shedNames[i], s.shed[i].Load()))
	}
	return ubus.Tbl("sip",
		ubus.Str("listen", addr),
		ubus.I32("registered_users", int32(reg)),
		ubus.I32("bindings", int32(contacts)),
		ubus.I32("active_calls", int32(active)),
		ubus.I32("max_bindings", int32(cfg.MaxBindings)),
		ubus.I32("transactions", int32(s.Transactions())),
		ubus.I32("tcp_connections", int32(conns)),
		ubus.I64("registrations_total", s.registers.Load()),
		ubus.I64("rejected_at_capacity", s.shed[ShedRegistrations].Load()),
		ubus.I64("malformed_total", s.malformed.Load()),
		ubus.I64("calls_total", s.callsTotal.Load()),
		ubus.I64("evicted_contacts", s.evicted.Load()),
		ubus.I64("tcp_accept_errors", s.acceptErrors.Load()),
		ubus.I64("forged_responses", s.forged.Load()),
		ubus.I64("calls_expired_unacked", s.callsExpired.Load()),
		shed,
	)
}

// ErrNotRunning: the server is not (yet) up, so nothing was sent.
var ErrNotRunning = errors.New("sip server not running")

// maxProbes bounds the OPTIONS probes waiting for an answer at once.
const maxProbes = 64

// Probe sends OPTIONS to host:port from the server's own socket and
// returns the round-trip time.
func (s *Server) Probe(ctx context.Context, target string) (time.Duration, error) {
	if s.udp.Load() == nil {
		return 0, ErrNotRunning
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		host, port = target, "5060"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ap, rerr := resolve(ctx, net.JoinHostPort(host, port))
		if rerr != nil {
			return 0, rerr
		}
		ip = ap.Addr()
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("probe %s: bad port", target)
	}
	dst := netip.AddrPortFrom(ip.Unmap(), uint16(p))
	branch := s.viaPrefix() + "p" + strconv.FormatUint(s.probeSeq.Add(1), 10)
	ch := make(chan int, 1)
	s.probeMu.Lock()
	if len(s.probes) >= maxProbes {
		s.probeMu.Unlock()
		return 0, errors.New("too many probes in flight")
	}
	s.probes[branch] = ch
	s.probeMu.Unlock()
	defer func() {
		s.probeMu.Lock()
		delete(s.probes, branch)
		s.probeMu.Unlock()
	}()
	via := string(s.selfVia(nil, netip.Addr{}))
	msg := "OPTIONS sip:" + dst.String() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + via + ";branch=" + branch +
		";rport\r\nMax-Forwards: 70\r\nFrom: <sip:phonebookd@" + via + ">;tag=" + s.token + "\r\nTo: <sip:" + dst.String() +
		">\r\nCall-ID: " + branch + "\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	t0 := time.Now()
	interval := s.t1()
	for {
		if err := s.send(peer{addr: dst}, []byte(msg), nil); err != nil {
			return 0, err
		}
		t := time.NewTimer(interval)
		select {
		case code := <-ch:
			t.Stop()
			if code >= 300 && code != 405 && code != 501 {
				return 0, fmt.Errorf("OPTIONS answered %d", code)
			}
			return time.Since(t0), nil
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
			interval = min(2*interval, 4*time.Second) // retransmit (Timer E)
		}
	}
}

// probeAnswer delivers the answer to a probe; reports whether it was one.
func (s *Server) probeAnswer(branch string, m *Msg) bool {
	s.probeMu.Lock()
	ch, ok := s.probes[branch]
	s.probeMu.Unlock()
	if ok && m.Status >= 200 {
		select {
		case ch <- m.Status:
		default:
		}
	}
	return ok
}
