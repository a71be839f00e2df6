package supervisor

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestSupervisorLeavesNoGoroutines: workers that run, panic and are
// restarted, return errors, start counted goroutines and thread
// goroutines, all stop with their context: after Wait nothing of them
// runs (restart timers included).
func TestSupervisorLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := New(Options{MaxRestarts: 5, Window: time.Hour, BackoffBase: 10 * time.Millisecond})
	panicked := false
	s.Add(Spec{Name: "crashy", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		if !panicked {
			panicked = true
			panic("once")
		}
		return w.Wait(ctx, time.Hour)
	}})
	s.Add(Spec{Name: "helpers", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		w.Go(func() { <-ctx.Done() })
		w.GoThread(func() { <-ctx.Done() })
		return w.Wait(ctx, time.Hour)
	}})
	s.Add(Spec{Name: "blocked", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		return Blocked(errors.New("port in use"))
	}})
	ctx, cancel := context.WithCancel(context.Background())
	s.Start(ctx)
	time.Sleep(200 * time.Millisecond) // the panic restarted, the blocked one retried
	cancel()
	if !s.Wait(context.Background()) {
		t.Fatal("workers did not return")
	}

}
