package sip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/supervisor"
)

var seq atomic.Int64

// serve runs a server on a loopback port with settings changed by mod.
func serve(t testing.TB, mod func(*config.SIP)) (*Server, string) {
	cfg := config.Defaults().SIP
	cfg.Listen = "127.0.0.1:0"
	if mod != nil {
		mod(&cfg)
	}
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), noAlerts{})
	sup := supervisor.New(supervisor.Options{MaxRestarts: 1, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "main", Period: Period, Run: s.Run})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); sup.Wait(context.Background()) })
	sup.Start(ctx)
	return s, s.Addr()
}

// phone is a UDP endpoint on loopback: a caller, a callee, a registrar
// client.
type phone struct {
	t testing.TB
	c *net.UDPConn
}

func newPhone(t testing.TB, ip string) *phone {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &phone{t: t, c: c}
}

func (p *phone) addr() string { return p.c.LocalAddr().String() }

func (p *phone) send(to, msg string) {
	p.t.Helper()
	ua, _ := net.ResolveUDPAddr("udp4", to)
	if _, err := p.c.WriteToUDP([]byte(strings.ReplaceAll(msg, "{me}", p.addr())), ua); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next message, or "" after wait.
func (p *phone) recv(wait time.Duration) string {
	buf := make([]byte, 65536)
	p.c.SetReadDeadline(time.Now().Add(wait))
	n, _, err := p.c.ReadFromUDP(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// recvFinal skips provisional responses.
func (p *phone) recvFinal(wait time.Duration) string {
	end := time.Now().Add(wait)
	for time.Now().Before(end) {
		m := p.recv(time.Until(end))
		if m != "" && !strings.HasPrefix(m, "SIP/2.0 1") {
			return m
		}
	}
	return ""
}

func (p *phone) roundTrip(to, msg string) string {
	p.t.Helper()
	p.send(to, msg)
	return p.recv(2 * time.Second)
}

func reg(user, contacts string, expires string) string {
	n := seq.Add(1)
	return fmt.Sprintf("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-r%d;rport\r\nFrom: <sip:%s@127.0.0.1>;tag=f%d\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: reg-%d\r\nCSeq: 1 REGISTER\r\n%s%sMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		n, user, n, user, n, contacts, expires)
}

func invite(user, host string, extra string) string {
	n := seq.Add(1)
	return fmt.Sprintf("INVITE sip:%s@%s SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-i%d;rport\r\nFrom: <sip:caller@{me}>;tag=c%d\r\nTo: <sip:%s@%s>\r\nCall-ID: call-%d\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\n%sContent-Length: 0\r\n\r\n",
		user, host, n, n, user, host, n, extra)
}

func status(m string) string {
	if i := strings.Index(m, "\r\n"); i > 0 {
		return m[:i]
	}
	return m
}

func TestRFC3261_10_2_2_ContactStarOnlyWithExpiresZero(t *testing.T) {
	s, addr := serve(t, nil)
	p := newPhone(t, "127.0.0.1")
	if r := p.roundTrip(addr, reg("500", "Contact: <sip:500@127.0.0.1:7000>\r\n", "")); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register: %s", status(r))
	}
	for _, bad := range []string{"Contact: *\r\n", "Contact: *\r\nExpires: 3600\r\n", "Contact: *, <sip:500@127.0.0.1:7001>\r\nExpires: 0\r\n"} {
		if r := p.roundTrip(addr, reg("500", bad, "")); !strings.HasPrefix(r, "SIP/2.0 400") {
			t.Errorf("%q: %s", bad, status(r))
		}
	}
	if n, _ := s.Counts(); n != 1 {
		t.Fatalf("binding lost to a refused *: %d", n)
	}
	if r := p.roundTrip(addr, reg("500", "Contact: *\r\n", "Expires: 0\r\n")); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("* with Expires 0: %s", status(r))
	}
	if n, _ := s.Counts(); n != 0 {
		t.Errorf("%d users after Contact: *", n)
	}
}

func TestRFC3261_10_3_AllContactsKeptAndListed(t *testing.T) {
	s, addr := serve(t, func(c *config.SIP) { c.MaxContacts = 3 })
	p := newPhone(t, "127.0.0.1")
	r := p.roundTrip(addr, reg("600", "Contact: <sip:600@127.0.0.1:7001>, <sip:600@127.0.0.1:7002>\r\nContact: <sip:600@127.0.0.1:7003>;expires=120\r\n", ""))
	if !strings.HasPrefix(r, "SIP/2.0 200") || strings.Count(r, "Contact: ") != 3 || !strings.Contains(r, "7003>;expires=120") {
		t.Fatalf("three contacts:\n%s", r)
	}
	if len(s.Bindings()) != 3 {
		t.Errorf("bindings %v", s.Bindings())
	}
	// More contacts in one REGISTER than the cap: refused, nothing lost.
	r = p.roundTrip(addr, reg("600", "Contact: <sip:600@127.0.0.1:1>, <sip:600@127.0.0.1:2>, <sip:600@127.0.0.1:3>, <sip:600@127.0.0.1:4>\r\n", ""))
	if !strings.HasPrefix(r, "SIP/2.0 403") || len(s.Bindings()) != 3 {
		t.Errorf("over the cap: %s, %d bindings", status(r), len(s.Bindings()))
	}
	// A phone that changed port: the binding refreshed longest ago goes.
	time.Sleep(10 * time.Millisecond)
	r = p.roundTrip(addr, reg("600", "Contact: <sip:600@127.0.0.1:7004>\r\n", ""))
	if !strings.HasPrefix(r, "SIP/2.0 200") || strings.Count(r, "Contact: ") != 3 || !strings.Contains(r, ":7004>") || len(s.Bindings()) != 3 {
		t.Errorf("replacement:\n%s", r)
	}
}

func TestRFC3261_10_3_IntervalTooBrief423(t *testing.T) {
	_, addr := serve(t, func(c *config.SIP) { c.MinExpires = 60 })
	p := newPhone(t, "127.0.0.1")
	r := p.roundTrip(addr, reg("700", "Contact: <sip:700@127.0.0.1:7000>\r\n", "Expires: 10\r\n"))
	if !strings.HasPrefix(r, "SIP/2.0 423 Interval Too Brief") || !strings.Contains(r, "Min-Expires: 60") {
		t.Errorf("%s", r)
	}
}

func TestRFC3261_8_2_2_OtherSIPVersion505(t *testing.T) {
	_, addr := serve(t, nil)
	p := newPhone(t, "127.0.0.1")
	r := p.roundTrip(addr, strings.Replace(reg("800", "", ""), "SIP/2.0\r\n", "SIP/3.0\r\n", 1))
	if !strings.HasPrefix(r, "SIP/2.0 505") {
		t.Errorf("%s", status(r))
	}
}

func TestRFC3261_8_2_1_UnsupportedURIScheme416(t *testing.T) {
	_, addr := serve(t, nil)
	p := newPhone(t, "127.0.0.1")
	msg := strings.Replace(invite("1", "127.0.0.1", ""), "INVITE sip:1@127.0.0.1", "INVITE mailto:1@127.0.0.1", 1)
	if r := p.roundTrip(addr, msg); !strings.HasPrefix(r, "SIP/2.0 416") {
		t.Errorf("%s", status(r))
	}
}

func TestRFC3261_16_3_UnknownProxyRequire420(t *testing.T) {
	_, addr := serve(t, nil)
	p := newPhone(t, "127.0.0.1")
	r := p.roundTrip(addr, invite("1", "127.0.0.1", "Proxy-Require: foo\r\n"))
	if !strings.HasPrefix(r, "SIP/2.0 420") || !strings.Contains(r, "Unsupported: foo") {
		t.Errorf("%s", r)
	}
}

func TestRFC3261_16_3_MaxForwardsZero483(t *testing.T) {
	_, addr := serve(t, nil)
	p := newPhone(t, "127.0.0.1")
	if r := p.roundTrip(addr, invite("1", "127.0.0.1", "Max-Forwards: 0\r\n")); !strings.HasPrefix(r, "SIP/2.0 483") {
		t.Errorf("%s", status(r))
	}
}

// A phone that registered the proxy's own address, then a call to it:
// the caller gets 482 within the transaction time, not a request that
// circles until Max-Forwards runs out.
func TestRFC3261_16_3_LoopDetected482(t *testing.T) {
	_, addr := serve(t, func(c *config.SIP) { c.TimerT1MS = 50 })
	p := newPhone(t, "127.0.0.1")
	if r := p.roundTrip(addr, reg("900", "Contact: <sip:900@"+addr+">\r\n", "")); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register: %s", status(r))
	}
	p.send(addr, invite("900", addr, ""))
	if r := p.recvFinal(64 * 50 * time.Millisecond); !strings.HasPrefix(r, "SIP/2.0 482") {
		t.Errorf("final answer: %q", status(r))
	}
}

// TestRFC3261_16_Proxy_Call: INVITE to a registered phone is forwarded
// with our Via and Record-Route, the 180 and 200 come back by Via, the
// call counts as active until the BYE.
func TestRFC3261_16_Proxy_Call(t *testing.T) {
	s, addr := serve(t, nil)
	caller, callee := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	callee.roundTrip(addr, reg("2000", "Contact: <sip:2000@"+callee.addr()+">\r\n", ""))
	caller.send(addr, invite("2000", addr, ""))
	if r := caller.recv(2 * time.Second); !strings.HasPrefix(r, "SIP/2.0 100") {
		t.Fatalf("no 100 Trying: %q", r)
	}
	fwd := callee.recv(2 * time.Second)
	if !strings.HasPrefix(fwd, "INVITE sip:2000@"+callee.addr()+" SIP/2.0") || !strings.Contains(fwd, "Record-Route: <sip:127.0.0.1:") || !strings.Contains(fwd, "Max-Forwards: 69") {
		t.Fatalf("forwarded INVITE:\n%s", fwd)
	}
	var m Msg
	if err := Parse(fwd, &m); err != nil {
		t.Fatal(err)
	}
	resp := func(code int, reason string) string {
		var out []byte
		out = appendResponse(out, &m, code, reason, netipZero, nil)
		return string(out)
	}
	callee.send(addr, resp(180, "Ringing"))
	if r := caller.recv(2 * time.Second); !strings.HasPrefix(r, "SIP/2.0 180") || strings.Count(r, "Via: ") != 1 {
		t.Fatalf("180 relayed:\n%s", r)
	}
	callee.send(addr, resp(200, "OK"))
	if r := caller.recv(2 * time.Second); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("200 relayed: %q", status(r))
	}
	if _, active := s.Counts(); active != 1 {
		t.Errorf("active calls %d", active)
	}
	if n := s.Transactions(); n != 0 {
		t.Errorf("%d transactions after the 2xx", n)
	}
}

