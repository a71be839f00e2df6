package sip

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/poll"
)

// serveAlerts is serve with a condition recorder.
func serveAlerts(t testing.TB, mod func(*config.SIP)) (*Server, string, *condLog) {
	return serveFaults(t, mod, tcpFaults{})
}

// within waits for cond; generous, never a duration asserted.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	poll.Within(t, d, what, cond)
}

// answer builds a phone's response to a forwarded request.
func answer(t *testing.T, req string, code int, reason, extra string) string {
	t.Helper()
	var m Msg
	if err := Parse(req, &m); err != nil {
		t.Fatalf("parse %q: %v", req, err)
	}
	out := string(appendResponse(nil, &m, code, reason, netipZero, []byte(extra)))
	return out
}

// recvReq returns the next request received (responses skipped).
func (p *phone) recvReq(wait time.Duration, method string) string {
	end := time.Now().Add(wait)
	for time.Now().Before(end) {
		m := p.recv(time.Until(end))
		if strings.HasPrefix(m, method+" ") {
			return m
		}
	}
	return ""
}

// tcpUA is a phone connected to the proxy over TCP.
type tcpUA struct {
	t  *testing.T
	c  net.Conn
	r  *bufio.Reader
	in chan string
}

func newTCPUA(t *testing.T, addr string) *tcpUA {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := &tcpUA{t: t, c: c, r: bufio.NewReader(c), in: make(chan string, 64)}
	go p.read()
	return p
}

func (p *tcpUA) addr() string { return p.c.LocalAddr().String() }

