package sip

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/supervisor"
)

// condLog records the conditions a server raises and clears (the
// server's Alerts in tests).
type condLog struct {
	mu     sync.Mutex
	raised map[string]int // times raised
	up     map[string]health.Args
}

func newCondLog() *condLog {
	return &condLog{raised: map[string]int{}, up: map[string]health.Args{}}
}

func (a *condLog) SetUnhealthy(cond *health.Descriptor, key string, args health.Args) {
	a.mu.Lock()
	defer a.mu.Unlock()
	code := cond.Instance(key)
	a.raised[code]++
	a.up[code] = args
}

func (a *condLog) SetHealthy(cond *health.Descriptor, key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.up, cond.Instance(key))
}

// isActive tells whether a condition is raised now.
func (a *condLog) isActive(code string) bool {
	_, ok := a.get(code)
	return ok
}

// get returns the arguments of a raised condition and whether it is raised.
func (a *condLog) get(code string) (health.Args, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.up[code]
	return v, ok
}

// active returns the arguments of a raised condition, nil when clear.
func (a *condLog) active(code string) health.Args {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.up[code]
}

func (a *condLog) count(code string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.raised[code]
}

// superviseMain runs s as the essential "main" worker under a supervisor
// whose deadlines are checked as the daemon checks them (every 100 ms
// here), and returns it.
func superviseMain(t *testing.T, s *Server) *supervisor.Supervisor {
	t.Helper()
	sup := supervisor.New(supervisor.Options{MaxRestarts: 3, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "main", Period: Period, Essential: true, Run: s.Run})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		// A stuck handler (the faults test) never returns: wait a bounded time.
		wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer wcancel()
		sup.Wait(wctx)
	})
	sup.Start(ctx)
	wg.Go(func() {
		for ctx.Err() == nil {
			sup.Check()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	return sup
}

// mainState is the main worker's status and restarts.
func mainState(sup *supervisor.Supervisor) (string, int) {
	for _, w := range sup.Snapshot() {
		if w.Name == "main" {
			return w.Status, w.Restarts
		}
	}
	return "", 0
}

// TestFloodIsOverloadNotUnresponsive: four senders flood a real server on
// loopback with OPTIONS as fast as they can, a bounded number each. The
// kernel drops what the reader cannot take: that is counted
// (sip.shed.receive_queue) and raised as "overload", while main, whose
// reader keeps completing messages, is never declared unresponsive nor
// restarted. Before, main's heartbeat was an OPTIONS answered through the
// flooded socket: it went unanswered, main was restarted every few
// seconds and, past max_restart_attempts, failed (the process exited 1).
func TestFloodIsOverloadNotUnresponsive(t *testing.T) {
	cfg := config.Defaults().SIP
	cfg.Listen = "127.0.0.1:0"
	alerts := newCondLog()
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), alerts)
	sup := superviseMain(t, s)
	target := netip.MustParseAddrPort(s.Addr())

	// The watcher samples main while the flood runs.
	var bad []string
	var watch sync.WaitGroup
	quit := make(chan struct{})
	overloadSeen := 0
	watch.Go(func() {
		for {
			if st, restarts := mainState(sup); st != supervisor.StatusHealthy || restarts != 0 {
				bad = append(bad, st+" after "+strconv.Itoa(restarts)+" restart(s)")
			}
			if alerts.active("overload") != nil {
				overloadSeen++
			}
			select {
			case <-quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})

	// Bounded by count, not by time: enough to keep the socket's queue
	// full past main's deadline (3 periods) on any machine that runs
	// the race detector.
	const senders, each = 4, 400000
	var flood sync.WaitGroup
	for i := range senders {
		flood.Go(func() {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))})
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			// Nothing reads the answers: they are dropped at this socket.
			c.SetReadBuffer(4096)
			msg := []byte("OPTIONS sip:" + target.String() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + c.LocalAddr().String() +
				";branch=z9hG4bKflood" + strconv.Itoa(i) + "\r\nFrom: <sip:flood@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: flood" +
				strconv.Itoa(i) + "\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
			dst := net.UDPAddrFromAddrPort(target)
			for range each {
				c.WriteToUDP(msg, dst)
			}
		})
	}
	flood.Wait()
	// One more check of the deadline after the last datagram.
	time.Sleep(2 * Period)
	close(quit)
	watch.Wait()

	shed := s.Shed()["receive_queue"]
	t.Logf("%d OPTIONS from %d senders: %d dropped by the kernel and counted; overload raised %d time(s), seen in %d samples",
		senders*each, senders, shed, alerts.count("overload"), overloadSeen)
	if len(bad) > 0 {
		t.Errorf("main was not healthy during the flood: %d samples, first %q", len(bad), bad[0])
	}
	if shed == 0 || alerts.count("overload") == 0 || overloadSeen == 0 {
		t.Errorf("the flood was not shown as overload: receive_queue %d, raised %d, seen %d", shed, alerts.count("overload"), overloadSeen)
	}
	if a := alerts.active("overload"); a != nil && !strings.Contains(a[health.ArgError], "receive_queue") {
		t.Errorf("overload does not name the receive queue: %v", a)
	}
	// And it still answers.
	p := newPhone(t, "127.0.0.1")
	p.send(target.String(), "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKafter\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: after\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
	if ans := p.recv(5 * time.Second); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Errorf("after the flood: %q", ans)
	}
}
