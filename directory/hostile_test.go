package directory

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/internal/poll"
	"github.com/aredn/phonebookd/supervisor"
)

// rawServer is a phonebook server on a raw listener, for what net/http
// will not send: a body cut off without a length, a chunked body without
// its last chunk, a reset. answer writes the response on conn (the
// request has been read); the connection is closed after it.
type rawServer struct {
	ln   net.Listener
	hits atomic.Int32
	wg   sync.WaitGroup
}

func newRawServer(t *testing.T, answer func(conn *net.TCPConn)) *rawServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.hits.Add(1)
			br := bufio.NewReader(c)
			for {
				l, err := br.ReadString('\n')
				if err != nil || l == "\r\n" {
					break
				}
			}
			answer(c.(*net.TCPConn))
			c.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *rawServer) URL() string { return "http://" + s.ln.Addr().String() + "/phonebook.csv" }

// alertLog records the conditions the fetcher raises.
type alertLog struct {
	mu  sync.Mutex
	set map[string]health.Args
}

func (a *alertLog) SetUnhealthy(cond *health.Descriptor, key string, args health.Args) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.set == nil {
		a.set = map[string]health.Args{}
	}
	a.set[cond.Instance(key)] = args
}

func (a *alertLog) SetHealthy(cond *health.Descriptor, key string) {
	a.mu.Lock()
	delete(a.set, cond.Instance(key))
	a.mu.Unlock()
}

func (a *alertLog) get(code string) (health.Args, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.set[code]
	return v, ok
}

