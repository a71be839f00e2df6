package httpc

import (
	"bufio"
	"bytes"
	"context"
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
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, err := ReadResponse(bufio.NewReader(bytes.NewReader(data)), 1024)
		if err == nil && int64(len(resp.Body)) > 1024 {
			t.Fatal("cap exceeded")
		}
	})
}
