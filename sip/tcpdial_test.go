package sip

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
)

// TestTCPConcurrentDialsShareOneConnection: requests for a phone whose
// flow has closed (an INVITE and a MESSAGE at once, say) each open a
// connection to it, at the same moment. They must end on one connection,
// the one in the server's table; every connection served is in the
// table, so that sip.tcp_max_connections counts it. Before, each dial
// entered its own: the table kept the last, the others were served
// (and kept, while the phone's binding lives) without being counted,
// past sip.tcp_max_connections.
func TestTCPConcurrentDialsShareOneConnection(t *testing.T) {
	s, _, _ := serveAlerts(t, func(c *config.SIP) { c.TCPMaxConnections = 2 })
	p := servingPoller(t, s)
	phone, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	var held []net.Conn
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := phone.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	addr := netip.MustParseAddrPort(phone.Addr().String())
	const dials = 8
	for round := range 5 {
		got := make([]*tcpConn, dials)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range dials {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				got[i], _ = s.dialTCP(ctx, addr)
			}()
		}
		close(start)
		wg.Wait()
		in := s.tcpConnTo(addr)
		for i, tc := range got {
			if tc != nil && tc != in {
				t.Errorf("round %d: dial %d returned a connection not in the table", round, i)
			}
		}
		within(t, 30*time.Second, "only the connections in the table served", func() bool {
			p.mu.Lock()
			n := len(p.conns)
			p.mu.Unlock()
			return int32(n) == s.Status().TCPConnections
		})
		if n := s.Status().TCPConnections; n > 2 {
			t.Fatalf("round %d: %d connections, sip.tcp_max_connections 2", round, n)
		}
		// The phone closes its connections (those it accepts late too):
		// the next round dials again.
		within(t, 30*time.Second, "the flow gone", func() bool {
			mu.Lock()
			for _, c := range held {
				c.Close()
			}
			held = nil
			mu.Unlock()
			return s.tcpConnTo(addr) == nil && s.Status().TCPConnections == 0
		})
	}
}

// TestTCPDialNotServedIsADialError: a connection dialled to a phone
// that the epoll set cannot take is closed and counted as a dial error
// (tcp_dial_errors), as a connect that fails is, and never as an accept
// error: tcp_accept_errors and sip_accept_errors are about taking the
// phones' connections. Before, it was counted in tcp_accept_errors.
func TestTCPDialNotServedIsADialError(t *testing.T) {
	var fail atomic.Bool
	s, _, al := serveFaults(t, nil, tcpFaults{pollAdd: func(*tcpConn) error {
		if fail.Load() {
			return errors.New("epoll_ctl: no space left on device")
		}
		return nil
	}})
	servingPoller(t, s)
	phone := newReusePhone(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fail.Store(true)
	if tc, err := s.dialTCP(ctx, phone.addr); err == nil {
		t.Fatalf("a dialled connection the epoll set refused was served: %p", tc)
	}
	far := phone.accepted(t, 0)
	far.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := far.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("the dialled connection not served was not closed: %v", err)
	}
	st := s.Status()
	if st.TCPAcceptErrors != 0 || st.TCPDialErrors != 1 || st.TCPConnections != 0 {
		t.Errorf("tcp_accept_errors %d, tcp_dial_errors %d, tcp_connections %d; want 0, 1, 0", st.TCPAcceptErrors, st.TCPDialErrors, st.TCPConnections)
	}
	if al.isActive("sip_accept_errors") {
		t.Error("sip_accept_errors raised for a dialled connection")
	}

	// A connect that fails (nothing listens at the port) is one too.
	fail.Store(false)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	if _, err := s.dialTCP(ctx, closed); err == nil {
		t.Fatal("a connection to a closed port was made")
	}
	if st := s.Status(); st.TCPAcceptErrors != 0 || st.TCPDialErrors != 2 {
		t.Errorf("after a refused connect: tcp_accept_errors %d, tcp_dial_errors %d; want 0, 2", st.TCPAcceptErrors, st.TCPDialErrors)
	}

	// Served again: a dial succeeds and counts nothing.
	if _, err := s.dialTCP(ctx, phone.addr); err != nil {
		t.Fatalf("dial once the epoll set takes it: %v", err)
	}
	if st := s.Status(); st.TCPAcceptErrors != 0 || st.TCPDialErrors != 2 || st.TCPConnections != 1 {
		t.Errorf("after a dial served: tcp_accept_errors %d, tcp_dial_errors %d, tcp_connections %d; want 0, 2, 1", st.TCPAcceptErrors, st.TCPDialErrors, st.TCPConnections)
	}
}
