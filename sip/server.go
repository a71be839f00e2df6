// Package sip is phonebookd's SIP registrar and proxy (the "main" worker),
// on github.com/emiago/sipgo: phones REGISTER without authentication (the
// mesh trust model), INVITE a number and are routed to its registered
// binding or to <number>.<dns_suffix>, with Record-Route so that the
// dialog stays through the proxy. It never answers 200 for a binding it
// does not keep, counts what goes wrong, and reports active calls and
// registrations from real traffic.
package sip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	gosip "github.com/emiago/sipgo/sip"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/ubus"
)

// Alerts receives conditions for the health system.
type Alerts interface {
	SetCondition(health.Condition)
	ClearCondition(code string)
}

// Binding is one registered phone.
type Binding struct {
	User    string
	Contact gosip.Uri
	Addr    string // host:port requests are sent to
	Expires time.Time
}

type call struct {
	started time.Time
}

// StaleCall: a call without BYE for this long is swept (the phones lost
// each other, or a BYE was lost on a radio link).
const StaleCall = 6 * time.Hour

// Server is the registrar/proxy.
type Server struct {
	log    *slog.Logger
	rates  *health.Rates
	alerts Alerts

	mu       sync.Mutex
	cfg      config.SIP
	bindings map[string]*Binding
	calls    map[string]*call
	addr     string // the bound UDP address
	host     string // advertised in Via and Record-Route
	self     map[string]bool

	registers  atomic.Int64
	rejected   atomic.Int64
	malformed  atomic.Int64
	callsTotal atomic.Int64
	ready      chan struct{}

	client *sipgo.Client
}

// New prepares a server; Run listens.
func New(cfg config.SIP, log *slog.Logger, rates *health.Rates, alerts Alerts) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, rates: rates, alerts: alerts,
		bindings: map[string]*Binding{}, calls: map[string]*call{}, ready: make(chan struct{})}
}

// Configure applies reloaded settings (the listen address needs a restart).
func (s *Server) Configure(cfg config.SIP) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg.Listen = s.cfg.Listen
	s.cfg = cfg
}

// Addr is the bound UDP address once Run has started listening.
func (s *Server) Addr() string {
	<-s.ready
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// advertiseHost is the address put in Via and Record-Route: the listen
// host, or with a wildcard listen address the first non-loopback IPv4.
func advertiseHost(listen string) string {
	host, _, _ := net.SplitHostPort(listen)
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return host
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// Run is the "main" worker: it serves until ctx ends.
func (s *Server) Run(ctx context.Context, w *health.Worker) error {
	s.mu.Lock()
	listen := s.cfg.Listen
	s.mu.Unlock()
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fmt.Errorf("sip: listen udp %s: %w", listen, err)
	}
	host := advertiseHost(pc.LocalAddr().String())
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("phonebookd"), sipgo.WithUserAgentHostname(host))
	if err != nil {
		pc.Close()
		return fmt.Errorf("sip: %w", err)
	}
	defer ua.Close()
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(s.log))
	if err != nil {
		pc.Close()
		return fmt.Errorf("sip: %w", err)
	}
	p, _ := strconv.Atoi(port)
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientPort(p), sipgo.WithClientLogger(s.log))
	if err != nil {
		pc.Close()
		return fmt.Errorf("sip: %w", err)
	}
	s.mu.Lock()
	s.addr, s.host, s.client = pc.LocalAddr().String(), host, client
	s.self = selfNames(host, s.cfg.DNSSuffix)
	// A restart of the worker starts with no calls: no phantom calls.
	s.calls = map[string]*call{}
	s.mu.Unlock()
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}

	srv.OnRegister(s.onRegister)
	srv.OnInvite(s.proxy)
	srv.OnBye(s.proxy)
	srv.OnAck(s.onAck)
	srv.OnCancel(s.proxy)
	srv.OnOptions(func(req *gosip.Request, tx gosip.ServerTransaction) {
		res := gosip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(gosip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER"))
		tx.Respond(res)
	})
	srv.OnNoRoute(func(req *gosip.Request, tx gosip.ServerTransaction) {
		tx.Respond(gosip.NewResponseFromRequest(req, 501, "Not Implemented", nil))
	})

	errc := make(chan error, 2)
	guard := &guardConn{PacketConn: pc, s: s}
	go func() { errc <- srv.ServeUDP(guard) }()
	if tl, err := net.Listen("tcp", pc.LocalAddr().String()); err == nil {
		go func() { errc <- srv.ServeTCP(tl) }()
		defer tl.Close()
	} else {
		s.log.Info("sip: TCP not available; UDP only", "err", err)
	}
	s.log.Info("sip listening", "addr", pc.LocalAddr().String(), "advertise", host)
	defer pc.Close()
	for {
		if err := w.Wait(ctx, 10*time.Second); err != nil {
			srv.Close()
			return nil
		}
		select {
		case err := <-errc:
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("sip: serve: %w", err)
		default:
		}
	}
}

