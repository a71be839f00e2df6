package sip

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/internal/siphash"
)

// peer is where a message goes: a UDP address (answered from local), or
// a TCP connection the peer opened.
type peer struct {
	addr  netip.AddrPort
	local netip.Addr
	tcp   *tcpConn
}

// Transaction states (RFC 3261 17.1.1 seen from the proxy's side).
const (
	txCalling = iota
	txProceeding
	txCompleted
)

// proxyTx is one INVITE forwarded statefully: the server transaction
// towards the caller and the client transaction towards the callee in one
// record (RFC 3261 16). Its size is bounded by the two messages it keeps,
// and the table of them by sip.max_transactions.
type proxyTx struct {
	mu         sync.Mutex
	up         peer
	src        netip.Addr // up's address: the per-source share
	upBranch   string     // the server transaction's key (txKey)
	down       peer
	downBranch string
	viaHost    string // our host:port in the forwarded Via
	transport  string
	fwd        []byte // the INVITE as forwarded (retransmitted on Timer A)
	reqURI     string // its Request-URI, for CANCEL and ACK
	from       string
	callID     string
	cseq       uint32
	route      string // Route lines of the forwarded INVITE
	lastResp   []byte // the last response relayed upstream
	state      int
	cancelled  bool
	interval   time.Duration // Timer A / G
	nextRetx   time.Time
	deadline   time.Time // Timer B, C or H
	ringCap    time.Time // provisional answers extend Timer C up to here
	timer      *time.Timer
	done       bool
}

// viaPrefix starts every branch this server puts in a Via; the token
// differs per start so that another phonebookd on the path is not
// mistaken for this one.
func (s *Server) viaPrefix() string { return "z9hG4bKpb" + s.token + "." }

// branchFor is the branch of a request this proxy forwards: the prefix,
// a MAC over what the response to it must carry back (the request's top
// Via as forwarded, its Call-ID and CSeq), then its loop hash (RFC 3261
// 16.6 item 8). A response whose branch does not verify was never
// caused by this proxy and is dropped.
func (s *Server) branchFor(m *Msg, src netip.AddrPort) string {
	var tv [256]byte
	var it string
	m.Each("via", func(v string) bool { it = v; return false })
	v, _ := ParseVia(string(appendTopVia(tv[:0], it, src)))
	cs, _ := m.CSeq()
	b := make([]byte, 0, 64)
	b = append(b, s.viaPrefix()...)
	b = appendHex(b, s.branchMAC(v, m.Get("call-id"), cs.Num, m.Method))
	b = append(b, '.')
	return string(appendHex(b, loopHash(m)))
}

// branchMAC is the SipHash-2-4, under this start's secret, of
// the fields of the Via below ours, the Call-ID, the CSeq number and the
// method (a CANCEL's and an ACK's are the INVITE's: they share its
// branch).
func (s *Server) branchMAC(v Via, callID string, cseq uint32, method string) uint64 {
	if method == "CANCEL" || method == "ACK" {
		method = "INVITE"
	}
	received, _ := param(v.Params, "received")
	rport, _ := param(v.Params, "rport")
	var buf [320]byte
	b := buf[:0]
	var num [20]byte
	for _, f := range [...]string{strings.ToUpper(v.Transport), strings.ToLower(v.Host), string(strconv.AppendInt(num[:0], int64(v.Port), 10)),
		v.Branch(), received, rport, callID, string(strconv.AppendUint(num[:0], uint64(cseq), 10)), method} {
		b = append(append(b, f...), 0)
	}
	return siphash.Sum64(&s.secret, b)
}

// verifyBranch checks the MAC in the branch of a response's top Via
// (ours) against the rest of the response.
func (s *Server) verifyBranch(m *Msg, branch string) bool {
	rest := branch[len(s.viaPrefix()):]
	mac, _, ok := strings.Cut(rest, ".")
	if !ok || len(mac) != 16 {
		return false
	}
	v, err := ParseVia(secondVia(m))
	if err != nil {
		return false
	}
	cs, err := m.CSeq()
	if err != nil {
		return false
	}
	want := appendHex(make([]byte, 0, 16), s.branchMAC(v, m.Get("call-id"), cs.Num, cs.Method))
	// Every byte compared, so that the time taken does not tell a forger
	// how much of a guess was right.
	var diff byte
	for i := range want {
		diff |= want[i] ^ mac[i]
	}
	return diff == 0
}

// loopHash is RFC 3261 16.6 item 8's hash of what identifies a request on
// its path: the same request coming back with the same hash is a loop.
func loopHash(m *Msg) uint64 {
	var routes strings.Builder
	m.Each("route", func(v string) bool { routes.WriteString(v); return true })
	cs, _ := m.CSeq()
	return fnv64(m.URI, m.Tag("from"), m.Tag("to"), m.Get("call-id"), strconv.FormatUint(uint64(cs.Num), 10), routes.String(), m.Get("proxy-require"))
}

