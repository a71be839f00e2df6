package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freeAddr is a loopback address with a port free at the moment.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// promtoolCheck runs promtool (Debian package prometheus) with args on
// stdin; the test fails without it.
func promtoolCheck(t *testing.T, stdin []byte, args ...string) {
	t.Helper()
	cmd := exec.Command("promtool", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if args[1] == "metrics" && len(bytes.TrimSpace(out)) > 0 { // lint findings
		t.Fatalf("promtool check metrics:\n%s", out)
	}
}

// allowedLabels are the labels the daemon may use: all fixed sets or the
// configured target list, none fed by phones or the network.
var allowedLabels = map[string]bool{"status": true, "condition": true, "level": true, "worker": true, "source": true, "cause": true, "target": true}

func checkLabels(t *testing.T, text []byte) {
	t.Helper()
	for _, m := range regexp.MustCompile(`[{,]([a-z_]+)="`).FindAllSubmatch(text, -1) {
		if !allowedLabels[string(m[1])] {
			t.Errorf("label %q is not one of the bounded ones", m[1])
		}
	}
}

// TestMetricsScrapedByPrometheus: the daemon's metrics.listen output and
// the AREDN collector's (the text of ubus call phonebook.health metrics)
// pass promtool check metrics; a real Prometheus scrapes the daemon and
// a query returns the health score the daemon reports.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	addr := freeAddr(t)
	e := newFaultEnv(t, map[string]string{"metrics.listen": addr, "monitor.target": "127.0.0.1:9"})
	e.start()
	var body []byte
	waitFor(t, 10*time.Second, "the metrics listener", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && resp.Header.Get("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
	})
	promtoolCheck(t, body, "check", "metrics")
	checkLabels(t, body)
	for _, fam := range []string{"phonebook_health_score", "phonebook_process_resident_memory_bytes", "phonebook_worker_healthy{worker=\"main\"}",
		"phonebook_sip_registered_users", "phonebook_directory_entries", "phonebook_process_restarts_lifetime_total", "phonebook_errors_per_hour{source=\"sip\"}"} {
		if !bytes.Contains(body, []byte(fam)) {
			t.Errorf("metrics lack %s", fam)
		}
	}

	// The AREDN node's collector prints the text of this call.
	collected := call(t, e.sock, "phonebook.health", "metrics", "")["text"].(string)
	promtoolCheck(t, []byte(collected), "check", "metrics")
	checkLabels(t, []byte(collected))

	// A real Prometheus scrapes the daemon.
	dir := t.TempDir()
	promAddr := freeAddr(t)
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: phonebook\n    static_configs:\n      - targets: ['%s']\n", addr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, "prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	query := func() (float64, bool) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(`phonebook_health_score{job="phonebook"}`))
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		var r struct {
			Status string
			Data   struct {
				Result []struct {
					Value [2]any
				}
			}
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) != 1 {
			return 0, false
		}
		v, err := strconv.ParseFloat(r.Data.Result[0].Value[1].(string), 64)
		return v, err == nil
	}
	score := func() float64 { return num(call(t, e.sock, "phonebook.health", "check", "")["health_score"]) }
	waitFor(t, 60*time.Second, "Prometheus to return phonebook_health_score", func() bool { _, ok := query(); return ok })
	// The score may move (a probe target that never answers): compare at
	// a moment when the daemon's score held for the scrape interval.
	var got, want float64
	waitFor(t, 30*time.Second, "Prometheus's score to equal the daemon's", func() bool {
		before := score()
		time.Sleep(2500 * time.Millisecond) // more than two scrapes
		var ok bool
		got, ok = query()
		want = score()
		return ok && before == want && got == want
	})
	t.Logf("Prometheus query phonebook_health_score = %v (daemon: %v)", got, want)
}

// TestMetricsListenerSlowClientsAndFlood: 300 clients that connect and
// send nothing, then a flood of 2,000 scrapes: the listener holds at most
// max_connections at once (max_connections_per_source from one address),
// refuses and counts the rest, frees a slot on the 2 s request timeout,
// and the daemon's goroutines, RSS and log stay bounded; the refusals
// raise metrics_refused and nothing else.
func TestMetricsListenerSlowClientsAndFlood(t *testing.T) {
	addr := freeAddr(t)
	e := newFaultEnv(t, map[string]string{"metrics.listen": addr, "metrics.max_connections": "4", "health.health_check_interval": "1"})
	p := e.start()
	pid := p.cmd.Process.Pid
	waitFor(t, 10*time.Second, "the metrics listener", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	time.Sleep(time.Second)
	rssBefore, logBefore := rssKB(t, pid), len(p.out.String())
	goBefore := num(get(e.health(), "memory", "goroutines"))
	peak := rssWatch(t, pid)

	var slow []net.Conn
	for i := 0; i < 300; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("slow client %d: %v", i, err)
		}
		slow = append(slow, c)
	}
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()
	scrape := func() bool {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		b, _ := io.ReadAll(c)
		return bytes.HasPrefix(b, []byte("HTTP/1.1 200 OK"))
	}
	answered := 0
	for i := 0; i < 2000; i++ {
		if scrape() {
			answered++
		}
	}
	goDuring := num(get(e.health(), "memory", "goroutines"))
	t.Logf("2,000 scrapes with 300 idle clients: %d answered; goroutines %v -> %v", answered, goBefore, goDuring)
	if goDuring > goBefore+10 {
		t.Errorf("goroutines %v -> %v: the listener is not bounded", goBefore, goDuring)
	}
	// The idle clients time out after 2 s: the listener serves again.
	waitFor(t, 15*time.Second, "a scrape answered after the idle clients' timeout", scrape)
	resp, _ := http.Get("http://" + addr + "/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^phonebook_metrics_scrapes_refused_total (\d+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatal("no refused counter")
	}
	refused, _ := strconv.Atoi(string(m[1]))
	if refused < 300-4 {
		t.Errorf("refused %d connections, want at least the idle clients past the bound (296)", refused)
	}
	pk, grew := peak(), len(p.out.String())-logBefore
	t.Logf("RSS %d KB before, peak %d KB; refused %d; log grew %d bytes", rssBefore, pk, refused, grew)
	if pk > rssBefore+8*1024 {
		t.Errorf("RSS %d KB before, peak %d KB", rssBefore, pk)
	}
	if grew > 2048 {
		t.Errorf("log grew %d bytes", grew)
	}
	// The refusals show over ubus (metrics_refused), and nothing else
	// suffers.
	ck := call(t, e.sock, "phonebook.health", "check", "")
	var codes []string
	for _, a := range ck["alerts"].([]any) {
		codes = append(codes, a.(map[string]any)["code"].(string))
	}
	if len(codes) != 1 || codes[0] != "metrics_refused" {
		t.Errorf("status %v, alerts %v after the flood: want metrics_refused alone", ck["status"], codes)
	}
	if p.exited() {
		t.Fatal("daemon exited")
	}
}
