package runtimetune

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/internal/clock"
	"golang.org/x/sys/unix"
)

const meminfo64 = "MemTotal:          60224 kB\nMemFree:           21432 kB\nMemAvailable:      30120 kB\n"

func TestParseMemTotal(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{meminfo64, 60224 << 10, true},
		{"MemFree: 1 kB\nMemTotal: 131072 kB\n", 128 << 20, true},
		{"MemTotal: 131072 kB", 128 << 20, true}, // no final newline
		{"MemFree: 1 kB\n", 0, false},
		{"MemTotal: 131072 MB\n", 0, false},
		{"MemTotal: x kB\n", 0, false},
		{"MemTotal: 0 kB\n", 0, false},
		{"MemTotal:\n", 0, false},
		{"", 0, false},
	} {
		got, err := ParseMemTotal([]byte(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseMemTotal(%q) = %d, %v; want %d, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

func FuzzParseMemTotal(f *testing.F) {
	f.Add([]byte(meminfo64))
	f.Add([]byte("MemTotal: 18446744073709551615 kB\n"))
	f.Add([]byte("MemTotal:\t\t1 kB\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseMemTotal(b)
		if err == nil && (n == 0 || n%1024 != 0) {
			t.Fatalf("accepted %d bytes from %q", n, b)
		}
		if err != nil && n != 0 {
			t.Fatalf("a figure with an error: %d", n)
		}
	})
}

func TestDeriveLimit(t *testing.T) {
	def := boundsOf(config.Health{})
	for _, c := range []struct {
		ram  uint64
		b    LimitBounds
		want uint64
	}{
		{60224 << 10, def, MinLimit}, // a 64 MB router: MemTotal is below 64 MB
		{128 << 20, def, 16 << 20},
		{256 << 20, def, 32 << 20},
		{32 << 20, def, MinLimit},
		{4 << 30, def, MaxLimit},
		{128 << 20, LimitBounds{Share: 4, Min: 8 << 20, Max: 64 << 20}, 32 << 20},
		{128 << 20, LimitBounds{Share: 16, Min: 12 << 20, Max: 64 << 20}, 12 << 20},
		{4 << 30, LimitBounds{Share: 8, Min: 8 << 20, Max: 24 << 20}, 24 << 20},
	} {
		if got := DeriveLimit(c.ram, c.b); got != int64(c.want) {
			t.Errorf("DeriveLimit(%d MB, %+v) = %d MB, want %d MB", c.ram>>20, c.b, got>>20, c.want>>20)
		}
	}
}

func TestBoundsFromSettings(t *testing.T) {
	for _, c := range []struct {
		h    config.Health
		want LimitBounds
	}{
		{config.Health{}, LimitBounds{Share: 8, Min: 8 << 20, Max: 64 << 20}}, // built in code: the defaults
		{config.Defaults().Health, LimitBounds{Share: 8, Min: 8 << 20, Max: 64 << 20}},
		{config.Health{MemoryLimitShare: 4, MemoryLimitMinMB: 16, MemoryLimitMaxMB: 32}, LimitBounds{Share: 4, Min: 16 << 20, Max: 32 << 20}},
		// a ceiling below the floor is the floor
		{config.Health{MemoryLimitShare: 4, MemoryLimitMinMB: 16, MemoryLimitMaxMB: 12}, LimitBounds{Share: 4, Min: 16 << 20, Max: 16 << 20}},
	} {
		if got := boundsOf(c.h); got != c.want {
			t.Errorf("boundsOf(%+v) = %+v, want %+v", c.h, got, c.want)
		}
	}
}

// keepRuntime restores the process's memory limit and GOGC after a test.
func keepRuntime(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	oldGC := debug.SetGCPercent(100)
	debug.SetGCPercent(oldGC)
	t.Cleanup(func() { debug.SetMemoryLimit(old); debug.SetGCPercent(oldGC) })
}

func writeMeminfo(t *testing.T, text string) string {
	p := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) string { return "" }

func env(kv ...string) func(string) string {
	return func(k string) string {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == k {
				return kv[i+1]
			}
		}
		return ""
	}
}

func TestApplyFromMemInfo(t *testing.T) {
	keepRuntime(t)
	debug.SetMemoryLimit(math.MaxInt64)
	tu, err := Apply(config.Defaults().Health, noEnv, writeMeminfo(t, "MemTotal: 131072 kB\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tu.Source != FromRAM || tu.Limit != 16<<20 || tu.MemTotal != 128<<20 {
		t.Errorf("tuning %+v", tu)
	}
	if got := debug.SetMemoryLimit(-1); got != 16<<20 {
		t.Errorf("limit in force %d, want 16 MB", got)
	}
	if tu.GOMAXPROCS != runtime.GOMAXPROCS(0) {
		t.Errorf("GOMAXPROCS %d, runtime %d", tu.GOMAXPROCS, runtime.GOMAXPROCS(0))
	}
	in := ReadInForce(config.Defaults().Health, noEnv)
	if in.Limit != 16<<20 || in.Source != FromRAM || in.GCPercent != config.Defaults().Health.GCPercent {
		t.Errorf("in force %+v", in)
	}
}

// TestApplyReloadRederives: memory_limit_mb from a figure back to 0 on a
// reload derives the limit again. Before, the health system set "no
// limit" on that reload, wiping the derived limit.
func TestApplyReloadRederives(t *testing.T) {
	keepRuntime(t)
	mi := writeMeminfo(t, "MemTotal: 131072 kB\n")
	h := config.Defaults().Health
	h.MemoryLimitMB = 32
	if tu, err := Apply(h, noEnv, mi); err != nil || tu.Source != FromUCI || tu.Limit != 32<<20 {
		t.Fatalf("memory_limit_mb 32: %+v, %v", tu, err)
	}
	if in := ReadInForce(h, noEnv); in.Limit != 32<<20 || in.Source != FromUCI {
		t.Errorf("in force with memory_limit_mb 32: %+v", in)
	}
	h.MemoryLimitMB = 0
	if tu, err := Apply(h, noEnv, mi); err != nil || tu.Source != FromRAM || tu.Limit != 16<<20 {
		t.Fatalf("memory_limit_mb back to 0: %+v, %v", tu, err)
	}
	if got := debug.SetMemoryLimit(-1); got != 16<<20 {
		t.Errorf("limit in force %d after the reload to 0, want the derived 16 MB", got)
	}
	if in := ReadInForce(h, noEnv); in.Source != FromRAM {
		t.Errorf("in force after the reload to 0: %+v", in)
	}
	// the share and bounds apply on a reload too
	h.MemoryLimitShare, h.MemoryLimitMinMB, h.MemoryLimitMaxMB = 4, 8, 64
	if tu, _ := Apply(h, noEnv, mi); tu.Limit != 32<<20 {
		t.Errorf("memory_limit_share 4 on 128 MB: %d MB, want 32", tu.Limit>>20)
	}
}

func TestApplyKeepsEnvironment(t *testing.T) {
	keepRuntime(t)
	debug.SetMemoryLimit(24 << 20) // as the runtime does from GOMEMLIMIT=24MiB
	debug.SetGCPercent(75)         // and from GOGC=75
	e := env("GOMEMLIMIT", "24MiB", "GOGC", "75")
	h := config.Defaults().Health
	h.MemoryLimitMB, h.GCPercent = 32, 25 // UCI asks for others: the environment wins
	tu, err := Apply(h, e, writeMeminfo(t, "MemTotal: 131072 kB\n"))
	if err != nil || tu.Source != FromEnv || tu.Limit != 24<<20 || tu.GCPercent != 75 || !tu.GCFromEnv {
		t.Errorf("tuning %+v, %v", tu, err)
	}
	if got := debug.SetMemoryLimit(-1); got != 24<<20 {
		t.Errorf("limit in force %d, want the environment's 24 MB", got)
	}
	if in := ReadInForce(h, e); in.Source != FromEnv || in.Limit != 24<<20 || in.GCPercent != 75 {
		t.Errorf("in force %+v", in)
	}
}

func TestApplyGCPercent(t *testing.T) {
	keepRuntime(t)
	mi := writeMeminfo(t, "MemTotal: 131072 kB\n")
	for _, c := range []struct{ set, want int }{{25, 25}, {200, 200}, {0, DefaultGCPercent}} {
		h := config.Defaults().Health
		h.GCPercent = c.set
		tu, err := Apply(h, noEnv, mi)
		if err != nil || tu.GCPercent != c.want || tu.GCFromEnv {
			t.Errorf("gc_percent %d: %+v, %v", c.set, tu, err)
		}
		if in := ReadInForce(h, noEnv); in.GCPercent != c.want {
			t.Errorf("gc_percent %d: %d in force, want %d", c.set, in.GCPercent, c.want)
		}
	}
}

func TestApplyWithoutMemInfo(t *testing.T) {
	keepRuntime(t)
	for _, path := range []string{filepath.Join(t.TempDir(), "absent"), writeMeminfo(t, "MemFree: 1 kB\n")} {
		debug.SetMemoryLimit(20 << 20) // left from before: a reload that cannot derive clears it
		tu, err := Apply(config.Defaults().Health, noEnv, path)
		if err == nil || tu.Source != NoLimit || tu.Limit != math.MaxInt64 {
			t.Errorf("%s: tuning %+v, %v", path, tu, err)
		}
		if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
			t.Errorf("%s: a limit was left: %d", path, got)
		}
		if in := ReadInForce(config.Defaults().Health, noEnv); in.Source != NoLimit {
			t.Errorf("%s: in force %+v", path, in)
		}
	}
}

// script is a scavenger's heap as a test sets it: each read returns the
// current sample; a free collects the garbage and gives the free heap
// back.
type script struct {
	mu       sync.Mutex
	cur      Sample
	frees    int
	pageOuts int
	// kept is the free heap a collection leaves (64 KB when 0).
	kept uint64
	// freesAtPageOut is how many collections had run at each page-out.
	freesAtPageOut []int
}

func (s *script) pageOut() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageOuts++
	s.freesAtPageOut = append(s.freesAtPageOut, s.frees)
	return 4096, nil
}

func (s *script) pagedOut() int { s.mu.Lock(); defer s.mu.Unlock(); return s.pageOuts }

func (s *script) read() Sample { s.mu.Lock(); defer s.mu.Unlock(); return s.cur }

func (s *script) free() {
	s.mu.Lock()
	s.frees++
	s.cur.HeapFree = 64 << 10
	if s.kept != 0 {
		s.cur.HeapFree = s.kept
	}
	s.cur.HeapObjects = s.cur.HeapLive
	if s.cur.HeapInUse != 0 {
		// the spans of the garbage given back, those of live objects
		// and a span's worth of free slots kept
		s.cur.HeapInUse = s.cur.HeapLive + 64<<10
	}
	s.mu.Unlock()
}

func (s *script) set(x Sample) { s.mu.Lock(); s.cur = x; s.mu.Unlock() }

// allocate adds n bytes allocated (and not yet collected).
func (s *script) allocate(n uint64) {
	s.mu.Lock()
	s.cur.Allocs += n
	s.cur.HeapObjects += n
	s.mu.Unlock()
}

// grow takes n bytes of new spans, of which garbage bytes are counted
// as allocated (the rest is in spans cached per P, not yet counted).
func (s *script) grow(n, garbage uint64) {
	s.mu.Lock()
	s.cur.HeapInUse += n
	s.cur.Allocs += garbage
	s.cur.HeapObjects += garbage
	s.mu.Unlock()
}

// startUp ends the scripted scavenger's start-up (Started) once its
// period is armed, and waits for the start-up collections.
func startUp(t *testing.T, s *Scavenger, clk *clock.Fake, sc *script) {
	t.Helper()
	waitTimer(t, clk)
	s.Started()
	waitFor(t, func() bool { return sc.freed() == StartupCollections }, "the collections at start-up")
}

func (s *script) freed() int { s.mu.Lock(); defer s.mu.Unlock(); return s.frees }

// run starts a scavenger on the fake clock with the defaults and the
// script's heap; period lets one period pass after f changed the heap.
func runScavenger(t *testing.T, sc *script) (s *Scavenger, clk *clock.Fake, period func(f func()), stop func() int) {
	clk = clock.NewFake(time.Unix(0, 0))
	s = &Scavenger{Period: 10 * time.Second, MinFree: DefaultMinFree, QuietRate: DefaultQuietRate, IdleGarbage: DefaultIdleGarbage,
		IdleFree: DefaultIdleFree, IdleGrowth: DefaultIdleGrowth, PageOutEvery: DefaultPageOutEvery, Clock: clk, Read: sc.read, Free: sc.free, PageOut: sc.pageOut}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- s.Run(ctx) }()
	period = func(f func()) {
		t.Helper()
		waitTimer(t, clk)
		if f != nil {
			f()
		}
		clk.Advance(s.period())
		waitTimer(t, clk)
	}
	return s, clk, period, func() int { cancel(); return <-done }
}