// looped reports a Via of ours whose loop hash equals this request's
// (RFC 3261 16.3 item 4): the request went round.
func (s *Server) looped(m *Msg) bool {
	prefix := s.viaPrefix()
	want := string(appendHex(nil, loopHash(m)))
	found := false
	m.Each("via", func(v string) bool {
		via, err := ParseVia(v)
		if err != nil {
			return true
		}
		if b := via.Branch(); strings.HasPrefix(b, prefix) && strings.HasSuffix(b, "."+want) {
			found = true
			return false
		}
		return true
	})
	return found
}

// ownRoute reports whether a Route element names this server.
func (s *Server) ownRoute(v string) bool {
	a, err := ParseAddr(v)
	if err != nil {
		return false
	}
	u, err := ParseURI(a.URI)
	if err != nil {
		return false
	}
	return s.forUs(u)
}

// forUs reports whether a URI names this server (an initial request to a
// number) rather than a phone.
func (s *Server) forUs(u URI) bool {
	port := u.Port
	if port == 0 {
		port = 5060
	}
	if uint32(port) != s.port.Load() {
		return false
	}
	host := strings.ToLower(u.Host)
	if ip, err := netip.ParseAddr(host); err == nil {
		return s.isOwnTarget(netip.AddrPortFrom(ip, uint16(port)))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[host]
}

// route decides where a request goes (RFC 3261 16.4-16.6): past our own
// Route, to the next Route, or to the Request-URI retargeted to the
// called number's binding or <number>.<dns_suffix>.
type route struct {
	reqURI     string
	dropRoutes int    // the top Routes that were ours (two after RFC 5658's double Record-Route)
	hop        string // host:port to resolve, when not an address
	dest       peer
	notFound   bool
	noFlow     bool // the next hop (dest.addr) is TCP and no connection to it is open: one is opened
}

func (s *Server) routeOf(m *Msg, now time.Time) (route, error) {
	r := route{reqURI: m.URI}
	var next string
	m.Each("route", func(v string) bool {
		if r.dropRoutes < 2 && s.ownRoute(v) {
			r.dropRoutes++
			return true
		}
		next = v
		return false
	})
	if next != "" { // loose routing to the next hop
		a, err := ParseAddr(next)
		if err != nil {
			return r, err
		}
		u, err := ParseURI(a.URI)
		if err != nil {
			return r, err
		}
		return s.resolveHop(r, u)
	}
	u, err := ParseURI(m.URI)
	if err != nil {
		return r, err
	}
	if !s.forUs(u) {
		return s.resolveHop(r, u) // in-dialog: to the phone itself
	}
	if u.User == "" {
		r.notFound = true
		return r, nil
	}
	if c, ok := s.lookup(u.User, now); ok {
		r.reqURI = c.uri
		if c.transport == "TCP" {
			// Over the connection it registered on, or another it opened
			// since; a Contact asking for TCP is never tried over UDP.
			tc := s.tcpConnTo(c.source)
			if tc == nil && c.target.IsValid() {
				tc = s.flowTo(c.target)
			}
			if tc != nil {
				r.dest = peer{addr: tc.remote, tcp: tc}
				return r, nil
			}
			if cu, err := ParseURI(c.uri); err == nil && c.target.IsValid() {
				if t, _ := cu.Param("transport"); strings.EqualFold(t, "tcp") {
					r.noFlow, r.dest = true, peer{addr: c.target}
					return r, nil
				}
			}
		}
		if c.target.IsValid() {
			r.dest = peer{addr: c.target}
			return r, nil
		}
		r.hop = c.host
		return r, nil
	}
	cfg := s.config()
	u.Host, u.Port = u.User+"."+cfg.DNSSuffix, 0
	r.reqURI = u.String()
	r.hop = u.HostPort()
	return r, nil
}

// resolveHop routes to a URI's host: over the flow of a phone when one
// is open to that address (RFC 5626; a phone registered over TCP is
// reached on its connection), else over UDP; a URI asking for TCP with
// no connection open is noFlow (a connection is opened to it).
func (s *Server) resolveHop(r route, u URI) (route, error) {
	if ip, err := netip.ParseAddr(u.Host); err == nil {
		p := u.Port
		if p == 0 {
			p = 5060
		}
		addr := netip.AddrPortFrom(ip.Unmap(), uint16(p))
		r.dest = peer{addr: addr}
		if tc := s.flowTo(addr); tc != nil {
			r.dest.tcp = tc
		} else if t, _ := u.Param("transport"); strings.EqualFold(t, "tcp") {
			r.noFlow = true
		}
		return r, nil
	}
	r.hop = u.HostPort()
	return r, nil
}

// resolve looks a host:port up (the mesh's DNS names phones
// <number>.local.mesh); it runs off the socket's goroutine.
func resolve(ctx context.Context, hostport string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil || len(ips) == 0 {
		if err == nil {
			err = &net.DNSError{Err: "no address", Name: host}
		}
		return netip.AddrPort{}, err
	}
	p, _ := strconv.Atoi(port)
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(p)), nil
}