// withGood600 is an env whose directory is the 600-row phonebook, loaded
// from its copy on flash as at a start.
func withGood600(t *testing.T, servers ...string) (*env, *alertLog) {
	e := newEnv(t, servers...)
	a := &alertLog{}
	e.f.SetAlerts(a)
	os.MkdirAll(e.main.StateDir, 0o755)
	if err := os.WriteFile(filepath.Join(e.main.StateDir, CSVFile), fixture(t, "phonebook-600.csv"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.f.LoadLastGood()
	golden(t, "phonebook-600.xml", e.xml(t))
	return e, a
}

// intact checks that the directory in memory, its XML and its copy on
// flash are still the 600-row phonebook.
func (e *env) intact(t *testing.T, what string) {
	t.Helper()
	want, _, _ := Parse(fixture(t, "phonebook-600.csv"))
	if got := len(e.f.entries); got != len(want) {
		t.Errorf("%s: %d entries in memory, want %d", what, got, len(want))
	}
	if x := e.xml(t); !bytes.Equal(x, YealinkXML(want)) {
		t.Errorf("%s: the published XML changed (%d bytes)", what, len(x))
	}
	csv, err := os.ReadFile(filepath.Join(e.main.StateDir, CSVFile))
	if err != nil || !bytes.Equal(csv, fixture(t, "phonebook-600.csv")) {
		t.Errorf("%s: the copy on flash changed (%d bytes, %v)", what, len(csv), err)
	}
}

// rows is the 600-row fixture's header and first n rows.
func rows(t *testing.T, n int) []byte {
	lines := strings.SplitAfter(string(fixture(t, "phonebook-600.csv")), "\n")
	return []byte(strings.Join(lines[:n+1], ""))
}

// TestTruncatedBodies: a body cut off is never published, whatever way it
// was cut: without a length mid-row, without a length at a row boundary
// (which ends cleanly, so the shrink rule holds it back), chunked without
// its last chunk, shorter than its Content-Length, and reset.
func TestTruncatedBodies(t *testing.T) {
	full := fixture(t, "phonebook-600.csv")
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nConnection: close\r\n"
	cases := []struct {
		name   string
		answer func(c *net.TCPConn)
	}{
		// 400 rows: a shrink the hold would let through.
		{"no length, cut mid-row", func(c *net.TCPConn) {
			body := rows(t, 400)
			c.Write([]byte(head + "\r\n"))
			c.Write(body[:len(body)-9])
		}},
		{"no length, cut at a row boundary after 12 rows", func(c *net.TCPConn) {
			c.Write([]byte(head + "\r\n"))
			c.Write(rows(t, 12))
		}},
		{"chunked without the last chunk", func(c *net.TCPConn) {
			body := rows(t, 400)
			fmt.Fprintf(c, "%sTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", head, len(body), body)
		}},
		{"chunked, cut inside a chunk", func(c *net.TCPConn) {
			fmt.Fprintf(c, "%sTransfer-Encoding: chunked\r\n\r\n%x\r\n%s", head, len(full), full[:len(full)*3/4])
		}},
		{"shorter than its Content-Length", func(c *net.TCPConn) {
			fmt.Fprintf(c, "%sContent-Length: %d\r\n\r\n%s", head, len(full), full[:len(full)-100])
		}},
		{"reset mid-row", func(c *net.TCPConn) {
			c.Write([]byte(head + "\r\n"))
			c.Write(full[:len(full)*3/4])
			time.Sleep(10 * time.Millisecond) // let the data leave before the RST
			c.SetLinger(0)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, tc.answer)
			e, _ := withGood600(t, srv.URL())
			e.f.Fetch(context.Background(), nil)
			if srv.hits.Load() != 1 {
				t.Fatalf("%d requests", srv.hits.Load())
			}
			e.intact(t, tc.name)
			st := e.f.Status().String()
			if tc.name != "no length, cut at a row boundary after 12 rows" && strings.Contains(st, `"held_entries":`) && !strings.Contains(st, `"held_entries":null`) {
				t.Errorf("held back as a shrink instead of refused as cut off: %s", st)
			}
		})
	}
}

// TestWholeBodyWithoutLength: a server that closes the connection after
// its last complete row (an HTTP/1.0 server) is still heard.
func TestWholeBodyWithoutLength(t *testing.T) {
	srv := newRawServer(t, func(c *net.TCPConn) {
		c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Type: text/csv\r\n\r\n"))
		c.Write(rows(t, 400))
	})
	e, _ := withGood600(t, srv.URL())
	if err := e.f.Fetch(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	want, _, _ := Parse(rows(t, 400))
	if !bytes.Equal(e.xml(t), YealinkXML(want)) {
		t.Error("a whole body without a length was not published")
	}
}

// TestHalfSizePhonebookHeld: a phonebook with less than half the entries
// is held back with a condition, the directory untouched, until a later
// fetch confirms it; a whole one in between ends the hold.
func TestHalfSizePhonebookHeld(t *testing.T) {
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", fmt.Sprintf(`"%d"`, len(body.Load().([]byte))))
		if r.Header.Get("If-None-Match") == w.Header().Get("ETag") {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write(body.Load().([]byte))
	}))
	defer srv.Close()
	e, alerts := withGood600(t, srv.URL)
	ctx := context.Background()
	half := rows(t, 250)

	body.Store(half)
	e.f.Fetch(ctx, nil)
	e.intact(t, "first half-size fetch")
	args, ok := alerts.get(health.DirectoryShrunk.Code)
	if !ok || args[health.ArgCount] == "" || args[health.ArgTotal] == "" || args[health.ArgPath] != srv.URL {
		t.Fatalf("no %s condition: %v", health.DirectoryShrunk.Code, args)
	}
	if st := e.f.Status().String(); !strings.Contains(st, `"held_entries":`+args[health.ArgCount]) {
		t.Errorf("status does not show the held phonebook: %s", st)
	}

	// The whole phonebook again: the hold ends, nothing was published.
	body.Store(fixture(t, "phonebook-600.csv"))
	e.f.Fetch(ctx, nil)
	e.intact(t, "whole phonebook after a hold")
	if _, ok := alerts.get(health.DirectoryShrunk.Code); ok {
		t.Error("condition still raised after a whole phonebook")
	}

	// Half again, twice: the second fetch confirms it.
	body.Store(half)
	e.f.Fetch(ctx, nil)
	e.intact(t, "half-size fetch after a whole one")
	if _, ok := alerts.get(health.DirectoryShrunk.Code); !ok {
		t.Fatal("no condition for the second hold")
	}
	e.f.Fetch(ctx, nil)
	want, _, _ := Parse(half)
	if !bytes.Equal(e.xml(t), YealinkXML(want)) {
		t.Error("a confirmed smaller phonebook was not published")
	}
	if csv, _ := os.ReadFile(filepath.Join(e.main.StateDir, CSVFile)); !bytes.Equal(csv, half) {
		t.Error("a confirmed smaller phonebook was not kept on flash")
	}
	if _, ok := alerts.get(health.DirectoryShrunk.Code); ok {
		t.Error("condition still raised after the confirmation")
	}
}