// TestScavengerAfterLoadFalls: under a steady load with free heap the
// scavenger waits; when the allocation rate falls it frees once; with
// the free heap given back it does not free again.
func TestScavengerAfterLoadFalls(t *testing.T) {
	sc := &script{}
	_, _, period, stop := runScavenger(t, sc)
	// a steady load of 20 MB a period, with free heap resident
	period(func() { sc.set(Sample{HeapFree: 4 << 20, Allocs: 20 << 20, HeapLive: 8 << 20, HeapObjects: 9 << 20}) })
	period(func() { sc.set(Sample{HeapFree: 6 << 20, Allocs: 40 << 20, HeapLive: 8 << 20, HeapObjects: 12 << 20}) })
	period(func() { sc.set(Sample{HeapFree: 6 << 20, Allocs: 60 << 20, HeapLive: 8 << 20, HeapObjects: 10 << 20}) })
	if n := sc.freed(); n != 0 {
		t.Fatalf("freed %d times under a steady load", n)
	}
	// the load falls to 1 MB a period
	period(func() { sc.set(Sample{HeapFree: 6 << 20, Allocs: 61 << 20, HeapLive: 8 << 20, HeapObjects: 9 << 20}) })
	if n := sc.freed(); n != 1 {
		t.Fatalf("freed %d times after the load fell, want 1", n)
	}
	// quiet, nothing left to give back
	period(func() {
		sc.set(Sample{HeapFree: 96 << 10, Allocs: 61<<20 + 10<<10, HeapLive: 8 << 20, HeapObjects: 8<<20 + 10<<10})
	})
	period(func() {
		sc.set(Sample{HeapFree: 96 << 10, Allocs: 61<<20 + 20<<10, HeapLive: 8 << 20, HeapObjects: 8<<20 + 20<<10})
	})
	if n := stop(); n != 1 {
		t.Errorf("freed %d times in all, want 1", n)
	}
}