// appendForward writes the request as this proxy forwards it (RFC 3261
// 16.6): new Request-URI, our Via on top with branch, the received Via
// with received/rport, Max-Forwards decremented, our own Route removed,
// and for a dialog-creating INVITE our Record-Route.
func (s *Server) appendForward(dst []byte, m *Msg, r route, via, branch, transport string, src netip.AddrPort, recordRoute []byte) []byte {
	dst = append(dst, m.Method...)
	dst = append(dst, ' ')
	dst = append(dst, r.reqURI...)
	dst = append(dst, " SIP/2.0\r\nVia: SIP/2.0/"...)
	dst = append(dst, transport...)
	dst = append(dst, ' ')
	dst = append(dst, via...)
	dst = append(dst, ";branch="...)
	dst = append(dst, branch...)
	dst = append(dst, ";rport\r\n"...)
	firstVia, firstRoute, rrDone, mf := true, true, false, false
	for _, h := range m.Headers {
		if !rrDone && !h.Is("via") { // ours first among the Record-Routes, after the Vias
			dst, rrDone = append(dst, recordRoute...), true
		}
		switch {
		case h.Is("via") && firstVia:
			firstVia = false
			top, rest := splitComma(h.Value)
			dst = append(dst, "Via: "...)
			dst = appendTopVia(dst, top, src)
			if rest = strings.TrimSpace(rest); rest != "" {
				dst = append(dst, ", "...)
				dst = append(dst, rest...)
			}
		case h.Is("max-forwards"):
			n, _ := strconv.Atoi(h.Value)
			dst = strconv.AppendInt(append(dst, "Max-Forwards: "...), int64(max(n-1, 0)), 10)
			mf = true
		case h.Is("route"):
			if firstRoute { // every Route in place of the first, without ours
				firstRoute = false
				dst = appendRoutes(dst, m, r.dropRoutes)
			}
			continue
		default:
			dst = append(dst, h.Name...)
			dst = append(dst, ": "...)
			dst = append(dst, h.Value...)
		}
		dst = append(dst, "\r\n"...)
	}
	if !rrDone {
		dst = append(dst, recordRoute...)
	}
	if !mf {
		dst = append(dst, "Max-Forwards: 69\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	return append(dst, m.Body...)
}

// appendRoutes writes the request's Route elements but the first skip
// (ours), one per line.
func appendRoutes(dst []byte, m *Msg, skip int) []byte {
	m.Each("route", func(v string) bool {
		if skip > 0 {
			skip--
			return true
		}
		dst = append(append(append(dst, "Route: "...), v...), "\r\n"...)
		return true
	})
	return dst
}

// appendRecordRoute writes this proxy's Record-Route for a dialog whose
// caller reached it at upLocal over up and whose callee it reaches at
// downLocal over down: one entry, with the transport when it is TCP
// (RFC 3261 16.6 item 4), or two when the legs differ (RFC 5658): the
// callee's route set starts with the entry facing it, the caller's
// (reversed) with the one facing the caller.
func (s *Server) appendRecordRoute(dst []byte, upLocal netip.Addr, upTCP bool, downLocal netip.Addr, downTCP bool) []byte {
	one := func(dst []byte, local netip.Addr, tcp bool) []byte {
		dst = s.selfVia(append(dst, "Record-Route: <sip:"...), local)
		if tcp {
			dst = append(dst, ";transport=tcp"...)
		}
		return append(dst, ";lr>\r\n"...)
	}
	if upTCP == downTCP && (upLocal == downLocal || !downLocal.IsValid()) {
		return one(dst, upLocal, upTCP)
	}
	return one(one(dst, downLocal, downTCP), upLocal, upTCP)
}

// selfVia is our host:port as advertised to a peer: the address the
// request arrived on (else the bound one).
func (s *Server) selfVia(dst []byte, local netip.Addr) []byte {
	if !local.IsValid() || local.IsUnspecified() {
		local = s.advertise()
	}
	dst = appendAddrHost(dst, local)
	dst = append(dst, ':')
	return strconv.AppendInt(dst, int64(s.port.Load()), 10)
}

// proxyRequest handles a request to be forwarded. INVITE is stateful and
// bounded; everything else is forwarded statelessly (RFC 3261 16.11).
func (r *reader) proxyRequest(m *Msg, from peer, now time.Time) {
	s := r.s
	top, _ := m.TopVia()
	key := txKey(m, top)
	switch m.Method {
	case "INVITE":
		if tx := s.txByUp(key); tx != nil { // a retransmission
			tx.mu.Lock()
			resp := tx.lastResp
			tx.mu.Unlock()
			if resp != nil {
				s.send(from, resp, &r.oob)
			}
			return
		}
	case "ACK":
		if tx := s.txByUp(key); tx != nil { // ACK of a non-2xx: hop by hop
			s.endTx(tx)
			return
		}
	case "CANCEL":
		tx := s.txByUp(key)
		if tx == nil {
			r.reply(m, from, 481, "Call/Transaction Does Not Exist", nil)
			return
		}
		r.reply(m, from, 200, "OK", nil)
		s.cancelDown(tx)
		return
	}
	mf, _ := m.MaxForwards()
	switch {
	case mf == 0:
		r.reject(m, from, 483, "Too Many Hops", "max-forwards")
		return
	case s.looped(m):
		r.reject(m, from, 482, "Loop Detected", "loop")
		return
	case m.Get("proxy-require") != "":
		r.reply(m, from, 420, "Bad Extension", append(append(append(r.extra[:0], "Unsupported: "...), m.Get("proxy-require")...), "\r\n"...))
		s.sipError()
		return
	}
	if from.tcp != nil {
		s.aliasConn(from.tcp, contactAddr(m))
	}
	rt, err := s.routeOf(m, now)
	if err != nil {
		if err == ErrScheme {
			r.reject(m, from, 416, "Unsupported URI Scheme", "scheme")
		} else {
			r.reject(m, from, 400, "Bad Request: unroutable", "malformed")
		}
		return
	}
	if rt.notFound {
		r.reject(m, from, 404, "Not Found", "not-found")
		return
	}
	if rt.noFlow && s.dialing.Load() >= int64(s.config().TCPMaxConnections) {
		// A connection is needed and as many are being opened as the
		// bound allows.
		s.shedCount(ShedTCPConnections)
		if m.Method == "BYE" { // the call ends all the same
			s.endCall(m.Get("call-id"))
		}
		if m.Method != "ACK" {
			r.reply(m, from, 503, "Service Unavailable: TCP connections (sip.tcp_max_connections)", append(r.extra[:0], "Retry-After: 5\r\n"...))
		}
		return
	}
	if rt.dest.addr.IsValid() && rt.dest.tcp == nil && s.isOwnTarget(rt.dest.addr) {
		// A binding (or route) pointing at this proxy would send the
		// request round until Max-Forwards runs out.
		r.reject(m, from, 482, "Loop Detected", "loop")
		return
	}
	transport, downLocal := "UDP", from.local
	switch {
	case rt.dest.tcp != nil:
		transport, downLocal = "TCP", rt.dest.tcp.local
	case rt.noFlow: // the connection's local address is not known yet: the arrival one
		transport = "TCP"
	}
	via := string(s.selfVia(r.via[:0], downLocal))
	branch := s.branchFor(m, from.addr)
	if m.Method != "INVITE" {
		switch m.Method {
		case "BYE":
			s.endCall(m.Get("call-id"))
		case "ACK":
			s.confirmCall(m.Get("call-id"))
		}
		if !rt.dest.addr.IsValid() { // needs DNS: not from the socket's goroutine
			if m.Method != "ACK" {
				r.reject(m, from, 404, "Not Found", "not-found")
			}
			return
		}
		r.out = s.appendForward(r.out[:0], m, rt, via, branch, transport, from.addr, nil)
		if rt.noFlow { // connected off the socket's goroutine
			// The message's strings alias the reader's buffer, which
			// the next message overwrites: what the goroutine keeps
			// is copied.
			out, method := bytes.Clone(r.out), strings.Clone(m.Method)
			go func() {
				defer s.recoverPanic()
				tc, err := s.dialTCP(context.Background(), rt.dest.addr)
				if err == nil {
					err = s.send(peer{addr: tc.remote, tcp: tc}, out, nil)
				}
				if err != nil {
					s.logs.Log(slog.LevelInfo, "forward", "sip: forward over a new TCP connection failed", "method", method, "err", err)
				}
			}()
			return
		}
		if err := s.send(rt.dest, r.out, &r.oob); err != nil {
			s.logs.Log(slog.LevelDebug, "forward", "sip: forward failed", "method", m.Method, "err", err)
		}
		return
	}
	// INVITE: bounded, in all and per source address.
	cfg := s.config()
	src := from.addr.Addr()
	if m.Tag("to") == "" { // a new call
		if s.activeCalls() >= cfg.MaxCalls {
			s.shedCount(ShedCalls)
			s.tableFull(tableCalls, cfg.MaxCalls)
			r.reply(m, from, 503, "Service Unavailable: call limit (sip.max_calls)", append(r.extra[:0], "Retry-After: 30\r\n"...))
			return
		}
		// Its open INVITEs count too: each may become a call.
		if s.callsFrom(src)+s.txFrom(src) >= min(cfg.MaxCallsPerSource, cfg.MaxCalls) {
			s.shedCount(ShedCallsPerSource)
			s.logs.Log(slog.LevelWarn, "calls-per-source", "sip: call refused at sip.max_calls_per_source", "from", src.String())
			r.reply(m, from, 503, "Service Unavailable: call limit per source (sip.max_calls_per_source)", append(r.extra[:0], "Retry-After: 30\r\n"...))
			return
		}
	}
	tx := &proxyTx{up: from, src: src, upBranch: strings.Clone(key), downBranch: branch, viaHost: via, transport: transport,
		reqURI: strings.Clone(rt.reqURI), from: strings.Clone(m.Get("from")), callID: strings.Clone(m.Get("call-id")),
		interval: s.t1(), state: txCalling}
	cs, _ := m.CSeq()
	tx.cseq = cs.Num
	tx.route = string(appendRoutes(nil, m, rt.dropRoutes)) // ours are not forwarded
	switch s.addTx(tx, cfg) {
	case ShedTransactions:
		s.shedCount(ShedTransactions)
		r.reply(m, from, 503, "Service Unavailable: transaction limit (sip.max_transactions)", append(r.extra[:0], "Retry-After: 5\r\n"...))
		return
	case ShedTxPerSource:
		s.shedCount(ShedTxPerSource)
		s.logs.Log(slog.LevelWarn, "tx-per-source", "sip: INVITE refused at sip.max_transactions_per_source", "from", src.String())
		r.reply(m, from, 503, "Service Unavailable: transaction limit per source (sip.max_transactions_per_source)", append(r.extra[:0], "Retry-After: 5\r\n"...))
		return
	}
	r.reply(m, from, 100, "Trying", nil)
	rr := s.appendRecordRoute(r.extra[:0], from.local, from.tcp != nil, downLocal, transport == "TCP")
	tx.fwd = bytes.Clone(s.appendForward(r.out[:0], m, rt, via, branch, transport, from.addr, rr))
	if rt.noFlow {
		// The phone's connection closed: a new one to its Contact, made
		// off the socket's goroutine (bounded by the transaction table).
		go func() {
			defer s.recoverPanic()
			ctx, cancel := context.WithTimeout(context.Background(), 64*s.t1())
			defer cancel()
			tc, err := s.dialTCP(ctx, rt.dest.addr)
			if err != nil {
				s.logs.Log(slog.LevelInfo, "tcp-connect", "sip: cannot connect to a phone registered over TCP", "err", err)
				s.finalUp(tx, 480, "Temporarily Unavailable")
				return
			}
			s.startTx(tx, peer{addr: tc.remote, tcp: tc})
		}()
		return
	}
	if rt.dest.addr.IsValid() {
		s.startTx(tx, rt.dest)
		return
	}
	// The callee's name needs DNS: resolved off the socket's goroutine;
	// the number of such lookups is bounded by the transaction table.
	go func() {
		defer s.recoverPanic()
		ctx, cancel := context.WithTimeout(context.Background(), 64*s.t1())
		defer cancel()
		addr, err := resolve(ctx, rt.hop)
		if err != nil {
			s.finalUp(tx, 404, "Not Found")
			return
		}
		if s.isOwnTarget(addr) {
			s.finalUp(tx, 482, "Loop Detected")
			return
		}
		s.startTx(tx, peer{addr: addr})
	}()
}

// contactAddr is the IP address and port of a request's Contact (invalid
// when it has none or names a host).
func contactAddr(m *Msg) netip.AddrPort {
	c := m.Get("contact")
	if c == "" {
		return netip.AddrPort{}
	}
	first, _ := splitComma(c)
	a, err := ParseAddr(first)
	if err != nil {
		return netip.AddrPort{}
	}
	u, err := ParseURI(a.URI)
	if err != nil {
		return netip.AddrPort{}
	}
	ip, err := netip.ParseAddr(u.Host)
	if err != nil {
		return netip.AddrPort{}
	}
	p := u.Port
	if p == 0 {
		p = 5060
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p))
}

// magicCookie starts every RFC 3261 branch (RFC 3261 8.1.1.7).
const magicCookie = "z9hG4bK"

// txKey is what finds a request's server transaction (RFC 3261 17.2.3):
// the top Via's branch when it carries the magic cookie; else, from an
// RFC 2543 client, the Request-URI, From tag, Call-ID, CSeq number and
// top Via, which an INVITE shares with its CANCEL and its non-2xx ACK
// (the To tag is left out: the INVITE has none, its ACK the callee's).
// A 3261 key aliases the message; one kept must be cloned.
func txKey(m *Msg, top Via) string {
	if b := top.Branch(); len(b) > len(magicCookie) && strings.HasPrefix(b, magicCookie) {
		return b
	}
	cs, _ := m.CSeq()
	var topVia string
	m.Each("via", func(v string) bool { topVia = v; return false })
	return "2543\x00" + m.URI + "\x00" + m.Tag("from") + "\x00" + m.Get("call-id") + "\x00" + strconv.FormatUint(uint64(cs.Num), 10) + "\x00" + topVia
}

func (s *Server) t1() time.Duration { return time.Duration(s.config().TimerT1MS) * time.Millisecond }

func (s *Server) txByUp(branch string) *proxyTx {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	return s.txUp[branch]
}

func (s *Server) txByDown(branch string) *proxyTx {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	return s.txDown[branch]
}

// addTx enters a transaction unless the table, or its source's share of
// it, is full; it returns -1, or the shed cause.
func (s *Server) addTx(tx *proxyTx, cfg config.SIP) int {
	s.txMu.Lock()
	n := len(s.txUp)
	switch {
	case n >= cfg.MaxTransactions:
		s.txMu.Unlock()
		s.tableFull(tableTransactions, cfg.MaxTransactions)
		return ShedTransactions
	case s.txSrc[tx.src] >= min(cfg.MaxTransactionsPerSource, cfg.MaxTransactions):
		s.txMu.Unlock()
		return ShedTxPerSource
	}
	s.txUp[tx.upBranch] = tx
	s.txDown[tx.downBranch] = tx
	s.txSrc[tx.src]++
	s.txMu.Unlock()
	if n+1 >= cfg.MaxTransactions {
		s.tableFull(tableTransactions, cfg.MaxTransactions)
	}
	return -1
}

// txFrom is how many transactions a source address holds open.
func (s *Server) txFrom(src netip.Addr) int {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	return s.txSrc[src]
}

// Transactions is how many proxied INVITE transactions are open.
func (s *Server) Transactions() int {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	return len(s.txUp)
}

// startTx sends the INVITE and arms Timers A and B (RFC 3261 17.1.1.2).
func (s *Server) startTx(tx *proxyTx, dest peer) {
	now := time.Now()
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.done {
		return
	}
	tx.down = dest
	if tx.cancelled { // cancelled before it could be sent
		tx.mu.Unlock()
		s.finalUp(tx, 487, "Request Terminated")
		tx.mu.Lock()
		return
	}
	s.send(dest, tx.fwd, nil)
	tx.deadline = now.Add(64 * tx.interval)
	if dest.tcp == nil {
		tx.nextRetx = now.Add(tx.interval)
	}
	s.armLocked(tx, now)
}

// armLocked sets the transaction's one timer to its next event (tx.mu
// held).
func (s *Server) armLocked(tx *proxyTx, now time.Time) {
	next := tx.deadline
	if !tx.nextRetx.IsZero() && tx.nextRetx.Before(next) {
		next = tx.nextRetx
	}
	d := max(next.Sub(now), time.Millisecond)
	if tx.timer == nil {
		tx.timer = time.AfterFunc(d, func() { defer s.recoverPanic(); s.txTimer(tx) })
	} else {
		tx.timer.Reset(d)
	}
}

// txTimer runs Timers A/G (retransmit) and B/C/H (give up).
func (s *Server) txTimer(tx *proxyTx) {
	state, expired := s.txTick(tx, time.Now())
	if !expired {
		return
	}
	switch state {
	case txCalling: // Timer B: the callee never answered
		s.finalUp(tx, 408, "Request Timeout")
	case txProceeding: // Timer C: it rang too long
		s.cancelDown(tx)
		s.finalUp(tx, 408, "Request Timeout")
	default: // Timer H: no ACK came
		s.endTx(tx)
	}
}

// txTick retransmits and re-arms a live transaction before its
// deadline; past it, it reports the state the transaction expired in.
// The lock is released by a defer, so that a panic recovered around the
// timer cannot leave it held.
func (s *Server) txTick(tx *proxyTx, now time.Time) (state int, expired bool) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.done {
		return tx.state, false
	}
	if !now.Before(tx.deadline) {
		return tx.state, true
	}
	if !tx.nextRetx.IsZero() && !now.Before(tx.nextRetx) {
		switch tx.state {
		case txCalling:
			s.send(tx.down, tx.fwd, nil)
			tx.interval *= 2
		case txCompleted:
			s.send(tx.up, tx.lastResp, nil)
			tx.interval = min(2*tx.interval, 4*time.Second) // T2
		}
		tx.nextRetx = now.Add(tx.interval)
	}
	s.armLocked(tx, now)
	return tx.state, false
}