func (p *tcpUA) read() {
	defer close(p.in)
	for {
		var head strings.Builder
		cl := 0
		for {
			line, err := p.r.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" && head.Len() == 0 {
				continue // keep-alive
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
			if name, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "content-length") {
				cl, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		body := make([]byte, cl)
		if _, err := io.ReadFull(p.r, body); err != nil {
			return
		}
		p.in <- head.String() + string(body)
	}
}

func (p *tcpUA) send(msg string) {
	p.t.Helper()
	msg = strings.ReplaceAll(msg, "SIP/2.0/UDP {me}", "SIP/2.0/TCP {me}")
	if _, err := p.c.Write([]byte(strings.ReplaceAll(msg, "{me}", p.addr()))); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next message starting with prefix ("" after wait).
func (p *tcpUA) recv(wait time.Duration, prefix string) string {
	end := time.After(wait)
	for {
		select {
		case m, ok := <-p.in:
			if !ok {
				return ""
			}
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-end:
			return ""
		}
	}
}

// routeSet is a dialog's route set built from a response's (or
// request's) Record-Routes: reversed for the caller (RFC 3261 12.1.2).
func routeSet(msg string, reverse bool) string {
	var m Msg
	Parse(msg, &m)
	var rr []string
	m.Each("record-route", func(v string) bool { rr = append(rr, v); return true })
	if reverse {
		for i, j := 0, len(rr)-1; i < j; i, j = i+1, j-1 {
			rr[i], rr[j] = rr[j], rr[i]
		}
	}
	var b strings.Builder
	for _, r := range rr {
		b.WriteString("Route: " + r + "\r\n")
	}
	return b.String()
}

// TestTCPDialogStaysOnTCP: a callee registered over TCP (its Contact
// its listening port, not the connection's) is called from a UDP
// phone. The INVITE goes over the callee's connection with a double
// Record-Route (RFC 5658: one entry ;transport=tcp facing the callee,
// one UDP facing the caller); the caller's ACK, sent by that route set,
// reaches the callee over TCP; the callee's BYE reaches the caller over
// UDP and the 200 to it goes back over the callee's connection.
func TestTCPDialogStaysOnTCP(t *testing.T) {
	s, addr, _ := serveAlerts(t, nil)
	callee := newTCPUA(t, addr)
	const listen = "127.0.0.1:5999" // the callee's advertised port: nothing listens there
	callee.send(reg("2000", "Contact: <sip:2000@"+listen+";transport=tcp>\r\n", ""))
	if r := callee.recv(2*time.Second, "SIP/2.0"); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register over TCP: %q", status(r))
	}
	caller := newPhone(t, "127.0.0.1")
	inv := strings.ReplaceAll(invite("2000", addr, ""), "{me}", caller.addr())
	caller.send(addr, inv)
	fwd := callee.recv(2*time.Second, "INVITE")
	if fwd == "" {
		t.Fatal("the INVITE did not reach the callee over its connection")
	}
	if !strings.Contains(fwd, "Via: SIP/2.0/TCP ") || strings.Count(fwd, "Record-Route: ") != 2 ||
		!strings.Contains(strings.SplitN(fwd, "Record-Route: ", 2)[1], ";transport=tcp;lr>") {
		t.Fatalf("forwarded INVITE (want our Via TCP, a double Record-Route, the first ;transport=tcp):\n%s", fwd)
	}
	callee.send(answer(t, fwd, 180, "Ringing", ""))
	ok := answer(t, fwd, 200, "OK", "Contact: <sip:2000@"+listen+";transport=tcp>\r\n"+
		strings.TrimSuffix(strings.ReplaceAll(routeRR(fwd), "Route:", "Record-Route:"), ""))
	callee.send(ok)
	final := caller.recvFinal(2 * time.Second)
	if !strings.HasPrefix(final, "SIP/2.0 200") {
		t.Fatalf("caller got %q", status(final))
	}
	if _, active := s.Counts(); active != 1 {
		t.Fatalf("active calls %d", active)
	}
	// The caller's ACK: to the callee's Contact, by the route set.
	var fm Msg
	Parse(final, &fm)
	ack := "ACK sip:2000@" + listen + ";transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP " + caller.addr() + ";branch=z9hG4bK-ack1;rport\r\n" +
		routeSet(final, true) + "From: " + fm.Get("from") + "\r\nTo: " + fm.Get("to") + "\r\nCall-ID: " + fm.Get("call-id") +
		"\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	caller.send(addr, ack)
	if got := callee.recv(2*time.Second, "ACK"); got == "" || strings.Contains(got, "Route:") {
		t.Fatalf("the ACK did not reach the callee over TCP (or kept our Routes):\n%s", got)
	}
	// The callee hangs up: its BYE by the route set in order.
	var im Msg
	Parse(fwd, &im)
	bye := "BYE sip:caller@" + caller.addr() + " SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-bye1;rport\r\n" +
		routeSet(fwd, false) + "From: " + fm.Get("to") + "\r\nTo: " + fm.Get("from") + "\r\nCall-ID: " + fm.Get("call-id") +
		"\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	callee.send(bye)
	got := caller.recvReq(2*time.Second, "BYE")
	if got == "" {
		t.Fatal("the callee's BYE did not reach the caller")
	}
	caller.send(addr, answer(t, got, 200, "OK", ""))
	if r := callee.recv(2*time.Second, "SIP/2.0"); !strings.HasPrefix(r, "SIP/2.0 200") || !strings.Contains(r, "CSeq: 2 BYE") {
		t.Fatalf("the 200 to the BYE did not come back over the callee's connection: %q", status(r))
	}
	if _, active := s.Counts(); active != 0 {
		t.Errorf("active calls %d after BYE", active)
	}
}

// routeRR is the Record-Route lines of a request (a UAS copies them
// into its 2xx).
func routeRR(req string) string {
	var m Msg
	Parse(req, &m)
	var b strings.Builder
	m.Each("record-route", func(v string) bool { b.WriteString("Route: " + v + "\r\n"); return true })
	return b.String()
}

// TestForgedResponsesDropped: responses whose branch does not verify
// are dropped and counted: one made up with this proxy's prefix, and
// one reusing a real forwarded INVITE's branch with another Via below
// (aimed at a victim) and another Call-ID. Neither reaches the victim
// nor enters the calls table.
func TestForgedResponsesDropped(t *testing.T) {
	s, addr, _ := serveAlerts(t, nil)
	caller, callee, forger, victim := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.2"), newPhone(t, "127.0.0.1")
	callee.roundTrip(addr, reg("2000", "Contact: <sip:2000@"+callee.addr()+">\r\n", ""))
	caller.send(addr, invite("2000", addr, ""))
	fwd := callee.recvReq(2*time.Second, "INVITE")
	if fwd == "" {
		t.Fatal("no forwarded INVITE")
	}
	var m Msg
	Parse(fwd, &m)
	top, _ := m.TopVia()
	ours := top.Branch()
	forge := func(branch string, i int) string {
		return "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP " + addr + ";branch=" + branch + "\r\nVia: SIP/2.0/UDP " + victim.addr() +
			";branch=z9hG4bKv" + strconv.Itoa(i) + "\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: forged-" + strconv.Itoa(i) +
			"\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	}
	for i := 0; i < 10; i++ {
		forger.send(addr, forge(ours, i))
		forger.send(addr, forge(ours[:strings.LastIndexByte(ours, '.')-16]+"0123456789abcdef"+ours[strings.LastIndexByte(ours, '.'):], 100+i))
	}
	if r := victim.recv(500 * time.Millisecond); r != "" {
		t.Fatalf("a forged response was reflected to the victim:\n%s", r)
	}
	within(t, 5*time.Second, "20 forged responses counted", func() bool { return s.forged.Load() == 20 })
	if _, active := s.Counts(); active != 0 {
		t.Errorf("forged 200s entered %d calls", active)
	}
	// The real answer still passes.
	callee.send(addr, answer(t, fwd, 200, "OK", ""))
	if r := caller.recvFinal(2 * time.Second); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("the callee's 200: %q", status(r))
	}
	if st, _ := json.Marshal(s.Status()); !strings.Contains(string(st), `"forged_responses":`) {
		t.Errorf("status lacks forged_responses: %s", st)
	}
}

// invite2543 is an INVITE from an RFC 2543 phone: a Via without branch.
func invite2543(user, host, callID string) string {
	return "INVITE sip:" + user + "@" + host + " SIP/2.0\r\nVia: SIP/2.0/UDP {me}\r\nFrom: <sip:old@{me}>;tag=o" + callID +
		"\r\nTo: <sip:" + user + "@" + host + ">\r\nCall-ID: " + callID + "\r\nCSeq: 1 INVITE\r\nContact: <sip:old@{me}>\r\nContent-Length: 0\r\n\r\n"
}

// TestRFC3261_17_2_3_NoBranchFallback: two RFC 2543 phones (no branch)
// call at once: each INVITE is its own transaction (answered 100 and
// forwarded), and a CANCEL matches its INVITE by the fallback fields.
func TestRFC3261_17_2_3_NoBranchFallback(t *testing.T) {
	s, addr, _ := serveAlerts(t, nil)
	callee, a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.2")
	callee.roundTrip(addr, reg("2000", "Contact: <sip:2000@"+callee.addr()+">\r\n", ""))
	for _, p := range []*phone{a, b} {
		p.send(addr, invite2543("2000", addr, "old-"+p.addr()))
		if r := p.recv(2 * time.Second); !strings.HasPrefix(r, "SIP/2.0 100") {
			t.Fatalf("INVITE from %s: %q", p.addr(), status(r))
		}
		if fwd := callee.recvReq(2*time.Second, "INVITE"); !strings.Contains(fwd, "Call-ID: old-"+p.addr()) {
			t.Fatalf("INVITE from %s not forwarded:\n%s", p.addr(), fwd)
		}
	}
	if n := s.Transactions(); n != 2 {
		t.Fatalf("%d transactions, want 2", n)
	}
	// A retransmission is still one.
	a.send(addr, invite2543("2000", addr, "old-"+a.addr()))
	if r := callee.recvReq(300*time.Millisecond, "INVITE"); r != "" {
		t.Errorf("a retransmitted 2543 INVITE was forwarded again")
	}
	cancel := strings.Replace(strings.Replace(invite2543("2000", addr, "old-"+b.addr()), "INVITE sip:", "CANCEL sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 CANCEL", 1)
	b.send(addr, cancel)
	if r := b.recv(2 * time.Second); !strings.HasPrefix(r, "SIP/2.0 200") || !strings.Contains(r, "CANCEL") {
		t.Fatalf("CANCEL: %q", status(r))
	}
	if c := callee.recvReq(2*time.Second, "CANCEL"); !strings.Contains(c, "Call-ID: old-"+b.addr()) {
		t.Fatalf("CANCEL not sent to the callee for b's INVITE:\n%s", c)
	}
}

// TestUnACKedCallFreed: a 2xx never ACKed leaves the calls table after
// 64*T1 (counted); an ACKed call stays until its BYE.
func TestUnACKedCallFreed(t *testing.T) {
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TimerT1MS = 10 })
	caller, callee := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	callee.roundTrip(addr, reg("2000", "Contact: <sip:2000@"+callee.addr()+">\r\n", ""))
	call := func() (final string) {
		caller.send(addr, invite("2000", addr, ""))
		fwd := callee.recvReq(2*time.Second, "INVITE")
		callee.send(addr, answer(t, fwd, 200, "OK", ""))
		final = caller.recvFinal(2 * time.Second)
		if !strings.HasPrefix(final, "SIP/2.0 200") {
			t.Fatalf("200: %q", status(final))
		}
		return final
	}
	call()
	if _, active := s.Counts(); active != 1 {
		t.Fatalf("active %d", active)
	}
	within(t, 10*time.Second, "the unACKed call freed", func() bool { _, a := s.Counts(); return a == 0 })
	if s.callsExpired.Load() != 1 {
		t.Errorf("calls_expired_unacked %d", s.callsExpired.Load())
	}
	final := call()
	var fm Msg
	Parse(final, &fm)
	ack := "ACK sip:2000@" + callee.addr() + " SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-a2;rport\r\n" + routeSet(final, true) +
		"From: " + fm.Get("from") + "\r\nTo: " + fm.Get("to") + "\r\nCall-ID: " + fm.Get("call-id") + "\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	caller.send(addr, ack)
	if callee.recvReq(2*time.Second, "ACK") == "" {
		t.Fatal("ACK not forwarded")
	}
	time.Sleep(3 * 64 * 10 * time.Millisecond) // three times the unACKed limit
	if _, active := s.Counts(); active != 1 {
		t.Errorf("an ACKed call was freed: active %d", active)
	}
}

