package supervisor

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/procfs"
)

// TestCheckAllocatesNothing: the daemon calls Check every second, which
// reads each measured thread's CPU from /proc. Each read used to
// allocate a path, a file, a buffer and a field slice: with the four
// workers and the SIP reader, about 7.5 KB/s of the idle daemon's heap
// growth (a heap profile of the router build, 120 s idle: 899 KB of
// 1,091 KB allocated came from here).
func TestCheckAllocatesNothing(t *testing.T) {
	if procfs.ClockTicks() == 0 {
		t.Skip("no /proc/self/auxv on this platform")
	}
	s := New(Options{MaxRestarts: 1, Window: time.Hour})
	started := make(chan struct{}, 8)
	for _, name := range []string{"main", "fetcher", "monitor", "safety"} {
		s.Add(Spec{Name: name, Period: time.Hour, Run: func(ctx context.Context, w *Worker) error {
			started <- struct{}{}
			return w.Wait(ctx, 24*time.Hour)
		}})
	}
	s.Add(Spec{Name: "reader", Period: time.Hour, Run: func(ctx context.Context, w *Worker) error {
		w.GoThread(func() { started <- struct{}{}; <-ctx.Done() })
		return w.Wait(ctx, 24*time.Hour)
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Wait(context.Background()) }()
	s.Start(ctx)
	for range 5 {
		<-started
	}
	s.Check() // the first read of each thread
	if n := testing.AllocsPerRun(50, s.Check); n != 0 {
		t.Errorf("Check allocates %.1f times per call with five measured threads, want 0", n)
	}
}

// TestWorkersHoldNoThreads: a worker's goroutine, which mostly waits,
// does not keep an OS thread of its own (each about 35 KB of private
// memory and a kernel stack; the router build ran 13 threads idle, 10
// without the four workers' own). Sixteen waiting workers add at most a
// few threads; one locked thread each would add sixteen.
func TestWorkersHoldNoThreads(t *testing.T) {
	before, ok := osThreads()
	if !ok {
		t.Skip("no /proc/self/status here")
	}
	s := New(Options{MaxRestarts: 1, Window: time.Hour})
	var running sync.WaitGroup
	const n = 16
	running.Add(n)
	for i := range n {
		s.Add(Spec{Name: "w" + strconv.Itoa(i), Period: time.Hour, Run: func(ctx context.Context, w *Worker) error {
			running.Done()
			return w.Wait(ctx, 24*time.Hour)
		}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Wait(context.Background()) }()
	s.Start(ctx)
	running.Wait()
	s.Check()
	after, _ := osThreads()
	if after-before >= n/2 {
		t.Errorf("%d waiting workers: %d OS threads, %d before", n, after, before)
	}
	for _, w := range s.Snapshot() {
		if w.CPUPct != nil {
			t.Errorf("%s: cpu_pct %.1f with no measured work", w.Name, *w.CPUPct)
		}
	}
}

// osThreads is the process's thread count from /proc/self/status.
func osThreads() (int, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	_, rest, found := strings.Cut(string(b), "\nThreads:")
	if !found {
		return 0, false
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return 0, false
	}
	n, err := strconv.Atoi(f[0])
	return n, err == nil
}

// TestEssentialAliveWithoutSnapshot: procd's watchdog asks every 5 s
// whether the essential workers are alive; the supervisor answers from
// its workers as they are, by the same rule as EssentialAlive on a
// snapshot, without building one (a slice of every worker's figures,
// about 1 KB, every 5 s).
func TestEssentialAliveWithoutSnapshot(t *testing.T) {
	clk := newFakeClock()
	s := New(Options{Clock: clk, MaxRestarts: 1, Window: time.Hour})
	beat := make(chan struct{})
	beaten := make(chan struct{})
	s.Add(Spec{Name: "main", Period: time.Minute, Essential: true, Run: func(ctx context.Context, w *Worker) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-beat:
				w.Beat()
				beaten <- struct{}{}
			}
		}
	}})
	s.Add(Spec{Name: "fetcher", Period: time.Minute, Run: func(ctx context.Context, w *Worker) error { <-ctx.Done(); return nil }})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Wait(context.Background()) }()
	s.Start(ctx)
	same := func(when string, want bool) {
		t.Helper()
		now := clk.Now()
		if got, rule := s.EssentialAlive(now), EssentialAlive(s.Snapshot(), now); got != want || rule != want {
			t.Errorf("%s: alive %v, the rule on a snapshot %v, want %v", when, got, rule, want)
		}
	}
	same("before the first beat", false)
	beat <- struct{}{}
	<-beaten
	same("after a beat", true)
	if n := testing.AllocsPerRun(50, func() { s.EssentialAlive(clk.Now()) }); n != 0 {
		t.Errorf("%.1f allocations per answer, want 0", n)
	}
	clk.Advance(2*time.Minute + time.Second)
	same("two periods after the last beat", false)
	beat <- struct{}{}
	<-beaten
	same("beating again", true)
}
