package metrics

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/ubus"
)

func sampleInput(t *testing.T) Input {
	t.Helper()
	dir := t.TempDir()
	h := health.NewSystem(health.Options{StateDir: dir, RunDir: dir}, config.Defaults().Health)
	h.SetUnhealthy(health.Overload, "", health.Args{health.ArgWhat: "registrations"})
	snap := h.Sample()
	now := snap.Time.Add(3 * time.Second)
	status := []ubus.Value{
		ubus.Tbl("sip", ubus.I32("registered_users", 12), ubus.I32("bindings", 14), ubus.I32("active_calls", 2),
			ubus.I32("max_bindings", 256), ubus.I64("registrations_total", 99), ubus.I64("malformed_total", 3),
			ubus.Tbl("shed", ubus.I64("registrations", 5), ubus.I64("transactions", 0))),
		ubus.Tbl("directory", ubus.I32("entries", 600), ubus.Str("last_success", now.Add(-time.Hour).UTC().Format(time.RFC3339)), ubus.Null("last_fetch")),
		ubus.Tbl("monitor", ubus.Arr("targets",
			ubus.Tbl("", ubus.Str("target", `odd"name\x`), ubus.Dbl("rtt_ms", 12.5), ubus.Dbl("jitter_ms", 1.5), ubus.Dbl("loss_pct", 25)),
			ubus.Tbl("", ubus.Str("target", "silent.local.mesh"), ubus.Null("rtt_ms"), ubus.Null("jitter_ms"), ubus.Dbl("loss_pct", 100))),
			ubus.Tbl("phones", ubus.I32("probed", 12), ubus.I32("not_answering", 1))),
	}
	return Input{Snap: snap, Status: status, Now: now, Refused: 7}
}

// promtool runs "promtool check metrics" (Debian package prometheus) on
// text; it fails the test when promtool is missing, so that a CI without
// it cannot pass silently.
func promtool(t *testing.T, text []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (Debian package prometheus; scripts/setup.sh installs it): %v", err)
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s\n--- input ---\n%s", err, out, text)
	}
}

// TestRenderPassesPromtool: every family has HELP and TYPE, names and
// units follow the conventions (promtool's linter), label values are
// escaped, and the figures are the snapshot's.
func TestRenderPassesPromtool(t *testing.T) {
	in := sampleInput(t)
	text := Render(in)
	promtool(t, text)
	for _, want := range []string{
		`phonebook_health_status{status="degraded"} 1`,
		fmt.Sprintf("phonebook_health_score %d\n", in.Snap.Score),
		`phonebook_health_condition_alerts{condition="overload",level="warning"} 1`,
		`phonebook_sip_registered_users 12`,
		`phonebook_sip_shed_total{cause="registrations"} 5`,
		`phonebook_directory_entries 600`,
		`phonebook_directory_last_success_age_seconds 3600`,
		`phonebook_probe_rtt_seconds{target="odd\"name\\x"} 0.0125`,
		`phonebook_probe_loss_ratio{target="silent.local.mesh"} 1`,
		`phonebook_metrics_scrapes_refused_total 7`,
		`phonebook_process_open_fds `,
		`phonebook_process_resident_memory_bytes `,
	} {
		if !bytes.Contains(text, []byte(want)) {
			t.Errorf("missing %q", want)
		}
	}
	if bytes.Contains(text, []byte(`phonebook_probe_rtt_seconds{target="silent.local.mesh"}`)) {
		t.Error("an unmeasured RTT was written instead of left out")
	}
	if bytes.Contains(text, []byte("phonebook_directory_last_fetch_age_seconds")) {
		t.Error("a null last_fetch became a figure")
	}
}

