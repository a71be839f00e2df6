package page

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/ubus"
)

// simulatedDay runs a real health system on a fake clock through a day
// and a half at a 10 s health interval: phones come in the morning and
// leave at night, a condition degrades the score for two hours, memory is
// really allocated and freed. It returns the page data.
func simulatedDay(t *testing.T) Data {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC))
	cfg := config.Defaults().Health
	cfg.HistoryStep, cfg.HistoryPoints = 60, 1440
	// The figures are the test process's own: a day of its allocations
	// compressed into a second of a fake clock reads as a steep trend, so
	// the leak detector (tested in health) is off here.
	cfg.MemoryLeakDetection = false
	phones := 0
	dir := t.TempDir()
	h := health.NewSystem(health.Options{Clock: clk, Rates: health.NewRates(clk), StateDir: dir, RunDir: dir, Phones: func() int { return phones }}, cfg)
	var ballast [][]byte
	for i := 0; i < 36*360; i++ {
		hour := clk.Now().Hour()
		switch {
		case hour >= 7 && hour < 22:
			phones = 12 + (i/90)%5
		default:
			phones = 3
		}
		if hour == 14 && len(ballast) < 64 {
			ballast = append(ballast, make([]byte, 256<<10)) // 16 MB over the hour
			for _, b := range ballast[len(ballast)-1:] {
				for j := range b {
					b[j] = 1
				}
			}
		}
		if hour == 17 {
			ballast = nil
		}
		if hour == 19 && clk.Now().Minute() == 0 {
			h.SetUnhealthy(health.ProbeFailed, "mesh-gw", health.Args{health.ArgCount: "3", health.ArgTotal: "3", health.ArgError: "timeout"})
		}
		if hour == 21 {
			h.SetHealthy(health.ProbeFailed, "mesh-gw")
		}
		h.Sample()
		clk.Advance(10 * time.Second)
	}
	now := clk.Now()
	crashes := []crash.Record{{Time: now.Add(-5 * time.Hour), Kind: "panic", Worker: "fetcher", Reason: "runtime error: index out of range"}}
	check := h.Snapshot().Check
	worker := crashes[0].Worker
	listed := []health.CrashRecord{{Time: health.Time{Time: crashes[0].Time}, Kind: crashes[0].Kind, Reason: crashes[0].Reason, Worker: &worker, Count: 1}}
	return Data{Running: true, Now: now.Format(time.RFC3339), Check: check, Crashes: listed, History: h.History().Doc(crashes, 0)}
}

