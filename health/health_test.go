package health

import (
	"context"
	"fmt"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/internal/poll"
	"github.com/aredn/phonebookd/supervisor"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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
	return s.Health.Memory != nil && s.Health.Memory.LeakDetected
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
			// The heap is what this test controls; the process's RSS
			// (the other detector) moves with the test binary and the
			// race detector, a fake minute being a real millisecond.
			if alert(s, "memory_leak_heap") != nil && detectedAt < 0 {
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
			if s := h.Sample(); alert(s, "memory_leak_heap") != nil {
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
	if leaked := s.Health.FileDescriptors.Leaked; leaked <= 0 || alert(s, "fd_leak") == nil {
		t.Fatalf("fd leak not reported: leaked=%d alerts=%+v", leaked, s.Alerts)
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
	args := Args{ArgCount: "80", ArgLimit: "50"}
	h.SetUnhealthy(Jitter, "node-k", args)
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
	if recs := s.Check.Recommendations; len(recs) != 1 || recs[0] != ConditionOf(Jitter, "node-k", args).Recommendation {
		t.Errorf("recommendations %+v", recs)
	}
	h.SetHealthy(Jitter, "node-k")
	if s := h.Sample(); alert(s, "jitter") != nil || s.Status != Healthy {
		t.Errorf("not cleared: %+v", s.Alerts)
	}
}

// status is one worker's entry in the supervisor's snapshot.
func status(s *supervisor.Supervisor, name string) supervisor.WorkerStatus {
	for _, w := range s.Snapshot() {
		if w.Name == name {
			return w
		}
	}
	return supervisor.WorkerStatus{}
}

func TestWorkerGoroutineWarning(t *testing.T) {
	clock := newFakeClock()
	sup := supervisor.New(supervisor.Options{Clock: clock, MaxRestarts: 1, Window: time.Hour})
	release := make(chan struct{})
	sup.Add(supervisor.Spec{Name: "monitor", Period: time.Second, Run: func(ctx context.Context, w *supervisor.Worker) error {
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
	poll.Until(t, "goroutines started", func() bool { return status(sup, "monitor").Goroutines == 6 })
	if s := h.Sample(); alert(s, "worker_goroutines:monitor") == nil {
		t.Errorf("no warning at 6 goroutines: %+v", s.Alerts)
	}
	close(release)
	poll.Until(t, "goroutines ended", func() bool { return status(sup, "monitor").Goroutines == 1 })
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
	if s.Health.Memory != nil || s.Health.Threads != nil {
		t.Error("memory sampled while disabled")
	}
}

func TestDocumentsHaveSpecFields(t *testing.T) {
	clock := newFakeClock()
	sup := supervisor.New(supervisor.Options{Clock: clock, MaxRestarts: 1, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "main", Period: time.Second, Run: func(ctx context.Context, w *supervisor.Worker) error { return w.Wait(ctx, time.Hour) }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sup.Start(ctx)
	dir := t.TempDir()
	cs, err := crash.Open(crash.Options{StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"), Clock: clock, HistoryDays: 7, HistoryMax: 50, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	h := NewSystem(Options{Clock: clock, Rates: NewRates(clock), Supervisor: sup, Crashes: cs, StateDir: dir, RunDir: dir}, testConfig())
	s := h.Sample()
	sh := ubus.FormatJSON(ubus.ValuesOf(&s.Health), false, -1)
	for _, f := range []string{"uptime_seconds", "restart_count", "last_crash", "crash_count_24h", "threads", `"main":{"status":"healthy","cpu_pct"`, "last_heartbeat",
		"memory", "rss_mb", "heap_mb", "leak_detected", "file_descriptors", `"open"`, `"max"`, `"leaked"`,
		"error_rates", "sip_errors_per_hour", "probe_failures_per_hour", "fetch_failures_per_hour"} {
		if !strings.Contains(sh, f) {
			t.Errorf("software_health lacks %s: %s", f, sh)
		}
	}
	ck := ubus.FormatJSON(ubus.ValuesOf(&s.Check), false, -1)
	for _, f := range []string{`"status":"healthy"`, "timestamp", "uptime_seconds", "health_score", "threads_responsive", "memory_stable",
		"no_recent_crashes", "disk_space_ok", "network_reachable", "alerts", "recommendations"} {
		if !strings.Contains(ck, f) {
			t.Errorf("healthcheck lacks %s: %s", f, ck)
		}
	}
}

func BenchmarkSampleCycle(b *testing.B) {
	clock := newFakeClock()
	sup := supervisor.New(supervisor.Options{Clock: clock, MaxRestarts: 1, Window: time.Hour})
	for _, n := range []string{"main", "fetcher", "monitor", "safety"} {
		sup.Add(supervisor.Spec{Name: n, Period: time.Second, Run: func(ctx context.Context, w *supervisor.Worker) error { return w.Wait(ctx, time.Hour) }})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sup.Start(ctx)
	dir := b.TempDir()
	cs, _ := crash.Open(crash.Options{StateDir: dir, RunDir: dir, Clock: clock, HistoryDays: 7, HistoryMax: 50, BootID: "b"})
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

// BenchmarkStatusRead: a status request takes the snapshot's document
// with its uptime computed now, encodes it as the ubus front does and
// frames it as the reply, as ubus.Conn does (into the connection's reused
// write buffer).
func BenchmarkStatusRead(b *testing.B) {
	clock := newFakeClock()
	h := newSystemB(b, clock)
	h.Sample()
	var wbuf []byte
	b.ReportAllocs()
	for b.Loop() {
		doc := h.StatusDoc(h.Snapshot(), clock.Now())
		body := ubus.AppendStruct(nil, &doc)
		m := &ubus.Message{Type: ubus.MsgData, Attrs: []ubus.Attr{ubus.U32Attr(ubus.AttrObjID, 1), ubus.NestedAttr(ubus.AttrData, body)}}
		wbuf = m.AppendTo(wbuf[:0])
	}
	b.ReportMetric(float64(len(ubus.AppendStruct(nil, &h.Snapshot().Health))), "doc-bytes")
}

func BenchmarkEncodeStatus(b *testing.B) {
	clock := newFakeClock()
	h := newSystemB(b, clock)
	s := h.Sample()
	b.ReportAllocs()
	for b.Loop() {
		ubus.AppendStruct(nil, &s.Health)
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

// TestSampleCPUAllocatesNothing: the daemon samples the process's CPU
// every second; reading /proc/self/stat used to allocate about 1.5 KB/s
// of the idle daemon's heap growth (a new path, file, buffer and field
// slice per read).
func TestSampleCPUAllocatesNothing(t *testing.T) {
	h := newSystem(t, newFakeClock(), testConfig())
	h.SampleCPU()
	if n := testing.AllocsPerRun(50, h.SampleCPU); n != 0 {
		t.Errorf("SampleCPU allocates %.1f times per call, want 0", n)
	}
}

// TestOSThreadsCountedAndBounded: the status document's process section
// counts the OS threads (the kernel's count), and os_thread_warn raises
// os_threads_high with the count; under the bound nothing is raised.
func TestOSThreadsCountedAndBounded(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc/self/status here")
	}
	cfg := testConfig()
	cfg.OSThreadWarn = 1 << 14
	h := newSystem(t, newFakeClock(), cfg)
	snap := h.Sample()
	p := snap.Health.Process
	if p == nil || p.OSThreads == nil || *p.OSThreads < 1 {
		t.Fatalf("process section %+v: os_threads not counted", p)
	}
	if a := alert(snap, "os_threads_high"); a != nil {
		t.Errorf("raised under the bound: %+v", a)
	}
	cfg.OSThreadWarn = 1 // every process has one thread
	h.Configure(cfg)
	snap = h.Sample()
	a := alert(snap, "os_threads_high")
	if a == nil {
		t.Fatalf("os_thread_warn 1 with %d threads: not raised; alerts %+v", *snap.Health.Process.OSThreads, snap.Alerts)
	}
	if want := fmt.Sprintf("%d OS threads (warning at 1)", *snap.Health.Process.OSThreads); !strings.HasPrefix(a.Message, want) {
		t.Errorf("message %q, want it to start %q", a.Message, want)
	}
}
