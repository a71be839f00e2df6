package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Server answers GET /metrics over plain HTTP/1.1, one request per
// connection. It is a few dozen lines rather than net/http, which would
// add TLS and HTTP/2 to a router's flash for one read-only page. Every
// resource is bounded: connections (max_connections, past it closed at
// once and counted), the request header (8 KiB) and time (5 s).
type Server struct {
	Render func(refused int64) []byte
	Log    *slog.Logger

	refused atomic.Int64
}

// Refused counts connections turned away at the bound.
func (s *Server) Refused() int64 { return s.refused.Load() }

const (
	maxRequest     = 8 << 10
	requestTimeout = 5 * time.Second
)

// Serve answers on ln until ctx ends, and closes it. maxConns bounds the
// scrapes served at once.
func (s *Server) Serve(ctx context.Context, ln net.Listener, maxConns int) error {
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	slots := make(chan struct{}, max(maxConns, 1))
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				s.Log.Debug("metrics accept", "err", err)
				select { // out of descriptors: back off, do not spin
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("metrics accept: %w", err)
		}
		select {
		case slots <- struct{}{}:
		default:
			s.refused.Add(1)
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.serve(conn)
		}()
	}
}

// isTemporary: out of descriptors, which frees itself as connections end.
func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

func (s *Server) serve(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(requestTimeout))
	method, target, err := readRequest(bufio.NewReaderSize(&limited{r: conn, n: maxRequest}, 1024))
	if err != nil {
		return
	}
	status, ctype, body := "200 OK", ContentType, []byte(nil)
	switch {
	case method != "GET" && method != "HEAD":
		status, ctype, body = "405 Method Not Allowed", "text/plain", []byte("GET /metrics only\n")
	case target != "/metrics" && !strings.HasPrefix(target, "/metrics?"):
		status, ctype, body = "404 Not Found", "text/plain", []byte("GET /metrics only\n")
	default:
		body = s.Render(s.refused.Load())
	}
	fmt.Fprintf(conn, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n", status, ctype, len(body))
	if method != "HEAD" {
		conn.Write(body)
	}
}

// readRequest reads a request line and its headers (ignored) from a
// client on the network: a malformed or oversized request is an error,
// never a panic.
func readRequest(r *bufio.Reader) (method, target string, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", "", err
	}
	for { // the headers, read and ignored within the reader's limit
		h, err := r.ReadString('\n')
		if err != nil {
			return "", "", err
		}
		if h == "\r\n" || h == "\n" {
			break
		}
	}
	method, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok || !ok2 || !strings.HasPrefix(proto, "HTTP/1.") {
		return "", "", errors.New("not an HTTP/1 request line")
	}
	return method, target, nil
}

// limited stops reading after n bytes.
type limited struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("request too large")
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}
