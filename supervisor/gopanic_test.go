package supervisor

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/internal/poll"
)

// TestGoroutinePanicRecovered: a panic in a goroutine a worker started
// with Go or GoThread is recovered, recorded once as that worker's crash,
// and the worker restarted; the process goes on (before: only Run was
// protected, and such a panic ended the process, this test binary too).
func TestGoroutinePanicRecovered(t *testing.T) {
	for _, thread := range []bool{false, true} {
		var mu sync.Mutex
		var crashes []crash.Record
		s := New(Options{
			MaxRestarts: 5, Window: time.Minute, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
			OnCrash: func(r crash.Record) { mu.Lock(); crashes = append(crashes, r); mu.Unlock() },
		})
		var runs atomic.Int32
		s.Add(Spec{Name: "monitor", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
			if runs.Add(1) == 1 {
				boom := func() { var m map[string]int; m["probe"]++ } // a nil map: a runtime panic
				if thread {
					w.GoThread(boom)
				} else {
					w.Go(boom)
				}
			}
			<-ctx.Done()
			return nil
		}})
		ctx, cancel := context.WithCancel(context.Background())
		s.Start(ctx)
		poll.Until(t, "the worker restarted", func() bool {
			return runs.Load() == 2 && status(s, "monitor").Status == StatusHealthy
		})
		cancel()
		s.Wait(context.Background())
		st := status(s, "monitor")
		mu.Lock()
		if len(crashes) != 1 || crashes[0].Kind != crash.KindWorkerPanic || crashes[0].Worker != "monitor" ||
			!strings.Contains(crashes[0].Reason, "nil map") || st.Restarts != 1 || !strings.Contains(st.LastError, "nil map") {
			t.Errorf("GoThread %v: crashes %+v, status %+v", thread, crashes, st)
		}
		mu.Unlock()
	}
}