// TestScavengerCollectsIdleGarbage: the idle daemon allocates 1-5 KB/s
// and nothing else collects; the scavenger collects each time
// IdleGarbage has piled up since the last collection, so the heap stays
// within IdleGarbage plus a period's allocations of the live heap, where
// before it grew to the runtime's 4 MB minimum goal.
func TestScavengerCollectsIdleGarbage(t *testing.T) {
	for _, c := range []struct {
		perPeriod uint64
		want      int // collections in 30 periods
	}{
		{16 << 10, 15}, // 1.6 KB/s: every second period
		{32 << 10, 30}, // 3.2 KB/s: every period
		{48 << 10, 30}, // 4.8 KB/s: every period
	} {
		sc := &script{cur: Sample{HeapFree: 64 << 10, HeapLive: 400 << 10, HeapObjects: 400 << 10}}
		_, _, period, stop := runScavenger(t, sc)
		peak := uint64(0)
		for range 30 { // 5 minutes
			period(func() { sc.allocate(c.perPeriod) })
			sc.mu.Lock()
			peak = max(peak, sc.cur.HeapObjects+c.perPeriod) // the heap just before the next look
			sc.mu.Unlock()
		}
		n := stop()
		if n < c.want-1 || n > c.want {
			t.Errorf("%d KB a period: collected %d times in 30 idle periods, want %d", c.perPeriod>>10, n, c.want)
		}
		if peak > 400<<10+DefaultIdleGarbage+c.perPeriod {
			t.Errorf("%d KB a period: the idle heap reached %d KB", c.perPeriod>>10, peak>>10)
		}
	}
}

