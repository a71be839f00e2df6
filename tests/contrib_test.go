package tests

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestPrometheusRulesAndDashboard: promtool checks the alerting rules and
// proves with its unit tests that each alert fires and clears; every
// PromQL expression of the Grafana dashboard parses (promtool check
// rules on them as recording rules); every metric the rules and the
// dashboard name is one the daemon exports.
func TestPrometheusRulesAndDashboard(t *testing.T) {
	dir := "../contrib/prometheus"
	run(t, nil, "promtool", "check", "rules", filepath.Join(dir, "phonebook.rules.yml"))
	out := run(t, nil, "promtool", "test", "rules", filepath.Join(dir, "phonebook.rules.test.yml"))
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
	tests, _ := os.ReadFile(filepath.Join(dir, "phonebook.rules.test.yml"))
	for _, alert := range []string{"PhonebookHealthCritical", "PhonebookDown", "PhonebookCrashLoop", "PhonebookOverload", "PhonebookMemoryLeak", "PhonebookPhonesDropping"} {
		if strings.Count(string(tests), "alertname: "+alert) < 3 { // before, firing, cleared
			t.Errorf("alert %s is not tested firing and clearing", alert)
		}
	}
	// The rules that must hold over restarts are tested with restarts in
	// their series: a missed scrape writes a staleness marker.
	for _, series := range []string{"phonebook_process_unclean_exits_recorded", "phonebook_health_evaluation_timestamp_seconds", "phonebook_sip_shed_total"} {
		re := regexp.MustCompile(`(?m)series: '` + series + `\{[^']*'\n\s*values: '[^']*stale`)
		if !re.MatchString(string(tests)) {
			t.Errorf("no series of %s with a restart (stale) in the rule tests", series)
		}
	}
	// PhonebookCrashLoop reads the unclean exits, never the lifetime
	// restarts that a clean SIGTERM raises.
	ruleFile, _ := os.ReadFile(filepath.Join(dir, "phonebook.rules.yml"))
	if i := strings.Index(string(ruleFile), "alert: PhonebookCrashLoop"); i < 0 || strings.Contains(strings.SplitN(string(ruleFile)[i:], "- alert:", 2)[0], "restarts_lifetime") {
		t.Errorf("PhonebookCrashLoop missing or reading restarts_lifetime_total")
	}

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	raw, err := os.ReadFile("../contrib/grafana/phonebook-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	var exprs []string
	for i, p := range dash.Panels {
		for j, tg := range p.Targets {
			expr := strings.ReplaceAll(tg.Expr, "$instance", ".*") // Grafana's variable
			exprs = append(exprs, expr)
			fmt.Fprintf(&rules, "      - record: dashboard:panel%d_%d\n        expr: %q\n", i, j, expr)
		}
	}
	if len(exprs) < 10 {
		t.Fatalf("dashboard has %d expressions", len(exprs))
	}
	tmp := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	os.WriteFile(tmp, []byte(rules.String()), 0o644)
	run(t, nil, "promtool", "check", "rules", tmp)

	// Every phonebook_ metric named is exported by a running daemon, with
	// a directory fetched and a probe target (itself) answering, so that
	// every family has a measurement.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("First,Name,Callsign,Telephone\nAnna,Muster,HB9AAA,441001\n"))
	}))
	defer srv.Close()
	sipAddr := freeAddr(t)
	e := newFaultEnv(t, map[string]string{"sip.listen": sipAddr, "monitor.target": sipAddr, "monitor.interval": "5",
		"fetcher.server": srv.URL + "/phonebook.csv"})
	e.start()
	var text string
	waitFor(t, 20*time.Second, "a fetch, and two probes answered (jitter)", func() bool {
		text = call(t, e.sock, "phonebook.health", "metrics", "")["text"].(string)
		return strings.Contains(text, "phonebook_probe_jitter_seconds{") && strings.Contains(text, "phonebook_directory_last_success_age_seconds ")
	})
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+)`).FindAllStringSubmatch(text, -1) {
		exported[m[1]] = true
	}
	ruleText, _ := os.ReadFile(filepath.Join(dir, "phonebook.rules.yml"))
	named := regexp.MustCompile(`phonebook_[a-z0-9_]+`).FindAllString(strings.Join(exprs, " ")+string(ruleText), -1)
	sort.Strings(named)
	for _, n := range named {
		if !exported[n] {
			t.Errorf("%s is named in contrib/ but not exported", n)
		}
	}
}

// TestDebianInstallAndRemove: make install-debian into a staging root
// puts the daemon, the unit, the D-Bus policy and a configuration with
// Debian's directories in place; systemd-analyze verify passes on the
// unit; make uninstall-debian leaves only the configuration.
func TestDebianInstallAndRemove(t *testing.T) {
	root := t.TempDir()
	run(t, nil, "make", "-C", "..", "-s", "install-debian", "DESTDIR="+root)
	for path, mode := range map[string]fs.FileMode{
		"usr/sbin/phonebookd":                                 0o755,
		"lib/systemd/system/phonebookd.service":               0o644,
		"usr/share/dbus-1/system.d/org.aredn.Phonebook1.conf": 0o644,
		"etc/config/phonebook":                                0o644,
	} {
		st, err := os.Stat(filepath.Join(root, path))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %v", path, err, st.Mode().Perm(), mode)
		}
	}
	show := run(t, nil, bins.daemon, "uci", "-c", filepath.Join(root, "etc/config"), "-t", t.TempDir(), "show", "phonebook.main")
	for _, want := range []string{"state_dir='/var/lib/phonebook'", "run_dir='/run/phonebook'", "ubus='0'"} {
		if !strings.Contains(show, want) {
			t.Errorf("installed configuration lacks %s:\n%s", want, show)
		}
	}
	// The unit's directories are the configuration's.
	unit, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/phonebookd.service"))
	for _, want := range []string{"StateDirectory=phonebook", "RuntimeDirectory=phonebook", "Type=notify", "WatchdogSec=", "Restart=on-failure"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	// systemd-analyze verify checks that ExecStart= is executable: point it
	// at the installed binary inside the staging root.
	verify := filepath.Join(t.TempDir(), "phonebookd.service")
	os.WriteFile(verify, []byte(strings.ReplaceAll(string(unit), "ExecStart=/usr/sbin/phonebookd", "ExecStart="+filepath.Join(root, "usr/sbin/phonebookd"))), 0o644)
	if out, err := exec.Command("systemd-analyze", "verify", verify).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// A config already there is kept on reinstall.
	run(t, nil, bins.daemon, "uci", "-c", filepath.Join(root, "etc/config"), "-t", t.TempDir(), "set", "phonebook.sip.max_bindings=99")
	run(t, nil, bins.daemon, "uci", "-c", filepath.Join(root, "etc/config"), "-t", filepath.Join(root, "tmp-uci"), "commit", "phonebook")
	run(t, nil, "make", "-C", "..", "-s", "install-debian", "DESTDIR="+root)
	run(t, nil, "make", "-C", "..", "-s", "uninstall-debian", "DESTDIR="+root)
	var left []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			left = append(left, rel)
		}
		return nil
	})
	if fmt.Sprint(left) != "[etc/config/phonebook]" {
		t.Errorf("after uninstall: %v, want only etc/config/phonebook", left)
	}
}