// TestPerSourceCaps: one source address holds at most its share of the
// transaction and call tables; another source still gets through; a
// full table raises sip_table_full until it drains.
func TestPerSourceCaps(t *testing.T) {
	s, addr, al := serveAlerts(t, func(c *config.SIP) {
		c.TimerT1MS, c.MaxTransactions, c.MaxTransactionsPerSource, c.MaxCalls, c.MaxCallsPerSource = 10, 3, 2, 10, 10
	})
	callee, a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.2")
	callee.roundTrip(addr, reg("2000", "Contact: <sip:2000@"+callee.addr()+">\r\n", ""))
	go func() { // the callee reads and never answers
		for callee.recv(3*time.Second) != "" {
		}
	}()
	for i := 0; i < 2; i++ {
		if r := a.roundTrip(addr, invite("2000", addr, "")); !strings.HasPrefix(r, "SIP/2.0 100") {
			t.Fatalf("a's INVITE %d: %q", i, status(r))
		}
	}
	if r := a.roundTrip(addr, invite("2000", addr, "")); !strings.HasPrefix(r, "SIP/2.0 503") || !strings.Contains(r, "Retry-After") {
		t.Fatalf("a's third INVITE: %q", status(r))
	}
	if s.Shed()["transactions_per_source"] != 1 {
		t.Errorf("shed %v", s.Shed())
	}
	if r := b.roundTrip(addr, invite("2000", addr, "")); !strings.HasPrefix(r, "SIP/2.0 100") {
		t.Fatalf("b's INVITE during a's: %q", status(r))
	}
	within(t, 5*time.Second, "sip_table_full:transactions", func() bool { return al.isActive("sip_table_full:transactions") })
	within(t, 10*time.Second, "the table drained (Timer B) and the condition cleared", func() bool {
		return s.Transactions() == 0 && !al.isActive("sip_table_full:transactions")
	})
}