// finalUp answers the caller ourselves with a final response and ends
// the transaction after Timer H (the caller's ACK is absorbed).
func (s *Server) finalUp(tx *proxyTx, code int, reason string) {
	tx.mu.Lock()
	if tx.done || tx.state == txCompleted {
		tx.mu.Unlock()
		return
	}
	b := []byte("SIP/2.0 " + strconv.Itoa(code) + " " + reason + "\r\n")
	// The answer needs the caller's Vias, From, To, Call-ID and CSeq: the
	// forwarded INVITE holds them all (our own Via first).
	var m Msg
	if Parse(string(tx.fwd), &m) == nil {
		b = appendResponse(b[:0], &m, code, reason, netip.AddrPort{}, nil)
		b = stripTopVia(b)
	}
	tx.lastResp = b
	tx.state = txCompleted
	now := time.Now()
	tx.deadline = now.Add(64 * s.t1())
	tx.interval = s.t1()
	tx.nextRetx = time.Time{}
	if tx.up.tcp == nil {
		tx.nextRetx = now.Add(tx.interval)
	}
	s.armLocked(tx, now)
	up := tx.up
	tx.mu.Unlock()
	s.send(up, b, nil)
	if code >= 400 {
		s.sipError()
	}
}

// cancelDown sends CANCEL for a forwarded INVITE (same branch,
// Request-URI, Call-ID, From, To and CSeq number; RFC 3261 9.1).
func (s *Server) cancelDown(tx *proxyTx) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	tx.cancelled = true
	if tx.done || tx.state == txCompleted || !tx.down.addr.IsValid() {
		return
	}
	var m Msg
	if Parse(string(tx.fwd), &m) != nil {
		return
	}
	b := s.appendHopRequest(nil, "CANCEL", tx, m.Get("to"))
	s.send(tx.down, b, nil)
}

