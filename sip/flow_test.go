package sip

import (
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
)

// TestRegisteredFlowOutlivesIdleTimeout: a phone that registered over
// TCP is reached only over that connection (its Contact names a port
// nothing listens on, as baresip's does), so sip.tcp_idle_timeout must
// not close it while the binding lives; a connection that registered
// nothing is still closed on the timeout. Before, both were closed and
// requests inside a call got "connection refused".
func TestRegisteredFlowOutlivesIdleTimeout(t *testing.T) {
	_, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TCPIdleTimeout = 1 })
	phone := newTCPUA(t, addr)
	phone.send(reg("2000", "Contact: <sip:2000@127.0.0.1:5999;transport=tcp>\r\n", ""))
	if r := phone.recv(2*time.Second, "SIP/2.0"); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register over TCP: %q", status(r))
	}
	idle := newTCPUA(t, addr)
	// The idle connection is closed on its timeout: its reader ends.
	select {
	case m, open := <-idle.in:
		if open {
			t.Fatalf("unexpected message on the idle connection: %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection that registered nothing was not closed on sip.tcp_idle_timeout")
	}
	time.Sleep(1500 * time.Millisecond) // past the phone's own idle deadline too
	// The phone's flow outlived the same timeout: a call reaches it.
	caller := newPhone(t, "127.0.0.1")
	caller.send(addr, strings.ReplaceAll(invite("2000", addr, ""), "{me}", caller.addr()))
	if fwd := phone.recv(5*time.Second, "INVITE"); fwd == "" {
		t.Fatal("the INVITE did not reach the phone over the connection it registered on")
	}
}
