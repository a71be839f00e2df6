package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/reporter"
	"github.com/aredn/phonebookd/sip"
	"github.com/aredn/phonebookd/supervisor"
)

// stuckFront is a bus that hangs on its first publication, as a ubus
// notify or D-Bus signal to a peer that stopped reading would.
type stuckFront struct {
	release chan struct{}
	mu      sync.Mutex
	seen    []uint64
}

func (f *stuckFront) name() string                    { return "stuck" }
func (f *stuckFront) run(ctx context.Context)         { <-ctx.Done() }
func (f *stuckFront) tick(context.Context, time.Time) {}
func (f *stuckFront) evaluated(_ string, snap *health.Snapshot) {
	f.mu.Lock()
	f.seen = append(f.seen, snap.Seq)
	f.mu.Unlock()
	<-f.release
}

// TestSlowFrontDoesNotDelayEvaluation: with one front hung inside its
// publication, the safety worker keeps evaluating, requests that ask for
// an evaluation get theirs, and the other front hears of each status
// change (before: the fronts were called inside the evaluation, which
// waited out every bus timeout).
func TestSlowFrontDoesNotDelayEvaluation(t *testing.T) {
	cfg := config.Defaults()
	dir := t.TempDir()
	cfg.Main.StateDir, cfg.Main.RunDir, cfg.Main.WWWDir, cfg.Main.AppsDir = dir, dir, dir, dir
	d := &Daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), clock: health.SystemClock{}}
	d.sys = health.NewSystem(health.Options{StateDir: dir, RunDir: dir}, cfg.Health)
	d.sip = sip.New(cfg.SIP, nil, nil, nil)
	d.reporter = reporter.New(cfg.Reporter, nil, nil)
	d.safety = &safety{d: d}
	stuck := &stuckFront{release: make(chan struct{})}
	d.fronts = []front{stuck}

	ctx, cancel := context.WithCancel(context.Background())
	var side sync.WaitGroup
	d.publishers(ctx, &side)
	sup := supervisor.New(supervisor.Options{MaxRestarts: 1, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "safety", Period: safetyPeriod, Run: d.safety.run})
	sup.Start(ctx)
	defer func() {
		cancel()
		close(stuck.release)
		sup.Wait(context.Background())
		side.Wait()
	}()

	var last uint64
	for i := 0; i < 3; i++ {
		wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
		s, err := d.sys.Next(wctx)
		wcancel()
		if err != nil {
			t.Fatalf("evaluation %d not made while a front hangs: %v", i, err)
		}
		if s.Seq <= last {
			t.Fatalf("snapshot %d after %d", s.Seq, last)
		}
		last = s.Seq
	}
	stuck.mu.Lock()
	seen := len(stuck.seen)
	stuck.mu.Unlock()
	if seen != 1 {
		t.Errorf("the hung front was given %d evaluations, want 1 (it is still in the first)", seen)
	}
}

// TestConcurrentRequestsOneEvaluator: clear_crashes and documents asked
// for from many goroutines at once, while the safety worker evaluates.
// Under -race nothing races (before: clear_crashes and snapshot() ran
// Sample themselves, racing on procfs.MemReader's buffers), every
// clear_crashes answers after an evaluation begun after it, and the
// front sees the evaluations strictly in order.
func TestConcurrentRequestsOneEvaluator(t *testing.T) {
	cfg := config.Defaults()
	dir := t.TempDir()
	cfg.Main.StateDir, cfg.Main.RunDir, cfg.Main.WWWDir, cfg.Main.AppsDir = dir, dir, dir, dir
	d := &Daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), clock: health.SystemClock{}}
	var err error
	d.crashes, err = crash.Open(crash.Options{StateDir: dir, RunDir: dir, HistoryDays: 7, HistoryMax: 50, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	d.sys = health.NewSystem(health.Options{StateDir: dir, RunDir: dir, Crashes: d.crashes}, cfg.Health)
	d.sip = sip.New(cfg.SIP, nil, nil, nil)
	d.reporter = reporter.New(cfg.Reporter, nil, nil)
	d.safety = &safety{d: d}
	order := &orderFront{}
	d.fronts = []front{order}

	ctx, cancel := context.WithCancel(context.Background())
	var side sync.WaitGroup
	d.publishers(ctx, &side)
	sup := supervisor.New(supervisor.Options{MaxRestarts: 1, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "safety", Period: safetyPeriod, Run: d.safety.run})
	sup.Start(ctx)
	defer func() { cancel(); sup.Wait(context.Background()); side.Wait() }()

	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 3; i++ {
				before := d.sys.Evaluations()
				if err := d.clearCrashes(context.Background()); err != nil {
					t.Error(err)
				}
				if d.sys.Evaluations() <= before {
					t.Errorf("clear_crashes answered before an evaluation")
				}
				_ = d.statusDoc()
			}
		})
	}
	wg.Wait()
	order.mu.Lock()
	defer order.mu.Unlock()
	if order.bad != "" || order.n == 0 {
		t.Errorf("front saw %d evaluations: %s", order.n, order.bad)
	}
}

// orderFront checks that evaluations reach it strictly in order.
type orderFront struct {
	mu   sync.Mutex
	last uint64
	n    int
	bad  string
}

func (f *orderFront) name() string                    { return "order" }
func (f *orderFront) run(ctx context.Context)         { <-ctx.Done() }
func (f *orderFront) tick(context.Context, time.Time) {}
func (f *orderFront) evaluated(_ string, snap *health.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if snap.Seq <= f.last && f.bad == "" {
		f.bad = fmt.Sprintf("snapshot %d after %d", snap.Seq, f.last)
	}
	f.last = snap.Seq
	f.n++
}
