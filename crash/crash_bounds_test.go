package crash

import (
	"encoding/json"
	"github.com/aredn/phonebookd/procfs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestHugeCrashOutputBounded: a 40 MB crash output (a SIGQUIT dump of
// every goroutine) is read from its head only, renamed before it is read,
// and its record does not keep it on the heap (before: read whole,
// converted twice, the reason and stack substrings kept 40 MB alive, and
// an out-of-memory while parsing repeated at every respawn).
func TestHugeCrashOutputBounded(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	os.MkdirAll(run, 0o755)
	var b strings.Builder
	b.WriteString("SIGQUIT: quit\nPC=0x4711 m=0 sigcode=0\n\ngoroutine 1 [running]:\nmain.main()\n\t/x.go:1 +0x1\n\n")
	block := "goroutine 99 [select]:\nsome/pkg.wait(0xc000010000)\n\t/src/some/pkg/wait.go:42 +0x8f\ncreated by some/pkg.start in goroutine 1\n\t/src/some/pkg/start.go:7 +0x2d\n\n"
	for b.Len() < 40<<20 {
		b.WriteString(block)
	}
	if err := os.WriteFile(filepath.Join(run, crashOutFile), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	base := liveHeap()
	s := newStore(t, newFakeClock(), dir, 0, "boot")
	grown := int64(liveHeap()) - int64(base)
	sum := s.Summary(newFakeClock().Now())
	if sum.LastCrash == nil || sum.LastCrash.Kind != KindSignal || sum.LastCrash.Reason != "SIGQUIT: quit" {
		t.Fatalf("record: %+v", sum.LastCrash)
	}
	if grown > 1<<20 {
		t.Errorf("the store kept %d KB of heap after reading a 40 MB crash output", grown/1024)
	}
	for _, f := range []string{crashOutFile, parsingFile} {
		if _, err := os.Stat(filepath.Join(run, f)); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
	runtime.KeepAlive(s)
}

// TestCrashOutputParsingNotRetried: a crash output left renamed by a
// start that died reading it is discarded, not read again.
func TestCrashOutputParsingNotRetried(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	os.MkdirAll(run, 0o755)
	os.WriteFile(filepath.Join(run, parsingFile), []byte("fatal error: out of memory\n\ngoroutine 1 [running]:\n"), 0o644)
	s := newStore(t, newFakeClock(), dir, 0, "boot")
	if sum := s.Summary(newFakeClock().Now()); sum.LastCrash != nil {
		t.Errorf("a crash output that killed a start was parsed again: %+v", sum.LastCrash)
	}
	if _, err := os.Stat(filepath.Join(run, parsingFile)); err == nil {
		t.Error("left behind")
	}
}

// TestHistoryBoundedOnLoad: a history larger than any the daemon writes
// is set aside unread; one with too many records is cut to its limit;
// records dated in the far future (9999) or before 2000 are set aside and
// do not count in the last 24 h.
func TestHistoryBoundedOnLoad(t *testing.T) {
	clock := newFakeClock()
	t.Run("huge", func(t *testing.T) {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "state"), 0o755)
		big := `{"version":1,"total_restarts":1,"records":[` + strings.Repeat(`{"time":"2026-11-28T11:00:00Z","kind":"panic","reason":"x","count":1},`, 80000) + `{"time":"2026-11-28T11:00:00Z","kind":"panic","reason":"x","count":1}]}`
		os.WriteFile(filepath.Join(dir, "state", historyFile), []byte(big), 0o644)
		base := liveHeap()
		s := newStore(t, clock, dir, 0, "boot")
		if grown := int64(liveHeap()) - int64(base); grown > 1<<20 {
			t.Errorf("kept %d KB of heap", grown/1024)
		}
		if sum := s.Summary(clock.Now()); sum.CorruptHistory == "" || len(sum.Records) != 0 {
			t.Errorf("a %d MB history was loaded: %d records, corrupt %q", len(big)>>20, len(sum.Records), sum.CorruptHistory)
		}
	})
	t.Run("impossible", func(t *testing.T) {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "state"), 0o755)
		recs := []Record{
			{Time: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), Kind: KindPanic, Reason: "future", Count: 1},
			{Time: time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), Kind: KindPanic, Reason: "epoch", Count: 1},
			{Time: clock.Now().Add(-time.Hour), Kind: KindPanic, Reason: "real", Count: 1},
		}
		for i := 0; i < 200; i++ { // past crash_history_max 50
			recs = append(recs, Record{Time: clock.Now().Add(-time.Duration(200-i) * time.Minute), Kind: KindPanic, Reason: "old", Count: 1})
		}
		b, _ := json.Marshal(history{Version: 1, Records: recs})
		os.WriteFile(filepath.Join(dir, "state", historyFile), b, 0o644)
		s := newStore(t, clock, dir, 0, "boot")
		sum := s.Summary(clock.Now())
		if sum.SetAside != 2 || len(sum.Records) != 50 {
			t.Errorf("set aside %d (want 2), kept %d records (want 50)", sum.SetAside, len(sum.Records))
		}
		for _, r := range sum.Records {
			if r.Reason == "future" || r.Reason == "epoch" {
				t.Errorf("impossible record kept: %+v", r)
			}
		}
		if sum.CrashCount24h > 50 {
			t.Errorf("crash_count_24h %d", sum.CrashCount24h)
		}
	})
}

