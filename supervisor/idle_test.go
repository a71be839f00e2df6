package supervisor

import (
	"context"
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