// appendHopRequest builds the CANCEL or ACK this proxy sends downstream
// for its own client transaction.
func (s *Server) appendHopRequest(dst []byte, method string, tx *proxyTx, to string) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, tx.reqURI...)
	dst = append(dst, " SIP/2.0\r\nVia: SIP/2.0/"...)
	dst = append(dst, tx.transport...)
	dst = append(dst, ' ')
	dst = append(dst, tx.viaHost...)
	dst = append(dst, ";branch="...)
	dst = append(dst, tx.downBranch...)
	dst = append(dst, "\r\nMax-Forwards: 70\r\nFrom: "...)
	dst = append(dst, tx.from...)
	dst = append(dst, "\r\nTo: "...)
	dst = append(dst, to...)
	dst = append(dst, "\r\nCall-ID: "...)
	dst = append(dst, tx.callID...)
	dst = append(dst, "\r\nCSeq: "...)
	dst = strconv.AppendUint(dst, uint64(tx.cseq), 10)
	dst = append(dst, ' ')
	dst = append(dst, method...)
	dst = append(dst, "\r\n"...)
	dst = append(dst, tx.route...)
	return append(dst, "Content-Length: 0\r\n\r\n"...)
}

// endTx removes a transaction.
func (s *Server) endTx(tx *proxyTx) {
	tx.mu.Lock()
	tx.done = true
	if tx.timer != nil {
		tx.timer.Stop()
	}
	tx.mu.Unlock()
	s.txMu.Lock()
	if s.txUp[tx.upBranch] == tx {
		delete(s.txUp, tx.upBranch)
		if s.txSrc[tx.src]--; s.txSrc[tx.src] <= 0 {
			delete(s.txSrc, tx.src)
		}
	}
	if s.txDown[tx.downBranch] == tx {
		delete(s.txDown, tx.downBranch)
	}
	n := len(s.txUp)
	s.txMu.Unlock()
	s.tableFreed(tableTransactions, n, s.config().MaxTransactions)
}

