package tests

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/ubus"
)

// TestMainCPUFollowsSIPWork: during a SIP flood, threads.main.cpu_pct is
// at least half of process.cpu_pct (the C daemon's successor reported
// main at 0 % while the process ran at 156 %: main's own goroutine only
// waits, the SIP work ran elsewhere).
func TestMainCPUFollowsSIPWork(t *testing.T) {
	e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1"})
	p := e.tr.start(t, bins.router)
	host, port := sipAddr(t, e.sock)
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(net.JoinHostPort(host, strconv.Itoa(port))))
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for i := 0; !stop.Load(); i++ {
			c.WriteToUDP(options("cpu"+strconv.Itoa(i)), dst)
		}
	}()
	defer func() { stop.Store(true); <-done }()
	var mainPct, procPct float64
	waitFor(t, 30*time.Second, "CPU figures under load", func() bool {
		time.Sleep(time.Second)
		h := call(t, e.sock, "phonebook.health", "status", "")
		mainPct, procPct = num(get(h, "threads", "main", "cpu_pct")), num(get(h, "process", "cpu_pct"))
		return procPct > 20
	})
	t.Logf("during the flood: threads.main.cpu_pct %.1f, process.cpu_pct %.1f", mainPct, procPct)
	if mainPct < procPct/2 {
		t.Errorf("main %.1f %% of CPU while the process used %.1f %%: main's work is not counted", mainPct, procPct)
	}
	if p.exited() {
		t.Fatal("daemon exited")
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
