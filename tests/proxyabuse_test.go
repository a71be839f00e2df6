package tests

import (
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sipSock is a raw SIP endpoint on a loopback address.
type sipSock struct {
	t *testing.T
	c *net.UDPConn
}

func newSIPSock(t *testing.T, ip string) *sipSock {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &sipSock{t: t, c: c}
}

func (s *sipSock) addr() string { return s.c.LocalAddr().String() }

func (s *sipSock) send(to, msg string) {
	ua, _ := net.ResolveUDPAddr("udp4", to)
	s.c.WriteToUDP([]byte(strings.ReplaceAll(msg, "{via}", s.addr())), ua)
}

func (s *sipSock) recv(wait time.Duration) string {
	b := make([]byte, 8192)
	s.c.SetReadDeadline(time.Now().Add(wait))
	n, _, err := s.c.ReadFromUDP(b)
	if err != nil {
		return ""
	}
	return string(b[:n])
}

// sipHeader is a header's value in a raw message.
func sipHeader(msg, name string) string {
	for _, l := range strings.Split(msg, "\r\n") {
		if n, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(n), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// respond is a phone's answer to a request: its Vias, From, To (with a
// tag), Call-ID and CSeq.
func respond(req string, code int, reason string) string {
	var b strings.Builder
	b.WriteString("SIP/2.0 " + strconv.Itoa(code) + " " + reason + "\r\n")
	for _, l := range strings.Split(req, "\r\n") {
		n, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(n)) {
		case "via", "from", "call-id", "cseq", "record-route":
			b.WriteString(l + "\r\n")
		case "to":
			b.WriteString("To: " + strings.TrimSpace(v) + ";tag=evil\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// evilCallee answers every INVITE with 180, then (answer200) 200 that it
// never expects to be ACKed, or keeps ringing; it records the last
// INVITE it got.
type evilCallee struct {
	*sipSock
	mu      sync.Mutex
	last    string
	invites atomic.Int64
}

func startEvilCallee(t *testing.T, pb string, answer200 bool) *evilCallee {
	e := &evilCallee{sipSock: newSIPSock(t, "127.0.0.1")}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			m := e.recv(200 * time.Millisecond)
			if !strings.HasPrefix(m, "INVITE ") {
				continue
			}
			e.invites.Add(1)
			e.mu.Lock()
			e.last = m
			e.mu.Unlock()
			e.send(pb, respond(m, 180, "Ringing"))
			if answer200 {
				e.send(pb, respond(m, 200, "OK"))
			}
		}
	}()
	return e
}

func inviteTo(user, pb string, n int, branch bool) string {
	b := ";branch=z9hG4bK-abuse-" + strconv.Itoa(n)
	if !branch {
		b = "" // an RFC 2543 phone
	}
	return "INVITE sip:" + user + "@" + pb + " SIP/2.0\r\nVia: SIP/2.0/UDP {via}" + b + "\r\nFrom: <sip:evil@{via}>;tag=e" + strconv.Itoa(n) +
		"\r\nTo: <sip:" + user + "@" + pb + ">\r\nCall-ID: abuse-" + strconv.Itoa(n) + "@{via}\r\nCSeq: 1 INVITE\r\nContact: <sip:evil@{via}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// flood sends n INVITEs from one socket and counts the answers by code
// (read in the background until the socket closes).
func flood(s *sipSock, pb, user string, first, n int) *sync.Map {
	codes := &sync.Map{}
	go func() {
		for {
			m := s.recv(time.Minute)
			if m == "" {
				return
			}
			if f := strings.Fields(m); len(f) > 1 && f[0] == "SIP/2.0" {
				v, _ := codes.LoadOrStore(f[1], new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
		}
	}()
	for i := 0; i < n; i++ {
		s.send(pb, inviteTo(user, pb, first+i, true))
		time.Sleep(2 * time.Millisecond)
	}
	return codes
}

func codeCount(codes *sync.Map, code string) int64 {
	v, ok := codes.Load(code)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// TestProxyAbuse: hosts that try to hold the proxy's tables. From
// 127.0.0.1: 200s never ACKed, a callee that only rings, forged 2xx
// with a copied branch aimed at a victim; RFC 2543 INVITEs from two
// callers. The per-source caps hold, forged responses are dropped and
// counted, three more attacking addresses fill the transaction table and
// raise sip_table_full, a legitimate sipp call from 127.0.0.2 succeeds
// during the single-source abuse, and every table is empty again within
// 64*T1 and twice Timer C.
func TestProxyAbuse(t *testing.T) {
	sipp := sippPath(t)
	e := newFaultEnv(t, map[string]string{
		"sip.timer_t1_ms": "100", "sip.timer_c": "10",
		"sip.max_transactions": "12", "sip.max_transactions_per_source": "4",
		"sip.max_calls": "12", "sip.max_calls_per_source": "4",
	})
	p := e.tr.start(t, bins.daemon)
	host, port := sipAddr(t, e.sock)
	pb := net.JoinHostPort(host, strconv.Itoa(port))
	status := func() map[string]any { return call(t, e.sock, "phonebook", "status", "") }
	sipNum := func(path ...string) float64 { return num(get(status(), append([]string{"sip"}, path...)...)) }

	answering, ringing := startEvilCallee(t, pb, true), startEvilCallee(t, pb, false)
	for user, c := range map[string]*evilCallee{"6660": answering, "6661": ringing} {
		if ans := rawSIP(t, pb, register(user, c.addr(), 3600)); !strings.HasPrefix(ans, "SIP/2.0 200") {
			t.Fatalf("register %s: %q", user, ans)
		}
	}

	// RFC 2543 INVITEs (no branch) from two callers: both answered and
	// forwarded, none swallowed as the other's retransmission.
	for i, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		s := newSIPSock(t, ip)
		s.send(pb, inviteTo("6661", pb, 900+i, false))
		if r := s.recv(3 * time.Second); !strings.HasPrefix(r, "SIP/2.0 100") {
			t.Fatalf("no-branch INVITE from %s: %q", ip, r)
		}
	}
	waitFor(t, 5*time.Second, "both no-branch INVITEs at the callee", func() bool { return ringing.invites.Load() == 2 })

	// One attacking address: 20 INVITEs to a callee whose 200s are never
	// ACKed, 20 to one that only rings.
	attacker := newSIPSock(t, "127.0.0.1")
	acked := flood(attacker, pb, "6660", 0, 20)
	rung := flood(attacker, pb, "6661", 100, 20)
	waitFor(t, 10*time.Second, "the attacker shed", func() bool { return codeCount(acked, "503")+codeCount(rung, "503") > 0 })
	st := status()
	if n := num(get(st, "sip", "active_calls")); n > 4 {
		t.Errorf("one source holds %v calls (max_calls_per_source 4)", n)
	}
	if n := num(get(st, "sip", "transactions")); n > 4+2 { // the attacker's share and the two no-branch INVITEs
		t.Errorf("%v transactions open (per source 4)", n)
	}
	if num(get(st, "sip", "shed", "calls_per_source"))+num(get(st, "sip", "shed", "transactions_per_source")) == 0 {
		t.Errorf("no per-source shed counted: %v", get(st, "sip", "shed"))
	}

	// Forged 2xx: a real branch copied from a forwarded INVITE, with a
	// victim's address in the Via below and a new Call-ID.
	answering.mu.Lock()
	fwd := answering.last
	answering.mu.Unlock()
	branch := ""
	if v := sipHeader(fwd, "via"); strings.Contains(v, "branch=") {
		branch = strings.SplitN(strings.SplitN(v, "branch=", 2)[1], ";", 2)[0]
	}
	if branch == "" {
		t.Fatalf("no branch in the forwarded INVITE:\n%s", fwd)
	}
	forger, victim := newSIPSock(t, "127.0.0.3"), newSIPSock(t, "127.0.0.1")
	callsBefore := sipNum("active_calls")
	for i := 0; i < 70; i++ {
		forger.send(pb, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP "+pb+";branch="+branch+"\r\nVia: SIP/2.0/UDP "+victim.addr()+";branch=z9hG4bKvictim"+strconv.Itoa(i)+
			"\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: forged-"+strconv.Itoa(i)+"\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
	}
	if r := victim.recv(time.Second); r != "" {
		t.Errorf("a forged response was reflected to the victim:\n%s", r)
	}
	waitFor(t, 5*time.Second, "70 forged responses counted", func() bool { return sipNum("forged_responses") >= 70 })
	if n := sipNum("active_calls"); n > callsBefore {
		t.Errorf("forged 200s entered calls: %v -> %v", callsBefore, n)
	}

	// A legitimate call from another address during the abuse: sipp
	// UAS 2000 and UAC on 127.0.0.2.
	uasPort := freeUDPPort(t)
	uas := start(t, sipp, "-sn", "uas", "-i", "127.0.0.2", "-p", strconv.Itoa(uasPort), "-m", "1", "-nostdin", "-timeout", "30s")
	if ans := rawSIP(t, pb, register("2000", "127.0.0.2:"+strconv.Itoa(uasPort), 3600)); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("register 2000: %q", ans)
	}
	uac := exec.Command(sipp, "-sn", "uac", "-s", "2000", "-i", "127.0.0.2", "-m", "1", "-d", "500", "-nostdin", "-timeout", "30s", pb)
	if out, err := uac.CombinedOutput(); err != nil {
		t.Fatalf("the legitimate call during the abuse failed: %v\n%s", err, tail(out))
	}
	if code := uas.wait(10 * time.Second); code != 0 {
		t.Fatalf("sipp uas exit %d:\n%s", code, tail([]byte(uas.out.String())))
	}

	// Three more attacking addresses fill the transaction table: the
	// condition is raised.
	for i, ip := range []string{"127.0.0.4", "127.0.0.5", "127.0.0.6"} {
		flood(newSIPSock(t, ip), pb, "6661", 200+10*i, 6)
	}
	waitFor(t, 10*time.Second, "sip_table_full raised", func() bool { return hasAlert(t, e.sock, "sip_table_full") })
	if n := sipNum("transactions"); n > 12 {
		t.Errorf("%v transactions, table bound 12", n)
	}

	// Everything is freed by the RFC timers: unACKed calls after 64*T1
	// (6.4 s with T1 100 ms), ringing ones by Timer C (10 s after their
	// one 180), then their 408s' Timer H (64*T1).
	waitFor(t, 60*time.Second, "the tables freed", func() bool {
		return sipNum("transactions") == 0 && sipNum("active_calls") == 0
	})
	if n := sipNum("calls_expired_unacked"); n == 0 {
		t.Errorf("no call counted as freed unACKed")
	}
	// The tables are free, and the condition is held for a minute after
	// the table was last full (its clearing after the hold is
	// TestOverloadHeld's, on the fake clock), so a scrape still sees it.
	if !hasAlert(t, e.sock, "sip_table_full") {
		t.Errorf("sip_table_full was not held after the table drained")
	}
	e.stop(p)
}

func hasAlert(t *testing.T, sock, code string) bool {
	alerts, _ := call(t, sock, "phonebook.health", "check", "")["alerts"].([]any)
	for _, a := range alerts {
		if c, _ := get(a, "code").(string); c == code || strings.HasPrefix(c, code+":") {
			return true
		}
	}
	return false
}
