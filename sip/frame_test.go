package sip

import (
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
)

func TestBodyLength(t *testing.T) {
	for _, c := range []struct {
		values []string
		n      int
		err    error
	}{
		{[]string{"0"}, 0, nil},
		{[]string{" 150 "}, 150, nil},
		{[]string{"0000000000000000000005"}, 5, nil}, // leading zeros carry no value
		{[]string{"999999999"}, 999999999, nil},
		{[]string{"1000000000"}, 0, errLengthAbsurd},
		{[]string{"9223372036854775807"}, 0, errLengthAbsurd},
		{[]string{"99999999999999999999999999"}, 0, errLengthAbsurd},
		{[]string{"-1"}, 0, errLengthSyntax},
		{[]string{"-999"}, 0, errLengthSyntax},
		{[]string{"+5"}, 0, errLengthSyntax},
		{[]string{"0x10"}, 0, errLengthSyntax},
		{[]string{""}, 0, errLengthSyntax},
		{[]string{"1 2"}, 0, errLengthSyntax},
		{[]string{"12345678901234567890a"}, 0, errLengthSyntax},
		{[]string{"5", "5"}, 5, nil},
		{[]string{"13", "5"}, 0, errLengthConflict},
		{[]string{"0", "1"}, 0, errLengthConflict},
	} {
		var b bodyLength
		var err error
		for _, v := range c.values {
			if err = b.add(v); err != nil {
				break
			}
		}
		if err != c.err || (err == nil && b.n != c.n) {
			t.Errorf("%q: %d, %v; want %d, %v", c.values, b.n, err, c.n, c.err)
		}
	}
}

func TestHeaderLength(t *testing.T) {
	for _, c := range []struct {
		head string
		n    int
		ok   bool
	}{
		{"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n", 0, true},
		{"OPTIONS sip:a SIP/2.0\r\nContent-Length: 12\r\n\r\n", 12, true},
		{"OPTIONS sip:a SIP/2.0\r\nl: 7\r\n\r\n", 7, true},
		{"OPTIONS sip:a SIP/2.0\r\nCONTENT-LENGTH :\r\n  9\r\n\r\n", 9, true}, // folded
		{"OPTIONS sip:a SIP/2.0\r\nContent-Length: 9223372036854775807\r\n\r\n", 0, false},
		{"OPTIONS sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n", 0, false},
		{"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\nl: 4\r\n\r\n", 0, false},
		{"OPTIONS sip:a SIP/2.0\r\nX-Content-Length: 99999999999999\r\n\r\n", 0, true},
	} {
		n, err := headerLength([]byte(c.head))
		if (err == nil) != c.ok || n != c.n {
			t.Errorf("%q: %d, %v", c.head, n, err)
		}
	}
}

// crashLog records crash records.
type crashLog struct {
	mu   sync.Mutex
	recs []crash.Record
}

func (c *crashLog) Add(r crash.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, r)
}

func (c *crashLog) all() []crash.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]crash.Record(nil), c.recs...)
}

