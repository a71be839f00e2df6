package tests

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/ubus"
)

// TestDaemonUbusAPI calls every method of the daemon through
// `phonebookd call` with its documented result, restarts a live worker,
// reloads changed settings without a restart, sees procd's watchdog
// re-armed, and restarts the broker under the running daemon.
func TestDaemonUbusAPI(t *testing.T) {
	sock := filepath.Join(shortDir(t), "ubus.sock")
	br := startBroker(t, sock)
	tr := newTree(t, sock, map[string]string{"health.health_check_interval": "1"})

	// procd's service object, as the daemon sees it on a router.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var arms []string
	procd := &ubus.Object{Path: "service", Methods: []ubus.Method{{Name: "watchdog",
		Params: []ubus.Param{{Name: "name", Kind: ubus.String}, {Name: "instance", Kind: ubus.String}},
		Handler: func(_ context.Context, r *ubus.Request) ([]ubus.Value, error) {
			n, _ := r.String("name")
			i, _ := r.String("instance")
			mu.Lock()
			arms = append(arms, n+"/"+i)
			mu.Unlock()
			return nil, nil
		}}}}
	pbus := ubus.NewBus(sock, nil)
	pbus.Register(ctx, procd)
	go pbus.Run(ctx)

	p := tr.start(t, bins.daemon)

	st := call(t, sock, "phonebook", "status", "")
	for _, k := range []string{"sip", "directory", "monitor", "config_errors", "software_health", "health_status"} {
		if _, ok := st[k]; !ok {
			t.Errorf("phonebook status lacks %s", k)
		}
	}
	h := call(t, sock, "phonebook.health", "status", "")
	for _, k := range []string{"uptime_seconds", "restart_count", "last_crash", "crash_count_24h", "threads", "memory", "file_descriptors", "error_rates"} {
		if _, ok := h[k]; !ok {
			t.Errorf("phonebook.health status lacks %s", k)
		}
	}
	for _, w := range []string{"main", "fetcher", "monitor", "safety"} {
		if get(h, "threads", w, "status") != "healthy" {
			t.Errorf("worker %s: %v", w, get(h, "threads", w))
		}
	}
	ck := call(t, sock, "phonebook.health", "check", "")
	if ck["status"] != "healthy" || num(ck["health_score"]) != 100 {
		t.Errorf("check: %v", ck)
	}
	if cr := call(t, sock, "phonebook.health", "crashes", ""); cr["crashes"] == nil {
		t.Errorf("crashes: %v", cr)
	}
	if r := call(t, sock, "phonebook.health", "clear_crashes", ""); r["cleared"] != true {
		t.Errorf("clear_crashes: %v", r)
	}
	list := call(t, sock, "phonebook.threads", "list", "")
	if get(list, "threads", "fetcher", "status") != "healthy" {
		t.Errorf("threads list: %v", list)
	}

	// restart on a live worker restarts it; an unknown name is rejected.
	if r := call(t, sock, "phonebook.threads", "restart", `{"name":"fetcher"}`); r["restarted"] != "fetcher" {
		t.Errorf("restart: %v", r)
	}
	waitFor(t, 5*time.Second, "fetcher restarted", func() bool {
		th := get(call(t, sock, "phonebook.threads", "list", ""), "threads", "fetcher")
		return num(get(th, "restart_count")) == 1 && get(th, "status") == "healthy"
	})
	for _, arg := range []string{`{"name":"nope"}`, `{}`, `{"name":5}`} {
		if _, rc := callRaw(sock, "phonebook.threads", "restart", arg); rc != 254 {
			t.Errorf("restart %s: exit %d, want 254 (invalid argument)", arg, rc)
		}
	}

	// reload applies changed UCI without a restart; a bad value is kept
	// out and reported.
	uci := func(args ...string) {
		if out, err := exec.Command(bins.daemon, append([]string{"uci", "-c", tr.confDir, "-t", tr.saveDir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("uci %v: %v %s", args, err, out)
		}
	}
	pid := num(get(h, "process", "pid"))
	uci("set", "phonebook.health.enabled=0")
	uci("set", "phonebook.health.crash_history_days=abc")
	uci("commit", "phonebook")
	if r := call(t, sock, "phonebook", "reload", ""); r["reloading"] != true {
		t.Errorf("reload: %v", r)
	}
	waitFor(t, 5*time.Second, "monitoring disabled by reload", func() bool {
		return call(t, sock, "phonebook.health", "check", "")["status"] == "disabled"
	})
	st = call(t, sock, "phonebook", "status", "")
	errs, _ := st["config_errors"].([]any)
	if len(errs) != 1 || !strings.Contains(errs[0].(string), "phonebook.health.crash_history_days") || !strings.Contains(errs[0].(string), `"abc"`) {
		t.Errorf("config_errors: %v", st["config_errors"])
	}
	if now := num(get(call(t, sock, "phonebook.health", "status", ""), "process", "pid")); now != 0 && now != pid {
		t.Errorf("reload restarted the daemon")
	}
	uci("set", "phonebook.health.enabled=1")
	uci("set", "phonebook.health.crash_history_days=7")
	uci("commit", "phonebook")
	p.cmd.Process.Signal(syscallHUP()) // what procd's reload does when ubus is away
	waitFor(t, 5*time.Second, "monitoring back on after SIGHUP", func() bool {
		return call(t, sock, "phonebook.health", "check", "")["status"] == "healthy"
	})

	// procd's watchdog is re-armed while the essential workers are healthy.
	waitFor(t, 10*time.Second, "watchdog re-armed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(arms) > 0
	})
	mu.Lock()
	if arms[0] != "phonebook/instance1" {
		t.Errorf("watchdog call %q", arms[0])
	}
	mu.Unlock()

	// The broker restarts under the daemon: its objects come back.
	br.cmd.Process.Kill()
	br.wait(5 * time.Second)
	startBroker(t, sock)
	waitFor(t, 10*time.Second, "objects back after the broker's restart", func() bool {
		out, rc := callRaw(sock, "phonebook.health", "check", "")
		return rc == 0 && strings.Contains(out, "status")
	})
	if now := num(get(call(t, sock, "phonebook.health", "status", ""), "process", "pid")); now != pid {
		t.Errorf("daemon restarted: pid %v, was %v", now, pid)
	}
	out, _ := exec.Command(bins.daemon, "list", "-s", sock, "phonebook*").Output()
	if string(out) != "phonebook\nphonebook.health\nphonebook.threads\n" {
		t.Errorf("objects after broker restart:\n%s", out)
	}
}

// TestFetchNow: the directory is fetched at start, and again at once on
// SIGUSR1 and on "phonebook reload", not after the hour's interval; the
// published XML follows the server.
func TestFetchNow(t *testing.T) {
	var mu sync.Mutex
	body := "First,Name,Callsign,Telephone\nAnna,Muster,HB9AAA,441001\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Write([]byte(body))
	}))
	defer srv.Close()
	sock := filepath.Join(shortDir(t), "ubus.sock")
	startBroker(t, sock)
	tr := newTree(t, sock, nil)
	exec.Command(bins.daemon, "uci", "-c", tr.confDir, "-t", tr.saveDir, "add_list", "phonebook.fetcher.server="+srv.URL+"/phonebook.csv").Run()
	exec.Command(bins.daemon, "uci", "-c", tr.confDir, "-t", tr.saveDir, "commit", "phonebook").Run()
	p := tr.start(t, bins.daemon)
	entries := func() float64 { return num(get(call(t, sock, "phonebook", "status", ""), "directory", "entries")) }
	waitFor(t, 10*time.Second, "first fetch", func() bool { return entries() == 1 })

	set := func(s string) { mu.Lock(); body = s; mu.Unlock() }
	set(body + "Bert,Beispiel,HB9BBB,441002\n")
	p.cmd.Process.Signal(syscallUSR1())
	waitFor(t, 10*time.Second, "fetch on SIGUSR1", func() bool { return entries() == 2 })

	set(body + "Bert,Beispiel,HB9BBB,441002\nCarl,Probe,HB9CCC,441003\n")
	call(t, sock, "phonebook", "reload", "")
	waitFor(t, 10*time.Second, "fetch on reload", func() bool { return entries() == 3 })
	xml, err := os.ReadFile(filepath.Join(tr.www, "arednstack", "phonebook_generic_direct.xml"))
	if err != nil || !strings.Contains(string(xml), "Carl Probe (HB9CCC)") {
		t.Errorf("published XML: %v\n%s", err, xml)
	}
}

