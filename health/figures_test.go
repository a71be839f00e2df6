package health

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/supervisor"
	"github.com/aredn/phonebookd/ubus"
)

// TestWorkerFiguresInEntries: each worker's own figures are members of
// its thread entry, after the common ones and only for that worker (the
// members and order []ubus.Value Extra gave), in blobmsg and in JSON
// alike; a null figure is null, not left out.
func TestWorkerFiguresInEntries(t *testing.T) {
	clock := newFakeClock()
	sup := supervisor.New(supervisor.Options{Clock: clock, MaxRestarts: 3, Window: time.Hour})
	for _, n := range []string{"main", "fetcher", "monitor", "safety"} {
		sup.Add(supervisor.Spec{Name: n, Period: time.Second, Run: func(ctx context.Context, w *supervisor.Worker) error { return w.Wait(ctx, time.Hour) }})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); sup.Wait(context.Background()) }()
	sup.Start(ctx)
	last := clock.Now().Add(-time.Minute)
	dir := t.TempDir()
	h := NewSystem(Options{Clock: clock, Rates: NewRates(clock), Supervisor: sup, StateDir: dir, RunDir: dir,
		WorkerExtra: func(worker string, _ []supervisor.WorkerStatus) WorkerFigures {
			switch worker {
			case "safety":
				return WorkerFigures{SafetyFigures: &SafetyFigures{RecoveriesPerformed: 4}}
			case "monitor":
				return WorkerFigures{MonitorFigures: &MonitorFigures{}} // no probe yet
			case "fetcher":
				return WorkerFigures{FetcherFigures: &FetcherFigures{LastSuccess: Time{last}, Entries: 12}}
			}
			return WorkerFigures{}
		}}, testConfig())
	snap := h.Sample()
	doc := h.ThreadsDoc(snap)
	vs, err := ubus.DecodeValues(ubus.AppendStruct(nil, &doc))
	if err != nil {
		t.Fatal(err)
	}
	threads, _ := ubus.Get(vs, "threads")
	want := map[string]string{
		"main":    "",
		"safety":  `"recoveries_performed":4`,
		"monitor": `"probe_success_rate":null`,
		"fetcher": `"last_success":"` + iso(last) + `","entries":12`,
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	for name, tail := range want {
		entry, ok := ubus.Get(threads.List, name)
		if !ok {
			t.Fatalf("no %s entry", name)
		}
		got := ubus.FormatJSON(entry.List, false, -1)
		if !strings.HasSuffix(got, `"last_error":null`+strings.TrimSuffix(","+tail, ",")+"}") {
			t.Errorf("%s over ubus: %s, want it to end with last_error then %s", name, got, tail)
		}
		var fromJSON map[string]map[string]map[string]any
		if err := json.Unmarshal(js, &fromJSON); err != nil {
			t.Fatal(err)
		}
		var fromBlob map[string]any
		if err := json.Unmarshal([]byte(got), &fromBlob); err != nil {
			t.Fatal(err)
		}
		a, _ := json.Marshal(fromBlob)
		b, _ := json.Marshal(fromJSON["threads"][name])
		if string(a) != string(b) {
			t.Errorf("%s: blobmsg %s, JSON %s", name, a, b)
		}
	}
}
