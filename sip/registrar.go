package sip

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Limits on what a binding keeps, so that its size is bounded whatever a
// phone sends.
const (
	maxAORLen     = 64
	maxContactLen = 256
	// maxExpires caps a binding's lifetime (a day).
	maxExpires = 86400
)

// contact is one binding of an address-of-record.
type contact struct {
	uri       string         // the Contact URI, cloned from the request
	target    netip.AddrPort // where requests go: the URI's IP and port (invalid for a host name)
	host      string         // the URI's host:port when it is a name
	transport string         // "UDP" or "TCP": how the phone registered
	source    netip.AddrPort // where its REGISTER came from
	local     netip.Addr     // our address it reached
	expires   time.Time
	updated   time.Time
	callID    uint64 // hash of the registering Call-ID
	cseq      uint32
}

// aor is a registered user: up to max_contacts bindings.
type aor struct {
	contacts []contact
}

// Binding is one registered phone as the rest of the daemon sees it.
type Binding struct {
	User    string
	Contact string
	Addr    string // host:port requests are sent to
	Expires time.Time
	// Transport is how the phone registered, "UDP" or "TCP": the monitor
	// probes it the same way.
	Transport string
	// Source is where its REGISTER came from: for TCP, the far end of
	// the connection it registered on (its flow while that is open).
	Source netip.AddrPort
}

// regResult is the outcome of a REGISTER: the answer's code and reason and
// its extra header lines.
type regResult struct {
	code   int
	reason string
	extra  []byte
	shed   bool // refused for capacity
}