// TestCallsPerSource: a source holding its share of calls gets 503 for a
// new one; another source does not.
func TestCallsPerSource(t *testing.T) {
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.MaxCallsPerSource = 1 })
	callee, a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.2")
	callee.roundTrip(addr, reg("2000", "Contact: <sip:2000@"+callee.addr()+">\r\n", ""))
	a.send(addr, invite("2000", addr, ""))
	callee.send(addr, answer(t, callee.recvReq(2*time.Second, "INVITE"), 200, "OK", ""))
	if r := a.recvFinal(2 * time.Second); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("a's call: %q", status(r))
	}
	if r := a.roundTrip(addr, invite("2000", addr, "")); !strings.HasPrefix(r, "SIP/2.0 503") {
		t.Fatalf("a's second call: %q", status(r))
	}
	if s.Shed()["calls_per_source"] != 1 {
		t.Errorf("shed %v", s.Shed())
	}
	if r := b.roundTrip(addr, invite("2000", addr, "")); !strings.HasPrefix(r, "SIP/2.0 100") {
		t.Fatalf("b's call: %q", status(r))
	}
}

// TestTimerCRingingForever: a callee that sends 180 again and again is
// still cancelled and the caller answered 408 (RFC 3261 16.8), by
// twice Timer C at most.
func TestTimerCRingingForever(t *testing.T) {
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TimerT1MS, c.TimerC = 10, 1 })
	caller, callee := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	callee.roundTrip(addr, reg("2000", "Contact: <sip:2000@"+callee.addr()+">\r\n", ""))
	caller.send(addr, invite("2000", addr, ""))
	fwd := callee.recvReq(2*time.Second, "INVITE")
	ring := answer(t, fwd, 180, "Ringing", "")
	cancelled, stop := make(chan string, 1), make(chan struct{})
	defer close(stop)
	ua, _ := net.ResolveUDPAddr("udp4", addr)
	go func() { // rings every 200 ms until cancelled
		for {
			select {
			case <-stop:
				return
			default:
			}
			callee.c.WriteToUDP([]byte(ring), ua)
			if m := callee.recv(200 * time.Millisecond); strings.HasPrefix(m, "CANCEL ") {
				cancelled <- m
				return
			}
		}
	}()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("a callee ringing forever was never cancelled")
	}
	if r := caller.recvFinal(5 * time.Second); !strings.HasPrefix(r, "SIP/2.0 408") {
		t.Fatalf("caller got %q, want 408", status(r))
	}
	_ = s
}

