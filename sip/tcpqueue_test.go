package sip

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
)

// stalledTCPPhone registers user over TCP on a connection with the least
// receive window, then pipelines OPTIONS without reading the answers
// until the server stops reading it (its writes no longer go through):
// the server holds answers for it that the peer does not take.
func stalledTCPPhone(t *testing.T, addr, user string) net.Conn {
	t.Helper()
	c := dialSmallWindow(t, addr)
	t.Cleanup(func() { c.Close() })
	me := c.LocalAddr().String()
	msg := strings.ReplaceAll(reg(user, "Contact: <sip:"+user+"@"+me+";transport=tcp>\r\n", "Expires: 600\r\n"), "SIP/2.0/UDP {me}", "SIP/2.0/TCP "+me)
	c.Write([]byte(msg))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if r := readSIP(bufio.NewReader(c)); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register over tcp: %q", r)
	}
	// Bounded: a server that reads everything (it never does: its
	// answers fill the window) would fail the test, not hang it.
	for turn := range 20000 {
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Write(pipelinedOptions(fmt.Sprintf("%s-%d", user, turn), 40))
		if isTimeout(err) {
			return c
		}
		if err != nil {
			t.Fatalf("the stalled phone's requests: %v", err)
		}
	}
	t.Fatal("the server read every request of a peer that reads no answer")
	return nil
}

// TestTCPStalledPeerDoesNotHoldUDP: a phone registered over TCP stops
// reading (its window full of answers) and a UDP phone calls it. Before,
// the UDP reader forwarding the INVITE waited on the stalled connection
// (its write lock, held by a TCP reader blocked in its own write, then
// its own write) for up to 4 times sip.tcp_write_timeout, so no UDP
// phone was answered meanwhile. Now the INVITE is queued on the
// connection and the UDP reader goes on: the caller's REGISTER and
// OPTIONS are answered while the peer is still stalled and not given up.
func TestTCPStalledPeerDoesNotHoldUDP(t *testing.T) {
	// The longest timeout: a write blocked on the peer would hold the
	// UDP reader past every liveness bound below.
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TCPWriteTimeout = 60 })
	c := stalledTCPPhone(t, addr, "1002")
	caller := newPhone(t, "127.0.0.1")
	for i := range 3 {
		caller.send(addr, invite("1002", addr, ""))
		caller.send(addr, reg(fmt.Sprintf("20%d", i), "Contact: <sip:x@{me}>\r\n", ""))
		if r := caller.recvAnswer(15*time.Second, "REGISTER"); !strings.HasPrefix(r, "SIP/2.0 200") {
			t.Fatalf("UDP REGISTER %d while the TCP phone is stalled: %q", i, status(r))
		}
		caller.send(addr, options(fmt.Sprintf("udp-%d", i)))
		if r := caller.recvAnswer(15*time.Second, "OPTIONS"); !strings.HasPrefix(r, "SIP/2.0 200") {
			t.Fatalf("UDP OPTIONS %d while the TCP phone is stalled: %q", i, status(r))
		}
	}
	if n := s.Status().Shed.TCPStalled; n != 0 {
		t.Errorf("sip.shed.tcp_stalled %d while the peer is within sip.tcp_write_timeout, want 0", n)
	}
	// The INVITEs the UDP reader forwarded wait in the stalled
	// connection's queue, behind the answers.
	tc := s.tcpConnTo(netip.MustParseAddrPort(c.LocalAddr().String()))
	if tc == nil {
		t.Fatal("the stalled phone's connection is gone")
	}
	tc.wmu.Lock()
	q := string(tc.outq)
	tc.wmu.Unlock()
	if n := strings.Count(q, "INVITE sip:1002@"); n != 3 {
		t.Errorf("%d forwarded INVITEs in the stalled connection's write queue (%d bytes), want 3", n, len(q))
	}
}

// recvAnswer returns the next final answer to a request of method (the
// INVITE's, a 100 Trying, skipped), or "" after wait.
func (p *phone) recvAnswer(wait time.Duration, method string) string {
	end := time.Now().Add(wait)
	for time.Now().Before(end) {
		m := p.recv(time.Until(end))
		if strings.HasPrefix(m, "SIP/2.0 ") && !strings.HasPrefix(m, "SIP/2.0 1") && strings.Contains(m, " "+method+"\r\n") {
			return m
		}
	}
	return ""
}