// TestScavengerGivesBackIdleCollection: the idle daemon as measured
// (1c85783, router build): about 1 KB/s allocated, of which the
// runtime's heap figure shows 50 KB in 2 minutes, then the runtime's own
// collection (forced every 2 minutes) frees 136-232 KB that it keeps
// resident. The scavenger gives those pages back within a period, and
// the idle heap allocated since the last collection stays under
// IdleGarbage plus a period's allocations. Before (IdleGarbage 128 KB,
// IdleFree 256 KB) it did neither: the heap arenas' resident pages grew
// by 230 KB over 4 idle minutes.
func TestScavengerGivesBackIdleCollection(t *testing.T) {
	sc := &script{cur: Sample{HeapFree: 64 << 10, HeapLive: 287 << 10, HeapObjects: 287 << 10}}
	_, _, period, stop := runScavenger(t, sc)
	const trickle = 4 << 10 // the heap figure's 50 KB in 2 minutes
	peak := uint64(0)
	for minute := range 6 {
		for range 12 {
			period(func() { sc.allocate(trickle) })
			sc.mu.Lock()
			peak = max(peak, sc.cur.Garbage())
			sc.mu.Unlock()
		}
		// the runtime's forced collection: garbage swept into free
		// pages it keeps
		before := sc.freed()
		period(func() {
			sc.mu.Lock()
			sc.cur.HeapFree += 136<<10 + sc.cur.Garbage()
			sc.cur.HeapObjects = sc.cur.HeapLive
			sc.mu.Unlock()
		})
		if sc.freed() == before {
			t.Errorf("2-minute cycle %d: the runtime's idle collection left %d KB free and resident", minute, sc.read().HeapFree>>10)
		}
	}
	stop()
	if peak > DefaultIdleGarbage+trickle {
		t.Errorf("idle garbage reached %d KB", peak>>10)
	}
}

// TestScavengerFreeHeapItCannotGiveBack: free heap that a collection
// does not give back (the runtime keeps it: pages cached per P, runtime
// pages sharing a larger physical page with live objects) is not a
// reason to collect again: the idle and burst rules count the free heap
// above what the last collection left, else a quiet daemon collects
// every period for ever.
func TestScavengerFreeHeapItCannotGiveBack(t *testing.T) {
	for _, kept := range []uint64{DefaultIdleFree + 44<<10, DefaultMinFree + 100<<10} {
		sc := &script{cur: Sample{HeapFree: kept, HeapLive: 4 << 20, HeapObjects: 4 << 20}, kept: kept}
		_, _, period, stop := runScavenger(t, sc)
		for range 30 { // 5 quiet minutes, 1 KB a period (under IdleGarbage in all)
			period(func() { sc.allocate(1 << 10) })
		}
		if n := sc.freed(); n != 1 {
			t.Errorf("%d KB kept: collected %d times in 30 quiet periods, want once (the first)", kept>>10, n)
		}
		// the runtime's own collection frees more: given back
		period(func() { sc.mu.Lock(); sc.cur.HeapFree += DefaultIdleFree; sc.mu.Unlock() })
		if n := stop(); n != 2 {
			t.Errorf("%d KB kept: collected %d times in all, want 2 (IdleFree more was freed)", kept>>10, n)
		}
	}
}

// TestScavengerLeavesSteadyLoad: a steady load above the quiet rate with
// garbage but no free heap: the runtime's own collector paces it, the
// scavenger does not collect.
func TestScavengerLeavesSteadyLoad(t *testing.T) {
	sc := &script{cur: Sample{HeapLive: 1 << 20, HeapObjects: 1 << 20}}
	_, _, period, stop := runScavenger(t, sc)
	for range 10 {
		period(func() { sc.allocate(5 << 20) }) // 512 KB/s
	}
	if n := stop(); n != 0 {
		t.Errorf("collected %d times under a steady load", n)
	}
}

