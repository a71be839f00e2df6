package tests

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBaresipCalls: real phones (baresip 1.0.0) register with the daemon
// and call each other through its proxy, over UDP, over TCP, and with
// the caller on UDP and the callee on TCP (RFC 5658). Each case
// covers REGISTER; a call with 180, 200 and ACK; RTP both ways; hold
// and resume re-INVITEs; BYE from either side reaching the other;
// CANCEL answered 487 (and that 487 ACKed); 404 for an unregistered
// number; active_calls back to 0. Over TCP every in-dialog request
// stays on TCP (the Record-Route says so), so the callee gets its ACK
// and the caller its BYE.
func TestBaresipCalls(t *testing.T) {
	for _, c := range []struct{ a, b string }{{"udp", "udp"}, {"tcp", "tcp"}, {"udp", "tcp"}} {
		t.Run(c.a+"-"+c.b, func(t *testing.T) { baresipCalls(t, c.a, c.b) })
	}
}

// baresipCalls runs the calls with phone a (the caller) registered over
// transport ta and phone b over tb; with different transports the proxy
// Record-Routes twice (RFC 5658) and each phone keeps its own.
func baresipCalls(t *testing.T, ta, tb string) {
	e := newFaultEnv(t, nil)
	p := e.tr.start(t, bins.daemon)
	host, port := sipAddr(t, e.sock)
	pb := net.JoinHostPort(host, strconv.Itoa(port))
	account := func(user, transport, answer string) string {
		return "<sip:" + user + "@" + pb + ";transport=" + transport + ">;regint=600;answermode=" + answer + ";audio_codecs=PCMU"
	}
	target := func(user string) string { return "sip:" + user + "@" + pb + ";transport=" + ta }

	a := startBaresip(t, "a", account("1000", ta, "auto"))
	b := startBaresip(t, "b", account("2000", tb, "auto"), account("2001", tb, "manual"))
	waitFor(t, 15*time.Second, "3 phones registered", func() bool { reg, _ := sipCounts(t, e.sock); return reg == 3 })
	if want := strings.Count(ta+tb, "tcp"); want > 0 {
		st := call(t, e.sock, "phonebook", "status", "")
		if n := num(get(st, "sip", "tcp_connections")); int(n) < want {
			t.Fatalf("%d phones registered over TCP, but %v TCP connections", want, n)
		}
	}

	// A call, hung up by the caller.
	ma, mb := a.mark(), b.mark()
	a.cmd("dial", target("2000"))
	a.wait(ma, 10*time.Second, "180 (CALL_RINGING)", event("CALL_RINGING"))
	a.wait(ma, 10*time.Second, "200 (CALL_ESTABLISHED)", event("CALL_ESTABLISHED"))
	b.wait(mb, 10*time.Second, "the call (CALL_ESTABLISHED)", event("CALL_ESTABLISHED"))
	waitFor(t, 5*time.Second, "active_calls 1", func() bool { _, n := sipCounts(t, e.sock); return n == 1 })
	// RTP both ways: each phone saw the other's stream arrive
	// (CALL_RTPESTAB) and an RTCP report of packets received.
	a.wait(ma, 10*time.Second, "RTP from b (CALL_RTPESTAB)", event("CALL_RTPESTAB"))
	b.wait(mb, 10*time.Second, "RTP from a (CALL_RTPESTAB)", event("CALL_RTPESTAB"))
	a.wait(ma, 20*time.Second, "RTP from b (RTCP rx)", rtpReceived)
	b.wait(mb, 20*time.Second, "RTP from a (RTCP rx)", rtpReceived)
	// The ACK reached the callee from the proxy over the call's transport.
	waitFor(t, 5*time.Second, "the ACK at b over "+tb, func() bool { return receivedFrom(b.sipTrace(), pb, tb, "ACK") })

	// Hold and resume: two re-INVITEs through the proxy, each offer
	// reaching b and each answer a.
	m2, mb2 := a.mark(), b.mark()
	a.cmd("hold", "")
	b.wait(mb2, 10*time.Second, "the hold re-INVITE", event("CALL_REMOTE_SDP", "offer"))
	a.wait(m2, 10*time.Second, "the answer to hold", event("CALL_REMOTE_SDP", "answer"))
	m2, mb2 = a.mark(), b.mark()
	a.cmd("resume", "")
	b.wait(mb2, 10*time.Second, "the resume re-INVITE", event("CALL_REMOTE_SDP", "offer"))
	a.wait(m2, 10*time.Second, "the answer to resume", event("CALL_REMOTE_SDP", "answer"))

	mb = b.mark()
	a.cmd("hangup", "")
	b.wait(mb, 10*time.Second, "a's BYE", event("CALL_CLOSED"))
	if !receivedFrom(b.sipTrace(), pb, tb, "BYE") {
		t.Errorf("b's trace shows no BYE from the proxy over %s", tb)
	}
	waitFor(t, 5*time.Second, "active_calls 0", func() bool { _, n := sipCounts(t, e.sock); return n == 0 })

	// A call hung up by the callee.
	ma, mb = a.mark(), b.mark()
	a.cmd("dial", target("2000"))
	a.wait(ma, 10*time.Second, "the second call", event("CALL_ESTABLISHED"))
	b.wait(mb, 10*time.Second, "the second call", event("CALL_ESTABLISHED"))
	waitFor(t, 5*time.Second, "active_calls 1", func() bool { _, n := sipCounts(t, e.sock); return n == 1 })
	ma = a.mark()
	b.cmd("hangup", "")
	a.wait(ma, 10*time.Second, "b's BYE", event("CALL_CLOSED"))
	if !receivedFrom(a.sipTrace(), pb, ta, "BYE") {
		t.Errorf("a's trace shows no BYE from the proxy over %s", ta)
	}
	waitFor(t, 5*time.Second, "active_calls 0", func() bool { _, n := sipCounts(t, e.sock); return n == 0 })

	// CANCEL: 2001 rings (manual answer), a gives up; b sees the call
	// end, the 487 reaches a and is ACKed, which ends the proxy's
	// transaction long before its 64*T1 (32 s) Timer H.
	ma, mb = a.mark(), b.mark()
	a.cmd("dial", target("2001"))
	b.wait(mb, 10*time.Second, "the ringing call", event("CALL_INCOMING"))
	a.wait(ma, 10*time.Second, "180", event("CALL_RINGING"))
	a.cmd("hangup", "")
	b.wait(mb, 10*time.Second, "the CANCEL", event("CALL_CLOSED"))
	waitFor(t, 10*time.Second, "487 reached a", func() bool { return strings.Contains(a.sipTrace(), "SIP/2.0 487") })
	waitFor(t, 10*time.Second, "the 487 ACKed (transactions 0)", func() bool {
		return num(get(call(t, e.sock, "phonebook", "status", ""), "sip", "transactions")) == 0
	})

	// An unregistered number: 404.
	ma = a.mark()
	a.cmd("dial", target("9999"))
	a.wait(ma, 10*time.Second, "404", event("CALL_CLOSED", "404"))

	if _, n := sipCounts(t, e.sock); n != 0 {
		t.Errorf("active_calls %d at the end", n)
	}
	// Real phones' answers all verify (the 200 to the proxy's own CANCEL
	// included).
	if n := num(get(call(t, e.sock, "phonebook", "status", ""), "sip", "forged_responses")); n != 0 {
		t.Errorf("forged_responses %v from real phones", n)
	}
	e.stop(p)
}

// receivedFrom reports whether a baresip SIP trace (-s) shows a request
// of method that came from the proxy at pb over transport: each traced
// message follows a line "UDP|TCP <from> -> <to>".
func receivedFrom(trace, pb, transport, method string) bool {
	lines := strings.Split(strings.ReplaceAll(trace, "\r", ""), "\n")
	for i := 0; i+1 < len(lines); i++ {
		f := strings.Fields(lines[i])
		if len(f) == 4 && f[2] == "->" && strings.EqualFold(f[0], transport) && f[1] == pb && strings.HasPrefix(lines[i+1], method+" sip:") {
			return true
		}
	}
	return false
}
