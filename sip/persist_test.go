package sip

import (
	"bufio"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/supervisor"
)

// serveLoaded runs a server that first loads the binding table in path
// and keeps it there, as the daemon does.
func serveLoaded(t *testing.T, path string, mod func(*config.SIP)) (*Server, string, int) {
	cfg := config.Defaults().SIP
	cfg.Listen, cfg.TCPMaxConnections = "127.0.0.1:0", 8
	if mod != nil {
		mod(&cfg)
	}
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), noAlerts{})
	n, _, err := s.LoadBindings(path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sup := supervisor.New(supervisor.Options{MaxRestarts: 1, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "main", Period: Period, Run: s.Run})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.KeepBindings(ctx, path, nil); close(done) }()
	t.Cleanup(func() { cancel(); sup.Wait(context.Background()); <-done })
	sup.Start(ctx)
	return s, s.Addr(), n
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestBindingsSurviveRestart: phones registered with one server are
// found by the next one started on the same file: a call reaches the
// UDP phone; the TCP phone, whose flow died with the old server, is
// reached over a new connection to its contact.
func TestBindingsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), BindingsFile)
	s1, addr1, n := serveLoaded(t, path, nil)
	if n != 0 {
		t.Fatalf("loaded %d from nothing", n)
	}
	udp := newPhone(t, "127.0.0.1")
	if r := udp.roundTrip(addr1, reg("701", "Contact: <sip:701@{me}>\r\n", "Expires: 600\r\n")); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("register: %q", r)
	}
	tcp := newTCPPhone(t, addr1, "702")
	waitUntil(t, "both phones saved", func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), `"701"`) && strings.Contains(string(b), `"702"`)
	})
	before := bindingOf(t, s1, "701")
	tcp.conn.Close()

	// A new server on the same run directory (the old one's state is
	// only the file: nothing else is shared).
	s2, addr2, n := serveLoaded(t, path, nil)
	if n != 2 {
		t.Fatalf("loaded %d bindings, want 2", n)
	}
	after := bindingOf(t, s2, "701")
	if !after.Expires.Equal(before.Expires.Truncate(time.Millisecond)) || after.Contact != before.Contact {
		t.Errorf("binding after restart %+v, before %+v", after, before)
	}
	caller := newPhone(t, "127.0.0.1")
	caller.send(addr2, invite("701", addr2, ""))
	if m := udp.recv(3 * time.Second); !strings.HasPrefix(m, "INVITE sip:701@"+udp.addr()) {
		t.Errorf("INVITE after restart reached the phone as %q; caller got %q", status(m), caller.recv(time.Second))
	}
	b := bindingOf(t, s2, "702")
	if b.Transport != "TCP" {
		t.Fatalf("702 after restart: %+v", b)
	}
	got := make(chan string, 1)
	go func() {
		c, err := tcp.ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		req := readSIP(bufio.NewReader(c))
		got <- req
		c.Write([]byte(answerTo(req, 200, "OK")))
		time.Sleep(500 * time.Millisecond)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s2.ProbeBinding(ctx, b); err != nil {
		t.Errorf("TCP phone after restart: %v", err)
	}
	if req := <-got; !strings.HasPrefix(req, "OPTIONS sip:702@") {
		t.Errorf("TCP phone after restart got %q", status(req))
	}
}