// TestFlashWritesCountSuccessOnly: a state directory that cannot be
// written (here a path under a regular file, which fails even for root)
// counts no flash write, and the failure is reported.
func TestFlashWritesCountSuccessOnly(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	clock := newFakeClock()
	s, err := Open(Options{StateDir: filepath.Join(dir, "file", "state"), RunDir: filepath.Join(dir, "run"),
		Clock: clock, HistoryDays: 7, HistoryMax: 50, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	s.Add(Record{Time: clock.Now(), Kind: KindWorkerPanic, Reason: "panic: x", Worker: "fetcher"})
	sum := s.Summary(clock.Now())
	if sum.FlashWrites != 0 || sum.WriteError == "" || sum.LastCrash == nil {
		t.Errorf("flash_writes %d, write error %q, record %v", sum.FlashWrites, sum.WriteError, sum.LastCrash)
	}
	if err := procfs.Writable(filepath.Join(dir, "file", "state")); err == nil {
		t.Error("Writable: no error under a regular file")
	}
	if err := procfs.Writable(filepath.Join(dir, "new", "state")); err != nil {
		t.Errorf("Writable of a directory still to be created: %v", err)
	}
}

// TestCrashReportingOffNoFlash: with crash_reporting 0 no record of any
// kind goes to flash; they are kept in RAM and reported.
func TestCrashReportingOffNoFlash(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	os.MkdirAll(run, 0o755)
	os.WriteFile(filepath.Join(run, markerFile), []byte(`{"pid":1}`), 0o644) // an unclean exit
	clock := newFakeClock()
	s, err := Open(Options{StateDir: filepath.Join(dir, "state"), RunDir: run,
		Clock: clock, HistoryDays: 7, HistoryMax: 50, BootID: "b", RAMOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Add(Record{Time: clock.Now(), Kind: KindFatalError, Reason: "fatal error: x"})
	sum := s.Summary(clock.Now())
	if sum.FlashWrites != 0 || len(sum.Records) != 2 {
		t.Errorf("flash writes %d, records %d", sum.FlashWrites, len(sum.Records))
	}
	if _, err := os.Stat(filepath.Join(dir, "state", historyFile)); err == nil {
		t.Error("crash history written to flash with crash_reporting 0")
	}
}

// TestPendingRecordsBounded: records merged in RAM between flash writes
// (a crash loop of distinct reasons inside the coalescing window) are
// bounded.
func TestPendingRecordsBounded(t *testing.T) {
	clk := newFakeClock()
	s := newStore(t, clk, t.TempDir(), time.Hour, "b")
	s.Add(Record{Time: clk.Now(), Kind: KindWorkerPanic, Reason: "first"}) // written; the window starts
	for i := 0; i < 10*maxPending; i++ {
		s.Add(Record{Time: clk.Now(), Kind: KindWorkerPanic, Reason: "panic: " + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('A'+i/26%26))})
	}
	s.mu.Lock()
	n := len(s.run.Pending)
	s.mu.Unlock()
	if n > maxPending {
		t.Errorf("%d records pending in RAM, bound %d", n, maxPending)
	}
}
