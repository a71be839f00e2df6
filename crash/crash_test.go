package crash

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aredn/phonebookd/internal/clock"
)

// newFakeClock is a clock that moves only when a test advances it.
func newFakeClock() *clock.Fake { return clock.NewFake(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)) }

func newStore(t *testing.T, clk clock.Clock, dir string, coalesce time.Duration, boot string) *Store {
	t.Helper()
	s, err := Open(Options{StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"),
		Clock: clk, HistoryDays: 7, HistoryMax: 50, Coalesce: coalesce, BootID: boot})
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
		k, r, _ := ParseOutput(c.text, nil)
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