// savedFile writes a table of the given bindings.
func savedFile(t *testing.T, path string, bs ...savedBinding) {
	t.Helper()
	b, _ := json.Marshal(savedTable{Version: bindingsVersion, Bindings: bs})
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func saved(user string, port int, expires time.Time) savedBinding {
	return savedBinding{User: user, URI: "sip:" + user + "@127.0.0.1:" + itoa(port), Transport: "UDP", Source: "127.0.0.1:" + itoa(port),
		Expires: expires.UnixMilli(), Updated: expires.Add(-time.Hour).UnixMilli(), CallID: 1, CSeq: 1}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestLoadBindingsHonoursExpiryAndBounds: expired bindings are dropped,
// the rest keep their absolute expiry; no more than max_bindings users
// of max_contacts bindings are taken; impossible entries are dropped.
func TestLoadBindingsHonoursExpiryAndBounds(t *testing.T) {
	now := time.Now()
	path := filepath.Join(t.TempDir(), BindingsFile)
	live := now.Add(30 * time.Minute).Truncate(time.Millisecond)
	bad := saved("805", 5005, live)
	bad.URI = "sip:805@127.0.0.1:5005>\r\nX: y"
	far := saved("806", 5006, now.Add(48*time.Hour))
	savedFile(t, path, saved("801", 5001, live), saved("802", 5002, now.Add(-time.Second)),
		saved("803", 5003, live), saved("804", 5004, live), bad, far, saved("801", 5001, live))
	cfg := config.Defaults().SIP
	cfg.MaxBindings = 2
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), noAlerts{})
	n, dropped, err := s.LoadBindings(path, now)
	if err != nil || n != 2 || dropped != 5 {
		t.Fatalf("loaded %d, dropped %d, err %v; want 2 loaded, 5 dropped", n, dropped, err)
	}
	bs := s.Bindings()
	if len(bs) != 2 || bs[0].User != "801" || bs[1].User != "803" || !bs[0].Expires.Equal(live) || bs[0].Addr != "127.0.0.1:5001" {
		t.Errorf("bindings %+v", bs)
	}
	if c, ok := s.lookup("801", now); !ok || c.target != netip.MustParseAddrPort("127.0.0.1:5001") {
		t.Errorf("lookup 801: %+v %v", c, ok)
	}
}

// TestLoadBindingsCorruptSetAside: a file that is not a table, or is
// larger than any table the settings allow, is renamed *.bad and the
// server starts empty; never a crash.
func TestLoadBindingsCorruptSetAside(t *testing.T) {
	cfg := config.Defaults().SIP
	for name, data := range map[string][]byte{
		"garbage":  []byte("{\"version\":1,\"bindings\":[{\"user\":"),
		"version":  []byte(`{"version":7,"bindings":[]}`),
		"oversize": []byte(`{"version":1,"bindings":[` + strings.Repeat(`{"user":"1"},`, int(maxBindingsFile(cfg)/12)) + `{}]}`),
	} {
		path := filepath.Join(t.TempDir(), BindingsFile)
		os.WriteFile(path, data, 0o644)
		s := New(cfg, nil, health.NewRates(health.SystemClock{}), noAlerts{})
		n, _, err := s.LoadBindings(path, time.Now())
		if err == nil || n != 0 || len(s.Bindings()) != 0 {
			t.Errorf("%s: loaded %d, err %v", name, n, err)
		}
		if _, err := os.Stat(path + ".bad"); err != nil {
			t.Errorf("%s: not set aside: %v", name, err)
		}
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%s: still in place", name)
		}
	}
}

