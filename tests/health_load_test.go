package tests

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/ubus"
)

// TestMainCPUFollowsSIPWork: during a SIP flood, over UDP and over TCP,
// threads.main.cpu_pct is a large share of process.cpu_pct (the C
// daemon's successor reported main at 0 % while the process ran at
// 156 %: main's own goroutine only waits, the SIP work ran elsewhere;
// over TCP, main read 0.0 while the process used 102 %, since a
// connection's goroutine has no thread of its own to measure).
func TestMainCPUFollowsSIPWork(t *testing.T) {
	for _, tc := range []struct {
		transport string
		share     float64 // of the process's CPU, at least
		flood     func(t *testing.T, dst string, stop *atomic.Bool)
	}{
		// UDP: the readers' threads are main's.
		{"udp", 0.5, func(t *testing.T, dst string, stop *atomic.Bool) {
			c, err := net.Dial("udp4", dst)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for i := 0; !stop.Load(); i++ {
				c.Write(options("cpu" + strconv.Itoa(i)))
			}
		}},
		// TCP: each message's handling is measured on its thread; the
		// connection's reads and the scheduler are not, hence a smaller
		// share.
		{"tcp", 0.25, func(t *testing.T, dst string, stop *atomic.Bool) {
			c, err := net.Dial("tcp4", dst)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			go func() { // the answers: read and dropped
				b := make([]byte, 64<<10)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
				}
			}()
			for i := 0; !stop.Load(); i++ {
				if _, err := c.Write(options("cpu" + strconv.Itoa(i))); err != nil {
					return
				}
			}
		}},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1"})
			p := e.tr.start(t, bins.router)
			host, port := sipAddr(t, e.sock)
			dst := net.JoinHostPort(host, strconv.Itoa(port))
			var stop atomic.Bool
			done := make(chan struct{})
			go func() { defer close(done); tc.flood(t, dst, &stop) }()
			defer func() { stop.Store(true); <-done }()
			var mainPct, procPct float64
			waitFor(t, 30*time.Second, "CPU figures under load", func() bool {
				time.Sleep(time.Second)
				h := call(t, e.sock, "phonebook.health", "status", "")
				mainPct, procPct = num(get(h, "threads", "main", "cpu_pct")), num(get(h, "process", "cpu_pct"))
				return procPct > 20
			})
			t.Logf("during the %s flood: threads.main.cpu_pct %.1f, process.cpu_pct %.1f", tc.transport, mainPct, procPct)
			if mainPct < procPct*tc.share {
				t.Errorf("main %.1f %% of CPU while the process used %.1f %%: main's work is not counted", mainPct, procPct)
			}
			if p.exited() {
				t.Fatal("daemon exited")
			}
		})
	}
}

// TestStuckSIPHandlerStopsWatchdog: with every SIP handler stuck (fault
// injection), main's self-probe goes unanswered, main turns unresponsive
// within its deadline, and procd's watchdog is not re-armed, through the
// restarts that cannot cure it, until the supervisor escalates.
func TestStuckSIPHandlerStopsWatchdog(t *testing.T) {
	e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1", "health.max_restart_attempts": "10"})
	arms := fakeProcd(t, e.sock)
	e.start()
	waitFor(t, 15*time.Second, "the watchdog re-armed while healthy", func() bool { return arms.Load() > 0 })
	e.inject("main", "sip_stuck")
	t0 := time.Now()
	waitFor(t, 15*time.Second, "main unresponsive", func() bool {
		th := e.thread("main")
		return th != nil && th["status"] != "healthy"
	})
	t.Logf("main unresponsive %s after the fault (deadline 3 periods of 2 s)", time.Since(t0).Round(100*time.Millisecond))
	before := arms.Load()
	time.Sleep(12 * time.Second) // more than two watchdog rounds and a restart
	if n := arms.Load() - before; n != 0 {
		t.Errorf("watchdog re-armed %d times while main's SIP handler was stuck", n)
	}
	if th := e.thread("main"); th == nil || num(th["restart_count"]) == 0 {
		t.Errorf("main not restarted: %v", th)
	}
}

// fakeProcd plays procd's service object on the broker and counts the
// daemon's watchdog re-arms (ubus call service watchdog).
func fakeProcd(t *testing.T, sock string) *atomic.Int64 {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var arms atomic.Int64
	procd := ubus.NewBus(sock, nil)
	procd.Register(ctx, &ubus.Object{Path: "service", Methods: []ubus.Method{{Name: "watchdog",
		Handler: func(context.Context, *ubus.Request) ([]ubus.Value, error) { arms.Add(1); return nil, nil }}}})
	go procd.Run(ctx)
	return &arms
}
