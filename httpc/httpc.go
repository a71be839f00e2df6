// Package httpc is a small HTTP/1.1 client: a GET with conditional
// headers for the directory fetcher and a POST for the collector reports.
// Phonebook servers and collectors on the mesh speak plain HTTP
// (encryption is not permitted on amateur-radio links), and Go's net/http
// would bring TLS, x509 and HTTP/2 into a router's flash for nothing:
// over 2 MB of the mips binary. Every read is bounded: the whole exchange
// by a deadline, the headers by 64 KiB, the body by the caller's cap.
package httpc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// A small HTTP/1.1 GET client. Phonebook servers on the mesh speak plain
// HTTP (encryption is not permitted on amateur-radio links), and Go's
// net/http would bring TLS, x509 and HTTP/2 into a router's flash for
// nothing: over 2 MB of the mips binary.

// Response is what a request returned.
type Response struct {
	Status   int
	ETag     string
	Modified string
	Body     []byte
}

// ErrTooLarge: the body exceeds the cap.
var ErrTooLarge = errors.New("body too large")

// maxHeader bounds the status line and headers together.
const maxHeader = 64 << 10

// Request is one exchange: Method GET or POST, extra Header lines
// ("Name: value"), and Body with its ContentType for a POST.
type Request struct {
	Method      string
	URL         string
	Header      []string
	ContentType string
	Body        []byte
}

// Do sends req with a deadline covering connect, request and the whole
// response, reading at most maxBytes of body.
func Do(ctx context.Context, req Request, timeout time.Duration, maxBytes int64) (*Response, error) {
	u, err := url.Parse(req.URL)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", req.URL, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("server %q: only http:// is supported (no encryption on amateur-radio links)", req.URL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: phonebookd\r\nConnection: close\r\n", req.Method, u.RequestURI(), u.Host)
	for _, h := range req.Header {
		b.WriteString(h + "\r\n")
	}
	if req.Method == "POST" {
		fmt.Fprintf(&b, "Content-Type: %s\r\nContent-Length: %d\r\n", req.ContentType, len(req.Body))
	}
	b.WriteString("\r\n")
	b.Write(req.Body)
	if _, err := conn.Write(b.Bytes()); err != nil {
		return nil, err
	}
	return ReadResponse(bufio.NewReader(conn), maxBytes)
}

// ReadResponse parses an HTTP/1.x response: status line, headers, and a
// body sized by Content-Length, chunked, or read to the end, never more
// than maxBytes.
func ReadResponse(r *bufio.Reader, maxBytes int64) (*Response, error) {
	lr := &limitedLines{r: r, left: maxHeader}
	line, err := lr.line()
	if err != nil {
		return nil, fmt.Errorf("status line: %w", err)
	}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return nil, fmt.Errorf("not an HTTP/1 response: %q", truncate(line))
	}
	code, err := strconv.Atoi(f[1])
	if err != nil || code < 100 || code > 999 {
		return nil, fmt.Errorf("bad status %q", truncate(f[1]))
	}
	resp := &Response{Status: code}
	length := int64(-1)
	chunked := false
	for {
		h, err := lr.line()
		if err != nil {
			return nil, fmt.Errorf("headers: %w", err)
		}
		if h == "" {
			break
		}
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("malformed header %q", truncate(h))
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-length":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("bad Content-Length %q", truncate(value))
			}
			length = n
		case "transfer-encoding":
			chunked = strings.Contains(strings.ToLower(value), "chunked")
		case "etag":
			resp.ETag = value
		case "last-modified":
			resp.Modified = value
		}
	}
	if code == 304 || code == 204 || code < 200 {
		return resp, nil
	}
	var body io.Reader = r
	switch {
	case chunked:
		body = &chunkReader{r: r}
	case length >= 0:
		if length > maxBytes {
			return nil, fmt.Errorf("%d bytes announced: %w", length, ErrTooLarge)
		}
		body = io.LimitReader(r, length)
	}
	data, err := io.ReadAll(io.LimitReader(body, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	if int64(len(data)) > maxBytes {
		return nil, ErrTooLarge
	}
	if length >= 0 && !chunked && int64(len(data)) != length {
		return nil, fmt.Errorf("body: %d of %d bytes: %w", len(data), length, io.ErrUnexpectedEOF)
	}
	resp.Body = data
	return resp, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// limitedLines reads CRLF- or LF-terminated lines within a byte budget.
type limitedLines struct {
	r    *bufio.Reader
	left int
}

func (l *limitedLines) line() (string, error) {
	var b []byte
	for {
		frag, err := l.r.ReadSlice('\n')
		l.left -= len(frag)
		if l.left < 0 {
			return "", errors.New("header section too large")
		}
		b = append(b, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
}

// chunkReader decodes a chunked body.
type chunkReader struct {
	r    *bufio.Reader
	left int64
	done bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if c.left == 0 {
		ll := &limitedLines{r: c.r, left: 4096}
		line, err := ll.line()
		if err != nil {
			return 0, fmt.Errorf("chunk size: %w", err)
		}
		if i := strings.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(strings.TrimSpace(line), 16, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad chunk size %q", truncate(line))
		}
		if n == 0 {
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left == 0 && err == nil {
		// the CRLF after the chunk data
		if _, err := (&limitedLines{r: c.r, left: 2}).line(); err != nil {
			return n, fmt.Errorf("chunk end: %w", err)
		}
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
