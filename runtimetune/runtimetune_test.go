package runtimetune

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
	for _, c := range []struct{ ram, want uint64 }{
		{60224 << 10, MinLimit}, // a 64 MB router: MemTotal is below 64 MB
		{128 << 20, 16 << 20},
		{256 << 20, 32 << 20},
		{32 << 20, MinLimit},
		{4 << 30, MaxLimit},
	} {
		if got := DeriveLimit(c.ram); got != int64(c.want) {
			t.Errorf("DeriveLimit(%d MB) = %d MB, want %d MB", c.ram>>20, got>>20, c.want>>20)
		}
	}
}

// keepLimit restores the process's memory limit after a test.
func keepLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
}

func writeMeminfo(t *testing.T, text string) string {
	p := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApplyFromMemInfo(t *testing.T) {
	keepLimit(t)
	debug.SetMemoryLimit(math.MaxInt64)
	tu, err := Apply(func(string) string { return "" }, writeMeminfo(t, "MemTotal: 131072 kB\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tu.Source != FromMemInfo || tu.Limit != 16<<20 || tu.MemTotal != 128<<20 {
		t.Errorf("tuning %+v", tu)
	}
	if got := debug.SetMemoryLimit(-1); got != 16<<20 {
		t.Errorf("limit in force %d, want 16 MB", got)
	}
	if tu.GOMAXPROCS != runtime.GOMAXPROCS(0) {
		t.Errorf("GOMAXPROCS %d, runtime %d", tu.GOMAXPROCS, runtime.GOMAXPROCS(0))
	}
}

func TestApplyKeepsEnvironment(t *testing.T) {
	keepLimit(t)
	debug.SetMemoryLimit(24 << 20) // as the runtime does from GOMEMLIMIT=24MiB
	env := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "24MiB"
		}
		return ""
	}
	tu, err := Apply(env, writeMeminfo(t, "MemTotal: 131072 kB\n"))
	if err != nil || tu.Source != FromEnv || tu.Limit != 24<<20 {
		t.Errorf("tuning %+v, %v", tu, err)
	}
	if got := debug.SetMemoryLimit(-1); got != 24<<20 {
		t.Errorf("limit in force %d, want the environment's 24 MB", got)
	}
}

func TestApplyWithoutMemInfo(t *testing.T) {
	keepLimit(t)
	debug.SetMemoryLimit(math.MaxInt64)
	for _, path := range []string{filepath.Join(t.TempDir(), "absent"), writeMeminfo(t, "MemFree: 1 kB\n")} {
		tu, err := Apply(func(string) string { return "" }, path)
		if err == nil || tu.Source != NoLimit || tu.Limit != math.MaxInt64 {
			t.Errorf("%s: tuning %+v, %v", path, tu, err)
		}
		if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
			t.Errorf("%s: a limit was set: %d", path, got)
		}
	}
}

// script is a scavenger's heap as a test sets it: each read returns the
// current sample; a free gives the free heap back.
type script struct {
	mu       sync.Mutex
	cur      Sample
	frees    int
	pageOuts int
}

func (s *script) pageOut() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageOuts++
	return 4096, nil
}

func (s *script) pagedOut() int { s.mu.Lock(); defer s.mu.Unlock(); return s.pageOuts }

func (s *script) read() Sample { s.mu.Lock(); defer s.mu.Unlock(); return s.cur }

func (s *script) free() { s.mu.Lock(); s.frees++; s.cur.HeapFree = 64 << 10; s.mu.Unlock() }

func (s *script) set(x Sample) { s.mu.Lock(); s.cur = x; s.mu.Unlock() }

func (s *script) freed() int { s.mu.Lock(); defer s.mu.Unlock(); return s.frees }