// TestRFC3261_17_1_1_3_NonInviteACKHopByHop: a busy callee's 486 is ACKed
// by the proxy itself, relayed to the caller, and the caller's ACK is
// absorbed, never forwarded downstream.
func TestRFC3261_17_1_1_3_NonInviteACKHopByHop(t *testing.T) {
	s, addr := serve(t, func(c *config.SIP) { c.TimerT1MS = 50 })
	caller, callee := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	callee.roundTrip(addr, reg("2001", "Contact: <sip:2001@"+callee.addr()+">\r\n", ""))
	inv := invite("2001", addr, "")
	caller.send(addr, inv)
	fwd := callee.recv(2 * time.Second)
	var m Msg
	if err := Parse(fwd, &m); err != nil {
		t.Fatal(err)
	}
	ourBranch := func(s string) string {
		var mm Msg
		Parse(s, &mm)
		v, _ := mm.TopVia()
		return v.Branch()
	}
	callee.send(addr, string(appendResponse(nil, &m, 486, "Busy Here", netipZero, nil)))
	ack := callee.recv(2 * time.Second)
	if !strings.HasPrefix(ack, "ACK sip:2001@") || ourBranch(ack) != ourBranch(fwd) {
		t.Fatalf("hop-by-hop ACK:\n%s", ack)
	}
	final := caller.recvFinal(2 * time.Second)
	if !strings.HasPrefix(final, "SIP/2.0 486") {
		t.Fatalf("caller got %q", status(final))
	}
	// The caller's ACK for the 486 (same branch as its INVITE).
	var im Msg
	Parse(strings.ReplaceAll(inv, "{me}", caller.addr()), &im)
	toLine := ""
	var fm Msg
	Parse(final, &fm)
	toLine = fm.Get("to")
	ackUp := strings.Replace(strings.Replace(strings.ReplaceAll(inv, "{me}", caller.addr()), "INVITE sip:", "ACK sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 ACK", 1)
	ackUp = strings.Replace(ackUp, "To: "+im.Get("to"), "To: "+toLine, 1)
	caller.send(addr, ackUp)
	if extra := callee.recv(300 * time.Millisecond); strings.HasPrefix(extra, "ACK") {
		t.Errorf("the caller's non-2xx ACK was forwarded downstream:\n%s", extra)
	}
	if n := s.Transactions(); n != 0 {
		t.Errorf("%d transactions after the ACK", n)
	}
}

// TestProxyFloodBounded: 5,000 INVITEs to a registered phone that never
// answers: the transaction table holds its cap, the excess gets 503 with
// Retry-After, and every accepted one ends with 408 on Timer B.
func TestProxyFloodBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("slow (5,000 INVITEs through Timer B): make test runs it")
	}
	const limit, n = 64, 5000
	s, addr := serve(t, func(c *config.SIP) {
		c.MaxTransactions, c.MaxTransactionsPerSource, c.MaxCalls, c.MaxCallsPerSource, c.TimerT1MS = limit, limit, 2*limit, 2*limit, 20
	})
	caller, callee := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	callee.roundTrip(addr, reg("3000", "Contact: <sip:3000@"+callee.addr()+">\r\n", ""))
	go func() { // the callee reads and never answers
		for callee.recv(5*time.Second) != "" {
		}
	}()
	counts := map[string]int{}
	timeouts := map[string]bool{} // 408s are retransmitted until ACKed
	done := make(chan struct{})
	go func() {
		defer close(done)
		idle := 0
		for idle < 3 {
			r := caller.recv(time.Second)
			if r == "" {
				idle++
				continue
			}
			idle = 0
			code := strings.Fields(r)[1]
			if code == "408" {
				var m Msg
				Parse(r, &m)
				if timeouts[m.Get("call-id")] {
					continue
				}
				timeouts[m.Get("call-id")] = true
			}
			counts[code]++
		}
	}()
	peak := 0
	for i := 0; i < n; i++ {
		caller.send(addr, invite("3000", addr, ""))
		if i%50 == 0 {
			peak = max(peak, s.Transactions())
			time.Sleep(time.Millisecond) // the caller's socket buffer
		}
	}
	<-done
	t.Logf("answers: %v; peak transactions %d", counts, peak)
	if peak > limit {
		t.Errorf("transactions peaked at %d, cap %d", peak, limit)
	}
	// Datagrams the kernel drops under the flood go unanswered (a phone
	// would retransmit); every answer given must be one of these.
	if counts["503"] == 0 || counts["100"] == 0 || counts["408"] != counts["100"] || len(counts) != 3 {
		t.Errorf("answers %v: want 100 then 408 for each accepted INVITE, 503 for the rest, nothing else", counts)
	}
	if got := s.Transactions(); got != 0 {
		t.Errorf("%d transactions left after Timer B", got)
	}
	if s.Shed()["transactions"] < int64(counts["503"]) {
		t.Errorf("shed count %d, 503s %d", s.Shed()["transactions"], counts["503"])
	}
}