// TestNoncharactersFromServer: a server's phonebook with noncharacters,
// controls and bad UTF-8 gives an XML that parses.
func TestNoncharactersFromServer(t *testing.T) {
	csv := "First,Name,Callsign,Telephone\r\n" +
		"Anna\uFFFE,Muster\uFFFF,HB9AAA,441001\r\n" +
		"Beat\uFDD0,B\xe4r,HB9BBB,441002\r\n" +
		"Carl\U0001FFFE,Zo\u00eb\U0010FFFF,HB9CCC,441003\r\n" +
		"Dora\x0b,\xed\xa0\x80Y,HB9DDD,441004\r\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(csv)) }))
	defer srv.Close()
	e := newEnv(t, srv.URL)
	if err := e.f.Fetch(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := decodeDirectory(t, e.xml(t)); len(got) != 4 {
		t.Errorf("%d entries: %+v", len(got), got)
	}
}

// TestFailedPublishKeepsNoValidators: a directory that could not be
// written is written at the next fetch, although the server's CSV did not
// change (no 304 for a phonebook that was never published); meanwhile
// memory and flash keep the last good phonebook.
func TestFailedPublishKeepsNoValidators(t *testing.T) {
	var body atomic.Value
	body.Store(fixture(t, "phonebook-awkward.csv"))
	var notModified atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tag := fmt.Sprintf(`"%d"`, len(body.Load().([]byte)))
		if r.Header.Get("If-None-Match") == tag {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", tag)
		w.Write(body.Load().([]byte))
	}))
	defer srv.Close()
	e := newEnv(t, srv.URL)
	ctx := context.Background()
	if err := e.f.Fetch(ctx, nil); err != nil {
		t.Fatal(err)
	}
	golden(t, "phonebook-awkward.xml", e.xml(t))

	// The server's phonebook grows; the XML's place is a directory.
	body.Store(fixture(t, "phonebook-600.csv"))
	xmlPath := e.f.xmlPath()
	os.Remove(xmlPath)
	if err := os.Mkdir(xmlPath, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Fetch(ctx, nil); err == nil {
		t.Error("a failed write reported as success")
	}
	if st := e.f.Status().String(); !strings.Contains(st, "publish") {
		t.Errorf("status lacks the write error: %s", st)
	}
	awkward, _, _ := Parse(fixture(t, "phonebook-awkward.csv"))
	if len(e.f.entries) != len(awkward) {
		t.Errorf("memory holds %d entries, want the last good %d", len(e.f.entries), len(awkward))
	}
	if csv, _ := os.ReadFile(filepath.Join(e.main.StateDir, CSVFile)); !bytes.Equal(csv, fixture(t, "phonebook-awkward.csv")) {
		t.Error("the copy on flash changed although the directory was not published")
	}

	// Writable again: the next fetch publishes, without a 304.
	if err := os.Remove(xmlPath); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Fetch(ctx, nil); err != nil {
		t.Fatal(err)
	}
	golden(t, "phonebook-600.xml", e.xml(t))
	if csv, _ := os.ReadFile(filepath.Join(e.main.StateDir, CSVFile)); !bytes.Equal(csv, fixture(t, "phonebook-600.csv")) {
		t.Error("the copy on flash was not updated")
	}
	if notModified.Load() != 0 {
		t.Errorf("%d answers 304 for a phonebook never published", notModified.Load())
	}
	// Now the validators are kept: an unchanged CSV is not fetched again.
	if err := e.f.Fetch(ctx, nil); err != nil || notModified.Load() != 1 {
		t.Errorf("after a publish: err %v, %d answers 304", err, notModified.Load())
	}
}

// TestFailedFetchRetriedWithBackoff: a refused first fetch is retried
// after RetryMin, then after doubling waits, not after fetcher.interval;
// a success returns to the interval. Time is the fake clock's.
func TestFailedFetchRetriedWithBackoff(t *testing.T) {
	var refuse atomic.Bool
	refuse.Store(true)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if refuse.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Write(fixture(t, "phonebook-awkward.csv"))
	}))
	defer srv.Close()
	e := newEnv(t, srv.URL)
	fc := config.Defaults().Fetcher
	fc.Servers, fc.Timeout, fc.Interval = []string{srv.URL}, 5, 3600
	e.f.Configure(fc, e.main)

	clk := clock.NewFake(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	sup := supervisor.New(supervisor.Options{Clock: clk})
	sup.Add(supervisor.Spec{Name: "fetcher", Period: time.Hour, Run: e.f.Run})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); sup.Wait(context.Background()) }()
	sup.Start(ctx)

	// waitAt advances the clock by d once the worker waits, and expects
	// the request count then.
	at := time.Duration(0)
	step := func(d time.Duration, want int32) {
		t.Helper()
		poll.Until(t, "the fetcher waiting", func() bool { return clk.Timers() >= 1 })
		clk.Advance(d)
		at += d
		poll.Until(t, fmt.Sprintf("request %d at %v", want, at), func() bool { return hits.Load() >= want })
		if got := hits.Load(); got != want {
			t.Fatalf("at %v: %d requests, want %d", at, got, want)
		}
	}
	poll.Until(t, "the first fetch", func() bool { return hits.Load() == 1 })
	step(RetryMin-time.Second, 1) // not before RetryMin
	step(time.Second, 2)          // 30 s after the first failure
	step(2*RetryMin-time.Second, 2)
	step(time.Second, 3) // then 60 s
	refuse.Store(false)
	step(4*RetryMin, 4) // then 120 s: it succeeds
	poll.Until(t, "the directory published", func() bool { return e.f.Writes() == 2 })
	golden(t, "phonebook-awkward.xml", e.xml(t))
	step(RetryMin*8, 4) // after a success, the interval: nothing for a while
	step(time.Hour-8*RetryMin, 5)
}

func TestRetryDelay(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 30 * time.Second, 2: time.Minute, 3: 2 * time.Minute, 7: 32 * time.Minute, 8: time.Hour, 100: time.Hour} {
		if got := RetryDelay(n, time.Hour); got != want {
			t.Errorf("failure %d: %v, want %v", n, got, want)
		}
	}
}
