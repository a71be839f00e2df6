package reporter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/internal/poll"
)

// collector is a test server that fails, hangs or accepts.
type collector struct {
	mode atomic.Value // "fail", "hang", "ok"
	mu   sync.Mutex
	got  []int
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	switch c.mode.Load() {
	case "fail":
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	case "hang":
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
		return
	}
	var doc struct{ Seq int }
	if r.Method != "POST" || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &doc) != nil {
		http.Error(w, "bad report", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.got = append(c.got, doc.Seq)
	c.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func (c *collector) received() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.got...)
}

// TestQueueThroughFailureHangAndRecovery: while the collector fails and
// then hangs, reports wait in the queue (none counted as sent), the queue
// never passes its bound and drops only the oldest, counted; when it
// recovers every queued report arrives once, in order.
func TestQueueThroughFailureHangAndRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("slow (real time through a hung collector): make test runs it")
	}
	c := &collector{}
	c.mode.Store("fail")
	srv := httptest.NewServer(c)
	defer srv.Close()
	var seq atomic.Int64
	build := func(reason string) ([]byte, error) {
		return []byte(fmt.Sprintf(`{"seq":%d,"reason":%q}`, seq.Add(1), reason)), nil
	}
	r := New(config.Reporter{URL: srv.URL + "/report", Interval: 3600, Queue: 6, Timeout: 1}, build, nil)
	r.MinBackoff, r.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	trigger := func(n int) {
		for i := 0; i < n; i++ {
			before := seq.Load()
			r.StatusChanged()
			poll.Within(t, 10*time.Second, "a report built", func() bool { return seq.Load() > before })
		}
	}
	trigger(4)
	poll.Within(t, 10*time.Second, "failed attempts", func() bool { return r.Stats().Failed >= 2 })
	if st := r.Stats(); st.Sent != 0 || st.Queued != 4 || st.Dropped != 0 {
		t.Fatalf("while failing: %+v", st)
	}
	c.mode.Store("hang")
	trigger(4)
	st := r.Stats()
	if st.Queued != 6 || st.Dropped != 2 || st.Sent != 0 {
		t.Fatalf("queue past its bound: %+v, want 6 queued, 2 dropped", st)
	}
	failed := st.Failed
	poll.Within(t, 10*time.Second, "a hung POST timed out", func() bool { return r.Stats().Failed > failed })
	c.mode.Store("ok")
	poll.Within(t, 20*time.Second, "the queue delivered", func() bool { return r.Stats().Queued == 0 })
	got := c.received()
	want := []int{3, 4, 5, 6, 7, 8}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("collector received %v, want %v (the two oldest dropped at the bound)", got, want)
	}
	if st := r.Stats(); st.Sent != 6 || st.LastError != "" || st.LastSuccess.IsZero() {
		t.Fatalf("after recovery: %+v", st)
	}
}

// TestOffSendsNothing: without a URL no report is built.
func TestOffSendsNothing(t *testing.T) {
	built := 0
	r := New(config.Reporter{Interval: 1, Queue: 4, Timeout: 1}, func(string) ([]byte, error) { built++; return []byte("{}"), nil }, nil)
	r.enqueue(ReasonInterval)
	if built != 0 || r.Stats().Queued != 0 {
		t.Fatal("a report was made with the reporter off")
	}
}

// TestBackoffBoundedWithJitter: waits grow, stay within the cap, and vary.
func TestBackoffBoundedWithJitter(t *testing.T) {
	r := New(config.Reporter{}, nil, nil)
	seen := map[time.Duration]bool{}
	for f := 1; f < 40; f++ {
		d := r.backoff(f)
		if d < r.MinBackoff/2 || d > r.MaxBackoff*3/2 {
			t.Fatalf("failure %d: %v out of bounds", f, d)
		}
		seen[d] = true
	}
	if len(seen) < 20 {
		t.Fatalf("no jitter: %d distinct waits", len(seen))
	}
}
