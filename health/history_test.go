package health

import (
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/supervisor"
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
	if a, b := ubus.AppendStruct(nil, &doc), ubus.AppendValues(nil, ubus.ValuesOf(&doc)); string(a) != string(b) {
		t.Fatalf("AppendStruct differs from its ValuesOf round trip (%d vs %d bytes)", len(a), len(b))
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
		// Sized as the ubus front sizes it (daemon/ubus.go): about
		// 116 bytes a point, one allocation.
		n = len(ubus.AppendStruct(make([]byte, 0, 120*len(doc.Time)+1024), &doc))
	}
	b.ReportMetric(float64(n), "bytes/doc")
}

// fullLargestRing fills a ring of the largest history_points allowed
// (10,080) with worst-case points: every figure measured and wide, the
// longest status name, crash records up to crash_history_max with the
// longest reasons a record keeps, and restart marks up to their bound.
func fullLargestRing(t testing.TB) (*History, []crash.Record) {
	t.Helper()
	const points = 10080 // config: health.history_points max
	clock := newFakeClock()
	h := NewHistory(10*time.Second, points)
	rss, priv, fds := 123.456789, 98.7654321, int32(1023)
	snap := &Snapshot{Status: Degraded, Score: 55}
	snap.Health.Memory = &Memory{RSSMB: &rss, RSSAnonMB: &priv}
	snap.Health.FileDescriptors = &FileDescriptors{Open: &fds}
	snap.Health.ErrorRates = &ErrorRates{SIPErrorsPerHour: 123456, ProbeFailuresPerHour: 123456, FetchFailuresPerHour: 123456}
	var crashes []crash.Record
	for i := 0; i < points; i++ {
		snap.Time = clock.Now()
		snap.Workers = []supervisor.WorkerStatus{{Name: "fetcher", Restarts: i}} // a restart mark every point
		h.record(snap, 100000+i)
		if i%10 == 0 && len(crashes) < 1000 { // config: crash_history_max max
			crashes = append(crashes, crash.Record{Time: clock.Now(), Kind: "worker_panic", Worker: "fetcher", Reason: strings.Repeat("r", 259)})
		}
		clock.Advance(10 * time.Second)
	}
	if h.Len() != points {
		t.Fatalf("ring holds %d points, want %d", h.Len(), points)
	}
	return h, crashes
}

// encodedSizes is a document's size as ubus sends it (blobmsg) and as
// D-Bus and the CLI print it (JSON).
func encodedSizes(t testing.TB, d *HistoryDoc) (blob, js int) {
	t.Helper()
	b := ubus.AppendStruct(nil, d)
	vs, err := ubus.DecodeValues(b)
	if err != nil {
		t.Fatal(err)
	}
	return len(b), len(ubus.FormatJSON(vs, false, -1))
}

// TestHistoryAnswerWithinUbusAtTheLimit: with history_points at its
// largest (10,080), the answer to phonebook.health history without
// arguments stays under 512 KB, as blobmsg (ubus: its message limit is
// 1 MiB) and as JSON (D-Bus, the CLI). Before: it carried all 10,080
// points, 1,379,448 B of blobmsg, which ubus cannot send.
func TestHistoryAnswerWithinUbusAtTheLimit(t *testing.T) {
	h, crashes := fullLargestRing(t)
	doc := h.Doc(crashes, 0)
	blob, js := encodedSizes(t, &doc)
	t.Logf("history_points 10080: %d points answered, %d B blobmsg, %d B JSON, %d marks", len(doc.Time), blob, js, len(doc.Marks))
	if blob >= 512<<10 || js >= 512<<10 {
		t.Fatalf("answer %d B of blobmsg, %d B of JSON: want each under 512 KB", blob, js)
	}
	// The largest page asked for is bounded the same way.
	big := h.Doc(crashes, 1<<30)
	if blob, js := encodedSizes(t, &big); blob >= 512<<10 || js >= 512<<10 || len(big.Time) != MaxHistoryPage {
		t.Fatalf("limit 2^30: %d points, %d B blobmsg, %d B JSON", len(big.Time), blob, js)
	}
}

// TestHistoryPagesCoverTheRing: asking page after page (offset +=
// len(time) while offset + len(time) < total) returns every point of
// the largest ring once, oldest first across pages, each page bounded,
// and each mark in exactly one page.
func TestHistoryPagesCoverTheRing(t *testing.T) {
	h, crashes := fullLargestRing(t)
	var times []int64
	marks := map[string]int{}
	pages := 0
	for offset := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("more pages than the ring can fill")
		}
		p := h.Page(crashes, 0, offset)
		if blob, js := encodedSizes(t, &p); blob >= 512<<10 || js >= 512<<10 {
			t.Fatalf("page at offset %d: %d B blobmsg, %d B JSON", offset, blob, js)
		}
		if int(p.Total) != 10080 || int(p.Offset) != offset || len(p.Time) > MaxHistoryPage {
			t.Fatalf("page at offset %d: total %d, offset %d, %d points", offset, p.Total, p.Offset, len(p.Time))
		}
		times = append(p.Time, times...) // older pages go first
		for _, m := range p.Marks {
			marks[m.Kind+m.Time.String()]++
		}
		offset += len(p.Time)
		if offset >= int(p.Total) || len(p.Time) == 0 {
			break
		}
	}
	if len(times) != 10080 {
		t.Fatalf("%d points over %d pages, want 10080", len(times), pages+1)
	}
	for i := 1; i < len(times); i++ {
		if times[i]-times[i-1] != 10 {
			t.Fatalf("points %d and %d are %d s apart across pages", i-1, i, times[i]-times[i-1])
		}
	}
	for k, n := range marks {
		if n != 1 {
			t.Fatalf("mark %s in %d pages", k, n)
		}
	}
	if p := h.Page(crashes, 0, 20000); len(p.Time) != 0 || len(p.Marks) != 0 {
		t.Fatalf("offset past the ring: %d points, %d marks", len(p.Time), len(p.Marks))
	}
	if p := h.Page(crashes, 5, 3); len(p.Time) != 5 || p.Time[4] != times[len(times)-4] {
		t.Fatalf("limit 5 offset 3: %v, want the 5 points before the newest 3", p.Time)
	}
}