// TestUncleanExitsRecorded: phonebook_process_unclean_exits_recorded
// counts the recorded crashes that ended the process (merged counts
// included), not recovered worker panics; clean stops leave no record.
// PhonebookCrashLoop reads it (before: the rule read
// restarts_lifetime_total, which a clean SIGTERM raises).
func TestUncleanExitsRecorded(t *testing.T) {
	in := sampleInput(t)
	in.Snap.Crashes.Records = []crash.Record{
		{Kind: crash.KindUncleanExit, Count: 3},
		{Kind: crash.KindWorkerPanic, Count: 5},
		{Kind: crash.KindSignal, Count: 1},
		{Kind: crash.KindFatalError}, // an old record without a count is one event
	}
	in.Snap.Crashes.TotalRestarts = 40 // clean restarts included: not read
	text := Render(in)
	promtool(t, text)
	if want := "phonebook_process_unclean_exits_recorded 5\n"; !bytes.Contains(text, []byte(want)) {
		t.Errorf("missing %q in\n%s", want, text)
	}
}

// TestRenderDisabled: with monitoring off, the score is absent, not 0.
func TestRenderDisabled(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Defaults().Health
	cfg.Enabled = false
	h := health.NewSystem(health.Options{StateDir: dir, RunDir: dir}, cfg)
	text := Render(Input{Snap: h.Sample(), Now: time.Now()})
	promtool(t, text)
	if bytes.Contains(text, []byte("phonebook_health_score")) || !bytes.Contains(text, []byte(`phonebook_health_status{status="disabled"} 1`)) {
		t.Fatalf("disabled rendering wrong:\n%s", text)
	}
}

func get(t *testing.T, addr, req string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, req)
	b, err := io.ReadAll(bufio.NewReader(c))
	return string(b), err
}

// TestServerBounded: scrapes are answered; past max_connections a
// connection is closed at once and counted; an oversized request is cut
// off; other paths get 404.
func TestServerBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	s := &Server{Render: func(refused int64) []byte { return []byte(fmt.Sprintf("phonebook_x %d\n", refused)) }, Log: nil}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, 2) }()
	var resp string
	for i := 0; i < 100; i++ {
		var err error
		if resp, err = get(t, addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.HasPrefix(resp, "HTTP/1.1 200 OK") || !strings.Contains(resp, "phonebook_x 0") || !strings.Contains(resp, "version=0.0.4") {
		t.Fatalf("scrape: %q", resp)
	}
	if r, _ := get(t, addr, "GET / HTTP/1.1\r\n\r\n"); !strings.HasPrefix(r, "HTTP/1.1 404") {
		t.Fatalf("/: %q", r)
	}
	// Two slow clients hold both slots; the third is refused.
	var slow []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /metrics HTTP/1.1\r\n")
		slow = append(slow, c)
	}
	time.Sleep(100 * time.Millisecond)
	if r, _ := get(t, addr, "GET /metrics HTTP/1.1\r\n\r\n"); r != "" {
		t.Fatalf("third connection answered past the bound: %q", r)
	}
	if s.Refused() != 1 {
		t.Fatalf("refused %d, want 1", s.Refused())
	}
	for _, c := range slow {
		c.Close()
	}
	time.Sleep(100 * time.Millisecond)
	big := "GET /metrics HTTP/1.1\r\nX: " + strings.Repeat("a", 20000) + "\r\n\r\n"
	if r, _ := get(t, addr, big); r != "" {
		t.Fatalf("oversized request answered: %q", r[:min(len(r), 80)])
	}
	if r, _ := get(t, addr, "GET /metrics HTTP/1.1\r\n\r\n"); !strings.Contains(r, "phonebook_x 1") {
		t.Fatalf("after the bound: %q", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRender is one scrape's rendering (docs/BENCHMARKS.md).
func BenchmarkRender(b *testing.B) {
	t := &testing.T{}
	in := sampleInput(t)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(Render(in))
	}
	b.ReportMetric(float64(n), "bytes/doc")
}

// FuzzReadRequest: whatever a client sends, the request reader returns
// an error or a request, within its byte limit, never a panic.
func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"))
	f.Add([]byte("HEAD /metrics?x=1 HTTP/1.0\n\n"))
	f.Add([]byte("GET /metrics\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 9000) + "\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := &limited{r: bytes.NewReader(data), n: maxRequest}
		method, target, err := readRequest(bufio.NewReaderSize(l, 1024))
		if err == nil && (method == "" || strings.ContainsAny(target, " \r\n")) {
			t.Fatalf("accepted %q %q", method, target)
		}
		if l.n < 0 {
			t.Fatal("read past the limit")
		}
	})
}
