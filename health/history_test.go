package health

import (
	"testing"
	"time"

	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/ubus"
)

// TestHistoryBoundedOverADay: a simulated day and a half of evaluations
// every 10 s (shorter than the step) fills the ring exactly to its bound,
// one point per step, newest last, and the document stays within a ubus
// message.
func TestHistoryBoundedOverADay(t *testing.T) {
	clock := newFakeClock()
	cfg := testConfig()
	cfg.HistoryStep, cfg.HistoryPoints = 60, 1440
	phones := 0
	dir := t.TempDir()
	h := NewSystem(Options{Clock: clock, Rates: NewRates(clock), StateDir: dir, RunDir: dir, Phones: func() int { return phones }}, cfg)
	start := clock.Now()
	for i := 0; i < 36*360; i++ { // 36 h at 10 s
		phones = (i / 360) % 7
		h.Sample()
		clock.Advance(10 * time.Second)
	}
	hist := h.History()
	if hist.Len() != 1440 || hist.Cap() != 1440 {
		t.Fatalf("ring holds %d of %d points, want 1440 of 1440", hist.Len(), hist.Cap())
	}
	doc := hist.Doc(nil, 0)
	if len(doc.Time) != 1440 || len(doc.RSSMB) != 1440 || len(doc.Phones) != 1440 {
		t.Fatalf("columns %d/%d/%d, want 1440", len(doc.Time), len(doc.RSSMB), len(doc.Phones))
	}
	for i := 1; i < len(doc.Time); i++ {
		if d := doc.Time[i] - doc.Time[i-1]; d != 60 {
			t.Fatalf("points %d and %d are %d s apart, want the 60 s step", i-1, i, d)
		}
	}
	end := clock.Now().Add(-10 * time.Second).Unix()
	if doc.Time[1439] < end-60 || doc.Time[0] < start.Add(12*time.Hour).Unix() {
		t.Fatalf("window %d..%d does not end at the newest sample %d", doc.Time[0], doc.Time[1439], end)
	}
	if doc.RSSMB[1439] == nil || *doc.RSSMB[1439] <= 0 || doc.Score[1439] == nil {
		t.Fatalf("newest point lacks measured RSS or score: %v %v", doc.RSSMB[1439], doc.Score[1439])
	}
	if got := doc.Phones[1439]; got != int32(((36*360-1)/360)%7) {
		t.Fatalf("phones %d at the newest point", got)
	}
	body := ubus.AppendValues(nil, ubus.ValuesOf(&doc))
	doc.Marks = []HistoryMark{{Time: Time{start}, Kind: "crash", Worker: "fetcher", Reason: "x"}}
	if a, b := doc.AppendBlob(nil), ubus.AppendValues(nil, ubus.ValuesOf(&doc)); string(a) != string(b) {
		t.Fatalf("AppendBlob differs from the ValuesOf encoding (%d vs %d bytes)", len(a), len(b))
	}
	if len(body) > ubus.MaxMessageLen/4 {
		t.Fatalf("history document %d bytes, want under a quarter of a ubus message", len(body))
	}
	t.Logf("1440 points: %d bytes of blobmsg", len(body))
	if got := hist.Doc(nil, 100); len(got.Time) != 100 || got.Time[99] != doc.Time[1439] {
		t.Fatalf("limit 100: %d points ending %d", len(got.Time), got.Time[len(got.Time)-1])
	}
}

// TestHistoryMarksAndResize: crashes inside the window become marks, older
// ones do not; a smaller ring keeps the newest points.
func TestHistoryMarksAndResize(t *testing.T) {
	clock := newFakeClock()
	cfg := testConfig()
	cfg.HistoryStep, cfg.HistoryPoints = 60, 100
	h := newSystem(t, clock, cfg)
	for i := 0; i < 150; i++ {
		h.Sample()
		clock.Advance(time.Minute)
	}
	hist := h.History()
	if hist.Len() != 100 {
		t.Fatalf("len %d, want 100", hist.Len())
	}
	doc := hist.Doc([]crash.Record{
		{Time: clock.Now().Add(-500 * time.Minute), Kind: "panic", Reason: "old"},
		{Time: clock.Now().Add(-30 * time.Minute), Kind: "panic", Reason: "recent", Worker: "fetcher"},
	}, 0)
	if len(doc.Marks) != 1 || doc.Marks[0].Reason != "recent" || doc.Marks[0].Kind != "crash" {
		t.Fatalf("marks %+v, want only the recent crash", doc.Marks)
	}
	newest := doc.Time[99]
	hist.Resize(time.Minute, 10)
	small := hist.Doc(nil, 0)
	if len(small.Time) != 10 || small.Time[9] != newest {
		t.Fatalf("after resize: %d points ending %v, want 10 ending %d", len(small.Time), small.Time, newest)
	}
	h.Sample() // the clock has moved a minute: one more point, still 10
	if hist.Len() != 10 {
		t.Fatalf("len %d after a sample, want 10", hist.Len())
	}
}

// BenchmarkHistoryDoc is one phonebook.health history answer over a full
// ring of 1,440 points, encoded for ubus (docs/BENCHMARKS.md).
func BenchmarkHistoryDoc(b *testing.B) {
	clock := newFakeClock()
	h := NewHistory(time.Minute, 1440)
	snap := &Snapshot{Status: Healthy, Score: 100}
	for i := 0; i < 1440; i++ {
		snap.Time = clock.Now()
		h.record(snap, i%20)
		clock.Advance(time.Minute)
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		doc := h.Doc(nil, 0)
		n = len(doc.AppendBlob(nil))
	}
	b.ReportMetric(float64(n), "bytes/doc")
}
