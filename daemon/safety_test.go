package daemon

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/reporter"
	"github.com/aredn/phonebookd/sip"
	"github.com/aredn/phonebookd/supervisor"
)

// TestEventsEvaluateAtMostOncePerSecond: a storm of events (every refused
// REGISTER once raised a condition, and every condition an evaluation:
// 67 % of the CPU in a capacity flood) runs the evaluation at most once
// per second.
func TestEventsEvaluateAtMostOncePerSecond(t *testing.T) {
	cfg := config.Defaults()
	dir := t.TempDir()
	cfg.Main.StateDir, cfg.Main.RunDir, cfg.Main.WWWDir = dir, dir, dir
	d := &Daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), clock: health.SystemClock{}}
	d.sys = health.NewSystem(health.Options{StateDir: dir, RunDir: dir}, cfg.Health)
	d.sip = sip.New(cfg.SIP, nil, nil, nil)
	d.reporter = reporter.New(cfg.Reporter, nil, nil)
	d.safety = &safety{d: d}
	sup := supervisor.New(supervisor.Options{MaxRestarts: 1, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "safety", Period: safetyPeriod, Run: d.safety.run})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); sup.Wait(context.Background()) }()
	sup.Start(ctx)
	time.Sleep(100 * time.Millisecond) // the first, scheduled evaluation
	before := d.sys.Evaluations()
	t0 := time.Now()
	for time.Since(t0) < 2500*time.Millisecond {
		d.sys.Trigger()
		time.Sleep(100 * time.Microsecond)
	}
	n := d.sys.Evaluations() - before
	if n < 1 || n > 4 { // 2.5 s of events: at most one per second (+1 at an edge)
		t.Errorf("%d evaluations for 2.5 s of continuous events", n)
	}
}
