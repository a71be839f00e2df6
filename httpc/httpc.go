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

// Response is what a request returned.
type Response struct {
	Status   int
	ETag     string
	Modified string
	Body     []byte
	// Delimited: the body's end was announced (Content-Length, or the
	// chunked encoding's last chunk) and reached. Without it the body
	// is whatever arrived before the connection closed, which a server
	// or a link that dies mid-transfer cannot be told apart from: the
	// caller must judge whether the content ends cleanly.
	Delimited bool
}

// ErrTooLarge: the body exceeds the cap.
var ErrTooLarge = errors.New("body too large")

// maxHeader bounds the status line and headers together.
const maxHeader = 64 << 10

// maxInterim bounds the 1xx interim responses skipped before the final
// one (each also counts against maxHeader).
const maxInterim = 16

// Request is one exchange: Method GET or POST, extra Header lines
// ("Name: value"), and Body with its ContentType for a POST.
type Request struct {
	Method      string
	URL         string
	Header      []string
	ContentType string
	Body        []byte
	// DiscardBody: only the final status line and headers matter (a
	// collector's answer). The response body is read up to the cap and
	// dropped; its size, its end and errors while reading it do not
	// change the answer, so a 2xx with a large body still counts as
	// accepted.
	DiscardBody bool
}

// Redact removes the credentials (user:password@) from a URL so that it
// can be logged or shown in a document. It works on text that does not
// parse as a URL too, since such text is shown in errors as well.
func Redact(raw string) string {
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + 3
	}
	end := len(raw)
	if i := strings.IndexAny(raw[start:], "/?#"); i >= 0 {
		end = start + i
	}
	at := strings.LastIndexByte(raw[start:end], '@')
	if at < 0 {
		return raw
	}
	return raw[:start] + "***" + raw[start+at:]
}

// Do sends req with a deadline covering connect, request and the whole
// response, reading at most maxBytes of body.
func Do(ctx context.Context, req Request, timeout time.Duration, maxBytes int64) (*Response, error) {
	u, err := url.Parse(req.URL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the URL, credentials and all
		}
		return nil, fmt.Errorf("server %q: %w", Redact(req.URL), err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("server %q: only http:// is supported (no encryption on amateur-radio links)", Redact(req.URL))
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
	if req.DiscardBody {
		return ReadStatus(bufio.NewReader(conn), maxBytes)
	}
	return ReadResponse(bufio.NewReader(conn), maxBytes)
}

// ReadResponse parses an HTTP/1.x response: interim 1xx responses
// skipped, then the status line, headers, and a body sized by
// Content-Length, chunked, or read to the end, never more than maxBytes.
func ReadResponse(r *bufio.Reader, maxBytes int64) (*Response, error) {
	resp, body, err := readHead(r, maxBytes)
	if err != nil || body == nil {
		return resp, err
	}
	data, err := io.ReadAll(io.LimitReader(body, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	if int64(len(data)) > maxBytes {
		return nil, ErrTooLarge
	}
	if lr, ok := body.(*io.LimitedReader); ok && lr.N > 0 {
		return nil, fmt.Errorf("body: %d of %d bytes: %w", len(data), int64(len(data))+lr.N, io.ErrUnexpectedEOF)
	}
	resp.Body = data
	return resp, nil
}

// ReadStatus parses an HTTP/1.x response for its final status line and
// headers (interim 1xx responses skipped), then reads at most maxBytes of
// its body and drops them: the status decides, whatever the body (its
// size, a cut-off or a stall after the headers).
func ReadStatus(r *bufio.Reader, maxBytes int64) (*Response, error) {
	resp, body, err := readHead(r, -1)
	if err != nil || body == nil {
		return resp, err
	}
	io.Copy(io.Discard, io.LimitReader(body, maxBytes)) //nolint:errcheck // the body does not count
	return resp, nil
}

// readHead reads up to the final response's body: the status line and
// headers, skipping interim 1xx responses (100 Continue, 102
// Processing, 103 Early Hints) within the header budget. body is nil
// when the response has none; a body with a Content-Length comes as an
// *io.LimitedReader, and resp.Delimited is already set for a length or
// a chunked encoding (the reader fails if that end is not reached). A
// length over maxBytes is ErrTooLarge at once, unless maxBytes < 0 (the
// body is dropped anyway).
func readHead(r *bufio.Reader, maxBytes int64) (resp *Response, body io.Reader, err error) {
	lr := &limitedLines{r: r, left: maxHeader}
	for interim := 0; ; interim++ {
		resp, body, err = readOne(r, lr, maxBytes)
		if err != nil {
			return nil, nil, err
		}
		if resp.Status >= 200 || resp.Status == 101 {
			return resp, body, nil
		}
		if interim >= maxInterim {
			return nil, nil, fmt.Errorf("more than %d interim responses", maxInterim)
		}
	}
}

// readOne reads one status line and its headers.
func readOne(r *bufio.Reader, lr *limitedLines, maxBytes int64) (*Response, io.Reader, error) {
	line, err := lr.line()
	if err != nil {
		return nil, nil, fmt.Errorf("status line: %w", err)
	}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return nil, nil, fmt.Errorf("not an HTTP/1 response: %q", truncate(line))
	}
	code, err := strconv.Atoi(f[1])
	if err != nil || code < 100 || code > 999 {
		return nil, nil, fmt.Errorf("bad status %q", truncate(f[1]))
	}
	resp := &Response{Status: code}
	length := int64(-1)
	chunked := false
	for {
		h, err := lr.line()
		if err != nil {
			return nil, nil, fmt.Errorf("headers: %w", err)
		}
		if h == "" {
			break
		}
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return nil, nil, fmt.Errorf("malformed header %q", truncate(h))
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-length":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 {
				return nil, nil, fmt.Errorf("bad Content-Length %q", truncate(value))
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
		resp.Delimited = true
		return resp, nil, nil
	}
	switch {
	case chunked:
		resp.Delimited = true
		return resp, &chunkReader{r: r}, nil
	case length >= 0:
		if maxBytes >= 0 && length > maxBytes {
			return nil, nil, fmt.Errorf("%d bytes announced: %w", length, ErrTooLarge)
		}
		resp.Delimited = true
		return resp, &io.LimitedReader{R: r, N: length}, nil
	}
	return resp, r, nil
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
