package sip

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/config"
)

// reusePort sets SO_REUSEADDR and SO_REUSEPORT on a socket before it is
// bound: a phone that listens on its SIP port and connects from it too.
func reusePort(_, _ string, rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err == nil {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
	}); cerr != nil {
		return cerr
	}
	return err
}

// reusePhone is a phone listening for SIP over TCP on a free loopback
// port that connects to the server from that same port.
type reusePhone struct {
	addr netip.AddrPort
	mu   sync.Mutex
	in   []net.Conn // the connections it accepted, in order
}

func newReusePhone(t *testing.T) *reusePhone {
	t.Helper()
	lc := net.ListenConfig{Control: reusePort}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &reusePhone{addr: netip.MustParseAddrPort(ln.Addr().String())}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.in {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.in = append(p.in, c)
			p.mu.Unlock()
		}
	}()
	return p
}

// accepted is the i-th connection the phone accepted, once it has.
func (p *reusePhone) accepted(t *testing.T, i int) net.Conn {
	t.Helper()
	var c net.Conn
	within(t, 30*time.Second, "the phone accepted the connection", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.in) > i {
			c = p.in[i]
		}
		return c != nil
	})
	return c
}

// connect opens a connection from the phone's listening address to the
// server.
func (p *reusePhone) connect(t *testing.T, server string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(p.addr), Control: reusePort}
	c, err := d.Dial("tcp4", server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tableMismatch says how the server's table of TCP connections differs
// from the connections its epoll set serves (those open on its side):
// the count it reports must be theirs, every entry in the table must be
// served, and every connection served must be reachable at its address.
// "" when they agree.
func tableMismatch(s *Server, p *tcpPoller) string {
	p.mu.Lock()
	served := make(map[*tcpConn]bool, len(p.conns))
	for _, tc := range p.conns {
		served[tc] = true
	}
	p.mu.Unlock()
	if n := s.Status().TCPConnections; int(n) != len(served) {
		return fmt.Sprintf("the server reports %d TCP connection(s), %d served", n, len(served))
	}
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	for a, tc := range s.tcpConns {
		if !served[tc] {
			return fmt.Sprintf("the table's connection to %s is not served (closed)", a)
		}
	}
	for tc := range served {
		if s.tcpConns[tc.remote] == nil {
			return fmt.Sprintf("the served connection to %s is missing from the table", tc.remote)
		}
	}
	return ""
}

// settled waits (bounded) until n connections are served and the table
// agrees with them, failing with the last difference seen.
func settled(t *testing.T, s *Server, p *tcpPoller, n int, when string) {
	t.Helper()
	diff := ""
	end := time.Now().Add(30 * time.Second)
	for {
		if m := served(p); m != n {
			diff = fmt.Sprintf("%d connections served, want %d", m, n)
		} else if diff = tableMismatch(s, p); diff == "" {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: %s", when, diff)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// served is the number of connections s's epoll set serves.
func served(p *tcpPoller) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// TestTCPConnectionFromADialledAddress: a phone that connects to the
// server from its listening port (SO_REUSEPORT), while a connection the
// server dialled to that port is open, has two connections with one
// remote address. Both are served, so both are counted and bound by
// sip.tcp_max_connections: filled this way no connection past the bound
// stays open. The newer one is the address's connection (requests go on
// it), and whichever side closes first, the table keeps exactly the
// connections still open: the older one is the address's connection
// again when the newer closes. Before, the accepted connection replaced
// the dialled one in the table, which stayed open and served but was
// counted nowhere: two connections per phone against a bound of one.
func TestTCPConnectionFromADialledAddress(t *testing.T) {
	const limit = 4
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TCPMaxConnections = limit })
	p := servingPoller(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	type pair struct {
		phone          *reusePhone
		dialled, accep *tcpConn // the server's ends
		dialledFar     net.Conn // the phone's end of the dialled one
		accepFar       net.Conn // the phone's end of the accepted one
	}
	var pairs []pair
	for i := range limit / 2 {
		ph := newReusePhone(t)
		d, err := s.dialTCP(ctx, ph.addr)
		if err != nil {
			t.Fatalf("pair %d: dial: %v", i, err)
		}
		far := ph.accepted(t, 0)
		settled(t, s, p, 2*i+1, fmt.Sprintf("pair %d dialled", i))
		c := ph.connect(t, addr)
		within(t, 30*time.Second, "the connection from the phone's port served", func() bool {
			tc := s.tcpConnTo(ph.addr)
			return tc != nil && tc != d
		})
		settled(t, s, p, 2*i+2, fmt.Sprintf("pair %d: the phone connected from its port", i))
		pairs = append(pairs, pair{phone: ph, dialled: d, accep: s.tcpConnTo(ph.addr), dialledFar: far, accepFar: c})
	}

	// At the bound: the next phone's dial and its connection are refused,
	// and nothing past the bound stays open.
	ph := newReusePhone(t)
	if _, err := s.dialTCP(ctx, ph.addr); err == nil {
		t.Error("a dial past sip.tcp_max_connections was served")
	}
	c := ph.connect(t, addr)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("a connection past sip.tcp_max_connections was not closed: %v", err)
	}
	settled(t, s, p, limit, "at the bound")

	// The newer closes first: the dialled one, still open, is the
	// address's connection again; then it closes too.
	a := pairs[0]
	a.accepFar.Close()
	settled(t, s, p, limit-1, "the newer connection closed")
	if got := s.tcpConnTo(a.phone.addr); got != a.dialled {
		t.Errorf("after the newer closed, the address's connection is %p, want the dialled one still open %p", got, a.dialled)
	}
	a.dialledFar.Close()
	settled(t, s, p, limit-2, "both connections closed")
	if got := s.tcpConnTo(a.phone.addr); got != nil {
		t.Errorf("a connection to %s left in the table after both closed", a.phone.addr)
	}

	// The older closes first: the newer stays the address's connection.
	b := pairs[1]
	b.dialledFar.Close()
	settled(t, s, p, 1, "the older connection closed")
	if got := s.tcpConnTo(b.phone.addr); got != b.accep {
		t.Errorf("after the older closed, the address's connection is %p, want the newer %p", got, b.accep)
	}
	b.accepFar.Close()
	settled(t, s, p, 0, "both connections closed")
	if n := s.Status().TCPConnections; n != 0 {
		t.Errorf("%d TCP connections reported with none open", n)
	}

	// The other order: the phone connects first, then a dial to its
	// address takes that connection.
	ph = newReusePhone(t)
	ph.connect(t, addr)
	var in *tcpConn
	within(t, 30*time.Second, "the phone's connection served", func() bool { in = s.tcpConnTo(ph.addr); return in != nil })
	if d, err := s.dialTCP(ctx, ph.addr); err != nil || d != in {
		t.Errorf("a dial to an address with a connection open: %p, %v; want that connection %p", d, err, in)
	}
	settled(t, s, p, 1, "a dial to an address connected")
}

// TestTCPSupersededConnectionIdlesOut: the older of two connections
// with one remote address (a dialled one, superseded when the phone
// connected from its listening port and registered on the new one) is
// not the phone's flow, so its idle timeout closes it although a
// binding from that address lives; the newer, which the phone
// registered on, stays. Without that rule the older, counted against
// sip.tcp_max_connections, would be kept for as long as the binding.
func TestTCPSupersededConnectionIdlesOut(t *testing.T) {
	// 5 s: the dial, the phone's connection and its REGISTER (a few ms)
	// come well within it on a busy machine, so the dialled connection is
	// superseded before it could idle out; checked below.
	s, addr, _ := serveAlerts(t, func(c *config.SIP) { c.TCPIdleTimeout = 5 })
	p := servingPoller(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ph := newReusePhone(t)
	dialled, err := s.dialTCP(ctx, ph.addr)
	if err != nil {
		t.Fatal(err)
	}
	dialledFar := ph.accepted(t, 0)
	c := ph.connect(t, addr)
	ua := &tcpUA{t: t, c: c, r: bufio.NewReader(c), in: make(chan string, 64)}
	go ua.read()
	ua.send(reg("2100", "Contact: <sip:2100@"+ph.addr.String()+";transport=tcp>\r\n", ""))
	if r := ua.recv(30*time.Second, "SIP/2.0"); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register over the connection from the phone's port: %q", status(r))
	}
	newer := s.tcpConnTo(ph.addr)
	s.tcpMu.Lock()
	_, superseded := s.tcpSuperseded[dialled]
	s.tcpMu.Unlock()
	if !superseded || newer == dialled {
		t.Fatal("the dialled connection was not superseded by the phone's: the rule under test was not reached")
	}
	dialledFar.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := dialledFar.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the superseded connection was not closed on sip.tcp_idle_timeout: %v", err)
	}
	settled(t, s, p, 1, "the superseded connection closed")
	if got := s.tcpConnTo(ph.addr); got != newer {
		t.Errorf("the phone's flow is %p, want the connection it registered on %p", got, newer)
	}
}
