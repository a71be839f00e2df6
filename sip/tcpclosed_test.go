package sip

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestTCPClosedWhileEnteredIsNoError: a stop or a rebind (closeTCP)
// closes every connection in the table, one among them that addConn has
// entered but not yet put into the epoll set, whose entry then fails
// with net.ErrClosed. Nothing failed there, as nothing does for a
// connection refused because TCP stops (errNoTCP): neither
// tcp_accept_errors nor tcp_dial_errors counts it. Before, each was
// counted and logged as an epoll failure.
func TestTCPClosedWhileEnteredIsNoError(t *testing.T) {
	for _, dialled := range []bool{false, true} {
		name := "accepted"
		if dialled {
			name = "dialled"
		}
		t.Run(name, func(t *testing.T) {
			var srv atomic.Pointer[Server]
			var closed atomic.Int32
			s, addr, _ := serveFaults(t, nil, tcpFaults{pollAdd: func(*tcpConn) error {
				// Between the table and the epoll set: the worker stops,
				// or sip.listen is rebound.
				if s := srv.Load(); s != nil && closed.Add(1) == 1 {
					s.closeTCP()
				}
				return nil
			}})
			servingPoller(t, s)
			srv.Store(s)
			if dialled {
				phone := newReusePhone(t)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if tc, err := s.dialTCP(ctx, phone.addr); err == nil {
					t.Fatalf("a connection closed by closeTCP was served: %p", tc)
				}
			} else {
				// The acceptor takes connections one after the other: the
				// second one closed means the first was counted or not.
				for i := range 2 {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
						t.Fatalf("connection %d not closed once TCP stopped: %v", i, err)
					}
				}
			}
			if n := closed.Load(); n != 1 {
				t.Fatalf("closeTCP ran %d times between the table and the epoll set, want 1", n)
			}
			st := s.Status()
			if st.TCPAcceptErrors != 0 || st.TCPDialErrors != 0 || st.TCPConnections != 0 {
				t.Errorf("tcp_accept_errors %d, tcp_dial_errors %d, tcp_connections %d; want 0, 0, 0",
					st.TCPAcceptErrors, st.TCPDialErrors, st.TCPConnections)
			}
		})
	}
}
