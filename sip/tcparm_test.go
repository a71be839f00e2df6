package sip

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
)

// TestTCPArmFailureClosesAtOnce: a connection whose events cannot be
// armed again (epoll_ctl EPOLL_CTL_MOD failing: memory short) can no
// longer be read, so it is closed at once and counted
// (tcp_poll_errors), both when its reader parks it and when a write
// re-arms it parked. Before, it was left in the table, counted against
// sip.tcp_max_connections, until its idle deadline (here an hour).
func TestTCPArmFailureClosesAtOnce(t *testing.T) {
	var fail atomic.Bool
	s, addr, _ := serveFaults(t, func(c *config.SIP) { c.TCPIdleTimeout = 3600 }, tcpFaults{pollArm: func(*tcpConn) error {
		if fail.Load() {
			return errors.New("epoll_ctl: cannot allocate memory")
		}
		return nil
	}})
	p := servingPoller(t, s)
	// closedAfter reads what the server sends c until it closes it.
	closedAfter := func(c net.Conn) string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("the connection whose events could not be armed was not closed: %v", err)
		}
		return string(b)
	}
	request := func(c net.Conn, id string) {
		t.Helper()
		if _, err := c.Write([]byte(strings.ReplaceAll(optionsTCP, "%s", id) + "Content-Length: 0\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}

	// Parked by its reader after its request was answered.
	fail.Store(true)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	request(c, "park")
	if got := closedAfter(c); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Errorf("the request before the failure was not answered: %q", got)
	}
	within(t, 30*time.Second, "the connection out of the table", func() bool { return s.Status().TCPConnections == 0 })
	if st := s.Status(); st.TCPPollErrors != 1 || st.TCPAcceptErrors != 0 {
		t.Errorf("tcp_poll_errors %d, tcp_accept_errors %d; want 1, 0", st.TCPPollErrors, st.TCPAcceptErrors)
	}

	// Parked and idle, armed again by a write (rearm).
	fail.Store(false)
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	request(c2, "rearm")
	c2.SetReadDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 12)
	if _, err := io.ReadFull(c2, b); err != nil || string(b) != "SIP/2.0 200 " {
		t.Fatalf("OPTIONS: %q, %v", b, err)
	}
	tc := serverConnOf(t, s, c2)
	within(t, 30*time.Second, "the connection parked", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return tc.parked
	})
	fail.Store(true)
	p.rearm(tc)
	closedAfter(c2)
	within(t, 30*time.Second, "the connection out of the table", func() bool { return s.Status().TCPConnections == 0 })
	if st := s.Status(); st.TCPPollErrors != 2 {
		t.Errorf("tcp_poll_errors %d after a failed rearm; want 2", st.TCPPollErrors)
	}
}
