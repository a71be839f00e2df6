package supervisor

import (
	"context"
	"errors"
	"github.com/aredn/phonebookd/internal/poll"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/procfs"
)

// newFakeClock is a clock that moves, and fires timers, only when a
// test advances it.
func newFakeClock() *clock.Fake { return clock.NewFake(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)) }

func status(s *Supervisor, name string) WorkerStatus {
	for _, w := range s.Snapshot() {
		if w.Name == name {
			return w
		}
	}
	return WorkerStatus{}
}

func TestPanicRestartsThenFails(t *testing.T) {
	var crashes []crash.Record
	var mu sync.Mutex
	fatal := make(chan crash.Record, 1)
	s := New(Options{
		MaxRestarts: 2, Window: time.Minute, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		OnCrash: func(r crash.Record) { mu.Lock(); crashes = append(crashes, r); mu.Unlock() },
		OnFatal: func(r crash.Record) { fatal <- r },
	})
	var runs atomic.Int32
	s.Add(Spec{Name: "main", Period: time.Second, Essential: true, Run: func(ctx context.Context, w *Worker) error {
		runs.Add(1)
		panic("boom")
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	rec := <-fatal
	if rec.Kind != crash.KindWorkerFailed || rec.Worker != "main" || !strings.Contains(rec.Reason, "panic: boom") {
		t.Errorf("fatal record %+v", rec)
	}
	if got := status(s, "main"); got.Status != StatusFailed || got.Restarts != 3 || runs.Load() != 3 {
		t.Errorf("status %+v after %d runs", got, runs.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(crashes) != 3 || crashes[0].Kind != crash.KindWorkerPanic || !strings.Contains(crashes[0].Stack, "supervisor_test.go") {
		t.Errorf("crash records %d: %+v", len(crashes), crashes)
	}
}

func TestHungWorkerRestartedAndAbandoned(t *testing.T) {
	clock := newFakeClock()
	var changes atomic.Int32
	s := New(Options{Clock: clock, MaxRestarts: 5, Window: time.Hour,
		BackoffBase: time.Millisecond, OnChange: func() { changes.Add(1) }})
	hang := make(chan struct{})
	var runs atomic.Int32
	s.Add(Spec{Name: "fetcher", Period: 10 * time.Millisecond, Run: func(ctx context.Context, w *Worker) error {
		if runs.Add(1) == 1 {
			<-hang // deaf to ctx: will be abandoned
		}
		<-ctx.Done()
		return nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	poll.Until(t, "the first run", func() bool { return runs.Load() == 1 })
	clock.Advance(DeadlineFactor*10*time.Millisecond + time.Millisecond)
	s.Check()
	if st := status(s, "fetcher"); st.Status != StatusUnresponsive || !strings.Contains(st.LastError, "no heartbeat") {
		t.Fatalf("after deadline: %+v", st)
	}
	// The restart (backoff 1 ms) and the abandonment watch (one deadline)
	// are timers of the fake clock: nothing happens until it moves.
	poll.Until(t, "both timers armed", func() bool { return clock.Timers() == 2 })
	if runs.Load() != 1 {
		t.Fatal("restarted before the backoff passed")
	}
	clock.Advance(time.Millisecond)
	poll.Until(t, "restart", func() bool { return runs.Load() == 2 && status(s, "fetcher").Status == StatusHealthy })
	if status(s, "fetcher").Abandoned != 0 {
		t.Fatal("abandoned before its grace passed")
	}
	clock.Advance(DeadlineFactor * 10 * time.Millisecond)
	poll.Until(t, "abandoned", func() bool { return status(s, "fetcher").Abandoned == 1 })
	close(hang)
	cancel()
	s.Wait(context.Background())
}

// TestWaitBeatsThroughLongLoops: a worker sleeping far longer than its
// deadline stays healthy, because Wait beats every period.
func TestWaitBeatsThroughLongLoops(t *testing.T) {
	clock := newFakeClock()
	s := New(Options{Clock: clock, MaxRestarts: 1, Window: time.Hour})
	s.Add(Spec{Name: "fetcher", Period: time.Minute, Run: func(ctx context.Context, w *Worker) error {
		return w.Wait(ctx, 24*time.Hour)
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Wait(context.Background()) }()
	s.Start(ctx)
	// Ten hours of a one-day wait, a minute at a time (deadline 3 min):
	// each period the worker's timer fires and it beats.
	for i := 0; i < 600; i++ {
		poll.Until(t, "the worker waiting on its timer", func() bool { return clock.Timers() == 1 })
		clock.Advance(time.Minute)
		s.Check()
	}
	if st := status(s, "fetcher"); st.Status != StatusHealthy || st.Restarts != 0 {
		t.Errorf("long loop: %+v", st)
	}
}

func TestManualRestartAndUnknown(t *testing.T) {
	s := New(Options{MaxRestarts: 1, Window: time.Hour})
	var runs atomic.Int32
	s.Add(Spec{Name: "monitor", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		runs.Add(1)
		<-ctx.Done()
		return nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	s.Start(ctx)
	poll.Until(t, "first run", func() bool { return runs.Load() == 1 })
	if err := s.Restart("monitor"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "second run", func() bool { return runs.Load() == 2 })
	if err := s.Restart("nope"); !errors.Is(err, ErrUnknownWorker) {
		t.Errorf("unknown worker: %v", err)
	}
	cancel()
	if !s.Wait(context.Background()) {
		t.Error("workers did not stop")
	}
	if st := status(s, "monitor"); st.Status != StatusStopped || st.Restarts != 1 {
		t.Errorf("after stop: %+v", st)
	}
}

// TestCPUIsMeasured: a worker's cpu_pct is its measured work: its
// GoThread threads and its BeginCPU stretches, set against a worker whose
// measured work waits. A worker whose work runs in its own goroutine
// alone is not measured apart from the process: null, not a guess (its
// goroutine no longer holds an OS thread of its own).
func TestCPUIsMeasured(t *testing.T) {
	if procfs.ClockTicks() == 0 {
		t.Skip("no /proc/self/auxv on this platform")
	}
	s := New(Options{MaxRestarts: 1, Window: time.Hour})
	s.Add(Spec{Name: "busy", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		for ctx.Err() == nil {
			w.Beat()
		}
		return nil
	}})
	// The work of "handed" runs in goroutines it starts, as the SIP
	// readers do; the worker's own goroutine only waits.
	s.Add(Spec{Name: "handed", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		w.GoThread(func() {
			for ctx.Err() == nil {
			}
		})
		return w.Wait(ctx, time.Hour)
	}})
	// The work of "spans" runs in plain goroutines (Go), as a TCP
	// connection's does, each stretch measured by BeginCPU.
	var sink atomic.Int64 // keeps the measured loop from being optimised away
	s.Add(Spec{Name: "spans", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		w.Go(func() {
			for ctx.Err() == nil {
				span := w.BeginCPU()
				x := 0
				for i := 0; i < 1e5; i++ {
					x = x*31 + i
				}
				span.End()
				sink.Add(int64(x))
			}
		})
		return w.Wait(ctx, time.Hour)
	}})
	// "waiting": measured work (a reader's thread) that waits.
	s.Add(Spec{Name: "waiting", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		w.GoThread(func() { <-ctx.Done() })
		return w.Wait(ctx, time.Hour)
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	time.Sleep(50 * time.Millisecond)
	s.Check()
	time.Sleep(300 * time.Millisecond)
	s.Check()
	busy, waiting, handed, spans := status(s, "busy"), status(s, "waiting"), status(s, "handed"), status(s, "spans")
	if waiting.CPUPct == nil {
		t.Fatal("a waiting GoThread not measured")
	}
	// Relative, so that a loaded machine (which starves the busy
	// goroutines) does not fail it: measured work must show clearly more.
	if spans.CPUPct == nil || *spans.CPUPct < 5 || *spans.CPUPct < 4**waiting.CPUPct+1 {
		t.Errorf("work measured by BeginCPU on a plain goroutine not counted: spans %v, waiting %.1f", spans.CPUPct, *waiting.CPUPct)
	}
	if handed.CPUPct == nil || *handed.CPUPct < 5 || *handed.CPUPct < 4**waiting.CPUPct+1 {
		t.Errorf("work in a GoThread goroutine not counted: handed %v, waiting %.1f", handed.CPUPct, *waiting.CPUPct)
	}
	if busy.CPUPct != nil {
		t.Errorf("busy's own goroutine reported at %.1f %%: it has no thread of its own to measure", *busy.CPUPct)
	}
}
