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
	numShed
)

var shedNames = [numShed]string{"registrations", "transactions", "calls", "tcp_connections", "message_size", "stray_responses"}

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

	cfgMu sync.Mutex
	cfg   config.SIP

	mu       sync.Mutex
	aors     map[string]*aor
	persist  persistState // the binding table's save state (persist.go)
	calls    map[uint64]time.Time
	names    map[string]bool
	ownAddrs map[netip.Addr]bool
	bound    netip.AddrPort
	port     atomic.Uint32
	udp      atomic.Pointer[udpSock]

	txMu   sync.Mutex
	txUp   map[string]*proxyTx
	txDown map[string]*proxyTx

	probeMu  sync.Mutex
	probes   map[string]chan int
	probeSeq atomic.Uint64

	tcpMu    sync.Mutex
	tcpConns map[netip.AddrPort]*tcpConn

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
	shed         [numShed]atomic.Int64

	readers []*reader
	ready   chan struct{}

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
	var tok [4]byte
	rand.Read(tok[:])
	return &Server{cfg: cfg, log: log, logs: loglimit.New(log, 5, time.Minute, nil), rates: rates, alerts: alerts,
		token: hex.EncodeToString(tok[:]), aors: map[string]*aor{}, calls: map[uint64]time.Time{},
		names: map[string]bool{}, ownAddrs: map[netip.Addr]bool{},
		txUp: map[string]*proxyTx{}, txDown: map[string]*proxyTx{}, probes: map[string]chan int{},
		tcpConns: map[netip.AddrPort]*tcpConn{}, ready: make(chan struct{})}
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
	// rejected: the message being handled was answered as malformed.
	rejected bool
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
		return supervisor.Blocked(fmt.Errorf("sip: %w", err)) // listenUDP names the address
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
			return supervisor.Blocked(fmt.Errorf("sip: %w", err)) // net.Listen names the address
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
	s.mu.Lock()
	s.calls = map[uint64]time.Time{} // a restart starts with no calls: no phantom calls
	s.mu.Unlock()
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
			r.s.messages.Add(1)
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

func (s *Server) startCall(callID string) {
	if callID == "" {
		return
	}
	h := fnv64(callID)
	s.mu.Lock()
	if _, ok := s.calls[h]; !ok && len(s.calls) < s.config().MaxCalls {
		s.calls[h] = time.Now()
		s.callsTotal.Add(1)
	}
	s.mu.Unlock()
}

func (s *Server) endCall(callID string) {
	s.mu.Lock()
	delete(s.calls, fnv64(callID))
	s.mu.Unlock()
}

func (s *Server) activeCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// Sweep drops expired bindings and stale calls (the safety worker's
// hygiene) and reports how many of each.
func (s *Server) Sweep(now time.Time) (bindings, calls int) {
	s.mu.Lock()
	bindings = s.sweepLocked(now, 0)
	for id, t := range s.calls {
		if now.Sub(t) > StaleCall {
			delete(s.calls, id)
			calls++
		}
	}
	s.mu.Unlock()
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
		ubus.I64("messages_total", s.messages.Load()),
		ubus.I64("handled_total", s.handled.Load()),
		ubus.I64("malformed_total", s.malformed.Load()),
		ubus.I64("handler_panics", s.panics.count.Load()),
		ubus.I64("calls_total", s.callsTotal.Load()),
		ubus.I64("evicted_contacts", s.evicted.Load()),
		ubus.I64("tcp_accept_errors", s.acceptErrors.Load()),
		shed,
	)
}

// ErrNotRunning: the server is not (yet) up, so nothing was sent.
var ErrNotRunning = errors.New("sip server not running")
