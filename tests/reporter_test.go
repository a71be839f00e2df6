package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReporterThroughCollectorOutage: the daemon reports at once on
// start (a change of status), keeps the reports of a collector outage in
// RAM (failed attempts counted, nothing written to flash, nothing logged
// as sent), delivers them when the collector is back, and every report
// the collector received validates against docs/schema.
func TestReporterThroughCollectorOutage(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if failing.Load() {
			http.Error(w, "collector down", http.StatusBadGateway)
			return
		}
		var doc map[string]any
		if r.Method != "POST" || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &doc) != nil {
			t.Errorf("bad report: %s %s %q", r.Method, r.Header.Get("Content-Type"), body)
		}
		mu.Lock()
		got = append(got, doc)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	received := func() []map[string]any { mu.Lock(); defer mu.Unlock(); return append([]map[string]any(nil), got...) }

	e := newFaultEnv(t, map[string]string{"reporter.url": srv.URL + "/agent", "reporter.node": "node-1", "health.health_check_interval": "1"})
	p := e.start()
	waitFor(t, 10*time.Second, "the report of the start", func() bool { return len(received()) >= 1 })
	if r := received()[0]; r["reason"] != "status_change" || r["node"] != "node-1" {
		t.Errorf("first report %v", r)
	}

	failing.Store(true)
	// A rejected setting degrades the status: a report is made at once.
	exec.Command(bins.daemon, "uci", "-c", e.tr.confDir, "-t", e.tr.saveDir, "set", "phonebook.health.sip_errors_warn=lots").Run()
	exec.Command(bins.daemon, "uci", "-c", e.tr.confDir, "-t", e.tr.saveDir, "commit", "phonebook").Run()
	p.cmd.Process.Signal(syscallHUP())
	rep := func() map[string]any {
		return get(call(t, e.sock, "phonebook", "status", ""), "reporter").(map[string]any)
	}
	waitFor(t, 15*time.Second, "failed attempts while the collector is down", func() bool {
		r := rep()
		return num(r["queued"]) >= 1 && num(r["failed"]) >= 2
	})
	n := len(received())
	failing.Store(false)
	waitFor(t, 30*time.Second, "the queued report delivered", func() bool { return num(rep()["queued"]) == 0 && len(received()) > n })
	last := received()[len(received())-1]
	if last["health_status"] != "degraded" || last["reason"] != "status_change" {
		t.Errorf("the outage's report: %v", last)
	}
	if r := rep(); num(r["dropped"]) != 0 || r["last_error"] != nil {
		t.Errorf("reporter after recovery: %v", r)
	}

	// Nothing on flash: no flash write, no file in the state directory.
	if fw := num(get(e.health(), "storage", "flash_writes")); fw != 0 {
		t.Errorf("flash_writes %v", fw)
	}
	if ents, _ := os.ReadDir(e.tr.stateDir); len(ents) != 0 {
		t.Errorf("state directory holds %d entries", len(ents))
	}
	if strings.Contains(strings.ToLower(p.out.String()), "report sent") {
		t.Error("the log says sent (only the debug level may)")
	}

	report, sh := loadSchema(t, "report.schema.json"), loadSchema(t, "software_health.schema.json")
	for i, r := range received() {
		for _, err := range validate(report, r, "report") {
			t.Errorf("report %d: %s", i, err)
		}
		for _, err := range validate(sh, r["software_health"], "report.software_health") {
			t.Errorf("report %d: %s", i, err)
		}
	}
}
