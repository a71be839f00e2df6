package sip

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
)

// hasIPv6Loopback: the dual-stack tests need ::1 (checked, not assumed).
func hasIPv6Loopback(t *testing.T) {
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 on loopback: %v", err)
	}
	c.Close()
}

// TestListenTCPDualStack: "[::]" accepts IPv4 and IPv6 clients over
// TCP, as over UDP; on main it listened "tcp6", IPv6 only, and an IPv4
// phone's connection was refused.
func TestListenTCPDualStack(t *testing.T) {
	hasIPv6Loopback(t)
	ln, err := listenTCP(netip.MustParseAddrPort("[::]:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	for _, network := range []string{"tcp4", "tcp6"} {
		host := "127.0.0.1"
		if network == "tcp6" {
			host = "::1"
		}
		c, err := net.DialTimeout(network, net.JoinHostPort(host, strconv.Itoa(port)), 2*time.Second)
		if err != nil {
			t.Fatalf("%s client to [::]:%d: %v", network, port, err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 5)
		if n, _ := c.Read(b); string(b[:n]) != "hello" {
			t.Errorf("%s client: read %q", network, b[:n])
		}
		c.Close()
	}
	// A specific address listens on its own family only.
	ln4, err := listenTCP(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln4.Close()
	if !strings.HasPrefix(ln4.Addr().String(), "127.0.0.1:") {
		t.Errorf("IPv4 listener on %s", ln4.Addr())
	}
	ln6, err := listenTCP(netip.MustParseAddrPort("[::1]:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	if c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(ln6.Addr().(*net.TCPAddr).Port)), time.Second); err == nil {
		c.Close()
		t.Error("an IPv4 client reached a listener on [::1]")
	}
}

// TestListenUDPDualStack: the UDP socket on "[::]" receives from an
// IPv4 client, and the server answers it.
func TestListenUDPDualStack(t *testing.T) {
	hasIPv6Loopback(t)
	_, addr := serve(t, func(c *config.SIP) { c.Listen = "[::]:0" })
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	p := newPhone(t, "127.0.0.1")
	if ans := p.roundTrip("127.0.0.1:"+port, options("dual-udp")); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("IPv4 OPTIONS to [::]:%s: %q", port, status(ans))
	}
}
