package reporter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
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

// runReporter runs r until the test ends.
func runReporter(t *testing.T, r *Reporter) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// sendOne makes one report and waits until it is counted sent, or has
// failed; the collector must have received it exactly once, counted
// once as sent.
func sendOne(t *testing.T, r *Reporter, received func() int) {
	t.Helper()
	r.StatusChanged()
	poll.Within(t, 10*time.Second, "the report counted", func() bool { st := r.Stats(); return st.Sent+st.Failed > 0 })
	st := r.Stats()
	if st.Sent != 1 || st.Failed != 0 || st.Queued != 0 || st.LastError != "" {
		t.Fatalf("after one accepted report: %+v", st)
	}
	if n := received(); n != 1 {
		t.Fatalf("collector received %d POSTs", n)
	}
}

// TestLargeAnswerCountsSent: a collector that accepts with 200 and a
// body over 64 KB accepted the report: it is counted sent, not resent.
func TestLargeAnswerCountsSent(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		posts.Add(1)
		w.Header().Set("Content-Type", "text/html")
		w.Write(bytes.Repeat([]byte("<p>thank you</p>\n"), 20000)) // 340 KB, chunked
	}))
	defer srv.Close()
	r := New(config.Reporter{URL: srv.URL + "/report", Interval: 3600, Queue: 4, Timeout: 5}, func(string) ([]byte, error) { return []byte(`{"seq":1}`), nil }, nil)
	r.MinBackoff, r.MaxBackoff = 10*time.Millisecond, 20*time.Millisecond
	runReporter(t, r)
	sendOne(t, r, func() int { return int(posts.Load()) })
}

// TestContinueThenOK: a collector that sends 100 Continue before its 200
// (a raw listener: net/http sends 100 only on Expect) accepted the report.
func TestContinueThenOK(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var posts atomic.Int32
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			length := 0
			for {
				l, err := br.ReadString('\n')
				if err != nil || l == "\r\n" {
					break
				}
				if v, ok := strings.CutPrefix(strings.ToLower(l), "content-length:"); ok {
					length, _ = strconv.Atoi(strings.TrimSpace(v))
				}
			}
			c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
			if _, err := io.ReadFull(br, make([]byte, length)); err == nil {
				posts.Add(1)
			}
			c.Write([]byte("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
			c.Close()
		}
	})
	defer func() { ln.Close(); wg.Wait() }()
	r := New(config.Reporter{URL: "http://" + ln.Addr().String() + "/report", Interval: 3600, Queue: 4, Timeout: 5}, func(string) ([]byte, error) { return []byte(`{"seq":1}`), nil }, nil)
	r.MinBackoff, r.MaxBackoff = 10*time.Millisecond, 20*time.Millisecond
	runReporter(t, r)
	sendOne(t, r, func() int { return int(posts.Load()) })
}

// TestPasswordNotShown: a URL with credentials never shows its password
// in the log or the counters, while the collector refuses and after.
func TestPasswordNotShown(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		if fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	var logBuf syncBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	url := strings.Replace(srv.URL, "http://", "http://agent:s3cret-pw@", 1) + "/report"
	r := New(config.Reporter{URL: url, Interval: 3600, Queue: 4, Timeout: 5}, func(string) ([]byte, error) { return []byte(`{}`), nil }, log)
	r.MinBackoff, r.MaxBackoff = 10*time.Millisecond, 20*time.Millisecond
	runReporter(t, r)
	r.StatusChanged()
	poll.Within(t, 10*time.Second, "a failed attempt", func() bool { return r.Stats().Failed > 0 })
	fail.Store(false)
	poll.Within(t, 10*time.Second, "the report delivered", func() bool { return r.Stats().Sent == 1 })
	out := logBuf.String()
	if !strings.Contains(out, "not delivered") || !strings.Contains(out, "delivered again") {
		t.Fatalf("log lacks the delivery lines:\n%s", out)
	}
	if strings.Contains(out, "s3cret-pw") {
		t.Errorf("the log shows the password:\n%s", out)
	}
	if st := r.Stats(); strings.Contains(fmt.Sprintf("%+v", st), "s3cret-pw") {
		t.Errorf("the counters show the password: %+v", st)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