// TestTCPCaller2xxRetransmissions: a caller over TCP calls a UDP phone.
// The forwarded INVITE has a double Record-Route (UDP facing the callee,
// ;transport=tcp facing the caller); the 200 and the callee's
// retransmissions of it (the proxy's transaction ended with the first)
// reach the caller over its connection, never as UDP; the caller's
// ACK over TCP by its route set reaches the callee.
func TestTCPCaller2xxRetransmissions(t *testing.T) {
	s, addr, _ := serveAlerts(t, nil)
	callee := newPhone(t, "127.0.0.1")
	callee.roundTrip(addr, reg("2000", "Contact: <sip:2000@"+callee.addr()+">\r\n", ""))
	caller := newTCPUA(t, addr)
	caller.send(invite("2000", addr, ""))
	fwd := callee.recvReq(2*time.Second, "INVITE")
	rr := strings.Split(routeRR(fwd), "\r\n")
	if len(rr) != 3 || strings.Contains(rr[0], "transport=tcp") || !strings.Contains(rr[1], ";transport=tcp;lr>") {
		t.Fatalf("Record-Route facing the callee (UDP), then the caller (TCP):\n%s", fwd)
	}
	ok := answer(t, fwd, 200, "OK", strings.ReplaceAll(routeRR(fwd), "Route:", "Record-Route:")+"Contact: <sip:2000@"+callee.addr()+">\r\n")
	for i := 0; i < 3; i++ { // the 200 and two retransmissions
		callee.send(addr, ok)
		if r := caller.recv(2*time.Second, "SIP/2.0 2"); r == "" {
			t.Fatalf("200 number %d did not reach the caller over TCP", i+1)
		}
	}
	if n := s.Transactions(); n != 0 {
		t.Errorf("%d transactions after the 2xx", n)
	}
	var fm Msg
	Parse(strings.ReplaceAll(ok, "\r\nVia: SIP/2.0/UDP", "\r\nVia: SIP/2.0/UDP"), &fm)
	ack := "ACK sip:2000@" + callee.addr() + " SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-tack;rport\r\n" + routeSet(ok, true) +
		"From: " + fm.Get("from") + "\r\nTo: " + fm.Get("to") + "\r\nCall-ID: " + fm.Get("call-id") + "\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	caller.send(ack)
	if got := callee.recvReq(2*time.Second, "ACK"); got == "" || strings.Contains(got, "Route:") {
		t.Fatalf("the ACK over TCP did not reach the callee (or kept our Routes):\n%s", got)
	}
}

