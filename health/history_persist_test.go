package health

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// addPoint records one point at t.
func addPoint(h *History, t time.Time, phones int) {
	h.record(&Snapshot{Time: t, Status: Healthy, Score: 100}, phones)
}

// savedPoints reads the points in the file at path (nil: none yet).
func savedPoints(path string) []int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var f savedHistory
	if json.Unmarshal(b, &f) != nil {
		return nil
	}
	out := []int64{}
	for _, p := range f.Points {
		out = append(out, p[0])
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestHistorySurvivesRestart: the points and marks a run wrote are read
// back by the next run; those older than a day are dropped and the ring
// bound holds.
func TestHistorySurvivesRestart(t *testing.T) {
	clock := newFakeClock()
	cfg := testConfig()
	cfg.HistoryStep, cfg.HistoryPoints = 60, 1440
	dir := t.TempDir()
	path := filepath.Join(dir, HistoryFile)
	sys := NewSystem(Options{Clock: clock, Rates: NewRates(clock), StateDir: dir, RunDir: dir, Phones: func() int { return 3 }}, cfg)
	for i := 0; i < 30; i++ { // 30 min of evaluations every 30 s
		sys.Sample()
		clock.Advance(30 * time.Second)
		if i == 10 {
			sys.History().mu.Lock()
			sys.History().mark(HistoryMark{Time: Time{clock.Now()}, Kind: "restart", Worker: "fetcher"})
			sys.History().mu.Unlock()
		}
	}
	var written uint64
	sys.History().save(path, &written, nil)
	before := sys.History().Doc(nil, 0)
	if len(before.Time) != 15 {
		t.Fatalf("%d points before", len(before.Time))
	}

	after := NewSystem(Options{Clock: clock, Rates: NewRates(clock), StateDir: dir, RunDir: dir}, cfg)
	n, err := after.History().Load(path, clock.Now().Add(time.Minute), nil)
	if err != nil || n != 15 {
		t.Fatalf("loaded %d, %v", n, err)
	}
	doc := after.History().Doc(nil, 0)
	if strings.Join(strs(doc.Time), ",") != strings.Join(strs(before.Time), ",") || doc.Phones[14] != 3 || *doc.Score[0] != *before.Score[0] || *doc.RSSMB[3] != *before.RSSMB[3] {
		t.Errorf("points after restart %v, before %v", doc.Time, before.Time)
	}
	if len(doc.Marks) != 1 || doc.Marks[0].Worker != "fetcher" {
		t.Errorf("marks %v", doc.Marks)
	}
	// The next point comes a step after the newest read back.
	after.Sample()
	if after.History().Len() != 16 {
		t.Errorf("%d points after the first evaluation", after.History().Len())
	}

	// A day later the first 10 minutes' points are too old.
	old := NewHistory(time.Minute, 1440)
	if n, _ := old.Load(path, time.Unix(before.Time[10], 0).Add(HistoryWindow), nil); n != 5 {
		t.Errorf("a day later: %d points, want the 5 newer than 24 h", n)
	}
	small := NewHistory(time.Minute, 10)
	if n, _ := small.Load(path, clock.Now(), nil); n != 10 || small.Doc(nil, 0).Time[9] != before.Time[14] {
		t.Errorf("into a ring of 10: %d points", n)
	}
}

func strs(v []int64) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = time.Unix(x, 0).UTC().Format(time.TimeOnly)
	}
	return out
}

