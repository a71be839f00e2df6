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
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/directory"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/monitor"
	"github.com/aredn/phonebookd/sip"
)

func sampleInput(t *testing.T) Input {
	t.Helper()
	dir := t.TempDir()
	h := health.NewSystem(health.Options{StateDir: dir, RunDir: dir}, config.Defaults().Health)
	h.SetUnhealthy(health.Overload, "", health.Args{health.ArgWhat: "registrations"})
	snap := h.Sample()
	now := snap.Time.Add(3 * time.Second)
	rtt, jitter := 12.5, 1.5
	status := &Services{
		SIP: sip.Status{RegisteredUsers: 12, Bindings: 14, ActiveCalls: 2, MaxBindings: 256, RegistrationsTotal: 99, MalformedTotal: 3,
			Shed: sip.ShedCounts{Registrations: 5}},
		Directory: directory.Status{Entries: 600, LastSuccess: health.Time{Time: now.Add(-time.Hour)}},
		Monitor: monitor.Status{Targets: []monitor.TargetStatus{
			{Target: `odd"name\x`, RTTMS: &rtt, JitterMS: &jitter, LossPct: 25},
			{Target: "silent.local.mesh", LossPct: 100}},
			Phones: monitor.PhonesStatus{Probed: 12, NotAnswering: 1}},
	}
	return Input{Snap: snap, Services: status, Now: now, Refused: 7, Listener: &Stats{PerSource: 1, Busy: 2, Evicted: 4, TimedOut: 3}}
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
		`phonebook_metrics_connections_shed_total{cause="evicted"} 4`,
		`phonebook_metrics_connections_shed_total{cause="request_timeout"} 3`,
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

// TestServerBounded: scrapes are answered; past max_connections (and
// max_connections_per_source) a connection is closed at once and counted; an oversized request is cut
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
	go func() {
		done <- s.Serve(ctx, ln, Limits{MaxConnections: 2, PerSource: 2, RequestTimeout: 5 * time.Second})
	}()
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

// alerts records the conditions raised, as the health system would.
type alerts struct {
	mu     sync.Mutex
	raised map[string]health.Args
	ups    int
}

func (a *alerts) SetUnhealthy(cond *health.Descriptor, key string, args health.Args) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.raised == nil {
		a.raised = map[string]health.Args{}
	}
	a.raised[cond.Instance(key)] = args
	a.ups++
}

func (a *alerts) SetHealthy(cond *health.Descriptor, key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.raised, cond.Instance(key))
}

func (a *alerts) get(code string) (health.Args, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	args, ok := a.raised[code]
	return args, ok
}

// serveTest runs a server on a free loopback port with lim, on the fake
// clock clk.
func serveTest(t *testing.T, clk clock.Clock, lim Limits) (*Server, *alerts, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al := &alerts{}
	s := &Server{Render: func(refused int64) []byte { return []byte(fmt.Sprintf("phonebook_x %d\n", refused)) }, Clock: clk, Alerts: al}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, lim) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s, al, ln.Addr().String()
}

// dialFrom connects to addr from the loopback address src (127.0.0.0/8
// is all local on Linux).
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return d.Dial("tcp", addr)
}

// scrapeFrom is one legitimate scrape from src: true when answered 200.
func scrapeFrom(src, addr string) bool {
	c, err := dialFrom(src, addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second)) // a bound on a hung test, not a measurement
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	b, _ := io.ReadAll(c)
	return strings.HasPrefix(string(b), "HTTP/1.1 200 OK")
}

