package health

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/ubus"
)

// newFakeClock is a clock that moves, and fires timers, only when a
// test advances it.
func newFakeClock() *clock.Fake { return clock.NewFake(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)) }

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func status(s *Supervisor, name string) WorkerStatus {
	for _, w := range s.Snapshot() {
		if w.Name == name {
			return w
		}
	}
	return WorkerStatus{}
}

func TestPanicRestartsThenFails(t *testing.T) {
	var crashes []Record
	var mu sync.Mutex
	fatal := make(chan Record, 1)
	s := NewSupervisor(SupervisorOptions{
		MaxRestarts: 2, Window: time.Minute, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		OnCrash: func(r Record) { mu.Lock(); crashes = append(crashes, r); mu.Unlock() },
		OnFatal: func(r Record) { fatal <- r },
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
	if rec.Kind != KindWorkerFailed || rec.Worker != "main" || !strings.Contains(rec.Reason, "panic: boom") {
		t.Errorf("fatal record %+v", rec)
	}
	if got := status(s, "main"); got.Status != StatusFailed || got.Restarts != 3 || runs.Load() != 3 {
		t.Errorf("status %+v after %d runs", got, runs.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(crashes) != 3 || crashes[0].Kind != KindWorkerPanic || !strings.Contains(crashes[0].Stack, "health_test.go") {
		t.Errorf("crash records %d: %+v", len(crashes), crashes)
	}
}

func TestHungWorkerRestartedAndAbandoned(t *testing.T) {
	clock := newFakeClock()
	var changes atomic.Int32
	s := NewSupervisor(SupervisorOptions{Clock: clock, MaxRestarts: 5, Window: time.Hour,
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
	waitUntil(t, "the first run", func() bool { return runs.Load() == 1 })
	clock.Advance(DeadlineFactor*10*time.Millisecond + time.Millisecond)
	s.Check()
	if st := status(s, "fetcher"); st.Status != StatusUnresponsive || !strings.Contains(st.LastError, "no heartbeat") {
		t.Fatalf("after deadline: %+v", st)
	}
	// The restart (backoff 1 ms) and the abandonment watch (one deadline)
	// are timers of the fake clock: nothing happens until it moves.
	waitUntil(t, "both timers armed", func() bool { return clock.Timers() == 2 })
	if runs.Load() != 1 {
		t.Fatal("restarted before the backoff passed")
	}
	clock.Advance(time.Millisecond)
	waitUntil(t, "restart", func() bool { return runs.Load() == 2 && status(s, "fetcher").Status == StatusHealthy })
	if status(s, "fetcher").Abandoned != 0 {
		t.Fatal("abandoned before its grace passed")
	}
	clock.Advance(DeadlineFactor * 10 * time.Millisecond)
	waitUntil(t, "abandoned", func() bool { return status(s, "fetcher").Abandoned == 1 })
	close(hang)
	cancel()
	s.Wait(context.Background())
}

// TestWaitBeatsThroughLongLoops: a worker sleeping far longer than its
// deadline stays healthy, because Wait beats every period.
func TestWaitBeatsThroughLongLoops(t *testing.T) {
	clock := newFakeClock()
	s := NewSupervisor(SupervisorOptions{Clock: clock, MaxRestarts: 1, Window: time.Hour})
	s.Add(Spec{Name: "fetcher", Period: time.Minute, Run: func(ctx context.Context, w *Worker) error {
		return w.Wait(ctx, 24*time.Hour)
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Wait(context.Background()) }()
	s.Start(ctx)
	// Ten hours of a one-day wait, a minute at a time (deadline 3 min):
	// each period the worker's timer fires and it beats.
	for i := 0; i < 600; i++ {
		waitUntil(t, "the worker waiting on its timer", func() bool { return clock.Timers() == 1 })
		clock.Advance(time.Minute)
		s.Check()
	}
	if st := status(s, "fetcher"); st.Status != StatusHealthy || st.Restarts != 0 {
		t.Errorf("long loop: %+v", st)
	}
}

func TestManualRestartAndUnknown(t *testing.T) {
	s := NewSupervisor(SupervisorOptions{MaxRestarts: 1, Window: time.Hour})
	var runs atomic.Int32
	s.Add(Spec{Name: "monitor", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		runs.Add(1)
		<-ctx.Done()
		return nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	s.Start(ctx)
	waitUntil(t, "first run", func() bool { return runs.Load() == 1 })
	if err := s.Restart("monitor"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "second run", func() bool { return runs.Load() == 2 })
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

func TestCPUIsMeasured(t *testing.T) {
	if clockTicks() == 0 {
		t.Skip("no /proc/self/auxv on this platform")
	}
	s := NewSupervisor(SupervisorOptions{MaxRestarts: 1, Window: time.Hour})
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
	s.Add(Spec{Name: "idle", Period: time.Second, Run: func(ctx context.Context, w *Worker) error { return w.Wait(ctx, time.Hour) }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	time.Sleep(50 * time.Millisecond)
	s.Check()
	time.Sleep(300 * time.Millisecond)
	s.Check()
	busy, idle, handed := status(s, "busy"), status(s, "idle"), status(s, "handed")
	if handed.CPUPct == nil || *handed.CPUPct < 5 || idle.CPUPct == nil || *handed.CPUPct < 4**idle.CPUPct+1 {
		t.Errorf("work in a GoThread goroutine not counted: handed %v, idle %v", handed.CPUPct, idle.CPUPct)
	}
	if busy.CPUPct == nil || idle.CPUPct == nil {
		t.Fatalf("cpu not measured: %v %v", busy.CPUPct, idle.CPUPct)
	}
	// Relative, so that a loaded machine (which starves the busy worker)
	// does not fail it: the busy thread must show clearly more CPU.
	if *busy.CPUPct < 5 || *busy.CPUPct < 4**idle.CPUPct+1 {
		t.Errorf("busy %.1f%%, idle %.1f%%", *busy.CPUPct, *idle.CPUPct)
	}
}

func newStore(t *testing.T, clock Clock, dir string, coalesce time.Duration, boot string) *CrashStore {
	t.Helper()
	s, err := OpenCrashStore(CrashOptions{StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"),
		Clock: clock, HistoryDays: 7, HistoryMax: 50, Coalesce: coalesce, BootID: boot})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCrashStoreWritesAndRestarts(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	s := newStore(t, clock, dir, 10*time.Minute, "boot-a")
	if err := s.Arm(1); err != nil {
		t.Fatal(err)
	}
	// An hour of steady operation: no flash write, no state directory.
	for i := 0; i < 60; i++ {
		clock.Advance(time.Minute)
		s.Alive(clock.Now())
	}
	if n := s.FlashWrites(); n != 0 {
		t.Fatalf("%d flash writes in steady state", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Fatalf("state directory touched: %v", err)
	}
	s.Add(Record{Time: clock.Now(), Kind: KindWorkerPanic, Worker: "fetcher", Reason: "panic: x"})
	if n := s.FlashWrites(); n != 1 {
		t.Fatalf("%d flash writes for one event", n)
	}
	// A second like event within the window is merged in RAM, then
	// written once when the window has passed.
	clock.Advance(time.Minute)
	s.Add(Record{Time: clock.Now(), Kind: KindWorkerPanic, Worker: "fetcher", Reason: "panic: x"})
	if n := s.FlashWrites(); n != 1 {
		t.Fatalf("merged event written at once: %d", n)
	}
	clock.Advance(10 * time.Minute)
	s.Alive(clock.Now())
	sum := s.Summary(clock.Now())
	if s.FlashWrites() != 2 || len(sum.Records) != 2 || sum.Records[1].Count != 1 || sum.CrashCount24h != 2 {
		t.Errorf("after flush: writes %d, %+v", s.FlashWrites(), sum.Records)
	}
	s.Shutdown()

	// A clean restart in the same boot: restart_count 1, no record.
	s2 := newStore(t, clock, dir, 10*time.Minute, "boot-a")
	s2.Arm(2)
	if sum := s2.Summary(clock.Now()); sum.RestartCount != 1 || len(sum.Records) != 2 {
		t.Errorf("restart: %+v", sum)
	}
	// Killed (marker left): the next start records an unclean exit.
	s3 := newStore(t, clock, dir, 0, "boot-a")
	sum = s3.Summary(clock.Now())
	if sum.RestartCount != 2 || sum.LastCrash == nil || sum.LastCrash.Kind != KindUncleanExit {
		t.Errorf("after kill: %+v", sum.LastCrash)
	}
	// A new boot: the count starts again.
	s4 := newStore(t, clock, dir, 0, "boot-b")
	if sum := s4.Summary(clock.Now()); sum.RestartCount != 0 || sum.TotalRestarts != 2 {
		t.Errorf("new boot: restart_count %d total %d", sum.RestartCount, sum.TotalRestarts)
	}
}

func TestCrashOutputTurnedIntoRecord(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	os.MkdirAll(run, 0o755)
	os.WriteFile(filepath.Join(run, markerFile), []byte(`{"pid":1,"started":"2026-11-28T11:59:00Z","boot_id":"b","workers":{"fetcher":12}}`), 0o644)
	os.WriteFile(filepath.Join(run, crashOutFile), []byte("fatal error: concurrent map writes\n\ngoroutine 40 [running]:\nmain.x()\ncreated by health.(*Worker).Go in goroutine 12\n"), 0o644)
	s := newStore(t, clock, dir, time.Hour, "b")
	last := s.Summary(clock.Now()).LastCrash
	if last == nil || last.Kind != KindFatalError || last.Reason != "fatal error: concurrent map writes" || last.Worker != "fetcher" || last.Uptime == nil {
		t.Fatalf("record %+v", last)
	}
	if s.FlashWrites() != 1 {
		t.Errorf("flash writes %d", s.FlashWrites())
	}
}

func TestParseCrashOutput(t *testing.T) {
	cases := []struct{ text, kind, reason string }{
		{"panic: runtime error: invalid memory address or nil pointer dereference\n[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4]\n\ngoroutine 7 [running]:\n", KindSignal, "panic: runtime error: invalid memory address or nil pointer dereference"},
		{"panic: boom\n\ngoroutine 1 [running]:\n", KindPanic, "panic: boom"},
		{"SIGABRT: abort\nPC=0x0 m=0 sigcode=0\n", KindSignal, "SIGABRT: abort"},
		{"fatal error: out of memory\n", KindFatalError, "fatal error: out of memory"},
	}
	for _, c := range cases {
		k, r, _ := ParseCrashOutput(c.text, nil)
		if k != c.kind || r != c.reason {
			t.Errorf("%q: %s %q", c.text, k, r)
		}
	}
}

// TestStrayStderrIsNoCrash: text on descriptor 2 that is not the
// runtime's crash output (a library's log line) is not taken for a crash
// reason; the end is an unclean exit.
func TestStrayStderrIsNoCrash(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	os.MkdirAll(run, 0o755)
	os.WriteFile(filepath.Join(run, markerFile), []byte(`{"pid":1,"started":"2026-11-28T11:59:00Z","boot_id":"b"}`), 0o644)
	os.WriteFile(filepath.Join(run, crashOutFile), []byte("2026/11/28 some library said something\n"), 0o644)
	last := newStore(t, newFakeClock(), dir, 0, "b").Summary(time.Now()).LastCrash
	if last == nil || last.Kind != KindUncleanExit {
		t.Errorf("record %+v", last)
	}
}

func TestCorruptHistoryKeptAside(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "state"), 0o755)
	os.WriteFile(filepath.Join(dir, "state", historyFile), []byte(`{"version":1,"records":[{"ti`), 0o644)
	s := newStore(t, newFakeClock(), dir, 0, "b")
	sum := s.Summary(time.Now())
	if sum.CorruptHistory == "" || len(sum.Records) != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if _, err := os.Stat(sum.CorruptHistory); err != nil {
		t.Errorf("kept-aside file: %v", err)
	}
}

func testConfig() config.Health {
	c := config.Defaults().Health
	c.LeakWarmup, c.LeakWindow = 300, 1800
	return c
}

func newSystem(t *testing.T, clock Clock, cfg config.Health) *System {
	dir := t.TempDir()
	return NewSystem(Options{Clock: clock, Rates: NewRates(clock), StateDir: dir, RunDir: dir}, cfg)
}

func alert(s *Snapshot, prefix string) *Alert {
	for i := range s.Alerts {
		if strings.HasPrefix(s.Alerts[i].Code, prefix) {
			return &s.Alerts[i]
		}
	}
	return nil
}

func leakDetected(s *Snapshot) bool {
	mem, _ := ubus.Get(s.SoftwareHealth, "memory")
	v, _ := ubus.Get(mem.List, "leak_detected")
	return v.Int == 1
}

// TestHeapLeakDetectedSoakClean: a slow leak of live heap is detected
// within the configured window; a soak of the same length is not, and
// nothing fires during warm-up (the C daemon's start-up false alarm).
func TestHeapLeakDetectedSoakClean(t *testing.T) {
	for _, leak := range []bool{false, true} {
		clock := newFakeClock()
		h := newSystem(t, clock, testConfig())
		var hold [][]byte
		detectedAt := -1
		for i := 0; i <= 40; i++ {
			if leak {
				hold = append(hold, make([]byte, 256<<10))
			}
			runtime.GC()
			s := h.Sample()
			if i*60 < 300 && leakDetected(s) {
				t.Fatalf("leak reported during warm-up (minute %d)", i)
			}
			if leakDetected(s) && detectedAt < 0 {
				detectedAt = i
				if a := alert(s, "memory_leak_heap"); a == nil || !strings.Contains(a.Message, "grew from") {
					t.Errorf("no heap leak alert: %+v", s.Alerts)
				}
			}
			clock.Advance(time.Minute)
		}
		runtime.KeepAlive(hold)
		if leak && (detectedAt < 0 || detectedAt > 36) {
			t.Errorf("leak detected at minute %d, want by 36 (warm-up 5 + window 30 + 1)", detectedAt)
		}
		if !leak && detectedAt >= 0 {
			t.Errorf("soak without leak reported one at minute %d", detectedAt)
		}
		if leak {
			// The growth stops: the verdict clears within a window.
			for i := 0; i < 32; i++ {
				runtime.GC()
				h.Sample()
				clock.Advance(time.Minute)
			}
			if s := h.Sample(); leakDetected(s) {
				t.Error("leak still reported after growth stopped")
			}
			runtime.KeepAlive(hold)
		}
	}
}

func TestFDLeak(t *testing.T) {
	clock := newFakeClock()
	h := newSystem(t, clock, testConfig())
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var s *Snapshot
	for i := 0; i <= 40; i++ {
		if i >= 5 {
			f, err := os.Open(os.DevNull)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		s = h.Sample()
		clock.Advance(time.Minute)
	}
	fd, _ := ubus.Get(s.SoftwareHealth, "file_descriptors")
	leaked, _ := ubus.Get(fd.List, "leaked")
	if leaked.Int <= 0 || alert(s, "fd_leak") == nil {
		t.Fatalf("fd leak not reported: leaked=%d alerts=%+v", leaked.Int, s.Alerts)
	}
}

// TestScoreScenarios pins the formula of docs/HEALTH.md.
func TestScoreScenarios(t *testing.T) {
	w := func(code string, p int) Condition { return Condition{Code: code, Level: LevelWarning, Penalty: p} }
	c := func(code string, p int) Condition { return Condition{Code: code, Level: LevelCritical, Penalty: p} }
	cases := []struct {
		name   string
		conds  []Condition
		score  int
		status string
	}{
		{"nothing wrong", nil, 100, Healthy},
		{"one config error", []Condition{w("config:x", 5)}, 95, Degraded},
		{"memory leak", []Condition{w("memory_leak_heap", 20)}, 80, Degraded},
		{"leak and fd leak and crashes", []Condition{w("memory_leak_heap", 20), w("fd_leak", 15), w("recent_crashes", 20)}, 45, Critical},
		{"essential worker unresponsive", []Condition{c("worker_unresponsive:main", 25)}, 75, Critical},
		{"everything", []Condition{c("worker_failed:main", 40), w("a", 30), w("b", 30), w("c", 30)}, 0, Critical},
	}
	for _, tc := range cases {
		score, st := Score(tc.conds)
		if score != tc.score || st != tc.status {
			t.Errorf("%s: %d %s, want %d %s", tc.name, score, st, tc.score, tc.status)
		}
	}
}

func TestAlertsSinceAndClear(t *testing.T) {
	clock := newFakeClock()
	h := newSystem(t, clock, testConfig())
	t0 := clock.Now()
	h.SetCondition(Condition{Code: "jitter:node-k", Level: LevelWarning, Penalty: 5, Message: "High mesh jitter detected to node-k", Recommendation: "Check the link to node-k."})
	h.Sample()
	clock.Advance(time.Minute)
	if s := h.Sample(); alert(s, "jitter:node-k") != nil || s.Status != Healthy {
		t.Fatalf("a one-minute jitter blip is shown (visible after 2 min): %+v", s.Alerts)
	}
	clock.Advance(time.Minute)
	s := h.Sample()
	a := alert(s, "jitter:node-k")
	if a == nil || !a.Since.Equal(t0) || s.Status != Degraded || s.Score != 95 {
		t.Fatalf("alert %+v status %s score %d", a, s.Status, s.Score)
	}
	recs, _ := ubus.Get(s.Check, "recommendations")
	if len(recs.List) != 1 || recs.List[0].Str != "Check the link to node-k." {
		t.Errorf("recommendations %+v", recs.List)
	}
	h.ClearCondition("jitter:node-k")
	if s := h.Sample(); alert(s, "jitter") != nil || s.Status != Healthy {
		t.Errorf("not cleared: %+v", s.Alerts)
	}
}

func TestWorkerGoroutineWarning(t *testing.T) {
	clock := newFakeClock()
	sup := NewSupervisor(SupervisorOptions{Clock: clock, MaxRestarts: 1, Window: time.Hour})
	release := make(chan struct{})
	sup.Add(Spec{Name: "monitor", Period: time.Second, Run: func(ctx context.Context, w *Worker) error {
		for i := 0; i < 5; i++ {
			w.Go(func() { <-release })
		}
		return w.Wait(ctx, time.Hour)
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sup.Start(ctx)
	cfg := testConfig()
	cfg.WorkerGoroutineWarn = 6
	dir := t.TempDir()
	h := NewSystem(Options{Clock: clock, Rates: NewRates(clock), Supervisor: sup, StateDir: dir, RunDir: dir}, cfg)
	waitUntil(t, "goroutines started", func() bool { return status(sup, "monitor").Goroutines == 6 })
	if s := h.Sample(); alert(s, "worker_goroutines:monitor") == nil {
		t.Errorf("no warning at 6 goroutines: %+v", s.Alerts)
	}
	close(release)
	waitUntil(t, "goroutines ended", func() bool { return status(sup, "monitor").Goroutines == 1 })
	if s := h.Sample(); alert(s, "worker_goroutines:monitor") != nil {
		t.Error("warning not cleared")
	}
}

func TestDisabled(t *testing.T) {
	cfg := testConfig()
	cfg.Enabled = false
	s := newSystem(t, newFakeClock(), cfg).Sample()
	if s.Status != Disabled {
		t.Errorf("status %s", s.Status)
	}
	if _, ok := ubus.Get(s.SoftwareHealth, "memory"); ok {
		t.Error("memory sampled while disabled")
	}
}

func TestDocumentsHaveSpecFields(t *testing.T) {
	clock := newFakeClock()
	sup := NewSupervisor(SupervisorOptions{Clock: clock, MaxRestarts: 1, Window: time.Hour})
	sup.Add(Spec{Name: "main", Period: time.Second, Run: func(ctx context.Context, w *Worker) error { return w.Wait(ctx, time.Hour) }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sup.Start(ctx)
	dir := t.TempDir()
	cs := newStore(t, clock, dir, 0, "b")
	h := NewSystem(Options{Clock: clock, Rates: NewRates(clock), Supervisor: sup, Crashes: cs, StateDir: dir, RunDir: dir}, testConfig())
	s := h.Sample()
	sh := ubus.FormatJSON(s.SoftwareHealth, false, -1)
	for _, f := range []string{"uptime_seconds", "restart_count", "last_crash", "crash_count_24h", "threads", `"main":{"status":"healthy","cpu_pct"`, "last_heartbeat",
		"memory", "rss_mb", "heap_mb", "leak_detected", "file_descriptors", `"open"`, `"max"`, `"leaked"`,
		"error_rates", "sip_errors_per_hour", "probe_failures_per_hour", "fetch_failures_per_hour"} {
		if !strings.Contains(sh, f) {
			t.Errorf("software_health lacks %s: %s", f, sh)
		}
	}
	ck := ubus.FormatJSON(s.Check, false, -1)
	for _, f := range []string{`"status":"healthy"`, "timestamp", "uptime_seconds", "health_score", "threads_responsive", "memory_stable",
		"no_recent_crashes", "disk_space_ok", "network_reachable", "alerts", "recommendations"} {
		if !strings.Contains(ck, f) {
			t.Errorf("healthcheck lacks %s: %s", f, ck)
		}
	}
}

func BenchmarkSampleCycle(b *testing.B) {
	clock := newFakeClock()
	sup := NewSupervisor(SupervisorOptions{Clock: clock, MaxRestarts: 1, Window: time.Hour})
	for _, n := range []string{"main", "fetcher", "monitor", "safety"} {
		sup.Add(Spec{Name: n, Period: time.Second, Run: func(ctx context.Context, w *Worker) error { return w.Wait(ctx, time.Hour) }})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sup.Start(ctx)
	dir := b.TempDir()
	cs, _ := OpenCrashStore(CrashOptions{StateDir: dir, RunDir: dir, Clock: clock, HistoryDays: 7, HistoryMax: 50, BootID: "b"})
	h := NewSystem(Options{Clock: clock, Rates: NewRates(clock), Supervisor: sup, Crashes: cs, StateDir: dir, RunDir: dir}, testConfig())
	b.ReportAllocs()
	cpu0 := cpuTime()
	n := 0
	for b.Loop() {
		h.Sample()
		clock.Advance(time.Minute)
		n++
	}
	// The budget is CPU time (user+system of the whole process), not
	// wall time.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStatusRead: a status request takes the snapshot's encoding
// with its uptime computed now (one allocation: the document) and frames
// it as the reply, as ubus.Conn does (into the connection's reused write
// buffer).
func BenchmarkStatusRead(b *testing.B) {
	clock := newFakeClock()
	h := newSystemB(b, clock)
	h.Sample()
	var wbuf []byte
	b.ReportAllocs()
	for b.Loop() {
		body := h.StatusDoc(h.Snapshot(), clock.Now())
		m := &ubus.Message{Type: ubus.MsgData, Attrs: []ubus.Attr{ubus.U32Attr(ubus.AttrObjID, 1), ubus.NestedAttr(ubus.AttrData, body)}}
		wbuf = m.AppendTo(wbuf[:0])
	}
	b.ReportMetric(float64(len(h.Snapshot().StatusBody)), "doc-bytes")
}

func BenchmarkEncodeStatus(b *testing.B) {
	clock := newFakeClock()
	h := newSystemB(b, clock)
	s := h.Sample()
	b.ReportAllocs()
	for b.Loop() {
		ubus.AppendValues(nil, s.SoftwareHealth)
	}
}

func newSystemB(b *testing.B, clock Clock) *System {
	dir := b.TempDir()
	return NewSystem(Options{Clock: clock, Rates: NewRates(clock), StateDir: dir, RunDir: dir}, testConfig())
}

// TestTrendBounded: samples every 100 ms over a 30-minute window (an
// event storm) keep a bounded number of points, and the fitted slope is
// still that of the data.
func TestTrendBounded(t *testing.T) {
	tr := NewTrend(30 * time.Minute)
	t0 := time.Unix(0, 0)
	for i := 0; i < 50000; i++ {
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		tr.Add(at, float64(i)*0.1/3600*1000) // 1000 units per hour
	}
	if tr.Len() > TrendPoints+2 {
		t.Fatalf("%d points kept, bound %d", tr.Len(), TrendPoints+2)
	}
	if slope, fit := tr.Fit(); math.Abs(slope-1000) > 1 || fit < 0.99 {
		t.Errorf("slope %.2f fit %.3f, want 1000 per hour", slope, fit)
	}
}