// TestViaNamesArrivalAddress: a wildcard listener answers from, and
// names in Via and Record-Route, the address each request arrived on
// (IP_PKTINFO), here 127.0.0.1 and 127.0.0.2.
func TestViaNamesArrivalAddress(t *testing.T) {
	s, addr := serve(t, func(c *config.SIP) { c.Listen = "0.0.0.0:0" })
	_, port, _ := net.SplitHostPort(addr)
	callee := newPhone(t, "127.0.0.1")
	callee.roundTrip("127.0.0.1:"+port, reg("4000", "Contact: <sip:4000@"+callee.addr()+">\r\n", ""))
	for _, local := range []string{"127.0.0.1", "127.0.0.2"} {
		caller := newPhone(t, "127.0.0.1")
		caller.send(local+":"+port, invite("4000", local+":"+port, ""))
		fwd := callee.recv(2 * time.Second)
		if !strings.Contains(fwd, "Via: SIP/2.0/UDP "+local+":"+port+";") || !strings.Contains(fwd, "Record-Route: <sip:"+local+":"+port+";lr>") {
			t.Errorf("arrived on %s, forwarded:\n%s", local, fwd)
		}
		// The 100 Trying comes from the address the caller used.
		buf := make([]byte, 4096)
		caller.c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, from, err := caller.c.ReadFromUDP(buf)
		if err != nil || from.IP.String() != local {
			t.Errorf("answer to a request sent to %s came from %v (%v)", local, from, err)
		}
	}
	_ = s
}

var netipZero = netip.AddrPort{}

// TestActiveCallsBounded: calls answered past sip.max_calls are not
// tracked (and a new INVITE past it gets 503 with Retry-After).
func TestActiveCallsBounded(t *testing.T) {
	s, addr := serve(t, func(c *config.SIP) { c.MaxCalls = 3 })
	for i := 0; i < 1000; i++ {
		s.startCall(fmt.Sprintf("call-%d", i), netip.Addr{})
	}
	if _, active := s.Counts(); active != 3 {
		t.Fatalf("%d active calls tracked, bound 3", active)
	}
	p := newPhone(t, "127.0.0.1")
	if r := p.roundTrip(addr, invite("1", addr, "")); !strings.HasPrefix(r, "SIP/2.0 503") || !strings.Contains(r, "Retry-After:") {
		t.Errorf("new INVITE at the call limit: %q", status(r))
	}
	if s.Shed()["calls"] != 1 {
		t.Errorf("shed %v", s.Shed())
	}
}