// stripTopVia removes the first Via element of a message.
func stripTopVia(b []byte) []byte {
	start := 0
	for {
		i := bytes.IndexByte(b[start:], '\n')
		if i < 0 {
			return b
		}
		line := b[start : start+i+1]
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && start > 0 && (bytes.EqualFold(bytes.TrimSpace(name), []byte("via")) || bytes.EqualFold(bytes.TrimSpace(name), []byte("v"))) {
			_, rest := splitComma(string(bytes.TrimSpace(value)))
			var out []byte
			out = append(out, b[:start]...)
			if rest = strings.TrimSpace(rest); rest != "" {
				out = append(append(append(out, "Via: "...), rest...), "\r\n"...)
			}
			return append(out, b[start+i+1:]...)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			return b
		}
		start += i + 1
	}
}

// response handles a response: ours to a probe, to a transaction, or
// relayed statelessly by its Via (RFC 3261 16.7 and 16.11).
func (r *reader) response(m *Msg, from peer) {
	s := r.s
	top, err := m.TopVia()
	if err != nil {
		return
	}
	branch := top.Branch()
	if !strings.HasPrefix(branch, s.viaPrefix()) {
		s.shedCount(ShedStray) // not ours: nothing to do with it
		return
	}
	if s.probeAnswer(branch, m) {
		return
	}
	if strings.HasPrefix(branch[len(s.viaPrefix()):], "p") {
		s.shedCount(ShedStray) // a probe's late answer, after it gave up
		return
	}
	cs, _ := m.CSeq()
	if cs.Method == "CANCEL" {
		// The answer to a CANCEL this proxy sent (its own, hop by hop,
		// with only our Via): nothing to relay or verify.
		return
	}
	if !s.verifyBranch(m, branch) {
		// A response to nothing this proxy sent: forged (a branch copied
		// from a forwarded request and reused), or from a previous start.
		s.forged.Add(1)
		s.logs.Log(slog.LevelWarn, "forged", "sip: response with a branch that does not verify; dropped", "from", from.addr.String())
		return
	}
	if tx := s.txByDown(branch); tx != nil {
		s.txResponse(tx, m, r)
		return
	}
	// No transaction (a 2xx retransmission, a response to a stateless
	// forward): to the next Via.
	r.relay(m)
}