func (s *Server) reply(tx gosip.ServerTransaction, req *gosip.Request, code int, reason string, hdrs ...gosip.Header) {
	res := gosip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		s.log.Debug("sip: respond", "code", code, "err", err)
	}
}

// sipError counts an error response the server generated.
func (s *Server) sipError(why string) {
	s.rates.Add(health.CategorySIP, 1)
	s.log.Debug("sip error", "why", why)
}

func (s *Server) onRegister(req *gosip.Request, tx gosip.ServerTransaction) {
	if err := tx.Respond(s.register(req)); err != nil {
		s.log.Debug("sip: respond to REGISTER", "err", err)
	}
}

func response(req *gosip.Request, code int, reason string, hdrs ...gosip.Header) *gosip.Response {
	res := gosip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	return res
}

// register handles a REGISTER and returns its answer. It is stateless
// (a repeated REGISTER does the same again), so the UDP path answers it
// without a transaction.
func (s *Server) register(req *gosip.Request) *gosip.Response {
	to := req.To()
	if to == nil || to.Address.User == "" {
		s.sipError("REGISTER without a To user")
		return response(req, 400, "Bad Request: To user missing")
	}
	user := to.Address.User
	contact := req.Contact()
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	expires := cfg.DefaultExpires
	if h := req.GetHeader("Expires"); h != nil {
		n, err := strconv.Atoi(strings.TrimSpace(h.Value()))
		if err != nil || n < 0 {
			s.sipError("bad Expires")
			return response(req, 400, "Bad Request: Expires")
		}
		expires = n
	}
	if contact != nil {
		if v, ok := contact.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				expires = n
			}
		}
	}
	expires = min(expires, 86400)
	now := time.Now()
	if contact == nil { // a query: list the binding
		s.mu.Lock()
		b := s.bindings[user]
		s.mu.Unlock()
		var hs []gosip.Header
		if b != nil {
			hs = append(hs, gosip.NewHeader("Contact", fmt.Sprintf("<%s>;expires=%d", b.Contact.String(), int(time.Until(b.Expires).Seconds()))))
		}
		return response(req, 200, "OK", hs...)
	}
	if expires == 0 || contact.Address.Wildcard {
		s.mu.Lock()
		delete(s.bindings, user)
		s.mu.Unlock()
		s.capacityCheck()
		return response(req, 200, "OK", gosip.NewHeader("Expires", "0"))
	}
	addr := hostPort(contact.Address)
	s.mu.Lock()
	b, known := s.bindings[user]
	if !known && len(s.bindings) >= cfg.MaxBindings {
		s.sweepLocked(now) // expired bindings do not hold places
	}
	if !known && len(s.bindings) >= cfg.MaxBindings {
		s.mu.Unlock()
		s.rejected.Add(1)
		s.alerts.SetCondition(health.Condition{Code: "sip_capacity", Level: health.LevelWarning, Penalty: 10,
			Message:        fmt.Sprintf("Registrations at capacity (%d): new phones are refused with 503", cfg.MaxBindings),
			Recommendation: "Raise phonebook.sip.max_bindings if the router has the memory, or move phones to another node."})
		return response(req, 503, "Service Unavailable: registrations at capacity", gosip.NewHeader("Retry-After", "60"))
	}
	if !known {
		b = &Binding{User: user}
		s.bindings[user] = b
	}
	b.Contact, b.Addr, b.Expires = contact.Address, addr, now.Add(time.Duration(expires)*time.Second)
	s.mu.Unlock()
	s.registers.Add(1)
	return response(req, 200, "OK",
		gosip.NewHeader("Contact", fmt.Sprintf("<%s>;expires=%d", contact.Address.String(), expires)),
		gosip.NewHeader("Expires", strconv.Itoa(expires)))
}

// sweepLocked drops expired bindings (s.mu held).
func (s *Server) sweepLocked(now time.Time) int {
	n := 0
	for u, b := range s.bindings {
		if !b.Expires.After(now) {
			delete(s.bindings, u)
			n++
		}
	}
	return n
}

// countLive counts unexpired bindings (s.mu held).
func (s *Server) countLive(now time.Time) int {
	n := 0
	for _, b := range s.bindings {
		if b.Expires.After(now) {
			n++
		}
	}
	return n
}