// FuzzProxy drives arbitrary messages through the proxy's request and
// response paths (transaction keys, branch MACs, routes, flows) on a
// server that is not listening: no panic, and the tables stay within
// their bounds.
func FuzzProxy(f *testing.F) {
	for _, seed := range []string{
		strings.ReplaceAll(invite("2000", "127.0.0.1:5060", ""), "{me}", "127.0.0.1:7000"),
		strings.ReplaceAll(invite2543("2000", "127.0.0.1:5060", "x1"), "{me}", "127.0.0.1:7001"),
		"ACK sip:2000@127.0.0.1:7002;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:7003;branch=z9hG4bKa\r\nRoute: <sip:127.0.0.1:5060;transport=tcp;lr>, <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n\r\n",
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKpb00000000.0123456789abcdef.0123456789abcdef\r\nVia: SIP/2.0/TCP 127.0.0.1:7004;branch=z9hG4bKv;received=127.0.0.1;rport=7004\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
	} {
		f.Add(seed)
	}
	cfg := config.Defaults().SIP
	cfg.MaxTransactions, cfg.MaxCalls = 8, 8
	cfg.TCPMaxConnections = 0 // no connection is opened to what a message names
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), noAlerts{})
	r := newReader(s, 0)
	from := peer{addr: netipMustAddrPort("127.0.0.1:7000")}
	f.Fuzz(func(t *testing.T, raw string) {
		var m Msg
		if Parse(raw, &m) != nil {
			return
		}
		if !m.Request {
			r.response(&m, from)
		} else if m.CheckRequest() == nil {
			switch m.Method {
			case "INVITE", "ACK", "BYE", "CANCEL":
				r.proxyRequest(&m, from, time.Now())
			}
		}
		if n := s.Transactions(); n > cfg.MaxTransactions {
			t.Fatalf("%d transactions, bound %d", n, cfg.MaxTransactions)
		}
		if n := s.activeCalls(); n > cfg.MaxCalls {
			t.Fatalf("%d calls, bound %d", n, cfg.MaxCalls)
		}
	})
}

func netipMustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// registerThenLeave registers 2000 over TCP with its Contact at contact,
// then closes that connection and waits until the server has forgotten
// it: a TCP phone whose flow is gone.
func registerThenLeave(t *testing.T, s *Server, addr, contact string) {
	t.Helper()
	callee := newTCPUA(t, addr)
	callee.send(reg("2000", "Contact: <sip:2000@"+contact+";transport=tcp>\r\n", ""))
	if r := callee.recv(2*time.Second, "SIP/2.0"); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register over TCP: %q", status(r))
	}
	callee.c.Close()
	within(t, 5*time.Second, "the connection forgotten", func() bool {
		s.tcpMu.Lock()
		defer s.tcpMu.Unlock()
		return len(s.tcpConns) == 0
	})
}

// TestTCPPhoneGoneNotTriedOverUDP: a phone registered over TCP with a
// ;transport=tcp Contact whose connection has closed, and on whose
// Contact nothing accepts TCP, gets no INVITE over UDP (its port may be
// another program's); the caller gets 480.
func TestTCPPhoneGoneNotTriedOverUDP(t *testing.T) {
	s, addr, _ := serveAlerts(t, nil)
	udpSide := newPhone(t, "127.0.0.1") // what listens on the Contact's port over UDP
	registerThenLeave(t, s, addr, udpSide.addr())
	caller := newPhone(t, "127.0.0.1")
	caller.send(addr, invite("2000", addr, ""))
	if r := caller.recvFinal(2 * time.Second); !strings.HasPrefix(r, "SIP/2.0 480") {
		t.Errorf("caller got %q, want 480", status(r))
	}
	if m := udpSide.recv(300 * time.Millisecond); m != "" {
		t.Errorf("the INVITE went over UDP to a TCP Contact:\n%s", m)
	}
}

