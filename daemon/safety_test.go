package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/internal/poll"
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
	// The fake clock decides how often evaluations may run: the real
	// scheduling of the worker can only make fewer of them.
	clk := clock.NewFake(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	d := &Daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), clock: clk}
	d.sys = health.NewSystem(health.Options{Clock: clk, StateDir: dir, RunDir: dir}, cfg.Health)
	d.sip = sip.New(cfg.SIP, nil, nil, nil)
	d.reporter = reporter.New(cfg.Reporter, nil, nil)
	d.safety = &safety{d: d}
	sup := supervisor.New(supervisor.Options{Clock: clk, MaxRestarts: 1, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "safety", Period: safetyPeriod, Run: d.safety.run})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); sup.Wait(context.Background()) }()
	sup.Start(ctx)
	poll.Within(t, 10*time.Second, "the first, scheduled evaluation", func() bool { return d.sys.Evaluations() >= 1 })
	before := d.sys.Evaluations()
	// 2.5 s of the fake clock with events all the time: at most one
	// evaluation a second (+1 at an edge).
	for i := 0; i < 250; i++ {
		d.sys.Trigger()
		time.Sleep(100 * time.Microsecond) // the worker takes the event
		clk.Advance(10 * time.Millisecond)
	}
	if n := d.sys.Evaluations() - before; n > 4 {
		t.Errorf("%d evaluations for 2.5 s of continuous events", n)
	}
	// An event still evaluates, once its second has passed.
	last := d.sys.Evaluations()
	d.sys.Trigger()
	poll.Within(t, 10*time.Second, "an evaluation for the event", func() bool {
		clk.Advance(100 * time.Millisecond)
		return d.sys.Evaluations() > last
	})
}

// TestOrphansSweptAtStartThenEvery10Minutes: temporary files left by an
// interrupted write are removed at the first evaluation, and the
// directories are listed again only every orphanSweepEvery, not at each
// evaluation.
func TestOrphansSweptAtStartThenEvery10Minutes(t *testing.T) {
	cfg := config.Defaults()
	dir := t.TempDir()
	cfg.Main.StateDir, cfg.Main.RunDir, cfg.Main.WWWDir = dir, dir, dir
	d := &Daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), opt: Options{ConfDir: dir}}
	d.sip = sip.New(cfg.SIP, nil, nil, nil)
	s := &safety{d: d}
	orphan := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Hour)
		os.Chtimes(p, old, old)
		return p
	}
	gone := func(p string) bool { _, err := os.Stat(p); return os.IsNotExist(err) }
	now := time.Now()
	first := orphan(".history.tmp-1")
	s.hygiene(now)
	if !gone(first) {
		t.Fatal("an orphan left at the first evaluation")
	}
	second := orphan(".bindings.tmp-2")
	s.hygiene(now.Add(time.Minute))
	if gone(second) {
		t.Error("the directories listed again a minute later")
	}
	s.hygiene(now.Add(orphanSweepEvery))
	if !gone(second) {
		t.Error("an orphan left after orphanSweepEvery")
	}
}