func (s *Server) capacityCheck() {
	s.mu.Lock()
	below := s.countLive(time.Now()) < s.cfg.MaxBindings
	s.mu.Unlock()
	if below {
		s.alerts.ClearCondition("sip_capacity")
	}
}

func hostPort(u gosip.Uri) string {
	port := u.Port
	if port == 0 {
		port = 5060
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(port))
}

// selfNames is every name a phone may use for this node: the advertised
// address, each interface address, the host name, and the host name
// under the mesh DNS suffix (AREDN's <node>.local.mesh).
func selfNames(advertise, suffix string) map[string]bool {
	names := map[string]bool{strings.ToLower(advertise): true, "localhost": true}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				names[n.IP.String()] = true
			}
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		h = strings.ToLower(h)
		names[h] = true
		names[h+"."+strings.ToLower(suffix)] = true
	}
	return names
}

// forUs reports whether a request URI names this proxy (an initial
// request to a number) rather than a phone (an in-dialog request).
func (s *Server) forUs(u gosip.Uri) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, port, _ := net.SplitHostPort(s.addr)
	p := strconv.Itoa(u.Port)
	if u.Port == 0 {
		p = "5060"
	}
	if p != port {
		return false
	}
	host := strings.ToLower(strings.Trim(u.Host, "[]"))
	if ip := net.ParseIP(host); ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
		return true
	}
	return s.self[host]
}

// destination picks where a request goes: a registered phone, the
// number's mesh DNS name, or (in-dialog) the request URI itself.
func (s *Server) destination(req *gosip.Request) (string, error) {
	if !s.forUs(req.Recipient) {
		return hostPort(req.Recipient), nil
	}
	user := req.Recipient.User
	if user == "" {
		return "", errors.New("no user in the request URI")
	}
	s.mu.Lock()
	b := s.bindings[user]
	suffix := s.cfg.DNSSuffix
	s.mu.Unlock()
	if b != nil && b.Expires.After(time.Now()) {
		req.Recipient = *b.Contact.Clone()
		return b.Addr, nil
	}
	host := user + "." + suffix
	req.Recipient.Host, req.Recipient.Port = host, 0
	return net.JoinHostPort(host, "5060"), nil
}

// dropOwnRoute removes a Route header that names this proxy.
func (s *Server) dropOwnRoute(req *gosip.Request) {
	if r := req.Route(); r != nil && s.forUs(r.Address) {
		req.RemoveHeader("Route")
	}
}

func (s *Server) onAck(req *gosip.Request, tx gosip.ServerTransaction) {
	s.dropOwnRoute(req)
	dst, err := s.destination(req)
	if err != nil {
		return
	}
	req.SetDestination(dst)
	if err := s.client.WriteRequest(req, sipgo.ClientRequestAddVia); err != nil {
		s.log.Debug("sip: forward ACK", "err", err)
	}
}

// proxy forwards INVITE, BYE and unmatched CANCEL statefully and relays
// the responses, following the call's life for active_calls.
func (s *Server) proxy(req *gosip.Request, tx gosip.ServerTransaction) {
	s.dropOwnRoute(req)
	dst, err := s.destination(req)
	if err != nil {
		s.sipError(err.Error())
		s.reply(tx, req, 404, "Not Found")
		return
	}
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	if req.Method == gosip.BYE {
		s.endCall(callID)
	}
	req.SetDestination(dst)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := []sipgo.ClientRequestOption{sipgo.ClientRequestDecreaseMaxForward, sipgo.ClientRequestAddVia}
	if req.IsInvite() {
		opts = append(opts, sipgo.ClientRequestAddRecordRoute)
	}
	clTx, err := s.client.TransactionRequest(ctx, req, opts...)
	if err != nil {
		s.sipError("forward: " + err.Error())
		s.reply(tx, req, 502, "Bad Gateway")
		return
	}
	defer clTx.Terminate()
	if req.IsInvite() {
		tx.OnCancel(func(*gosip.Request) {
			c := cancelFor(req)
			if ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second); c != nil {
				go func() {
					defer cancel()
					if ct, err := s.client.TransactionRequest(ctx, c, func(*sipgo.Client, *gosip.Request) error { return nil }); err == nil {
						<-ct.Done()
					}
				}()
			} else {
				cancel()
			}
		})
	}
	for {
		select {
		case res, more := <-clTx.Responses():
			if !more {
				return
			}
			res.SetDestination(req.Source())
			res.RemoveHeader("Via")
			if req.IsInvite() && res.StatusCode >= 200 && res.StatusCode < 300 {
				s.startCall(callID)
			}
			if err := tx.Respond(res); err != nil {
				s.log.Debug("sip: relay response", "err", err)
			}
		case ack := <-tx.Acks():
			ack.SetDestination(dst)
			s.client.WriteRequest(ack)
		case <-clTx.Done():
			if err := clTx.Err(); err != nil && req.IsInvite() {
				s.sipError("INVITE forward: " + err.Error())
				s.reply(tx, req, 408, "Request Timeout")
			}
			return
		case <-tx.Done():
			return
		}
	}
}

