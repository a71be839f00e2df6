package sip

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
)

// answerTo builds the response a phone gives to a request: its Via,
// From, To, Call-ID and CSeq copied (RFC 3261 8.2.6).
func answerTo(req string, code int, reason string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, line := range strings.Split(req, "\r\n")[1:] {
		name, _, _ := strings.Cut(line, ":")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "from", "to", "call-id", "cseq":
			b.WriteString(line + "\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// requestURI is a request's Request-URI.
func requestURI(req string) string {
	f := strings.Fields(status(req))
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// udpAnswering makes p answer every OPTIONS with code (as baresip answers
// 404 to an OPTIONS whose Request-URI has no user part it knows) and
// reports the Request-URIs it saw.
func udpAnswering(p *phone, code int, reason string) <-chan string {
	seen := make(chan string, 16)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := p.c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			req := string(buf[:n])
			if !strings.HasPrefix(req, "OPTIONS ") {
				continue
			}
			select {
			case seen <- requestURI(req):
			default:
			}
			p.c.WriteToUDP([]byte(answerTo(req, code, reason)), from)
		}
	}()
	return seen
}

func bindingOf(t *testing.T, s *Server, user string) Binding {
	t.Helper()
	for _, b := range s.Bindings() {
		if b.User == user {
			return b
		}
	}
	t.Fatalf("no binding for %s in %v", user, s.Bindings())
	return Binding{}
}

// TestProbeAnyFinalAnswerIsAlive: a phone that answers 404 or 486 is up;
// only one that never answers fails. The probe carries the phone's user
// part (before: OPTIONS sip:IP:port, answered 404 by baresip, counted as
// a failure: "3 of 3 registered phones do not answer").
func TestProbeAnyFinalAnswerIsAlive(t *testing.T) {
	s, addr := serve(t, nil)
	for _, c := range []struct {
		user   string
		code   int
		reason string
	}{{"201", 404, "Not Found"}, {"202", 486, "Busy Here"}} {
		p := newPhone(t, "127.0.0.1")
		if r := p.roundTrip(addr, reg(c.user, "Contact: <sip:"+c.user+"@{me}>\r\n", "Expires: 600\r\n")); !strings.HasPrefix(r, "SIP/2.0 200") {
			t.Fatalf("register %s: %q", c.user, r)
		}
		seen := udpAnswering(p, c.code, c.reason)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rtt, err := s.ProbeBinding(ctx, bindingOf(t, s, c.user))
		cancel()
		if err != nil || rtt <= 0 {
			t.Errorf("phone answering %d: rtt %v, err %v (want alive)", c.code, rtt, err)
		}
		if uri := <-seen; uri != "sip:"+c.user+"@"+p.addr() {
			t.Errorf("probe Request-URI %q, want the contact as registered", uri)
		}
	}
	silent := newPhone(t, "127.0.0.1")
	if r := silent.roundTrip(addr, reg("203", "Contact: <sip:203@{me}>\r\n", "Expires: 600\r\n")); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register 203: %q", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, err := s.ProbeBinding(ctx, bindingOf(t, s, "203")); err == nil {
		t.Error("a phone that never answers was probed alive")
	}
	// A configured target answering 404 is alive as well.
	tgt := newPhone(t, "127.0.0.1")
	udpAnswering(tgt, 404, "Not Found")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := s.Probe(ctx2, tgt.addr()); err != nil {
		t.Errorf("target answering 404: %v", err)
	}
}

// tcpPhone registers over TCP with a contact on its own TCP listener and
// keeps the connection (its flow).
type tcpPhone struct {
	conn net.Conn
	rd   *bufio.Reader
	ln   net.Listener
}

func newTCPPhone(t *testing.T, addr, user string) *tcpPhone {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := &tcpPhone{conn: c, rd: bufio.NewReader(c), ln: ln}
	me := c.LocalAddr().String()
	msg := strings.ReplaceAll(reg(user, "Contact: <sip:"+user+"@"+ln.Addr().String()+";transport=tcp>\r\n", "Expires: 600\r\n"), "SIP/2.0/UDP {me}", "SIP/2.0/TCP "+me)
	c.Write([]byte(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if r := readSIP(p.rd); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register over tcp: %q", r)
	}
	return p
}

// readSIP reads one message without a body from a stream.
func readSIP(rd *bufio.Reader) string {
	var b strings.Builder
	for {
		line, err := rd.ReadString('\n')
		b.WriteString(line)
		if err != nil || line == "\r\n" {
			return b.String()
		}
	}
}

// TestProbeTCPPhone: a phone registered over TCP is probed over the
// connection it registered on, and once that is gone (as after a
// restart) over a new connection to its contact (read into a pooled
// chunk, grown for an answer larger than it); never over UDP.
func TestProbeTCPPhone(t *testing.T) {
	s, addr := serve(t, func(c *config.SIP) { c.TCPMaxConnections = 8 })
	p := newTCPPhone(t, addr, "301")
	b := bindingOf(t, s, "301")
	if b.Transport != "TCP" {
		t.Fatalf("binding %+v", b)
	}
	got := make(chan string, 1)
	go func() {
		p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		req := readSIP(p.rd)
		got <- req
		p.conn.Write([]byte(answerTo(req, 404, "Not Found")))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.ProbeBinding(ctx, b); err != nil {
		t.Errorf("over the registered flow: %v", err)
	}
	req := <-got
	if !strings.HasPrefix(req, "OPTIONS sip:301@") || !strings.Contains(req, "Via: SIP/2.0/TCP ") {
		t.Errorf("over the flow: %q", req)
	}

	// The flow closes: the probe opens a connection to the contact.
	p.conn.Close()
	for i := 0; s.tcpConnTo(b.Source) != nil && i < 500; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	go func() {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		req := readSIP(bufio.NewReader(c))
		got <- req
		// A provisional answer larger than a pooled chunk, in two
		// pieces: the probe's buffer grows for it.
		trying := strings.Replace(answerTo(req, 100, "Trying"), "\r\n\r\n", "\r\nSubject: "+strings.Repeat("x", 3*chunkSize)+"\r\n\r\n", 1)
		c.Write([]byte(trying[:chunkSize+100]))
		time.Sleep(10 * time.Millisecond)
		c.Write([]byte(trying[chunkSize+100:] + answerTo(req, 486, "Busy Here")))
		time.Sleep(time.Second)
	}()
	if _, err := s.ProbeBinding(ctx, b); err != nil {
		t.Errorf("over a new connection: %v", err)
	}
	if req := <-got; !strings.HasPrefix(req, "OPTIONS sip:301@"+p.ln.Addr().String()+";transport=tcp SIP/2.0") {
		t.Errorf("over a new connection: %q", req)
	}
	// Nothing listens any more: a transport error, at once.
	p.ln.Close()
	if _, err := s.ProbeBinding(ctx, b); err == nil || ctx.Err() != nil {
		t.Errorf("refused connection: %v", err)
	}
}