func TestDecide(t *testing.T) {
	s := NewScavenger(nil)
	for _, c := range []struct {
		prevRate, rate uint64
		cur            Sample
		want           Rule
	}{
		{2 << 20, 2 << 20, Sample{HeapFree: 4 << 20}, Keep},   // steady load
		{2 << 20, 1 << 20, Sample{HeapFree: 4 << 20}, Burst},  // halved
		{2 << 20, 1 << 20, Sample{HeapFree: 512 << 10}, Keep}, // little free heap
		{0, 20 << 10, Sample{HeapFree: 2 << 20}, Burst},       // quiet with free heap
		{20 << 10, 20 << 10, Sample{HeapLive: 1 << 20, HeapObjects: 1<<20 + 300<<10}, Idle},
		{20 << 10, 20 << 10, Sample{HeapLive: 1 << 20, HeapObjects: 1<<20 + 16<<10}, Keep},
		{20 << 10, 20 << 10, Sample{HeapLive: 1 << 20, HeapObjects: 1<<20 + 32<<10}, Idle},
		{1 << 20, 1 << 20, Sample{HeapLive: 1 << 20, HeapObjects: 3 << 20}, Keep}, // busy: the runtime's own pacing
		{20 << 10, 20 << 10, Sample{HeapLive: 2 << 20, HeapObjects: 1 << 20}, Keep},
		// quiet, with the free pages of the runtime's own collection
		// (its forced one every 2 minutes) resident: given back
		{20 << 10, 20 << 10, Sample{HeapLive: 1 << 20, HeapObjects: 1 << 20, HeapFree: 300 << 10}, Idle},
		{20 << 10, 20 << 10, Sample{HeapLive: 1 << 20, HeapObjects: 1 << 20, HeapFree: 32 << 10}, Keep},
		// the idle daemon's own figures (1c85783): its runtime's forced
		// collection freed 136 to 232 KB, given back
		{1 << 10, 1 << 10, Sample{HeapLive: 287 << 10, HeapObjects: 287 << 10, HeapFree: 136 << 10}, Idle},
		{1 << 20, 1 << 20, Sample{HeapLive: 1 << 20, HeapObjects: 1 << 20, HeapFree: 900 << 10}, Keep}, // busy
		// the heap's spans in use grew since the last Free (before it,
		// counted from nothing here): the first idle minute as measured
		{1 << 10, 1 << 10, Sample{HeapLive: 260 << 10, HeapObjects: 278 << 10, HeapInUse: 80 << 10}, Idle},
		{1 << 10, 1 << 10, Sample{HeapLive: 260 << 10, HeapObjects: 278 << 10, HeapInUse: 32 << 10}, Keep},
		{1 << 20, 1 << 20, Sample{HeapLive: 260 << 10, HeapObjects: 278 << 10, HeapInUse: 4 << 20}, Keep}, // busy
	} {
		if got := s.Decide(c.prevRate, c.rate, c.cur, Sample{}); got != c.want {
			t.Errorf("Decide(%d, %d, %+v) = %v, want %v", c.prevRate, c.rate, c.cur, got, c.want)
		}
	}
	// the free heap the last collection left (kept) does not count
	for _, c := range []struct {
		prevRate, rate uint64
		cur            Sample
		kept           uint64
		want           Rule
	}{
		{20 << 10, 20 << 10, Sample{HeapLive: 1 << 20, HeapObjects: 1 << 20, HeapFree: 300 << 10}, 300 << 10, Keep},
		{20 << 10, 20 << 10, Sample{HeapLive: 1 << 20, HeapObjects: 1 << 20, HeapFree: 600 << 10}, 300 << 10, Idle},
		{0, 20 << 10, Sample{HeapFree: 2 << 20}, 2 << 20, Keep},
		{0, 20 << 10, Sample{HeapFree: 3 << 20}, 2 << 20, Burst},
		{20 << 10, 20 << 10, Sample{HeapLive: 1 << 20, HeapObjects: 1<<20 + 128<<10}, 1 << 20, Idle}, // garbage
	} {
		if got := s.Decide(c.prevRate, c.rate, c.cur, Sample{HeapFree: c.kept}); got != c.want {
			t.Errorf("Decide(%d, %d, %+v, kept %d) = %v, want %v", c.prevRate, c.rate, c.cur, c.kept, got, c.want)
		}
	}
}

// TestDecideSpansInUse: the idle rule counts the heap's spans in use
// from what the last Free left (live objects hold their spans).
func TestDecideSpansInUse(t *testing.T) {
	s := NewScavenger(nil)
	left := Sample{HeapInUse: 983 << 10}
	for _, c := range []struct {
		inUse uint64
		want  Rule
	}{
		{983 << 10, Keep},
		{1063 << 10, Idle}, // the first idle minute as measured: +80 KB
		{983<<10 + 63<<10, Keep},
		{983<<10 + 64<<10, Idle},
	} {
		cur := Sample{HeapLive: 255 << 10, HeapObjects: 273 << 10, HeapInUse: c.inUse}
		if got := s.Decide(1<<10, 1<<10, cur, left); got != c.want {
			t.Errorf("in use %d KB after %d KB: %v, want %v", c.inUse>>10, left.HeapInUse>>10, got, c.want)
		}
	}
	s.IdleGrowth = 0 // off
	if got := s.Decide(1<<10, 1<<10, Sample{HeapLive: 255 << 10, HeapObjects: 273 << 10, HeapInUse: 4 << 20}, left); got != Keep {
		t.Errorf("IdleGrowth 0: %v, want keep", got)
	}
}