// TestHistoryKeepOncePerStep: each point is written, at most once per
// step; nothing is written while nothing is added.
func TestHistoryKeepOncePerStep(t *testing.T) {
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), HistoryFile)
	h := NewHistory(time.Minute, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Keep(ctx, path, clock, nil); close(done) }()
	t0 := clock.Now()
	addPoint(h, t0, 1)
	waitFor(t, "the first point written", func() bool { return len(savedPoints(path)) == 1 })
	addPoint(h, t0.Add(time.Minute), 2) // (a snapshot's time; the writer's clock has not moved)
	h.mu.Lock()
	h.mark(HistoryMark{Time: Time{clock.Now()}, Kind: "restart", Worker: "monitor"})
	h.mu.Unlock()
	waitFor(t, "the writer waiting out the step", func() bool { return clock.Timers() == 1 })
	if n := len(savedPoints(path)); n != 1 {
		t.Fatalf("%d points written within the step", n)
	}
	clock.Advance(time.Minute)
	waitFor(t, "the second point written", func() bool { return len(savedPoints(path)) == 2 })
	st, _ := os.Stat(path)
	for i := 0; i < 10; i++ {
		clock.Advance(time.Hour)
	}
	waitFor(t, "the writer idle", func() bool {
		if clock.Timers() > 0 { // a late wake for the mark, already written
			clock.Advance(time.Hour)
		}
		return clock.Timers() == 0
	})
	if st2, _ := os.Stat(path); !st2.ModTime().Equal(st.ModTime()) {
		t.Error("written while idle")
	}
	addPoint(h, clock.Now(), 3) // after idling: written (at once, or a step after the last write)
	waitFor(t, "the third point written", func() bool {
		if clock.Timers() == 1 { // the writer read its clock after the idle hours began
			clock.Advance(time.Minute)
		}
		return len(savedPoints(path)) == 3
	})
	cancel()
	<-done
}

// TestHistoryCorruptSetAside: a file that is not a history, or is larger
// than the ring could have written, is renamed *.bad; the ring starts
// empty; never a crash.
func TestHistoryCorruptSetAside(t *testing.T) {
	for name, data := range map[string]string{
		"garbage":  `{"version":1,"points":[[1,2`,
		"version":  `{"version":2}`,
		"oversize": `{"version":1,"points":[` + strings.Repeat(`[1,0,0,0,0,0,0,0,0,0],`, 3000) + `[1,0,0,0,0,0,0,0,0,0]]}`,
	} {
		path := filepath.Join(t.TempDir(), HistoryFile)
		os.WriteFile(path, []byte(data), 0o644)
		h := NewHistory(time.Minute, 10)
		if n, err := h.Load(path, time.Now(), nil); err == nil || n != 0 || h.Len() != 0 {
			t.Errorf("%s: %d points, %v", name, n, err)
		}
		if _, err := os.Stat(path + ".bad"); err != nil {
			t.Errorf("%s: not set aside", name)
		}
	}
}

// FuzzParseHistory: whatever the file holds, reading it never panics and
// what is taken is in order, in the window and within the ring.
func FuzzParseHistory(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	h := NewHistory(time.Minute, 8)
	for i := 0; i < 12; i++ {
		addPoint(h, now.Add(time.Duration(i-12)*time.Minute), i)
	}
	h.mark(HistoryMark{Time: Time{now.Add(-time.Minute)}, Kind: "restart", Worker: "main"})
	path := filepath.Join(f.TempDir(), HistoryFile)
	var w uint64
	h.save(path, &w, nil)
	good, _ := os.ReadFile(path)
	f.Add(good)
	f.Add([]byte(`{"version":1,"points":[[1800000000,9,0,0,0,0,0,0,0,0],[1800000000,0,101,-2,0,0,0,0,0,0]],"marks":[{"time":1800000000,"kind":"crash"}]}`))
	f.Add([]byte(`{"version":1,"points":[[1799999990,0,100,9223372036854775807,0,0,0,0,0,0]]}`))
	f.Add([]byte(`{"version":1,"points":null,"marks":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pts, marks, err := parseHistory(data, now, time.Minute, 8)
		if err != nil {
			return
		}
		if len(pts) > 8 || len(marks) > maxMarks {
			t.Fatalf("%d points, %d marks", len(pts), len(marks))
		}
		for i, p := range pts {
			if p.t < now.Add(-HistoryWindow).Unix() || p.t > now.Add(time.Minute).Unix() || (i > 0 && p.t <= pts[i-1].t) || int(p.status) >= len(statusCodes) {
				t.Fatalf("point %d taken: %+v", i, p)
			}
		}
	})
}
