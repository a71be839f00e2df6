package page

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
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
			h.SetUnhealthy("probe_failed:mesh-gw", health.Args{health.ArgCount: "3", health.ArgTotal: "3", health.ArgError: "timeout"})
		}
		if hour == 21 {
			h.SetHealthy("probe_failed:mesh-gw")
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
