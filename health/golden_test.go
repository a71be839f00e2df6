package health

import (
	"context"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/supervisor"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/aredn/phonebookd/ubus"
)

// measured matches the values that are measurements of this machine (RSS,
// heap, descriptors, CPU, free space, pid): they are normalised before
// the comparison; everything else (names, layout, statuses, alerts,
// nulls, counters the test drives) is compared as it is.
var measured = regexp.MustCompile(`"(rss_mb|peak_rss_mb|rss_anon_mb|rss_file_mb|heap_mb|heap_objects_mb|gc_cycles|go_total_mb|stack_kb|goroutines|open|max|socket|file|pipe|other|baseline|pid|cpu_pct|state_free_kb|run_free_kb|heap_trend_kb_per_hour|heap_trend_fit|rss_trend_kb_per_hour|memory_limit_mb|gc_percent|os_threads)": (-?[0-9.e+-]+|null)`)

func normalise(doc string) string { return measured.ReplaceAllString(doc, `"$1": <measured>`) }

// TestGoldenDocuments: the status and check documents of a known state
// (one worker panic recorded, a rejected setting, a failed probe) against
// testdata/*.golden.json; go test ./health -run TestGoldenDocuments
// -update rewrites them.
func TestGoldenDocuments(t *testing.T) {
	clock := newFakeClock()
	sup := supervisor.New(supervisor.Options{Clock: clock, MaxRestarts: 3, Window: time.Hour})
	for _, n := range []string{"main", "fetcher", "monitor", "safety"} {
		sup.Add(supervisor.Spec{Name: n, Period: time.Second, Essential: n == "main" || n == "safety",
			Run: func(ctx context.Context, w *supervisor.Worker) error { return w.Wait(ctx, time.Hour) }})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); sup.Wait(context.Background()) }()
	sup.Start(ctx)
	dir := t.TempDir()
	cs, err := crash.Open(crash.Options{StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"), Clock: clock, HistoryDays: 7, HistoryMax: 50, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	cs.Add(crash.Record{Time: clock.Now().Add(-time.Hour), Kind: crash.KindWorkerPanic, Worker: "fetcher", Reason: "panic: injected", Stack: "goroutine 7 [running]:"})
	h := NewSystem(Options{Clock: clock, Rates: NewRates(clock), Supervisor: sup, Crashes: cs, StateDir: dir, RunDir: dir}, testConfig())
	h.SetUnhealthy(Config, "phonebook.sip.max_bindings", Args{ArgError: `phonebook.sip.max_bindings: invalid value "many"`})
	h.SetUnhealthy(ProbeFailed, "node-k:5060", Args{ArgCount: "3", ArgTotal: "3", ArgError: "timeout"})
	snap := h.Sample()
	clock.Advance(90 * time.Second)
	status, check := h.StatusDoc(snap, clock.Now()), h.CheckDoc(snap, clock.Now())
	for _, g := range []struct {
		name string
		body []byte
	}{
		// As the ubus front sends them: the wire format is what the
		// golden files pin down.
		{"status", ubus.AppendStruct(nil, &status)},
		{"check", ubus.AppendStruct(nil, &check)},
	} {
		vs, err := ubus.DecodeValues(g.body)
		if err != nil {
			t.Fatal(err)
		}
		got := normalise(ubus.FormatJSON(vs, false, 1)) + "\n"
		path := filepath.Join("testdata", g.name+".golden.json")
		if *update {
			os.WriteFile(path, []byte(got), 0o644)
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create it)", err)
		}
		if got != string(want) {
			t.Errorf("%s document differs from %s (-update rewrites it):\n%s", g.name, path, got)
		}
	}
}
