package sip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"golang.org/x/sys/unix"
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

// TestAnyPortTakesAFreePair: with sip.listen on port 0 the kernel picks
// the UDP port alone, and its number may be taken for TCP (the whole-
// daemon tests saw "bind: address already in use" and a worker blocked
// for a second). Another port is tried; a fixed port is tried once.
func TestAnyPortTakesAFreePair(t *testing.T) {
	busy := func(n int) (func(netip.AddrPort) (net.Listener, error), *int) {
		calls := 0
		return func(a netip.AddrPort) (net.Listener, error) {
			calls++
			if calls <= n {
				return nil, fmt.Errorf("listen tcp %s: %w", a, unix.EADDRINUSE)
			}
			return listenTCP(a)
		}, &calls
	}
	listen, calls := busy(2)
	ep, err := bindPair("127.0.0.1:0", true, listen)
	if err != nil {
		t.Fatalf("port 0, its TCP half busy twice: %v", err)
	}
	ep.close()
	if *calls != 3 {
		t.Errorf("port 0: %d TCP binds, want 3", *calls)
	}

	listen, calls = busy(anyPortTries)
	if _, err := bindPair("127.0.0.1:0", true, listen); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("port 0, every TCP half busy: %v, want EADDRINUSE", err)
	}
	if *calls != anyPortTries {
		t.Errorf("port 0, every TCP half busy: %d tries, want %d", *calls, anyPortTries)
	}

	u, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fixed := u.LocalAddr().String()
	u.Close()
	listen, calls = busy(1)
	if _, err := bindPair(fixed, true, listen); !errors.Is(err, unix.EADDRINUSE) || *calls != 1 {
		t.Errorf("fixed port %s with its TCP half busy: %v after %d tries, want EADDRINUSE after 1", fixed, err, *calls)
	}
}
