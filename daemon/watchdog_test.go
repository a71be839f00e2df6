//go:build !noubus

package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/poll"
	"github.com/aredn/phonebookd/supervisor"
	"github.com/aredn/phonebookd/ubus"
	"github.com/aredn/phonebookd/ubus/broker"
)

// TestWatchdogStopsWhileEssentialWorkerStuck: procd's watchdog is
// re-armed while the essential workers are healthy and not while one is
// stuck, so that procd restarts a daemon that cannot recover itself.
func TestWatchdogStopsWhileEssentialWorkerStuck(t *testing.T) {
	dir, _ := os.MkdirTemp("", "wd")
	defer os.RemoveAll(dir)
	br, err := broker.Start(filepath.Join(dir, "ubus.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var arms atomic.Int32
	procd := ubus.NewBus(br.Path(), nil)
	procd.Register(ctx, &ubus.Object{Path: "service", Methods: []ubus.Method{{Name: "watchdog",
		Handler: func(context.Context, *ubus.Request) ([]ubus.Value, error) { arms.Add(1); return nil, nil }}}})
	go procd.Run(ctx)

	stuck := make(chan struct{})
	sup := supervisor.New(supervisor.Options{MaxRestarts: 5, Window: time.Hour, BackoffBase: time.Hour})
	sup.Add(supervisor.Spec{Name: "main", Period: 10 * time.Millisecond, Essential: true, Run: func(ctx context.Context, w *supervisor.Worker) error {
		for {
			select {
			case <-stuck:
				<-ctx.Done() // no more heartbeats
				return nil
			case <-time.After(time.Millisecond):
				w.Beat()
			}
		}
	}})
	sup.Start(ctx)
	d := &Daemon{cfg: config.Defaults(), log: slog.New(slog.DiscardHandler), sup: sup, clock: health.SystemClock{}}
	u := &ubusFront{d: d, bus: ubus.NewBus(br.Path(), nil)}
	go u.bus.Run(ctx)
	for end := time.Now().Add(5 * time.Second); !u.bus.Connected() || !procd.Connected(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("buses not connected")
		}
	}
	// Connected does not mean procd's object is registered yet, nor that
	// the worker has beaten: a healthy daemon re-arms once both are there.
	poll.Within(t, 5*time.Second, "a re-arm while healthy", func() bool {
		u.watchdog(ctx)
		return arms.Load() > 0
	})
	armed := arms.Load()
	close(stuck)
	time.Sleep(50 * time.Millisecond) // past the 30 ms deadline
	sup.Check()
	u.watchdog(ctx)
	u.watchdog(ctx)
	if n := arms.Load() - armed; n != 0 {
		t.Errorf("re-armed %d times while the essential worker is stuck", n)
	}
}

// TestWatchdogLooksProcdUpOnce: the re-arm every 5 s invokes procd's
// object by the id looked up once on the connection, not a lookup and a
// call each time (128 allocations per re-arm before, 76 now, and none
// of the lookup's code); when procd restarts (a new id) the next re-arm
// fails and the one after finds it again, well inside procd's 30 s.
func TestWatchdogLooksProcdUpOnce(t *testing.T) {
	dir := t.TempDir()
	br, err := broker.Start(filepath.Join(dir, "ubus.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var arms atomic.Int32 // the first procd's re-arms
	startProcd := func(arms *atomic.Int32) (*ubus.Bus, func()) {
		pctx, pcancel := context.WithCancel(ctx)
		procd := ubus.NewBus(br.Path(), nil)
		done := make(chan struct{})
		go func() { defer close(done); procd.Run(pctx) }()
		procd.Register(pctx, &ubus.Object{Path: "service", Methods: []ubus.Method{{Name: "watchdog",
			Handler: func(context.Context, *ubus.Request) ([]ubus.Value, error) { arms.Add(1); return nil, nil }}}})
		return procd, func() { pcancel(); <-done }
	}
	_, stopProcd := startProcd(&arms)
	sup := supervisor.New(supervisor.Options{MaxRestarts: 5, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "main", Period: time.Hour, Essential: true, Run: func(ctx context.Context, w *supervisor.Worker) error {
		return w.Wait(ctx, 24*time.Hour)
	}})
	sup.Start(ctx)
	d := &Daemon{cfg: config.Defaults(), log: slog.New(slog.DiscardHandler), sup: sup, clock: health.SystemClock{}}
	u := &ubusFront{d: d, bus: ubus.NewBus(br.Path(), nil)}
	go u.bus.Run(ctx)
	poll.Within(t, 5*time.Second, "a first re-arm", func() bool {
		u.watchdog(ctx)
		return arms.Load() > 0
	})
	conn, id := u.procd.conn, u.procd.id
	if conn == nil || id == 0 {
		t.Fatalf("procd's object not kept: %+v", u.procd)
	}
	before := arms.Load()
	perArm := testing.AllocsPerRun(20, func() { u.watchdog(ctx) })
	if got := arms.Load() - before; got < 20 {
		t.Fatalf("%d re-arms of 21 calls", got)
	}
	if u.procd.conn != conn || u.procd.id != id {
		t.Errorf("looked up again without cause: %+v", u.procd)
	}
	// A lookup and a call cost 128 allocations per re-arm, the call alone
	// 76 (the call's message, its reply, the context's timer).
	if perArm > 100 {
		t.Errorf("%.0f allocations per re-arm: looked up each time?", perArm)
	}

	// procd restarts: its object gets a new id.
	stopProcd()
	var rearms atomic.Int32 // the restarted procd's
	_, stopProcd = startProcd(&rearms)
	defer stopProcd()
	poll.Within(t, 5*time.Second, "a re-arm of the restarted procd", func() bool {
		u.watchdog(ctx)
		return rearms.Load() > 0
	})
	if u.procd.id == id {
		t.Errorf("still the old id %d after procd's restart", id)
	}
}