// TestTimesComputedWhenAnswering: with a 60 s health interval, the
// documents' uptime_seconds and timestamp are those of the moment they
// are sent, not of the cached evaluation (before: uptime_seconds 0 two
// seconds after start).
func TestTimesComputedWhenAnswering(t *testing.T) {
	e := newFaultEnv(t, map[string]string{"health.health_check_interval": "60"})
	e.tr.start(t, bins.daemon)
	time.Sleep(2500 * time.Millisecond)
	h := call(t, e.sock, "phonebook.health", "status", "")
	asked := time.Now().Truncate(time.Second) // RFC 3339 in whole seconds
	ck := call(t, e.sock, "phonebook.health", "check", "")
	answered := time.Now()
	st := call(t, e.sock, "phonebook", "status", "")
	if num(h["uptime_seconds"]) < 2 || num(ck["uptime_seconds"]) < 2 || num(get(st, "software_health", "uptime_seconds")) < 2 {
		t.Errorf("uptime_seconds %v / %v / %v 2.5 s after start", h["uptime_seconds"], ck["uptime_seconds"], get(st, "software_health", "uptime_seconds"))
	}
	ts, err := time.Parse(time.RFC3339, ck["timestamp"].(string))
	// Between the question and the answer: not the cached evaluation's
	// time, 2.5 s older (no duration is timed against this machine).
	if err != nil || ts.Before(asked) || ts.After(answered) {
		t.Errorf("timestamp %v (%v), now %s", ck["timestamp"], err, time.Now().UTC().Format(time.RFC3339))
	}
}