// secondVia is a response's second Via: the hop below ours, where it
// goes on to ("" when there is none).
func secondVia(m *Msg) string {
	var next string
	i := 0
	m.Each("via", func(v string) bool {
		if i == 1 {
			next = v
			return false
		}
		i++
		return true
	})
	return next
}

// relay sends a response on to the address in its second Via.
func (r *reader) relay(m *Msg) {
	via, err := ParseVia(secondVia(m))
	if err != nil {
		return
	}
	host := via.Host
	if rcv, ok := param(via.Params, "received"); ok && rcv != "" {
		host = rcv
	}
	port := via.Port
	if rp, _ := param(via.Params, "rport"); rp != "" {
		port, _ = strconv.Atoi(rp)
	}
	if port == 0 {
		port = 5060
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return
	}
	to := peer{addr: netip.AddrPortFrom(ip.Unmap(), uint16(port))}
	if strings.EqualFold(via.Transport, "TCP") {
		// Back over the connection the request came on (RFC 3261
		// 18.2.2): received and rport name its far end.
		if to.tcp = r.s.tcpConnTo(to.addr); to.tcp == nil {
			r.s.logs.Log(slog.LevelDebug, "relay-tcp", "sip: response not relayed: its TCP connection is closed", "to", to.addr.String())
			return
		}
	}
	r.out = stripTopVia(append(r.out[:0], m.Raw...))
	r.s.send(to, r.out, &r.oob)
}