// register applies a REGISTER (RFC 3261 10.3) and returns the answer.
// Memory per REGISTER is the binding it keeps and nothing else; the store
// holds at most max_bindings users of at most max_contacts bindings.
func (s *Server) register(m *Msg, src netip.AddrPort, local netip.Addr, transport string, now time.Time, extra []byte) regResult {
	cfg := s.config()
	if v := m.Get("require"); v != "" {
		return regResult{code: 420, reason: "Bad Extension", extra: append(append(append(extra, "Unsupported: "...), v...), "\r\n"...)}
	}
	to, err := ParseAddr(m.Get("to"))
	if err != nil {
		return regResult{code: 400, reason: "Bad Request: malformed To"}
	}
	tu, err := ParseURI(to.URI)
	if err != nil {
		if err == ErrScheme {
			return regResult{code: 416, reason: "Unsupported URI Scheme"}
		}
		return regResult{code: 400, reason: "Bad Request: malformed To URI"}
	}
	user := tu.User
	if user == "" || len(user) > maxAORLen {
		return regResult{code: 400, reason: "Bad Request: To user missing or too long"}
	}
	// Expires header: default for contacts without their own.
	defExp := cfg.DefaultExpires
	if v := m.Get("expires"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return regResult{code: 400, reason: "Bad Request: malformed Expires"}
		}
		defExp = n
	}
	callID := fnv64(m.Get("call-id"))
	cs, _ := m.CSeq()

	// Collect the contacts; "*" only alone and with Expires 0.
	type want struct {
		uri     URI
		text    string
		expires int
	}
	var wants [16]want
	n, star, bad := 0, false, ""
	for it := m.iter("contact"); it.next() && bad == ""; {
		v := it.val
		if v == "*" {
			star = true
			continue
		}
		a, err := ParseAddr(v)
		if err != nil {
			bad = "malformed Contact"
			break
		}
		u, err := ParseURI(a.URI)
		if err != nil {
			if err == ErrScheme {
				bad = "scheme"
			} else {
				bad = "malformed Contact URI"
			}
			break
		}
		if len(a.URI) > maxContactLen {
			bad = "Contact URI too long"
			break
		}
		exp := defExp
		if e, ok := a.Param("expires"); ok {
			x, err := strconv.Atoi(e)
			if err != nil || x < 0 {
				bad = "malformed Contact expires"
				break
			}
			exp = x
		}
		if n == len(wants) || n >= cfg.MaxContacts {
			bad = "too many"
			break
		}
		wants[n] = want{uri: u, text: a.URI, expires: exp}
		n++
	}
	switch {
	case bad == "scheme":
		return regResult{code: 416, reason: "Unsupported URI Scheme"}
	case bad == "too many":
		return regResult{code: 403, reason: "Forbidden: more than " + strconv.Itoa(cfg.MaxContacts) + " contacts (sip.max_contacts)"}
	case bad != "":
		return regResult{code: 400, reason: "Bad Request: " + bad}
	case star && (n > 0 || defExp != 0):
		// RFC 3261 10.2.2: "*" only with Expires: 0 and no other contact.
		return regResult{code: 400, reason: "Bad Request: Contact * needs Expires: 0 and no other contact"}
	}
	for i := 0; i < n; i++ {
		if e := wants[i].expires; e != 0 && e < cfg.MinExpires {
			return regResult{code: 423, reason: "Interval Too Brief",
				extra: strconv.AppendInt(append(extra, "Min-Expires: "...), int64(cfg.MinExpires), 10)}
		}
	}

	// The table is changed under the lock, released by a defer so that a
	// panic recovered by the reader cannot leave it held.
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.aors[user]
	if star {
		if a != nil {
			s.dropAOR(user)
			s.changed()
		}
		return regResult{code: 200, reason: "OK", extra: extra}
	}
	if n == 0 { // a query: list the bindings
		extra = appendContacts(extra, a, now)
		return regResult{code: 200, reason: "OK", extra: extra}
	}
	// RFC 3261 10.3 step 7: the same Call-ID with a CSeq not higher
	// than the binding's is out of order.
	if a != nil {
		for _, c := range a.contacts {
			for i := 0; i < n; i++ {
				if c.uri == wants[i].text && c.callID == callID && cs.Num <= c.cseq && c.expires.After(now) {
					return regResult{code: 500, reason: "Server Internal Error: out of order CSeq", extra: append(extra, "Retry-After: 1\r\n"...)}
				}
			}
		}
	}
	if a == nil {
		adds := false
		for i := 0; i < n; i++ {
			adds = adds || wants[i].expires > 0
		}
		if !adds { // removing bindings that do not exist
			return regResult{code: 200, reason: "OK", extra: extra}
		}
		if len(s.aors) >= cfg.MaxBindings {
			s.sweepLocked(now, 16) // expired users do not hold places
		}
		if len(s.aors) >= cfg.MaxBindings {
			return regResult{code: 503, reason: "Service Unavailable: registrations at capacity (sip.max_bindings)",
				extra: append(extra, "Retry-After: 60\r\n"...), shed: true}
		}
		a = &aor{contacts: make([]contact, 0, min(n, cfg.MaxContacts))}
		s.aors[strings.Clone(user)] = a // the message's text is the reader's buffer
	}
	for i := 0; i < n; i++ {
		w := wants[i]
		idx := -1
		for j := range a.contacts {
			if a.contacts[j].uri == w.text {
				idx = j
				break
			}
		}
		if idx < 0 && n == 1 && w.expires > 0 {
			// The same Call-ID is the same phone (a UA keeps it for its
			// whole boot cycle, RFC 3261 10.2.4): registering from a new
			// address or port, it moved; its old binding would only be a
			// dead contact until it expired.
			for j := range a.contacts {
				if a.contacts[j].callID == callID {
					idx = j
					break
				}
			}
		}
		if w.expires == 0 {
			if idx >= 0 {
				a.contacts = append(a.contacts[:idx], a.contacts[idx+1:]...)
			}
			continue
		}
		c := contact{uri: strings.Clone(w.text), transport: transport, source: src, local: local,
			expires: now.Add(time.Duration(min(w.expires, maxExpires)) * time.Second), updated: now, callID: callID, cseq: cs.Num}
		c.target, c.host = contactDest(w.uri)
		c.host = strings.Clone(c.host)
		switch {
		case idx >= 0:
			a.contacts[idx] = c
		case len(a.contacts) < cfg.MaxContacts:
			a.contacts = append(a.contacts, c)
		default:
			// At the per-user cap, the binding refreshed longest ago
			// gives way (a phone that changed port left it behind).
			old := 0
			for j := range a.contacts {
				if a.contacts[j].updated.Before(a.contacts[old].updated) {
					old = j
				}
			}
			a.contacts[old] = c
			s.evicted.Add(1)
		}
	}
	if len(a.contacts) == 0 {
		s.dropAOR(user)
	}
	extra = appendContacts(extra, a, now)
	if n == 1 && wants[0].expires > 0 {
		extra = append(strconv.AppendInt(append(extra, "Expires: "...), int64(min(wants[0].expires, maxExpires)), 10), "\r\n"...)
	}
	s.changed()
	s.registers.Add(1)
	return regResult{code: 200, reason: "OK", extra: extra}
}

// carriesBinding tells whether a phone registered over TCP from remote
// and its binding has not expired: that connection is the phone's flow.
// It scans the table (bounded by max_bindings), and runs only when a
// connection has been idle for sip.tcp_idle_timeout.
func (s *Server) carriesBinding(remote netip.AddrPort, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.aors {
		for _, c := range a.contacts {
			if c.transport == "TCP" && c.source == remote && c.expires.After(now) {
				return true
			}
		}
	}
	return false
}

