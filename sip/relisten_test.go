package sip

import (
	"bufio"
	"errors"
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

func optionsTo(target string) string {
	n := seq.Add(1)
	return "OPTIONS sip:" + target + " SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-o" + strconv.FormatInt(n, 10) +
		"\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:" + target + ">\r\nCall-ID: o" + strconv.FormatInt(n, 10) +
		"\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// answers reports whether an OPTIONS to addr over UDP gets 200.
func answers(t *testing.T, addr string) bool {
	p := newPhone(t, "127.0.0.1")
	return strings.HasPrefix(p.roundTrip(addr, optionsTo(addr)), "SIP/2.0 200")
}

// TestListenChangeRebinds: a new sip.listen applied by Configure (a
// reload) is bound by the running worker: the old address stops
// answering and the new one answers, over UDP and TCP. An address that
// cannot be bound leaves the old one serving, with "sip_listen" naming
// it; setting the serving address back clears it. Before, Configure kept
// the old address, even across worker restarts.
func TestListenChangeRebinds(t *testing.T) {
	cfg := config.Defaults().SIP
	cfg.Listen = "127.0.0.1:0"
	alerts := newCondLog()
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), alerts)
	sup := superviseMain(t, s)
	old := s.Addr()
	if !answers(t, old) {
		t.Fatalf("%s does not answer", old)
	}

	cfg.Listen = "127.0.0.2:0"
	s.Configure(cfg)
	var now string
	poll.Within(t, 10*time.Second, "the new address bound", func() bool {
		now = s.Status().Listen
		return strings.HasPrefix(now, "127.0.0.2:")
	})
	if !answers(t, now) {
		t.Errorf("the new address %s does not answer", now)
	}
	if answers(t, old) {
		t.Errorf("the old address %s still answers", old)
	}
	c, err := net.Dial("tcp4", now)
	if err != nil {
		t.Errorf("tcp to the new address: %v", err)
	} else {
		c.Close()
	}

	// A taken address: the old one keeps serving, the condition names it.
	hold, err := net.ListenPacket("udp4", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	taken := hold.LocalAddr().String()
	cfg.Listen = taken
	s.Configure(cfg)
	poll.Within(t, 10*time.Second, "sip_listen raised", func() bool { return alerts.active("sip_listen") != nil })
	if a := alerts.active("sip_listen"); a[health.ArgPath] != taken || a[health.ArgDetail] != now || !strings.Contains(a[health.ArgError], "address already in use") {
		t.Errorf("sip_listen %v, want the address %s, still serving on %s", a, taken, now)
	}
	if !answers(t, now) {
		t.Errorf("the serving address %s stopped answering", now)
	}
	if st, restarts := mainState(sup); st != "healthy" || restarts != 0 {
		t.Errorf("main %s, %d restarts", st, restarts)
	}
	// A restarted worker goes back to the address it served on (the
	// same port, although the setting said port 0), the condition kept.
	if err := sup.Restart("main"); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, 10*time.Second, "main restarted", func() bool {
		_, restarts := mainState(sup)
		return restarts == 1
	})
	poll.Within(t, 10*time.Second, "the old address serving after the restart", func() bool { return answers(t, now) })
	if a := alerts.active("sip_listen"); a[health.ArgPath] != taken || a[health.ArgDetail] != now {
		t.Errorf("after the restart, sip_listen %v, want %s, still serving on %s", a, taken, now)
	}
	// Back to the serving setting: nothing to bind, the condition clears.
	cfg.Listen = "127.0.0.2:0"
	s.Configure(cfg)
	poll.Within(t, 10*time.Second, "sip_listen cleared", func() bool { return alerts.active("sip_listen") == nil })
	if !answers(t, now) {
		t.Errorf("%s stopped answering", now)
	}
}