// txResponse handles the callee's answer to a forwarded INVITE.
func (s *Server) txResponse(tx *proxyTx, m *Msg, r *reader) {
	now := time.Now()
	tx.mu.Lock()
	if tx.done {
		tx.mu.Unlock()
		return
	}
	switch {
	case m.Status < 200:
		if tx.state == txCalling {
			tx.state = txProceeding
			tx.nextRetx = time.Time{}
		}
		if tx.state == txProceeding {
			// Timer C (RFC 3261 16.6 item 11, 16.7 item 2): reset by each
			// provisional answer, but never past twice its value from the
			// first, so a phone ringing forever cannot hold the transaction.
			timerC := time.Duration(s.config().TimerC) * time.Second
			if tx.ringCap.IsZero() {
				tx.ringCap = now.Add(2 * timerC)
			}
			tx.deadline = now.Add(timerC)
			if tx.deadline.After(tx.ringCap) {
				tx.deadline = tx.ringCap
			}
			s.armLocked(tx, now)
		}
		if m.Status == 100 {
			tx.mu.Unlock()
			return
		}
	case m.Status < 300:
		tx.mu.Unlock()
		s.startCall(tx.callID, tx.src)
		s.endTx(tx) // 2xx: the ACK goes end to end, not through us
		r.out = stripTopVia(append(r.out[:0], m.Raw...))
		s.send(tx.up, r.out, &r.oob)
		return
	default:
		// Non-2xx final: ACKed here, hop by hop (RFC 3261 17.1.1.3),
		// relayed upstream and retransmitted until the caller's ACK.
		ack := s.appendHopRequest(nil, "ACK", tx, m.Get("to"))
		s.send(tx.down, ack, &r.oob)
		if tx.state == txCompleted {
			tx.mu.Unlock()
			return // a retransmission of the final answer
		}
		tx.lastResp = stripTopVia([]byte(m.Raw))
		tx.state = txCompleted
		tx.interval = s.t1()
		tx.deadline = now.Add(64 * tx.interval)
		tx.nextRetx = time.Time{}
		if tx.up.tcp == nil {
			tx.nextRetx = now.Add(tx.interval)
		}
		s.armLocked(tx, now)
	}
	resp := stripTopVia(append(r.out[:0], m.Raw...))
	if m.Status >= 200 {
		resp = tx.lastResp
	}
	up := tx.up
	tx.mu.Unlock()
	s.send(up, resp, &r.oob)
}
