package sip

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
)

// fuzzToken is the fuzzing server's branch token, so that seeds can
// carry responses that match the proxy's own branches.
const fuzzToken = "f0220000"

// fuzzServer runs a real server on loopback with small tables (so that
// their bounds are reached) and a phone registered at a sink that
// drains what the proxy sends it.
func fuzzServer(f *testing.F) (*Server, *condLog, netip.AddrPort) {
	s, _, alerts := serveWith(f, func(c *config.SIP) {
		c.MaxBindings, c.MaxContacts, c.MaxTransactions, c.MaxCalls = 4, 2, 4, 2
	}, func(s *Server) { s.token = fuzzToken })
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sink.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := sink.ReadFromUDP(buf); err != nil {
				return
			}
		}
	}()
	return s, alerts, sink.LocalAddr().(*net.UDPAddr).AddrPort()
}

// fuzzSeeds are the RFC 4475 torture messages, the Content-Length that
// ended the process, and the messages of a call through the proxy:
// REGISTER, INVITE to the registered phone, its responses (with the
// proxy's own branch), ACK, BYE, CANCEL, OPTIONS.
func fuzzSeeds(f *testing.F, server, sink string) {
	files, _ := filepath.Glob(filepath.Join("testdata", "rfc4475", "*.dat"))
	if len(files) != 49 {
		f.Fatalf("%d RFC 4475 messages in testdata/rfc4475", len(files))
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	r := strings.NewReplacer("{s}", server, "{p}", sink, "{t}", fuzzToken)
	for _, m := range []string{
		"OPTIONS sip:{s} SIP/2.0\r\nVia: SIP/2.0/TCP {p};branch=z9hG4bK-big\r\nFrom: <sip:a@{s}>;tag=1\r\nTo: <sip:{s}>\r\nCall-ID: big\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 9223372036854775807\r\n\r\n",
		"REGISTER sip:{s} SIP/2.0\r\nVia: SIP/2.0/UDP {p};branch=z9hG4bK-r1;rport\r\nFrom: <sip:100@{s}>;tag=r1\r\nTo: <sip:100@{s}>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\nContact: <sip:100@{p}>;expires=600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"INVITE sip:100@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {p};branch=z9hG4bK-i1;rport\r\nFrom: <sip:200@{s}>;tag=c1\r\nTo: <sip:100@{s}>\r\nCall-ID: call1\r\nCSeq: 1 INVITE\r\nContact: <sip:200@{p}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
		"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP {s};branch=z9hG4bKpb{t}.1\r\nVia: SIP/2.0/UDP {p};branch=z9hG4bK-i1;rport\r\nFrom: <sip:200@{s}>;tag=c1\r\nTo: <sip:100@{s}>;tag=a1\r\nCall-ID: call1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {s};branch=z9hG4bKpb{t}.1\r\nVia: SIP/2.0/UDP {p};branch=z9hG4bK-i1;rport\r\nRecord-Route: <sip:{s};lr>\r\nFrom: <sip:200@{s}>;tag=c1\r\nTo: <sip:100@{s}>;tag=a1\r\nCall-ID: call1\r\nCSeq: 1 INVITE\r\nContact: <sip:100@{p}>\r\nContent-Length: 0\r\n\r\n",
		"ACK sip:100@{p} SIP/2.0\r\nVia: SIP/2.0/UDP {p};branch=z9hG4bK-a1;rport\r\nRoute: <sip:{s};lr>\r\nFrom: <sip:200@{s}>;tag=c1\r\nTo: <sip:100@{s}>;tag=a1\r\nCall-ID: call1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"BYE sip:100@{p} SIP/2.0\r\nVia: SIP/2.0/UDP {p};branch=z9hG4bK-b1;rport\r\nRoute: <sip:{s};lr>\r\nFrom: <sip:200@{s}>;tag=c1\r\nTo: <sip:100@{s}>;tag=a1\r\nCall-ID: call1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"CANCEL sip:100@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {p};branch=z9hG4bK-i1;rport\r\nFrom: <sip:200@{s}>;tag=c1\r\nTo: <sip:100@{s}>\r\nCall-ID: call1\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"SIP/2.0 487 Request Terminated\r\nVia: SIP/2.0/UDP {s};branch=z9hG4bKpb{t}.2\r\nFrom: <sip:200@{s}>;tag=c1\r\nTo: <sip:100@{s}>;tag=a1\r\nCall-ID: call1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
		"OPTIONS sip:{s} SIP/2.0\r\nv: SIP/2.0/UDP {p};branch=z9hG4bK-o1\r\nf: <sip:a@{s}>;tag=1\r\nt: <sip:{s}>\r\ni: o1\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n\r\n\r\nOPTIONS sip:{s} SIP/2.0\r\n",
	} {
		f.Add([]byte(r.Replace(m)))
	}
}

// checkBounds: every table stays within its setting.
func checkBounds(t *testing.T, s *Server) {
	t.Helper()
	cfg := s.config()
	if n := s.Transactions(); n > cfg.MaxTransactions {
		t.Fatalf("%d transactions, bound %d", n, cfg.MaxTransactions)
	}
	s.mu.Lock()
	aors, calls := len(s.aors), len(s.calls)
	contacts := 0
	for _, a := range s.aors {
		contacts = max(contacts, len(a.contacts))
	}
	s.mu.Unlock()
	if aors > cfg.MaxBindings || calls > cfg.MaxCalls || contacts > cfg.MaxContacts {
		t.Fatalf("tables past their bounds: %d users (%d), %d calls (%d), %d contacts of one user (%d)",
			aors, cfg.MaxBindings, calls, cfg.MaxCalls, contacts, cfg.MaxContacts)
	}
	s.tcpMu.Lock()
	conns := s.tcpCountLocked()
	s.tcpMu.Unlock()
	if conns > cfg.TCPMaxConnections {
		t.Fatalf("%d TCP connections, bound %d", conns, cfg.TCPMaxConnections)
	}
}

// FuzzHandleUDP drives a datagram through the path the UDP reader takes
// (a datagram is one message; one past sip.max_message_size is shed
// before it) into the registrar, proxy and response handling of a real
// server. Oracle: no panic, not even a recovered one; the message is
// counted, and every counted message ended as handled, malformed or
// shed; every table within its bound.
func FuzzHandleUDP(f *testing.F) {
	s, _, sink := fuzzServer(f)
	fuzzSeeds(f, s.Addr(), sink.String())
	r := newReader(s, s.config().MaxMessageSize)
	from := peer{addr: sink, local: netip.MustParseAddr("127.0.0.1")}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > s.config().MaxMessageSize {
			data = data[:s.config().MaxMessageSize]
		}
		before := s.messages.Load()
		r.handle(data, from)
		// At least: the heartbeat's self-probe may be counted meanwhile.
		if got := s.messages.Load() - before; !isKeepalive(data) && got < 1 {
			t.Fatalf("%d bytes, no message counted", len(data))
		}
		if n := s.panics.count.Load(); n != 0 {
			t.Fatalf("%d handler panics", n)
		}
		outcomesAddUp(t, s)
		checkBounds(t, s)
	})
}