// statusInt reads one integer of the sip status section by its member
// name, through the JSON every front sends.
func statusInt(s *Server, name string) int64 {
	b, err := json.Marshal(s.Status())
	if err != nil {
		panic(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	n, _ := m[name].(float64)
	return int64(n)
}

// outcomesAddUp: every message counted ended as exactly one outcome. A
// message in flight (the heartbeat's self-probe) is counted before its
// outcome, so a difference must persist to be one.
func outcomesAddUp(t testing.TB, s *Server) {
	t.Helper()
	var msgs, sum int64
	for range 100 {
		msgs = statusInt(s, "messages_total")
		sum = statusInt(s, "handled_total") + statusInt(s, "malformed_total") + statusInt(s, "handler_panics") + s.Shed()["message_size"]
		if msgs == sum {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("messages_total %d, but handled + malformed + panics + too large = %d", msgs, sum)
}

// tcpExchange sends msg on a fresh connection and returns everything the
// server answered until it closed the connection (or wait passed).
func tcpExchange(t *testing.T, addr, msg string, wait time.Duration) (string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(c)
	return string(b), err == nil // nil: the server closed it
}

const optionsTCP = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-cl%s\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: cl-%[1]s\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"

// TestTCPContentLengthBoundedBeforeArithmetic: on main the first case
// made head+cl overflow and buf[:head+cl] panic, ending the process.
// Every absurd, negative, non-numeric or conflicting Content-Length is
// answered 400, the connection (whose framing is lost) closed, the
// message counted; and the server goes on answering.
func TestTCPContentLengthBoundedBeforeArithmetic(t *testing.T) {
	s, addr, _ := serveAlerts(t, nil)
	for _, c := range []struct{ name, cl string }{
		{"2^63-1", "Content-Length: 9223372036854775807\r\n"},
		{"2^64", "Content-Length: 18446744073709551616\r\n"},
		{"2^31-1", "Content-Length: 2147483647\r\n"},
		{"nine digits", "Content-Length: 999999999\r\n"},
		{"negative", "Content-Length: -999\r\n"},
		{"non-numeric", "Content-Length: twelve\r\n"},
		{"conflicting", "Content-Length: 0\r\nl: 20\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := s.malformed.Load() + s.shed[ShedMessageSize].Load()
			ans, closed := tcpExchange(t, addr, strings.ReplaceAll(optionsTCP, "%s", c.name)+c.cl+"\r\n", 5*time.Second)
			if c.name == "nine digits" { // a believable number, past sip.max_message_size: 513
				if !strings.HasPrefix(ans, "SIP/2.0 513") {
					t.Errorf("answer %q", status(ans))
				}
			} else if !strings.HasPrefix(ans, "SIP/2.0 400") {
				t.Errorf("answer %q", status(ans))
			}
			if !closed {
				t.Error("connection left open after its framing was lost")
			}
			if got := s.malformed.Load() + s.shed[ShedMessageSize].Load(); got != before+1 {
				t.Errorf("refused messages counted %d, want %d", got, before+1)
			}
		})
	}
	// A message cut short by the peer's close is counted too.
	before := s.malformed.Load()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte(strings.ReplaceAll(optionsTCP, "%s", "cut") + "Content-Length: 50\r\n\r\nshort"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(c)
	c.Close()
	if got := s.malformed.Load(); got != before+1 {
		t.Errorf("cut message counted %d, want %d", got, before+1)
	}
	ans, _ := tcpExchange(t, addr, strings.ReplaceAll(optionsTCP, "%s", "after")+"Content-Length: 0\r\n\r\n", time.Second)
	if !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("OPTIONS after the abuse: %q", status(ans))
	}
	outcomesAddUp(t, s)
}

// TestUDPConflictingContentLength: two Content-Length values that
// disagree are refused over UDP too (RFC 4475 3.3.9), through the same
// check.
func TestUDPConflictingContentLength(t *testing.T) {
	s, addr := serve(t, nil)
	p := newPhone(t, "127.0.0.1")
	msg := "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-mcl\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: mcl\r\nCSeq: 1 OPTIONS\r\nContent-Length: 13\r\nMax-Forwards: 70\r\nContent-Length: 5\r\n\r\nThere's no way to know\r\n"
	if r := p.roundTrip(addr, msg); !strings.HasPrefix(r, "SIP/2.0 400") {
		t.Fatalf("answer %q", status(r))
	}
	if r := p.roundTrip(addr, strings.Replace(msg, "Content-Length: 5", "Content-Length: 13", 1)); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("agreeing values: %q", status(r))
	}
	outcomesAddUp(t, s)
}

// TestHandlerPanicRecovered: a message whose handling panics (here a
// reply to a connection that has no socket: a nil dereference in the
// send path) is recovered by the reader: counted in handler_panics,
// "handler_panic" raised, one crash record per window, and the reader
// answers the next message. The window runs on a fake clock.
func TestHandlerPanicRecovered(t *testing.T) {
	s, addr, alerts := serveAlerts(t, nil)
	crashes := &crashLog{}
	s.SetCrashes(crashes)
	fake := clock.NewFake(time.Unix(1_800_000_000, 0))
	s.panics.mu.Lock()
	s.panics.clock, s.panics.window = fake, time.Minute
	s.panics.mu.Unlock()

	r := newReader(s, 8192)
	broken := peer{addr: netip.MustParseAddrPort("127.0.0.1:5999"), local: netip.MustParseAddr("127.0.0.1"), tcp: &tcpConn{}}
	msg := []byte(strings.ReplaceAll(options("panic"), "{me}", "127.0.0.1:5999"))
	for range 3 {
		r.handle(msg, broken) // must return, not panic
	}
	if n := statusInt(s, "handler_panics"); n != 3 {
		t.Fatalf("handler_panics %d, want 3", n)
	}
	args, ok := alerts.get(health.HandlerPanic.Code)
	if !ok || args[health.ArgCount] != "3" || !strings.Contains(args[health.ArgError], "nil pointer") {
		t.Fatalf("condition %v raised %v", args, ok)
	}
	recs := crashes.all()
	if len(recs) != 1 || recs[0].Kind != crash.KindHandlerPanic || recs[0].Count != 1 || recs[0].Stack == "" {
		t.Fatalf("crash records at once: %+v", recs)
	}
	// The same reader serves on.
	p := newPhone(t, "127.0.0.1")
	if ans := p.roundTrip(addr, options("after-panic")); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("after the panics: %q", status(ans))
	}
	// The window's end writes the two others as one record; a window
	// without panics clears the condition.
	fake.Advance(time.Minute)
	if recs = crashes.all(); len(recs) != 2 || recs[1].Count != 2 {
		t.Fatalf("coalesced record: %+v", recs)
	}
	if _, ok := alerts.get(health.HandlerPanic.Code); !ok {
		t.Fatal("condition cleared while panics were still being recorded")
	}
	fake.Advance(time.Minute)
	if _, ok := alerts.get(health.HandlerPanic.Code); ok {
		t.Fatal("condition still raised a window after the last panic")
	}
	if len(crashes.all()) != 2 {
		t.Fatalf("records after a quiet window: %+v", crashes.all())
	}
	outcomesAddUp(t, s)
}