// TestSweepCalls: the safety sweep drops an unconfirmed call past 64*T1
// (should its timer be lost) and a confirmed one only past StaleCall,
// and a table that drains clears sip_table_full.
func TestSweepCalls(t *testing.T) {
	cfg := config.Defaults().SIP
	cfg.MaxCalls = 2
	al := newCondLog()
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), al)
	s.startCall("unconfirmed", netip.MustParseAddr("127.0.0.1"))
	s.startCall("confirmed", netip.MustParseAddr("127.0.0.1"))
	s.confirmCall("confirmed")
	if !al.isActive("sip_table_full:calls") {
		t.Fatal("calls table at its bound: no sip_table_full:calls")
	}
	now := time.Now()
	if _, n := s.Sweep(now.Add(65 * s.t1())); n != 1 {
		t.Fatalf("swept %d calls past 64*T1, want the unconfirmed one", n)
	}
	if al.isActive("sip_table_full:calls") {
		t.Error("sip_table_full:calls still raised below the bound")
	}
	if _, n := s.Sweep(now.Add(StaleCall + time.Minute)); n != 1 {
		t.Fatalf("swept %d calls past StaleCall", n)
	}
	if s.activeCalls() != 0 || s.callsFrom(netip.MustParseAddr("127.0.0.1")) != 0 {
		t.Errorf("calls %d, from the source %d", s.activeCalls(), s.callsFrom(netip.MustParseAddr("127.0.0.1")))
	}
}

// TestTCPConnectsToContactWhenFlowClosed: a phone registered over TCP
// whose connection has closed (an idle timeout, a NAT) is reached by a
// new connection to its Contact (RFC 3261 18.1.1), its answer comes back
// on that connection, and the caller gets it.
func TestTCPConnectsToContactWhenFlowClosed(t *testing.T) {
	s, addr, _ := serveAlerts(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0") // the phone's listening socket
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	registerThenLeave(t, s, addr, ln.Addr().String())
	caller := newPhone(t, "127.0.0.1")
	caller.send(addr, invite("2000", addr, ""))
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("the proxy did not connect to the Contact: %v", err)
	}
	again := &tcpUA{t: t, c: c, r: bufio.NewReader(c), in: make(chan string, 64)}
	t.Cleanup(func() { c.Close() })
	go again.read()
	fwd := again.recv(2*time.Second, "INVITE")
	if !strings.Contains(fwd, "Via: SIP/2.0/TCP ") {
		t.Fatalf("INVITE over the new connection:\n%s", fwd)
	}
	again.c.Write([]byte(answer(t, fwd, 200, "OK", "")))
	if r := caller.recvFinal(2 * time.Second); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("caller got %q", status(r))
	}
}

// TestOwnCancelAnswerNotForged: the callee's 200 to the proxy's own
// CANCEL (one Via, ours) is absorbed, not counted as forged; its 487 is
// relayed.
func TestOwnCancelAnswerNotForged(t *testing.T) {
	s, addr, _ := serveAlerts(t, nil)
	caller, callee := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	callee.roundTrip(addr, reg("2000", "Contact: <sip:2000@"+callee.addr()+">\r\n", ""))
	inv := strings.ReplaceAll(invite("2000", addr, ""), "{me}", caller.addr())
	caller.send(addr, inv)
	fwd := callee.recvReq(2*time.Second, "INVITE")
	callee.send(addr, answer(t, fwd, 180, "Ringing", ""))
	cancel := strings.Replace(strings.Replace(inv, "INVITE sip:", "CANCEL sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 CANCEL", 1)
	caller.send(addr, cancel)
	c := callee.recvReq(2*time.Second, "CANCEL")
	if c == "" {
		t.Fatal("no CANCEL at the callee")
	}
	callee.send(addr, answer(t, c, 200, "OK", ""))
	callee.send(addr, answer(t, fwd, 487, "Request Terminated", ""))
	if r := caller.recvFinal(2 * time.Second); !strings.HasPrefix(r, "SIP/2.0 200") && !strings.HasPrefix(r, "SIP/2.0 487") {
		t.Fatalf("caller got %q", status(r))
	}
	within(t, 2*time.Second, "the 487 relayed", func() bool {
		for {
			r := caller.recv(100 * time.Millisecond)
			if r == "" {
				return false
			}
			if strings.HasPrefix(r, "SIP/2.0 487") {
				return true
			}
		}
	})
	if n := s.forged.Load(); n != 0 {
		t.Errorf("forged_responses %d after the 200 to our own CANCEL", n)
	}
}