// TestHistoryChartsAfterASimulatedDay: after a simulated day the ring
// holds its bound and every chart draws all of it, with the crash mark;
// PAGE_HTML=file writes the page.
func TestHistoryChartsAfterASimulatedDay(t *testing.T) {
	if testing.Short() {
		t.Skip("slow (a simulated day of evaluations): make test runs it")
	}
	d := simulatedDay(t)
	if n := len(d.History.Time); n != 1440 || d.History.Capacity != 1440 {
		t.Fatalf("history holds %d of %d points, want 1440 of 1440", n, d.History.Capacity)
	}
	page := HTML(d)
	svgs := regexp.MustCompile(`<svg [^>]*data-points="(\d+)"`).FindAllStringSubmatch(page, -1)
	if len(svgs) != 5 {
		t.Fatalf("%d charts, want 5", len(svgs))
	}
	for _, m := range svgs {
		if m[1] != "1440" {
			t.Errorf("a chart draws %s points, want 1440", m[1])
		}
	}
	// The phones line has one vertex per point: 1440.
	phones := regexp.MustCompile(`(?s)aria-label="Registered phones".*?<polyline[^>]*points="([^"]*)"`).FindStringSubmatch(page)
	if phones == nil || len(strings.Fields(phones[1])) != 1440 {
		t.Fatalf("phones polyline: %d vertices", len(strings.Fields(phones[1])))
	}
	if strings.Count(page, `class="mark crash"`) != 5 {
		t.Errorf("crash mark on %d charts, want 5", strings.Count(page, `class="mark crash"`))
	}
	if !strings.Contains(page, "prefers-color-scheme:dark") || strings.Contains(page, "<script") {
		t.Error("the charts need the dark theme and no script")
	}
	if out := os.Getenv("PAGE_HTML"); out != "" {
		if err := os.WriteFile(out, []byte(page), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHistoryNullBreaksTheLine: an unmeasured point is a gap, not a 0.
func TestHistoryNullBreaksTheLine(t *testing.T) {
	one := 1.0
	svg := chart("x", "", []int64{0, 60, 120}, nil, series{"s", "#000", []*float64{&one, nil, &one}})
	if strings.Count(svg, "<polyline") != 2 {
		t.Fatalf("want two segments around the gap:\n%s", svg)
	}
}

// largestHistory is a ring of the largest history_points allowed
// (10,080) at a 10 s step, filled through the file format the daemon
// keeps in run_dir with n points, the newest at last, point i having i
// phones.
func largestHistory(t *testing.T, last time.Time, n int) *health.History {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"version":1,"points":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		ts := last.Add(time.Duration(i-n+1) * 10 * time.Second).Unix()
		fmt.Fprintf(&b, "[%d,1,55,126421,101135,1023,%d,123456,123456,123456]", ts, i)
	}
	fmt.Fprintf(&b, `],"marks":[{"time":%d,"kind":"restart","worker":"fetcher","reason":""}]}`, last.Add(-20*time.Hour).Unix())
	path := filepath.Join(t.TempDir(), "history.json")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	h := health.NewHistory(10*time.Second, 10080)
	if got, err := h.Load(path, last, nil); err != nil || got != n {
		t.Fatalf("loaded %d points (%v), want %d", got, err, n)
	}
	return h
}

// TestPageAsksHistoryInPages: the page asks for the history in pages of
// at most health.MaxHistoryPage points, each answer under 512 KB as ubus
// carries it, and joins them into the whole ring once, oldest first,
// even when the ring moves on between two pages. Before: one request
// for everything, more than ubus's 1 MiB limit at the largest
// history_points.
func TestPageAsksHistoryInPages(t *testing.T) {
	// 24 h at 10 s (what a restart reads back); a point is added
	// after the first page was answered.
	last := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	before, after := largestHistory(t, last, 8640), largestHistory(t, last.Add(10*time.Second), 8641)
	crashes := []crash.Record{{Time: last.Add(-3 * time.Hour), Kind: "panic", Worker: "sip", Reason: "x"}}
	calls := 0
	pager := func(_ context.Context, limit, offset int) (health.HistoryDoc, error) {
		h := after
		if calls == 0 {
			h = before
		}
		calls++
		doc := h.Page(crashes, limit, offset)
		blob := ubus.AppendStruct(nil, &doc)
		if len(blob) >= 512<<10 {
			t.Errorf("page at offset %d: %d B of blobmsg", offset, len(blob))
		}
		vs, err := ubus.DecodeValues(blob)
		if err != nil {
			t.Fatal(err)
		}
		var got health.HistoryDoc
		return got, decode(vs, &got)
	}
	doc, err := CollectHistory(context.Background(), pager)
	if err != nil {
		t.Fatal(err)
	}
	if calls != 7 || len(doc.Time) != 8640 || len(doc.RSSMB) != 8640 || len(doc.FetchFailuresPerHour) != 8640 {
		t.Fatalf("%d calls, %d points (%d rss), want 7 calls and 8640 points", calls, len(doc.Time), len(doc.RSSMB))
	}
	for i := 1; i < len(doc.Time); i++ {
		if doc.Time[i]-doc.Time[i-1] != 10 || doc.Phones[i] != int32(i) {
			t.Fatalf("point %d: time %d after %d, phones %d", i, doc.Time[i], doc.Time[i-1], doc.Phones[i])
		}
	}
	if len(doc.Marks) != 2 {
		t.Fatalf("marks %+v, want the crash and the restart once each", doc.Marks)
	}
	if html := History(doc); !strings.Contains(html, `data-points="8640"`) {
		t.Fatal("the charts do not draw the whole history")
	}
}