// TestScavengerCollectsIdleSpanGrowth: the idle daemon as measured
// (1c85783): each minute the health evaluation takes 80 KB of new spans
// (their pages touched) while the heap objects figure rises by a few KB,
// under IdleGarbage. The scavenger collects within a period of each such
// step, so the spans in use stay within IdleGrowth and a period's step of
// what the last collection left; before, the step was given back only by
// the runtime's own collection, every 2 minutes, or not at all. Spans
// that live objects hold (a growing table) cost one collection, not one
// a period.
func TestScavengerCollectsIdleSpanGrowth(t *testing.T) {
	sc := &script{cur: Sample{HeapFree: 64 << 10, HeapLive: 255 << 10, HeapObjects: 255 << 10, HeapInUse: 983 << 10}}
	_, _, period, stop := runScavenger(t, sc)
	for minute := range 5 {
		before := sc.freed()
		period(func() { sc.grow(80<<10, 3<<10) }) // the evaluation
		for range 5 {
			period(func() { sc.grow(0, 1<<10) })
		}
		if sc.freed() == before {
			t.Errorf("minute %d: the evaluation's 80 KB of spans left in use, no collection", minute)
		}
		if got := sc.read().HeapInUse; got > 255<<10+64<<10+DefaultIdleGrowth {
			t.Errorf("minute %d: %d KB of spans in use", minute, got>>10)
		}
	}
	// live data grows by 100 KB (phones registering): one collection
	n := sc.freed()
	period(func() {
		sc.mu.Lock()
		sc.cur.HeapLive += 100 << 10
		sc.cur.HeapObjects += 100 << 10
		sc.cur.HeapInUse += 100 << 10
		sc.mu.Unlock()
	})
	for range 12 {
		period(nil)
	}
	if got := sc.freed() - n; got != 1 {
		t.Errorf("live growth of 100 KB: %d collections in 13 quiet periods, want 1", got)
	}
	stop()
}

// TestScavengerPagesOutCode: the code is paged out once start-up is done
// (not before, and not again at idle); again once quiet after a load, at
// most every PageOutEvery; never with code_pageout 0; at once when it is
// turned on again.
func TestScavengerPagesOutCode(t *testing.T) {
	sc := &script{cur: Sample{HeapLive: 400 << 10, HeapObjects: 400 << 10}}
	s, clk, period, stop := runScavenger(t, sc)
	period(nil)
	period(nil)
	if n := sc.pagedOut(); n != 0 {
		t.Fatalf("paged out %d times before start-up was done", n)
	}
	startUp(t, s, clk, sc)
	sc.mu.Lock()
	if sc.pageOuts != 1 || sc.freesAtPageOut[0] != 0 {
		// the collector's code is faulted back by the collections
		// after the page-out, not at the first idle collection
		t.Errorf("start-up: %d page-outs, after %v collections; want one, before the collections", sc.pageOuts, sc.freesAtPageOut)
	}
	sc.mu.Unlock()
	for range 12 { // two idle minutes
		period(func() { sc.allocate(100 << 10) })
	}
	if n := sc.pagedOut(); n != 1 {
		t.Fatalf("paged out %d times at idle, want once (start-up)", n)
	}
	// a load, then quiet: paged out again (the start-up page-out does
	// not count towards the spacing)
	period(func() { sc.allocate(50 << 20) })
	period(func() { sc.allocate(50 << 20) })
	period(func() { sc.allocate(10 << 10) })
	if n := sc.pagedOut(); n != 2 {
		t.Fatalf("paged out %d times after the load fell, want 2", n)
	}
	// another load at once: owed, paged out when quiet 10 minutes after
	// the last one
	period(func() { sc.allocate(50 << 20) })
	period(func() { sc.allocate(10 << 10) })
	if n := sc.pagedOut(); n != 2 {
		t.Fatalf("paged out %d times, want 2: the last one was 20 s ago", n)
	}
	for range 58 {
		period(func() { sc.allocate(10 << 10) })
	}
	if n := sc.pagedOut(); n != 3 {
		t.Fatalf("paged out %d times 10 minutes after, want 3", n)
	}
	// code_pageout 0: never, even after a load
	s.Set(10*time.Second, false)
	for range 70 {
		period(func() { sc.allocate(50 << 20) })
		period(func() { sc.allocate(10 << 10) })
	}
	if n := sc.pagedOut(); n != 3 {
		t.Fatalf("paged out %d times with code_pageout 0", n)
	}
	// turned on again: at once
	waitTimer(t, clk)
	s.Set(10*time.Second, true)
	waitFor(t, func() bool { return sc.pagedOut() == 4 }, "the page-out when code_pageout is turned on")
	stop()
}

