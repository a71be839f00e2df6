package sip

import (
	"context"
	"net"
	"net/netip"
	"sync"
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
