package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/page"
	"github.com/aredn/phonebookd/ubus"
)

// TestHistoryAtTheLargestRingOverUbus: with history_points at its
// largest (10,080) and a day of points at a 10 s step (the copy a
// restart reads back from run_dir), phonebook.health history without
// arguments answers one bounded page, under 512 KB as blobmsg and as the
// CLI's JSON, with the ring's total; limit still works; asking page
// after page returns every point once; the app page asks in pages and
// charts them all. Before: the answer carried every point, more than
// ubus's 1 MiB message, and the call failed.
func TestHistoryAtTheLargestRingOverUbus(t *testing.T) {
	e := newFaultEnv(t, map[string]string{"health.history_step": "10", "health.history_points": "10080"})
	// 8,600 points, the newest now: all inside the 24 h a restart takes.
	const seeded = 8600
	now := time.Now().Unix()
	var b strings.Builder
	b.WriteString(`{"version":1,"points":[`)
	for i := 0; i < seeded; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "[%d,1,55,126421,101135,1023,%d,123456,123456,123456]", now-int64(seeded-1-i)*10, i)
	}
	b.WriteString(`],"marks":[]}`)
	if err := os.MkdirAll(e.tr.runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.tr.runDir, "history.json"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	e.start()

	out, rc := callRaw(e.sock, "phonebook.health", "history", "")
	if rc != 0 {
		t.Fatalf("history without arguments: exit %d (%d bytes)", rc, len(out))
	}
	h := call(t, e.sock, "phonebook.health", "history", "")
	n, total := len(h["time"].([]any)), int(num(h["total"]))
	if n != 1440 || total < seeded || num(h["capacity"]) != 10080 {
		t.Fatalf("history: %d points of %d held (capacity %v), want a page of 1440 of at least %d", n, total, h["capacity"], seeded)
	}

	// The same answer as blobmsg, as ubus carries it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := ubus.Dial(ctx, e.sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r, err := conn.Call(ctx, "phonebook.health", "history", nil)
	if err != nil || len(r) == 0 {
		t.Fatalf("history over ubus: %v", err)
	}
	blob := len(ubus.AppendValues(nil, r[0]))
	t.Logf("history_points 10080, %d points held: answer of %d points, %d B blobmsg, %d B JSON", total, n, blob, len(out))
	if blob >= 512<<10 || len(out) >= 512<<10 {
		t.Fatalf("answer %d B of blobmsg, %d B of JSON: want each under 512 KB", blob, len(out))
	}

	if l := call(t, e.sock, "phonebook.health", "history", `{"limit":3}`); len(l["time"].([]any)) != 3 {
		t.Errorf("limit 3: %v", l["time"])
	}
	if _, rc := callRaw(e.sock, "phonebook.health", "history", `{"offset":-1}`); rc != 254 {
		t.Errorf("offset -1: exit %d, want 254 (INVALID_ARGUMENT)", rc)
	}

	d := page.Collect(ctx, e.sock)
	if len(d.History.Time) < seeded {
		t.Fatalf("the app page collected %d points, want at least %d", len(d.History.Time), seeded)
	}
	for i := 1; i < len(d.History.Time); i++ {
		if d.History.Time[i] <= d.History.Time[i-1] {
			t.Fatalf("the page's points %d and %d are not in order: %d, %d", i-1, i, d.History.Time[i-1], d.History.Time[i])
		}
	}
}