// TestStartupCollectionsWithoutPageOut: with code_pageout 0 the code
// stays, but start-up still ends with its collections (before, they
// came only with the start-up page-out, so they never ran).
func TestStartupCollectionsWithoutPageOut(t *testing.T) {
	sc := &script{cur: Sample{HeapLive: 400 << 10, HeapObjects: 400 << 10}}
	s, clk, period, stop := runScavenger(t, sc)
	waitTimer(t, clk)
	s.Set(10*time.Second, false)
	startUp(t, s, clk, sc)
	for range 6 {
		period(nil)
	}
	if n := sc.pagedOut(); n != 0 {
		t.Errorf("paged out %d times with code_pageout 0", n)
	}
	// code_pageout turned on by a reload: paged out once, at once, and
	// the start-up collections are not run again
	waitTimer(t, clk)
	s.Set(10*time.Second, true)
	waitFor(t, func() bool { return sc.pagedOut() == 1 }, "the page-out when code_pageout is turned on")
	for range 3 {
		period(nil)
	}
	if n, f := sc.pagedOut(), sc.freed(); n != 1 || f != StartupCollections {
		t.Errorf("code_pageout turned on: %d page-outs, %d collections; want 1, %d", n, f, StartupCollections)
	}
	if n := stop(); n != 1 {
		t.Errorf("start-up counted %d times as freed, want once", n)
	}
}

// TestScavengerStartedTwice: start-up is done once; a second Started
// neither pages the code out again nor collects again.
func TestScavengerStartedTwice(t *testing.T) {
	sc := &script{cur: Sample{HeapLive: 400 << 10, HeapObjects: 400 << 10}}
	s, clk, period, stop := runScavenger(t, sc)
	startUp(t, s, clk, sc)
	waitTimer(t, clk)
	s.Started()
	for range 3 {
		period(nil)
	}
	if n, f := sc.pagedOut(), sc.freed(); n != 1 || f != StartupCollections {
		t.Errorf("after Started twice: %d page-outs, %d collections; want 1, %d", n, f, StartupCollections)
	}
	stop()
}

// TestScavengerReloadBeforeStarted: reloads during start-up (a new
// period, code_pageout off and on again) neither page out nor collect
// before Started; Started then pages out once and collects.
func TestScavengerReloadBeforeStarted(t *testing.T) {
	sc := &script{cur: Sample{HeapLive: 400 << 10, HeapObjects: 400 << 10}}
	s, clk, period, stop := runScavenger(t, sc)
	for _, c := range []struct {
		period time.Duration
		on     bool
	}{{20 * time.Second, true}, {20 * time.Second, false}, {10 * time.Second, true}} {
		waitTimer(t, clk)
		s.Set(c.period, c.on)
		waitFor(t, func() bool { return s.period() == c.period }, "the new period")
		period(nil)
	}
	if n, f := sc.pagedOut(), sc.freed(); n != 0 || f != 0 {
		t.Fatalf("before start-up was done: %d page-outs, %d collections", n, f)
	}
	startUp(t, s, clk, sc)
	for range 3 {
		period(nil)
	}
	if n := sc.pagedOut(); n != 1 {
		t.Errorf("%d page-outs after start-up, want 1", n)
	}
	stop()
}

// TestScavengerSetPeriod: a new scavenge_interval takes effect at once,
// not after the old (long) period.
func TestScavengerSetPeriod(t *testing.T) {
	sc := &script{cur: Sample{HeapLive: 400 << 10, HeapObjects: 400 << 10}}
	s, clk, _, stop := runScavenger(t, sc)
	waitTimer(t, clk)
	s.Set(time.Hour, true)
	waitFor(t, func() bool { return s.period() == time.Hour }, "the new period")
	waitTimer(t, clk)
	sc.allocate(300 << 10)
	clk.Advance(10 * time.Second) // the old period: nothing
	waitTimer(t, clk)
	if n := sc.freed(); n != 0 {
		t.Fatalf("collected after 10 s with a one-hour period")
	}
	s.Set(5*time.Second, true)
	waitFor(t, func() bool { return s.period() == 5*time.Second }, "the new period")
	// Run re-arms on the new period: the one-hour timer goes, a 5 s one
	// comes.
	waitFor(t, func() bool {
		at, ok := clk.Earliest()
		return ok && at.Equal(clk.Now().Add(5*time.Second))
	}, "a timer on the new period")
	clk.Advance(5 * time.Second)
	waitFor(t, func() bool { return sc.freed() == 1 }, "a collection after 5 s")
	stop()
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitTimer waits until the scavenger has handled the last period and
// armed its next timer.
func waitTimer(t *testing.T, clk *clock.Fake) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for clk.Timers() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the scavenger never armed its timer")
		}
		time.Sleep(time.Millisecond)
	}
}

var sink [][]byte

// TestScavengerReturnsRuntimeMemory: on the real runtime, after 32 MB of
// small objects are dropped and collected, one period with a fallen
// allocation rate gives (nearly all) the free heap back.
func TestScavengerReturnsRuntimeMemory(t *testing.T) {
	for range 32 << 10 {
		sink = append(sink, make([]byte, 1024))
	}
	sink = nil
	runtime.GC()
	before := ReadRuntime()
	if before.HeapFree < 1<<20 {
		t.Skipf("the runtime already returned the heap (%d KB free): nothing to measure", before.HeapFree>>10)
	}
	if n := realPeriod(t); n != 1 {
		t.Fatalf("freed %d times, want 1 (free heap before %d KB)", n, before.HeapFree>>10)
	}
	after := ReadRuntime()
	t.Logf("free heap resident: %d KB before, %d KB after", before.HeapFree>>10, after.HeapFree>>10)
	// Other goroutines may free a little meanwhile; the 32 MB must be gone.
	if after.HeapFree > before.HeapFree/4 {
		t.Errorf("free heap still resident: %d KB of %d KB", after.HeapFree>>10, before.HeapFree>>10)
	}
}

