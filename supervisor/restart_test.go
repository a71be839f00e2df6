package supervisor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/internal/poll"
)

// TestRestartFloodIsHonest: thousands of restart calls, from several
// callers at once, are answered "restarted" exactly as often as the
// supervisor really restarted the worker; the others learn that a
// restart is already under way. (On the code before, every call was
// answered as a restart: 4,000 answers for 238 restarts.)
func TestRestartFloodIsHonest(t *testing.T) {
	var logged lineCounter
	// The fake clock stands still: every call falls in one log interval.
	s := New(Options{Clock: newFakeClock(), Log: slog.New(slog.NewTextHandler(&logged, nil)), MaxRestarts: 1, Window: time.Hour})
	var runs atomic.Int32
	s.Add(Spec{Name: "fetcher", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		runs.Add(1)
		<-ctx.Done()
		return nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Wait(context.Background()) }()
	s.Start(ctx)
	poll.Until(t, "first run", func() bool { return runs.Load() == 1 })

	const callers, calls = 8, 500
	var restarted, already atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				switch err := s.RestartBy("fetcher", "test"); {
				case err == nil:
					restarted.Add(1)
				case errors.Is(err, ErrAlreadyRestarting):
					already.Add(1)
				default:
					t.Errorf("restart: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	if restarted.Load()+already.Load() != callers*calls {
		t.Fatalf("%d restarted + %d already != %d calls", restarted.Load(), already.Load(), callers*calls)
	}
	if already.Load() == 0 {
		t.Errorf("no call was told a restart was under way: %d restarted", restarted.Load())
	}
	// The last restart answered may still be finishing.
	poll.Until(t, "the restarts answered to be done", func() bool {
		st := status(s, "fetcher")
		return st.Status == StatusHealthy && int64(st.Restarts) >= restarted.Load() && int64(runs.Load())-1 >= restarted.Load()
	})
	if st := status(s, "fetcher"); int64(st.Restarts) != restarted.Load() {
		t.Errorf("%d restarts answered \"restarted\", the supervisor counts %d", restarted.Load(), st.Restarts)
	}
	if got := int64(runs.Load()) - 1; got != restarted.Load() {
		t.Errorf("%d restarts answered \"restarted\", %d happened", restarted.Load(), got)
	}
	// 4,000 calls wrote 4,000 lines before.
	if n := logged.lines(); n > restartLogBurst {
		t.Errorf("%d calls wrote %d log lines, want at most %d", callers*calls, n, restartLogBurst)
	}
	t.Logf("%d calls: %d restarted, %d already restarting, %d log lines", callers*calls, restarted.Load(), already.Load(), logged.lines())
}

// TestRestartInBackoffSaysSo: a worker waiting in its backoff after an
// error is already restarting; a restart call says so and does not cut
// the backoff short.
func TestRestartInBackoffSaysSo(t *testing.T) {
	clock := newFakeClock()
	s := New(Options{Clock: clock, MaxRestarts: 5, Window: time.Hour, BackoffBase: time.Minute})
	var runs atomic.Int32
	s.Add(Spec{Name: "monitor", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		if runs.Add(1) == 1 {
			return errors.New("boom")
		}
		<-ctx.Done()
		return nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Wait(context.Background()) }()
	s.Start(ctx)
	poll.Until(t, "the worker waiting in its backoff", func() bool { return status(s, "monitor").Status == StatusRestarting })
	for range 100 {
		if err := s.Restart("monitor"); !errors.Is(err, ErrAlreadyRestarting) {
			t.Fatalf("restart during backoff: %v, want ErrAlreadyRestarting", err)
		}
	}
	if runs.Load() != 1 {
		t.Fatalf("restart calls cut the backoff short: %d runs", runs.Load())
	}
	clock.Advance(time.Minute)
	poll.Until(t, "the backoff's restart", func() bool { return runs.Load() == 2 && status(s, "monitor").Status == StatusHealthy })
	if err := s.Restart("monitor"); err != nil {
		t.Fatalf("restart of a healthy worker: %v", err)
	}
	poll.Until(t, "the operator's restart", func() bool { return runs.Load() == 3 })
	if st := status(s, "monitor"); st.Restarts != 2 {
		t.Errorf("restarts %d, want 2 (one after the error, one by the operator)", st.Restarts)
	}
}

// lineCounter counts the log lines written to it, from any goroutine.
type lineCounter struct {
	mu sync.Mutex
	n  int
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.n += bytes.Count(p, []byte("\n"))
	c.mu.Unlock()
	return len(p), nil
}

func (c *lineCounter) lines() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