// TestScavengerAfterLoadFalls: under a steady load with free heap the
// scavenger waits; when the allocation rate falls it frees once; with
// the free heap given back it does not free again.
func TestScavengerAfterLoadFalls(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	sc := &script{}
	s := &Scavenger{Period: 10 * time.Second, MinFree: 1 << 20, Clock: clk, Read: sc.read, Free: sc.free, PageOut: sc.pageOut}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- s.Run(ctx) }()
	// period sets the heap the next read sees and lets a period pass.
	period := func(x Sample) {
		t.Helper()
		waitTimer(t, clk)
		sc.set(x)
		clk.Advance(10 * time.Second)
	}
	// a steady load of 20 MB a period, with free heap resident
	period(Sample{HeapFree: 4 << 20, Allocs: 20 << 20})
	period(Sample{HeapFree: 6 << 20, Allocs: 40 << 20})
	period(Sample{HeapFree: 6 << 20, Allocs: 60 << 20})
	waitTimer(t, clk)
	if n := sc.freed(); n != 0 {
		t.Fatalf("freed %d times under a steady load", n)
	}
	if n := sc.pagedOut(); n != 1 {
		t.Fatalf("code paged out %d times by the first periods, want once (after start-up)", n)
	}
	// the load falls to 1 MB a period
	period(Sample{HeapFree: 6 << 20, Allocs: 61 << 20})
	waitTimer(t, clk)
	if n := sc.freed(); n != 1 {
		t.Fatalf("freed %d times after the load fell, want 1", n)
	}
	if n := sc.pagedOut(); n != 1 {
		t.Fatalf("code paged out %d times, want once, after start-up only", n)
	}
	// quiet, nothing left to give back
	period(Sample{HeapFree: 128 << 10, Allocs: 61<<20 + 100<<10})
	period(Sample{HeapFree: 128 << 10, Allocs: 61<<20 + 200<<10})
	waitTimer(t, clk)
	cancel()
	if n := <-done; n != 1 {
		t.Errorf("freed %d times in all, want 1", n)
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
	clk := clock.NewFake(time.Unix(0, 0))
	s := &Scavenger{Period: 10 * time.Second, MinFree: 1 << 20, Clock: clk, Read: ReadRuntime, Free: debug.FreeOSMemory}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- s.Run(ctx) }()
	waitTimer(t, clk)
	clk.Advance(10 * time.Second)
	waitTimer(t, clk)
	cancel()
	if n := <-done; n != 1 {
		t.Fatalf("freed %d times, want 1 (free heap before %d KB)", n, before.HeapFree>>10)
	}
	after := ReadRuntime()
	t.Logf("free heap resident: %d KB before, %d KB after", before.HeapFree>>10, after.HeapFree>>10)
	// Other goroutines may free a little meanwhile; the 32 MB must be gone.
	if after.HeapFree > before.HeapFree/4 {
		t.Errorf("free heap still resident: %d KB of %d KB", after.HeapFree>>10, before.HeapFree>>10)
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
	n, err := PageOutCode()
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

// TestParseMapsLine reads /proc/self/maps lines as the kernel writes them.
func TestParseMapsLine(t *testing.T) {
	for _, c := range []struct {
		line        string
		start, end  uintptr
		perms, path string
		ok          bool
	}{
		{"00400000-00a5b000 r-xp 00000000 08:01 1234 /usr/sbin/phonebookd", 0x400000, 0xa5b000, "r-xp", "/usr/sbin/phonebookd", true},
		{"7f00-8f00 r--p 00000000 08:01 99 /tmp/a dir/phone book", 0x7f00, 0x8f00, "r--p", "/tmp/a dir/phone book", true},
		{"7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ", 0, 0, "", "", false},
		{"zz-10 r-xp 0 0 0 /x", 0, 0, "", "", false},
		{"20-10 r-xp 0 0 0 /x", 0, 0, "", "", false},
		{"", 0, 0, "", "", false},
	} {
		s, e, perms, path, ok := parseMapsLine(c.line)
		if ok != c.ok || ok && (s != c.start || e != c.end || perms != c.perms || path != c.path) {
			t.Errorf("%q: %x %x %q %q %v", c.line, s, e, perms, path, ok)
		}
	}
}