// TestScavengerCollectsRuntimeGarbage: on the real runtime, with GOGC
// high enough that the runtime would not collect, 1 MB of garbage left
// by a quiet process is collected by the scavenger's idle rule.
func TestScavengerCollectsRuntimeGarbage(t *testing.T) {
	keepRuntime(t)
	runtime.GC()
	debug.SetGCPercent(1000) // the runtime's own goal: 40 MB
	for range 1 << 10 {
		sink = append(sink, make([]byte, 1024))
	}
	sink = nil
	before := ReadRuntime()
	if before.Garbage() < DefaultIdleGarbage {
		t.Skipf("only %d KB since the last collection: one ran meanwhile", before.Garbage()>>10)
	}
	cycles := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	c0 := cycles()
	if n := realPeriod(t); n != 1 {
		t.Fatalf("collected %d times, want 1 (%d KB of garbage)", n, before.Garbage()>>10)
	}
	after := ReadRuntime()
	t.Logf("since the last collection: %d KB before, %d KB after; %d collections", before.Garbage()>>10, after.Garbage()>>10, cycles()-c0)
	if cycles() == c0 || after.Garbage() >= before.Garbage()/2 {
		t.Errorf("garbage left: %d KB of %d KB", after.Garbage()>>10, before.Garbage()>>10)
	}
}

// TestPageOutCodeDropsResidentPages: the test binary's own file pages,
// resident after start-up, are reclaimed: RssFile falls (MADV_PAGEOUT,
// Linux 5.4 and later, as OpenWrt 23.05 and 24.10 run).
func TestPageOutCodeDropsResidentPages(t *testing.T) {
	rssFile := func() int {
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
				return n
			}
		}
		t.Fatal("no RssFile in /proc/self/status")
		return 0
	}
	before := rssFile()
	if before < 1024 {
		// The test binary is on tmpfs (GOTMPDIR): its pages are the
		// file's only copy and cannot be reclaimed.
		t.Skipf("the test binary's file pages are %d KB resident: on tmpfs", before)
	}
	n, err := NewCodePager().PageOut()
	if errors.Is(err, unix.EINVAL) {
		t.Skip("the kernel has no MADV_PAGEOUT (before Linux 5.4)")
	}
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile()
	t.Logf("advised %d KB of the executable's mappings; RssFile %d KB before, %d KB after", n>>10, before, after)
	if n == 0 || after >= before-256 {
		t.Errorf("RssFile %d KB before, %d KB after: the code pages were not reclaimed", before, after)
	}
}

// TestTunerConfigure: the tuner applies each reload's settings: the
// limit (re-derived when memory_limit_mb goes back to 0), GOGC, the
// scavenger's period and code page-out.
func TestTunerConfigure(t *testing.T) {
	keepRuntime(t)
	tu := &Tuner{getenv: noEnv, meminfo: writeMeminfo(t, "MemTotal: 131072 kB\n"), log: slog.New(slog.DiscardHandler), scav: NewScavenger(nil)}
	h := config.Defaults().Health
	h.MemoryLimitMB, h.GCPercent, h.ScavengeInterval = 24, 30, 5
	tu.Configure(h)
	if in := ReadInForce(h, noEnv); in.Limit != 24<<20 || in.Source != FromUCI || in.GCPercent != 30 {
		t.Errorf("after memory_limit_mb 24, gc_percent 30: %+v", in)
	}
	if p := tu.Scavenger().period(); p != 5*time.Second {
		t.Errorf("scavenge_interval 5: period %v", p)
	}
	h.MemoryLimitMB, h.CodePageOut = 0, false
	tu.Configure(h)
	if in := ReadInForce(h, noEnv); in.Limit != 16<<20 || in.Source != FromRAM {
		t.Errorf("after memory_limit_mb back to 0: %+v, want the derived 16 MB", in)
	}
	tu.scav.mu.Lock()
	off := tu.scav.pageOutOff
	tu.scav.mu.Unlock()
	if !off {
		t.Error("code_pageout 0 left the page-out on")
	}
}

// realScavenger runs a scavenger on the real runtime (its code left in
// place) on a fake clock, its first period armed; stop ends it and
// returns how often it freed memory.
func realScavenger(t *testing.T) (s *Scavenger, clk *clock.Fake, stop func() int) {
	t.Helper()
	clk = clock.NewFake(time.Unix(0, 0))
	s = NewScavenger(nil)
	s.Clock, s.PageOut = clk, nil
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- s.Run(ctx) }()
	waitTimer(t, clk)
	return s, clk, func() int { cancel(); return <-done }
}

// realPeriod runs a scavenger on the real runtime for one 10 s period of
// a fake clock and returns how often it freed memory.
func realPeriod(t *testing.T) int {
	t.Helper()
	_, clk, stop := realScavenger(t)
	clk.Advance(10 * time.Second)
	waitTimer(t, clk)
	return stop()
}