// FuzzServeTCP drives a byte stream through the real TCP path (a
// connection to the server, parked in its epoll set and served by its
// readers: the framing of frame, the buffers and timeouts of turn) into
// the same handlers. Oracle: no panic; at least one message counted for any byte
// that is not a keep-alive, and the outcomes add up; the server closes
// the connection once the peer has closed its side; every table within
// its bound.
func FuzzServeTCP(f *testing.F) {
	s, _, sink := fuzzServer(f)
	fuzzSeeds(f, s.Addr(), sink.String())
	f.Fuzz(func(t *testing.T, data []byte) {
		before := s.messages.Load()
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// In two writes (TCP_NODELAY: two segments), so that the framing
		// meets a message cut across reads as well as whole ones. The
		// server may refuse and close first: a failed write is an answer
		// too.
		c.Write(data[:len(data)/2])
		c.Write(data[len(data)/2:])
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the server did not close the connection after the peer closed: %v", err)
		}
		got := s.messages.Load() - before
		if !isKeepalive(data) && got < 1 {
			t.Fatalf("%d bytes, no message counted", len(data))
		}
		if n := s.panics.count.Load(); n != 0 {
			t.Fatalf("%d handler panics", n)
		}
		outcomesAddUp(t, s)
		checkBounds(t, s)
	})
}