// TestBindingsFlushCoalescedAndIdle: a burst of registrations is written
// at most once per FlushEvery; an idle table is never written.
func TestBindingsFlushCoalescedAndIdle(t *testing.T) {
	path := filepath.Join(t.TempDir(), BindingsFile)
	clk := clock.NewFake(time.Now())
	s := New(config.Defaults().SIP, nil, health.NewRates(health.SystemClock{}), noAlerts{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.KeepBindings(ctx, path, clk); close(done) }()
	register := func(user string) {
		var m Msg
		raw := strings.ReplaceAll(reg(user, "Contact: <sip:"+user+"@127.0.0.1:5999>\r\n", "Expires: 600\r\n"), "{me}", "127.0.0.1:5999")
		if err := Parse(raw, &m); err != nil {
			t.Fatal(err)
		}
		if r := s.register(&m, netip.MustParseAddrPort("127.0.0.1:5999"), netip.Addr{}, "UDP", time.Now(), nil); r.code != 200 {
			t.Fatalf("register %s: %d", user, r.code)
		}
	}
	register("901")
	waitUntil(t, "the first write", func() bool { return s.persist.writes.Load() == 1 && clk.Timers() == 1 })
	for i := 0; i < 50; i++ {
		register("9" + itoa(10+i))
	}
	if w := s.persist.writes.Load(); w != 1 {
		t.Fatalf("%d writes within the second", w)
	}
	clk.Advance(FlushEvery)
	waitUntil(t, "the burst written", func() bool { return s.persist.writes.Load() == 2 && clk.Timers() == 1 })
	clk.Advance(FlushEvery) // nothing changed in that second
	waitUntil(t, "the flusher idle", func() bool { return clk.Timers() == 0 })
	for i := 0; i < 10; i++ {
		clk.Advance(time.Minute)
	}
	if w := s.persist.writes.Load(); w != 2 {
		t.Errorf("idle table written: %d writes", w)
	}
	b, _ := os.ReadFile(path)
	var tb savedTable
	if err := json.Unmarshal(b, &tb); err != nil || len(tb.Bindings) != 51 {
		t.Errorf("file holds %d bindings (%v), want 51", len(tb.Bindings), err)
	}
	register("901") // a refresh after idling: written at once
	waitUntil(t, "the refresh written", func() bool { return s.persist.writes.Load() == 3 })
	cancel()
	<-done
}

// FuzzParseBindings: whatever the file holds, loading never panics, and
// what is taken is within the bounds and made of valid bindings.
func FuzzParseBindings(f *testing.F) {
	now := time.UnixMilli(1_800_000_000_000)
	live := now.Add(time.Hour)
	good, _ := json.Marshal(savedTable{Version: 1, Bindings: []savedBinding{saved("1", 5060, live), saved("2", 5062, live)}})
	f.Add(good)
	tcp := saved("3", 5070, live)
	tcp.Transport, tcp.Local = "TCP", "10.0.0.1"
	tb, _ := json.Marshal(savedTable{Version: 1, Bindings: []savedBinding{tcp}})
	f.Add(tb)
	f.Add([]byte(`{"version":1,"bindings":[{"user":"x","uri":"sip:x@[::1]:5060","transport":"UDP","source":"[::1]:5060","expires_ms":1800000600000}]}`))
	f.Add([]byte(`{"version":1,"bindings":[{"user":"","uri":"tel:1","expires_ms":-1}]}`))
	f.Add([]byte(`{"version":1,"bindings":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("\x00\xff{"))
	f.Add([]byte(`{"version":1e309}`))
	cfg := config.Defaults().SIP
	cfg.MaxBindings, cfg.MaxContacts = 4, 2
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, _, err := parseBindings(data, cfg, now)
		if err != nil {
			return
		}
		users := map[string]int{}
		for _, e := range entries {
			users[e.user]++
			if len(e.user) == 0 || len(e.user) > maxAORLen || len(e.c.uri) > maxContactLen || !e.c.expires.After(now) {
				t.Fatalf("invalid entry taken: %+v", e)
			}
			if !e.c.target.IsValid() && e.c.host == "" {
				t.Fatalf("entry without a destination: %+v", e)
			}
		}
		if len(users) > cfg.MaxBindings {
			t.Fatalf("%d users", len(users))
		}
		for u, n := range users {
			if n > cfg.MaxContacts {
				t.Fatalf("%s: %d contacts", u, n)
			}
		}
	})
}

// TestBindingsFlusherStartsWhileChanging: registrations arriving while
// the flusher starts (a phone re-registering as the daemon comes up)
// never stop it. Before, a change between the flusher publishing its
// wake channel and looking at the dirty flag filled the channel, and the
// flusher's own send to it then blocked for good: nothing was written
// again and it did not see its context end (CI caught it once in
// TestBindingsFlushCoalescedAndIdle).
func TestBindingsFlusherStartsWhileChanging(t *testing.T) {
	dir := t.TempDir()
	for i := range 3000 {
		path := filepath.Join(dir, BindingsFile)
		s := New(config.Defaults().SIP, nil, health.NewRates(health.SystemClock{}), noAlerts{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.KeepBindings(ctx, path, clock.NewFake(time.Now())); close(done) }()
		stop := time.Now().Add(5 * time.Second) // a liveness bound, not a timing
		for n := 0; s.persist.writes.Load() == 0; n++ {
			s.changed()
			if n%1024 == 0 && time.Now().After(stop) {
				break
			}
		}
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the flusher is stuck (%d writes)", i, s.persist.writes.Load())
		}
		if s.persist.writes.Load() == 0 {
			t.Fatalf("round %d: nothing written", i)
		}
	}
}