// waitUntil polls cond (the server's state, reached through real
// sockets) within a bound that only ends a hung test.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestSlowClientsDoNotStarveScrapes: 16 slow clients from 127.0.0.2 to
// 127.0.0.5 (four each, sending a byte now and then, never a whole
// request) against max_connections 4 and max_connections_per_source 2:
// each of 30 scrapes from 127.0.0.1 is answered, the slow clients past
// their cap are refused and those holding slots are cut off for the
// scrapes, every refusal counted by cause, and "metrics_refused" raised,
// then cleared a window after the last. Before: one shared pool, and 4
// such clients refused 22 of 30 scrapes, with health staying healthy.
func TestSlowClientsDoNotStarveScrapes(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	s, al, addr := serveTest(t, clk, Limits{MaxConnections: 4, PerSource: 2, RequestTimeout: 2 * time.Second})
	var slow []net.Conn
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()
	for i := 0; i < 16; i++ {
		c, err := dialFrom(fmt.Sprintf("127.0.0.%d", 2+i%4), addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "G")
		slow = append(slow, c)
	}
	// Every slow client is either holding a slot or refused.
	waitUntil(t, "the slow clients accepted", func() bool { st := s.Stats(); return int64(st.Open)+st.Refused() == 16 })
	st := s.Stats()
	if st.Open != 4 || st.PerSource+st.Busy+st.Evicted != 12 {
		t.Fatalf("after the slow clients: %+v, want 4 open and 12 turned away", st)
	}
	answered := 0
	for i := 0; i < 30; i++ {
		for _, c := range slow { // the slow clients keep sending
			io.WriteString(c, "E")
		}
		if scrapeFrom("127.0.0.1", addr) {
			answered++
		}
	}
	st = s.Stats()
	t.Logf("30 scrapes with 16 slow clients: %d answered; %+v", answered, st)
	if answered != 30 {
		t.Fatalf("%d of 30 scrapes answered", answered)
	}
	if st.Evicted < 1 || st.Served != 30 || st.Open > 4 {
		t.Fatalf("stats %+v: want slow clients cut off for the scrapes, 30 served, at most 4 open", st)
	}
	args, ok := al.get(health.MetricsRefused.Code)
	if !ok || args[health.ArgCount] == "" || !strings.HasPrefix(args[health.ArgWhat], "127.0.0.") {
		t.Fatalf("metrics_refused not raised: %v %v", ok, args)
	}
	// The condition's text is the registry's.
	if c := health.ConditionOf(health.MetricsRefused, "", args); !strings.Contains(c.Message, "turned") {
		t.Fatalf("condition text %q", c.Message)
	}
	// A window passes with refusals in it: raised again; one without:
	// cleared.
	clk.Advance(RefusedWindow)
	if _, ok := al.get(health.MetricsRefused.Code); !ok {
		t.Fatal("cleared while refusals came in its window")
	}
	clk.Advance(RefusedWindow)
	if _, ok := al.get(health.MetricsRefused.Code); ok {
		t.Fatal("still raised a window after the last refusal")
	}
}

// TestScraperKeepsItsSlot: a source whose connections were cut off
// (strikes) cannot take the slot of a scraper still sending its request,
// while the scraper, with none, takes theirs.
func TestScraperKeepsItsSlot(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	s, _, addr := serveTest(t, clk, Limits{MaxConnections: 2, PerSource: 2, RequestTimeout: 2 * time.Second})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	hold := func(src string) net.Conn {
		t.Helper()
		c, err := dialFrom(src, addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /metrics HTTP/1.1\r\n")
		conns = append(conns, c)
		return c
	}
	accepted := func(n int64) func() bool {
		return func() bool { st := s.Stats(); return int64(st.Open)+st.Refused() >= n }
	}
	hold("127.0.0.2")
	hold("127.0.0.2") // .2 holds both slots
	waitUntil(t, "two connections held", accepted(2))
	hold("127.0.0.3") // holds none: takes one of .2's
	waitUntil(t, ".3 admitted", accepted(3))
	scraper := hold("127.0.0.1") // mid-request: takes .2's other slot (.2 has a strike)
	waitUntil(t, "the scraper admitted", accepted(4))
	if st := s.Stats(); st.Evicted != 2 || st.Open != 2 {
		t.Fatalf("stats %+v: want .2 cut off twice, .3 and the scraper holding", st)
	}
	hold("127.0.0.2") // struck twice: may take no one's slot
	waitUntil(t, ".2 refused", accepted(5))
	if st := s.Stats(); st.Busy != 1 || st.Evicted != 2 {
		t.Fatalf("stats %+v: want .2 refused, the scraper kept", st)
	}
	io.WriteString(scraper, "Host: x\r\n\r\n")
	b, _ := io.ReadAll(scraper)
	if !strings.HasPrefix(string(b), "HTTP/1.1 200 OK") {
		t.Fatalf("the scraper's request: %q", b)
	}
}

// TestRequestDeadline: a client that never finishes its request is cut
// off when request_timeout passes on the server's clock, counted, and
// its slot serves the next scrape.
func TestRequestDeadline(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	s, _, addr := serveTest(t, clk, Limits{MaxConnections: 1, PerSource: 1, RequestTimeout: 2 * time.Second})
	c, err := dialFrom("127.0.0.2", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /metrics HTTP/1.1\r\n")
	waitUntil(t, "the request deadline armed", func() bool { return clk.Timers() == 1 })
	if s.Stats().Open != 1 {
		t.Fatalf("stats %+v, want the slow client holding the slot", s.Stats())
	}
	clk.Advance(time.Second)
	if s.Stats().TimedOut != 0 {
		t.Fatal("cut off before its deadline")
	}
	clk.Advance(time.Second)
	waitUntil(t, "the slow client cut off", func() bool { return s.Stats().TimedOut == 1 && s.Stats().Open == 0 })
	b, _ := io.ReadAll(c)
	if len(b) != 0 {
		t.Fatalf("a timed-out request was answered: %q", b)
	}
	if !scrapeFrom("127.0.0.2", addr) {
		t.Fatal("the freed slot does not serve")
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