// TestHistoryOverUbus: phonebook.health history answers the ring as
// equal-length columns, limit returns the newest points, and a negative
// limit is INVALID_ARGUMENT (the ubus CLI exits 254, as the real one).
func TestHistoryOverUbus(t *testing.T) {
	e := newFaultEnv(t, map[string]string{"health.history_step": "10"})
	e.start()
	h := call(t, e.sock, "phonebook.health", "history", "")
	n := len(h["time"].([]any))
	if n < 1 || num(h["step_seconds"]) != 10 || num(h["capacity"]) != 1440 {
		t.Fatalf("history: %d points, step %v, capacity %v", n, h["step_seconds"], h["capacity"])
	}
	for _, col := range []string{"status", "score", "rss_mb", "private_mb", "fds", "phones", "sip_errors_per_hour"} {
		if got := len(h[col].([]any)); got != n {
			t.Errorf("column %s has %d points, time has %d", col, got, n)
		}
	}
	if num(h["rss_mb"].([]any)[0]) <= 0 {
		t.Errorf("rss_mb %v: not a measurement", h["rss_mb"])
	}
	if l := call(t, e.sock, "phonebook.health", "history", `{"limit":1}`); len(l["time"].([]any)) != 1 {
		t.Errorf("limit 1: %v", l["time"])
	}
	if _, rc := callRaw(e.sock, "phonebook.health", "history", `{"limit":-1}`); rc != 254 {
		t.Errorf("limit -1: exit %d, want 254 (INVALID_ARGUMENT)", rc)
	}
}

// TestBusFlagRejected: a -dbus value other than auto, 1 or 0 stops the
// daemon at once with a message naming the flag.
func TestBusFlagRejected(t *testing.T) {
	sock := filepath.Join(shortDir(t), "ubus.sock")
	tr := newTree(t, sock, nil)
	p := start(t, bins.daemon, "-c", tr.confDir, "-t", tr.saveDir, "-s", sock, "-dbus", "maybe")
	if code := p.wait(10 * time.Second); code != 1 || !strings.Contains(p.out.String(), `-dbus "maybe": want auto, 1 or 0`) {
		t.Fatalf("exit %d:\n%s", code, p.out.String())
	}
}