// TestListenSamePortWildcard: a change to an address that overlaps the
// serving one on the same port (127.0.0.1:P to 0.0.0.0:P) can only be
// bound once the old socket is closed; it is, and the port answers.
func TestListenSamePortWildcard(t *testing.T) {
	cfg := config.Defaults().SIP
	cfg.Listen = "127.0.0.1:0"
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), newCondLog())
	superviseMain(t, s)
	old := netip.MustParseAddrPort(s.Addr())
	cfg.Listen = netip.AddrPortFrom(netip.IPv4Unspecified(), old.Port()).String()
	s.Configure(cfg)
	poll.Within(t, 10*time.Second, "the wildcard bound", func() bool { return s.Status().Listen == cfg.Listen })
	if !answers(t, old.String()) {
		t.Errorf("%s does not answer after the change to %s", old, cfg.Listen)
	}
}

// TestTCPDualStack: with sip.listen [::]:port an IPv4 phone reaches the
// server over TCP as over UDP (before, the TCP listener was IPv6 only:
// its connection was refused).
func TestTCPDualStack(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 on this host: %v", err)
	} else {
		c.Close()
	}
	cfg := config.Defaults().SIP
	cfg.Listen = "[::]:0"
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), newCondLog())
	superviseMain(t, s)
	port := netip.MustParseAddrPort(s.Addr()).Port()
	v4 := "127.0.0.1:" + strconv.Itoa(int(port))
	if !answers(t, v4) {
		t.Errorf("UDP from IPv4 to [::]:%d not answered", port)
	}
	c, err := net.Dial("tcp4", v4)
	if err != nil {
		t.Fatalf("TCP from IPv4 to [::]:%d: %v", port, err)
	}
	defer c.Close()
	msg := strings.ReplaceAll(optionsTo(v4), "SIP/2.0/UDP {me}", "SIP/2.0/TCP "+c.LocalAddr().String())
	c.Write([]byte(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "SIP/2.0 200") {
		t.Errorf("OPTIONS over TCP from IPv4: %q %v", line, err)
	}
}

// TestOwnAddressWithoutInterfaces: when this host's interfaces cannot be
// read (a systemd unit without AF_NETLINK), "interfaces_unreadable" is
// raised and an INVITE addressed to the node's own IP still reaches the
// registered phone: before, the address was not recognised as ours, the
// INVITE was sent back to the proxy and ended in 482 Loop Detected.
func TestOwnAddressWithoutInterfaces(t *testing.T) {
	var own netip.Addr
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() && !ip.IsLoopback() {
				own = ip.Unmap()
				break
			}
		}
	}
	if !own.IsValid() {
		t.Skip("no non-loopback IPv4 address on this host")
	}
	cfg := config.Defaults().SIP
	cfg.Listen = "0.0.0.0:0"
	alerts := newCondLog()
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), alerts)
	s.ifaces = func() ([]net.Addr, error) {
		return nil, &net.OpError{Op: "route", Net: "ip+net", Err: errors.New("address family not supported by protocol")}
	}
	superviseMain(t, s)
	port := netip.MustParseAddrPort(s.Addr()).Port()
	proxy := "127.0.0.1:" + strconv.Itoa(int(port))
	if alerts.active("interfaces_unreadable") == nil {
		t.Errorf("interfaces_unreadable not raised")
	}
	callee := newPhone(t, "127.0.0.1")
	if r := callee.roundTrip(proxy, reg("700", "Contact: <sip:700@"+callee.addr()+">\r\n", "")); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register: %s", status(r))
	}
	caller := newPhone(t, "127.0.0.1")
	host := netip.AddrPortFrom(own, port).String()
	caller.send(proxy, invite("700", host, ""))
	if fwd := callee.recv(5 * time.Second); !strings.HasPrefix(fwd, "INVITE sip:700@") {
		t.Errorf("INVITE to sip:700@%s not forwarded to the phone: %q", host, status(fwd))
	}
	if r := caller.recvFinal(time.Second); strings.HasPrefix(r, "SIP/2.0 482") {
		t.Errorf("INVITE to the node's own address: %s", status(r))
	}
	// An address that is not ours is still not ours.
	if s.isOwnTarget(netip.MustParseAddrPort("198.51.100.77:" + strconv.Itoa(int(port)))) {
		t.Errorf("198.51.100.77 taken for an own address")
	}
}
