package tests

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hostileServer is a phonebook server on a raw listener whose answer the
// test changes between fetches.
type hostileServer struct {
	ln     net.Listener
	answer atomic.Value // func(net.Conn)
	hits   atomic.Int32
	wg     sync.WaitGroup
}

func newHostileServer(t *testing.T) *hostileServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &hostileServer{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			for {
				l, err := br.ReadString('\n')
				if err != nil || l == "\r\n" {
					break
				}
			}
			s.answer.Load().(func(net.Conn))(c)
			c.Close()
			s.hits.Add(1)
		}
	})
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *hostileServer) serve(head string, body []byte) {
	s.answer.Store(func(c net.Conn) { c.Write([]byte(head)); c.Write(body) })
}

func withLength(body []byte) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n", len(body))
}

const noLength = "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nConnection: close\r\n\r\n"

// TestDaemonDirectoryHostileServer: the daemon's directory, its XML and
// its copy on flash survive a body cut off without a length (mid-row and
// at a row boundary), and a half-size phonebook is held back with an
// alert until a second fetch confirms it; noncharacters never reach the
// XML.
func TestDaemonDirectoryHostileServer(t *testing.T) {
	full, err := os.ReadFile("../../shared/fixtures/phonebook-600.csv")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(full), "\n")
	firstRows := func(n int) []byte { return []byte(strings.Join(lines[:n+1], "")) }

	srv := newHostileServer(t)
	srv.serve(withLength(full), full)
	e := newFaultEnv(t, map[string]string{"fetcher.server": "http://" + srv.ln.Addr().String() + "/phonebook.csv", "health.health_check_interval": "1"})
	p := e.start()
	xmlPath := filepath.Join(e.tr.www, "arednstack", "phonebook_generic_direct.xml")
	csvPath := filepath.Join(e.tr.stateDir, "phonebook.csv")
	dir := func() map[string]any {
		return get(call(t, e.sock, "phonebook", "status", ""), "directory").(map[string]any)
	}
	waitFor(t, 15*time.Second, "the first fetch published", func() bool { return num(dir()["files_written"]) == 2 })
	entries := num(dir()["entries"])
	goodXML, _ := os.ReadFile(xmlPath)
	if entries < 500 || len(goodXML) == 0 {
		t.Fatalf("after the first fetch: %v entries, %d bytes of XML", entries, len(goodXML))
	}
	intact := func(what string) {
		t.Helper()
		if n := num(dir()["entries"]); n != entries {
			t.Errorf("%s: %v entries, want %v", what, n, entries)
		}
		if x, _ := os.ReadFile(xmlPath); !bytes.Equal(x, goodXML) {
			t.Errorf("%s: the XML changed (%d bytes)", what, len(x))
		}
		if c, _ := os.ReadFile(csvPath); !bytes.Equal(c, full) {
			t.Errorf("%s: the copy on flash changed (%d bytes)", what, len(c))
		}
	}
	// fetch has the daemon fetch now and waits until its outcome shows.
	fetch := func(outcome string, done func(map[string]any) bool) {
		t.Helper()
		n := srv.hits.Load()
		call(t, e.sock, "phonebook", "reload", "")
		waitFor(t, 15*time.Second, "a fetch", func() bool { return srv.hits.Load() > n })
		waitFor(t, 15*time.Second, outcome, func() bool { return done(dir()) })
	}

	half := firstRows(300)
	srv.serve(noLength, half[:len(half)-7]) // cut off mid-row, no length
	fetch("the error in the status", func(d map[string]any) bool {
		le, _ := d["last_error"].(string)
		return strings.Contains(le, "mid-row")
	})
	intact("a body cut off mid-row")

	srv.serve(noLength, firstRows(12)) // cut off at a row boundary, no length
	fetch("the phonebook held back", func(d map[string]any) bool { return d["held_entries"] != nil })
	intact("a body cut off after 12 rows")
	shrunk := func() bool {
		for _, a := range call(t, e.sock, "phonebook.health", "check", "")["alerts"].([]any) {
			if get(a, "code") == "directory_shrunk" {
				return true
			}
		}
		return false
	}
	waitFor(t, 15*time.Second, "the directory_shrunk alert", shrunk)

	// The whole phonebook, with noncharacters in some names: the hold
	// ends and the XML parses.
	odd := bytes.Replace(full, []byte("Weber,"), []byte("We\uFFFEber\uFDD0\U0001FFFF,"), -1)
	srv.serve(withLength(odd), odd)
	fetch("the hold ended", func(d map[string]any) bool { return d["held_entries"] == nil })
	waitFor(t, 15*time.Second, "the alert cleared", func() bool { return !shrunk() })
	x, _ := os.ReadFile(xmlPath)
	d := xml.NewDecoder(bytes.NewReader(x))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the published XML does not parse: %v", err)
		}
	}
	if bytes.Contains(x, []byte("\uFFFE")) || bytes.Contains(x, []byte("\uFDD0")) || !bytes.Contains(x, []byte("Weber")) {
		t.Error("noncharacters in the XML, or the names lost")
	}
	if out := p.out.String(); !strings.Contains(out, "held back") {
		t.Errorf("the log does not say a phonebook was held back:\n%.2000s", out)
	}
}

// TestDaemonURLPasswordRedacted: a reporter.url or fetcher.server with
// user:password@ is rejected, the default stays in force, and its
// password appears neither in the log nor in the status documents.
func TestDaemonURLPasswordRedacted(t *testing.T) {
	e := newFaultEnv(t, map[string]string{
		"reporter.url":   "http://agent:s3cret-pw@127.0.0.1:9/agent",
		"fetcher.server": "http://reader:s3cret-pw@127.0.0.1:9/phonebook.csv",
	})
	p := e.start()
	status := func() string {
		out, _ := callRaw(e.sock, "phonebook", "status", "")
		return out
	}
	waitFor(t, 15*time.Second, "the rejected URLs in config_errors", func() bool {
		s := status()
		return strings.Contains(s, "phonebook.reporter.url: invalid value") && strings.Contains(s, "phonebook.fetcher.server: invalid value")
	})
	// Rejected at start, the URLs are not in force (the defaults are:
	// no collector, no server), so nothing is sent with them.
	time.Sleep(2 * time.Second)
	if out := p.out.String(); strings.Contains(out, "not delivered") {
		t.Errorf("a report was attempted with a rejected reporter.url:\n%.2000s", out)
	}
	docs := map[string]string{"phonebook status": status(), "log": p.out.String()}
	for _, m := range []string{"status", "check"} {
		out, _ := callRaw(e.sock, "phonebook.health", m, "")
		docs["phonebook.health "+m] = out
	}
	for name, doc := range docs {
		if strings.Contains(doc, "s3cret-pw") {
			t.Errorf("%s shows the password:\n%.3000s", name, doc)
		}
	}
	if !strings.Contains(docs["phonebook status"], "***@127.0.0.1:9") {
		t.Errorf("config_errors does not name the redacted URL: %s", docs["phonebook status"])
	}
}