// cancelFor builds the CANCEL of a forwarded INVITE (same Via branch,
// Call-ID, From, To and CSeq number).
func cancelFor(inv *gosip.Request) *gosip.Request {
	via := inv.Via()
	if via == nil || inv.CSeq() == nil {
		return nil
	}
	c := gosip.NewRequest(gosip.CANCEL, inv.Recipient)
	c.AppendHeader(via.Clone())
	mf := gosip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	for _, name := range []string{"From", "To", "Call-ID", "Route"} {
		for _, h := range inv.GetHeaders(name) {
			c.AppendHeader(gosip.NewHeader(h.Name(), h.Value()))
		}
	}
	c.AppendHeader(&gosip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: gosip.CANCEL})
	c.AppendHeader(gosip.NewHeader("Content-Length", "0"))
	c.SetTransport(inv.Transport())
	c.SetDestination(inv.Destination())
	return c
}

func (s *Server) startCall(id string) {
	if id == "" {
		return
	}
	s.mu.Lock()
	if _, ok := s.calls[id]; !ok {
		s.calls[id] = &call{started: time.Now()}
		s.callsTotal.Add(1)
	}
	s.mu.Unlock()
}

func (s *Server) endCall(id string) {
	s.mu.Lock()
	delete(s.calls, id)
	s.mu.Unlock()
}

// Sweep drops expired bindings and stale calls (the safety worker's
// hygiene) and reports how many of each.
func (s *Server) Sweep(now time.Time) (bindings, calls int) {
	s.mu.Lock()
	bindings = s.sweepLocked(now)
	for id, c := range s.calls {
		if now.Sub(c.started) > StaleCall {
			delete(s.calls, id)
			calls++
		}
	}
	s.mu.Unlock()
	if bindings > 0 {
		s.capacityCheck()
	}
	return bindings, calls
}

// Counts reports registered phones and active calls.
func (s *Server) Counts() (registered, active int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.countLive(time.Now()), len(s.calls)
}

// Bindings lists the live bindings (the monitor probes them).
func (s *Server) Bindings() []Binding {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var out []Binding
	for _, b := range s.bindings {
		if b.Expires.After(now) {
			out = append(out, *b)
		}
	}
	return out
}

// Status is the sip section of "phonebook status".
func (s *Server) Status() ubus.Value {
	reg, active := s.Counts()
	s.mu.Lock()
	addr, maxB := s.addr, s.cfg.MaxBindings
	s.mu.Unlock()
	return ubus.Tbl("sip",
		ubus.Str("listen", addr),
		ubus.I32("registered_users", int32(reg)),
		ubus.I32("active_calls", int32(active)),
		ubus.I32("max_bindings", int32(maxB)),
		ubus.I64("registrations_total", s.registers.Load()),
		ubus.I64("rejected_at_capacity", s.rejected.Load()),
		ubus.I64("malformed_total", s.malformed.Load()),
		ubus.I64("calls_total", s.callsTotal.Load()),
	)
}

// ErrNotRunning: the server is not (yet) up, so nothing was sent.
var ErrNotRunning = errors.New("sip server not running")

// Probe sends OPTIONS to host:port and returns the round-trip time.
func (s *Server) Probe(ctx context.Context, target string) (time.Duration, error) {
	s.mu.Lock()
	client := s.client
	s.mu.Unlock()
	if client == nil {
		return 0, ErrNotRunning
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		host, port = target, "5060"
	}
	p, _ := strconv.Atoi(port)
	req := gosip.NewRequest(gosip.OPTIONS, gosip.Uri{Scheme: "sip", Host: host, Port: p})
	req.SetTransport("UDP")
	t0 := time.Now()
	res, err := client.Do(ctx, req)
	if err != nil {
		return 0, err
	}
	if res.StatusCode >= 300 && res.StatusCode != 405 && res.StatusCode != 501 {
		return 0, fmt.Errorf("OPTIONS answered %d", res.StatusCode)
	}
	return time.Since(t0), nil
}