// contactDest is where requests for a contact URI go: its IP and port
// (5060 when absent), or for a host name its host:port.
func contactDest(u URI) (netip.AddrPort, string) {
	if ip, err := netip.ParseAddr(u.Host); err == nil {
		port := u.Port
		if port == 0 {
			port = 5060
		}
		return netip.AddrPortFrom(ip.Unmap(), uint16(port)), ""
	}
	return netip.AddrPort{}, u.HostPort()
}

// appendContacts lists an AOR's live bindings with their remaining time
// (RFC 3261 10.3 step 8).
func appendContacts(dst []byte, a *aor, now time.Time) []byte {
	if a == nil {
		return dst
	}
	for _, c := range a.contacts {
		left := int64(c.expires.Sub(now) / time.Second)
		if left <= 0 {
			continue
		}
		dst = append(dst, "Contact: <"...)
		dst = append(dst, c.uri...)
		dst = append(dst, ">;expires="...)
		dst = strconv.AppendInt(dst, left, 10)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// dropAOR removes a user (s.mu held).
func (s *Server) dropAOR(user string) { delete(s.aors, user) }

// sweepLocked drops expired bindings and users without any; limit > 0
// stops after that many users were dropped (s.mu held).
func (s *Server) sweepLocked(now time.Time, limit int) int {
	dropped := 0
	for user, a := range s.aors {
		kept := a.contacts[:0]
		for _, c := range a.contacts {
			if c.expires.After(now) {
				kept = append(kept, c)
			}
		}
		if len(kept) < len(a.contacts) {
			dropped += len(a.contacts) - len(kept)
			s.changed()
		}
		a.contacts = kept
		if len(kept) == 0 {
			delete(s.aors, user)
			if limit > 0 && dropped >= limit {
				break
			}
		}
	}
	return dropped
}

// lookup returns where to send a request for user: its most recently
// refreshed live binding.
func (s *Server) lookup(user string, now time.Time) (contact, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.aors[user]
	if a == nil {
		return contact{}, false
	}
	best := -1
	for i, c := range a.contacts {
		if c.expires.After(now) && (best < 0 || c.updated.After(a.contacts[best].updated)) {
			best = i
		}
	}
	if best < 0 {
		return contact{}, false
	}
	return a.contacts[best], true
}

// Bindings lists the live bindings, ordered by user (the monitor probes
// them).
func (s *Server) Bindings() []Binding {
	now := time.Now()
	s.mu.Lock()
	out := make([]Binding, 0, len(s.aors))
	for user, a := range s.aors {
		for _, c := range a.contacts {
			if !c.expires.After(now) {
				continue
			}
			addr := c.host
			if c.target.IsValid() {
				addr = c.target.String()
			}
			out = append(out, Binding{User: user, Contact: c.uri, Addr: addr, Expires: c.expires, Transport: c.transport, Source: c.source})
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].User != out[j].User {
			return out[i].User < out[j].User
		}
		return out[i].Addr < out[j].Addr
	})
	return out
}

// isOwnTarget reports whether a destination is this server itself (a
// phone that registered the proxy's own address): forwarding there would
// loop.
func (s *Server) isOwnTarget(dst netip.AddrPort) bool {
	port := s.port.Load()
	if port == 0 || uint32(dst.Port()) != port {
		return false
	}
	a := dst.Addr().Unmap()
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	s.mu.Lock()
	own, known, bound := s.ownAddrs[a], !s.ifacesErr, s.bound.Addr().Unmap()
	s.mu.Unlock()
	if own || known {
		return own
	}
	// The interfaces cannot be read (netlink refused, as by a systemd
	// unit without AF_NETLINK). Failing closed here sent every request
	// for this node's own address back to it, to end in 482 Loop
	// Detected: the bound address is ours, and any other is tested.
	return a == bound || s.ownByBindTest(a)
}

// maxOwnByBind bounds the addresses remembered by ownByBindTest.
const maxOwnByBind = 64

// ownByBindTest reports whether a is one of this host's addresses by
// binding a socket to it (the kernel refuses an address it does not
// have), remembered until the next refreshNames.
func (s *Server) ownByBindTest(a netip.Addr) bool {
	s.mu.Lock()
	own, ok := s.ownByBind[a]
	s.mu.Unlock()
	if ok {
		return own
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
	if own = err == nil; own {
		c.Close()
	}
	s.mu.Lock()
	if len(s.ownByBind) >= maxOwnByBind {
		clear(s.ownByBind)
	}
	s.ownByBind[a] = own
	s.mu.Unlock()
	return own
}

// interfaceAddrs lists this host's addresses, or why they cannot be read.
func (s *Server) interfaceAddrs() (map[netip.Addr]bool, error) {
	out := map[netip.Addr]bool{}
	addrs, err := s.ifaces()
	if err != nil {
		return out, fmt.Errorf("interface addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out[ip.Unmap()] = true
			}
		}
	}
	return out, nil
}
