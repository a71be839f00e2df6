package httpc

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHTTPSRefused(t *testing.T) {
	_, err := Do(context.Background(), Request{Method: "GET", URL: "https://example.invalid/x.csv"}, time.Second, 1024)
	if err == nil || !strings.Contains(err.Error(), "only http://") {
		t.Errorf("https: %v", err)
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 304 Not Modified\r\nETag: \"x\"\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\n\r\nFirst,Name,Callsign,Telephone\r\nA,B,C,1\r\n"))
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	f.Add([]byte("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, err := ReadResponse(bufio.NewReader(bytes.NewReader(data)), 1024)
		if err == nil && int64(len(resp.Body)) > 1024 {
			t.Fatal("cap exceeded")
		}
		if err == nil && resp.Status < 200 && resp.Status != 101 {
			t.Fatalf("interim status %d returned as the answer", resp.Status)
		}
		st, err2 := ReadStatus(bufio.NewReader(bytes.NewReader(data)), 1024)
		if err == nil && (err2 != nil || st.Status != resp.Status) {
			t.Fatalf("ReadStatus %v, %v where ReadResponse gave %d", st, err2, resp.Status)
		}
	})
}

func read(t *testing.T, raw string, max int64) (*Response, error) {
	t.Helper()
	return ReadResponse(bufio.NewReader(strings.NewReader(raw)), max)
}

// TestInterimResponsesSkipped: 100 Continue, 102 Processing and 103
// Early Hints come before the final answer and are not it.
func TestInterimResponsesSkipped(t *testing.T) {
	raw := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nETag: \"v\"\r\nContent-Length: 2\r\n\r\nok"
	resp, err := read(t, raw, 1024)
	if err != nil || resp.Status != 200 || string(resp.Body) != "ok" || resp.ETag != `"v"` {
		t.Fatalf("%+v, %v", resp, err)
	}
	resp, err = ReadStatus(bufio.NewReader(strings.NewReader(raw)), 1024)
	if err != nil || resp.Status != 200 {
		t.Fatalf("ReadStatus: %+v, %v", resp, err)
	}
	// Bounded: endless interim responses are an error, not a loop.
	if _, err := read(t, strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 100), 1024); err == nil {
		t.Error("endless interim responses accepted")
	}
}

// TestDelimited: a body counts as whole only when its end was announced
// and reached.
func TestDelimited(t *testing.T) {
	for _, tc := range []struct {
		raw       string
		delimited bool
		fail      bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", true, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", false, true},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", true, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", false, true},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc", false, true},
		{"HTTP/1.1 200 OK\r\n\r\nabc\n", false, false},
	} {
		resp, err := read(t, tc.raw, 1024)
		if (err != nil) != tc.fail || (err == nil && resp.Delimited != tc.delimited) {
			t.Errorf("%q: %+v, %v", tc.raw, resp, err)
		}
	}
}

// TestLargeBodyDiscarded: with DiscardBody the status decides; a 2xx
// with a body over the cap, cut off, or stalled is still a 2xx.
func TestLargeBodyDiscarded(t *testing.T) {
	big := strings.Repeat("x", 200<<10)
	for _, raw := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big,
		"HTTP/1.1 202 Accepted\r\n\r\n" + big,
		"HTTP/1.1 201 Created\r\nContent-Length: 9999999\r\n\r\nshort",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
	} {
		resp, err := ReadStatus(bufio.NewReader(strings.NewReader(raw)), 64<<10)
		if err != nil || resp.Status/100 != 2 || resp.Body != nil {
			t.Errorf("%.40q: %+v, %v", raw, resp, err)
		}
	}
}

// TestPOSTLargeAnswer: over a real connection, a collector answering
// 200 with a body over the cap is an answer 200 when the body is
// discarded.
func TestPOSTLargeAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
		}
		io.ReadFull(br, make([]byte, 2))
		c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n"))
		c.Write(bytes.Repeat([]byte("y"), 300000))
	}()
	resp, err := Do(context.Background(), Request{Method: "POST", URL: "http://" + ln.Addr().String() + "/r", ContentType: "application/json", Body: []byte("{}"), DiscardBody: true}, 5*time.Second, 64<<10)
	if err != nil || resp.Status != 200 {
		t.Fatalf("%+v, %v", resp, err)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"http://user:s3cret@host.local.mesh:8080/p?q=1": "http://***@host.local.mesh:8080/p?q=1",
		"http://s3cret@host/":                           "http://***@host/",
		"http://u:p@ss:w@rd@host/x@y":                   "http://***@host/x@y",
		"http://host/a@b":                               "http://host/a@b",
		"user:s3cret@host/p":                            "***@host/p",
		"http://u:s3cret with space@host":               "http://***@host",
		"plain":                                         "plain",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	_, err := Do(context.Background(), Request{Method: "GET", URL: "http://u:s3cret@[::1"}, time.Second, 1)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows the password: %v", err)
	}
}
