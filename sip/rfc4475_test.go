package sip

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The 49 messages of RFC 4475 ("SIP Torture Test Messages"), each sent
// as a datagram to a real server on loopback and answered as the RFC's
// text for it says. The messages are the RFC's own test vectors (its
// bit-exact archive, in testdata/rfc4475); every subtest is named by the
// RFC's section and the message's name.
//
// This server is a registrar and a stateless-where-it-can proxy: it
// answers REGISTER and OPTIONS itself (as their UAS), forwards INVITE,
// ACK, BYE and CANCEL, and answers other methods 501. Where the RFC lets
// an element choose (reject with 400, or be liberal), the comment says
// which this server chose.

// Expected outcomes besides a status code.
const (
	// accepted: a valid message is processed, not refused for its
	// syntax: its first answer (a 100 Trying of a forwarded INVITE, or
	// the final answer that routing gives, such as 404 for a user that
	// is not registered) is none of the refusals.
	accepted = -1
	// silent: a response, valid or not, is never answered; this server
	// drops it (it is not one of its own transactions).
	silent = 0
)

// refusals are the answers that refuse a request for its form.
var refusals = map[int]bool{400: true, 416: true, 420: true, 505: true, 513: true}

type tortureCase struct {
	section, name string
	want          int // a status code, accepted or silent
	// why paraphrases the RFC's text for the message.
	why string
	// check, when set, looks at the answer further.
	check func(t *testing.T, s *Server, answer string)
}

var tortureCases = []tortureCase{
	// 3.1.1 Valid messages: parsers must accept them.
	{"3.1.1.1", "wsinv", accepted, "A Short Tortuous INVITE: folding, odd white space, compact forms; valid, must be parsed and processed", nil},
	{"3.1.1.2", "intmeth", 501, "Wide Range of Valid Characters: a valid request of an unknown method; processed as one (501 here, a method this server does not implement)", nil},
	{"3.1.1.3", "esc01", accepted, "Valid Use of the % Escaping Mechanism: valid; escaped characters in URIs are accepted", nil},
	{"3.1.1.4", "escnull", 200, "Escaped Nulls in URIs: a valid REGISTER; %00 in the user part is legal", nil},
	{"3.1.1.5", "esc02", 501, "Use of % When It Is Not an Escape: the method RE%47IST%45R is not REGISTER (methods are not unescaped); an unknown method", nil},
	{"3.1.1.6", "lwsdisp", 200, "Message with No LWS between Display Name and <: valid OPTIONS", nil},
	{"3.1.1.7", "longreq", accepted, "Long Values in Header Fields: valid; long values must not break the element", nil},
	{"3.1.1.8", "dblreq", 200, "Extra Trailing Octets in a UDP Datagram: one REGISTER with Content-Length 0; the octets after it are ignored, not taken for a second request", nil},
	{"3.1.1.9", "semiuri", 200, "Semicolon-Separated Parameters in URI User Part: valid OPTIONS; the user part holds a ';'", nil},
	{"3.1.1.10", "transports", 200, "Varied and Unknown Transport Types: valid OPTIONS; unknown transports in Via are accepted", nil},
	{"3.1.1.11", "mpart01", 501, "Multipart MIME Message: a valid MESSAGE with a multipart body; parsed, and answered 501 (MESSAGE is not implemented here)", nil},
	{"3.1.1.12", "unreason", silent, "Unusual Reason Phrase: a valid response (UTF-8 reason phrase); parsed, and dropped as not ours", nil},
	{"3.1.1.13", "noreason", silent, "Empty Reason Phrase: a valid response whose reason phrase is empty; parsed, and dropped as not ours", nil},

	// 3.1.2 Invalid messages.
	{"3.1.2.1", "badinv01", 400, "Extraneous Header Field Separators: Via and Contact with empty parameters and list elements; syntactically invalid, respond 400", nil},
	{"3.1.2.2", "clerr", 400, "Content Length Larger Than Message: over UDP, respond 400", nil},
	{"3.1.2.3", "ncl", 400, "Negative Content-Length: respond 400", nil},
	{"3.1.2.4", "scalar02", 400, "Request Scalar Fields with Overlarge Values: the CSeq number is past 2^32-1; respond 400", nil},
	{"3.1.2.5", "scalarlg", silent, "Response Scalar Fields with Overlarge Values: a response; it is discarded", nil},
	{"3.1.2.6", "quotbal", 400, "Unterminated Quoted String in Display Name: respond 400 (no guess at where the quote ends)", nil},
	{"3.1.2.7", "ltgtruri", 400, "<> Enclosing Request-URI: respond 400", nil},
	{"3.1.2.8", "lwsruri", 400, "Malformed SIP Request-URI (embedded LWS): respond 400", nil},
	{"3.1.2.9", "lwsstart", 400, "Multiple SP Separating Request-Line Elements: invalid; 400 (the RFC allows a liberal element to accept it; this one does not)", nil},
	{"3.1.2.10", "trws", 400, "SP Characters at End of Request-Line: invalid; 400 (a liberal element could accept it; this one does not)", nil},
	{"3.1.2.11", "escruri", 400, "Escaped Headers in SIP Request-URI: invalid; acceptable to reject with 400, which this server does rather than forward the headers", nil},
	{"3.1.2.12", "baddate", accepted, "Invalid Time Zone in Date Header Field: invalid Date, but an element that does not use Date should not reject for it; this one does not use it", nil},
	{"3.1.2.13", "regbadct", 400, "Failure to Enclose name-addr URI in <>: a Contact URI with headers outside <>; reasonable to respond 400, which this registrar does rather than guess", nil},
	{"3.1.2.14", "badaspec", 200, "Spaces within addr-spec: reasonable to reject, or be liberal and ignore the spaces; this server (OPTIONS, not using the To) is liberal", nil},
	{"3.1.2.15", "baddn", 200, "Non-token Characters in Display Name: reasonable to reject, or infer the quotes; this server (OPTIONS, not forwarding the names) is liberal", nil},
	{"3.1.2.16", "badvers", 505, "Unknown Protocol Version: respond 505 Version Not Supported", nil},
	{"3.1.2.17", "mismatch01", 400, "Start Line and CSeq Method Mismatch: respond 400", nil},
	{"3.1.2.18", "mismatch02", 501, "Unknown Method with CSeq Method Mismatch: 501 is preferred (400 acceptable); 501 here", nil},
	{"3.1.2.19", "bigcode", silent, "Overlarge Response Code: a response that cannot be parsed; discarded without breaking the receiver", nil},

	// 3.2 Transaction layer semantics.
	{"3.2.1", "badbranch", 200, "Missing Transaction Identifier: a branch of only the magic cookie; processed as a request without an RFC 3261 branch", nil},

	// 3.3 Application layer semantics.
	{"3.3.1", "insuf", 400, "Missing Required Header Fields: respond 400", nil},
	{"3.3.2", "unkscm", 416, "Request-URI with Unknown Scheme: respond 416 Unsupported URI Scheme", nil},
	{"3.3.3", "novelsc", 416, "Request-URI with Known but Atypical Scheme: an element that does not support soap.beep responds 416", nil},
	{"3.3.4", "unksm2", 416, "Unknown URI Schemes in Header Fields: parsers must not break; this registrar cannot register an isbn: address-of-record and says so with 416", nil},
	{"3.3.5", "bext01", 420, "Proxy-Require and Require: unknown option tags; 420 Bad Extension with an Unsupported header listing them",
		func(t *testing.T, _ *Server, answer string) {
			for _, tag := range []string{"nothingSupportsThis", "nothingSupportsThisEither", "noProxiesSupportThis", "norDoAnyProxiesSupportThis"} {
				if !strings.Contains(headerLine(answer, "Unsupported"), tag) {
					t.Errorf("Unsupported does not list %s:\n%s", tag, answer)
				}
			}
		}},
	{"3.3.6", "invut", accepted, "Unknown Content-Type: a proxy forwards it (415 is the UAS's answer)", nil},
	{"3.3.7", "regaut01", 200, "Unknown Authorization Scheme: a registrar that does not authenticate ignores the Authorization header", nil},
	{"3.3.8", "multi01", 400, "Multiple Values in Single Value Required Fields: respond 400", nil},
	{"3.3.9", "mcl01", 400, "Multiple Content-Length Values: two values that disagree; respond 400", nil},
	{"3.3.10", "bcast", silent, "200 OK Response with Broadcast Via Header Field Value: parsed; never forwarded to the broadcast address (not ours, dropped)", nil},
	{"3.3.11", "zeromf", 200, "Max-Forwards of Zero: an OPTIONS this server answers itself is processed as if Max-Forwards were positive (483 is a forwarding proxy's answer)", nil},
	{"3.3.12", "cparam01", 200, "REGISTER with a Contact Header Parameter: the parameter after an addr-spec is the header's, not the URI's",
		func(t *testing.T, s *Server, _ string) {
			if c := contactOf(s, "watson"); c != "sip:+19725552222@gw1.example.net" {
				t.Errorf("binding %q, want the URI without the header parameter", c)
			}
		}},
	{"3.3.13", "cparam02", 200, "REGISTER with a url-parameter: inside <> the parameter belongs to the URI",
		func(t *testing.T, s *Server, _ string) {
			if c := contactOf(s, "watson"); !strings.HasSuffix(c, ";unknownparam") {
				t.Errorf("binding %q, want the URI with its parameter", c)
			}
		}},
	{"3.3.14", "regescrt", 200, "REGISTER with a URL Escaped Header: legal in <>; the binding is kept", nil},
	{"3.3.15", "sdp01", accepted, "Unacceptable Accept Offering: a proxy forwards it (406 is the UAS's answer)", nil},

	// 3.4 Backward compatibility.
	{"3.4.1", "inv2543", accepted, "INVITE with RFC 2543 Syntax: no branch, no tags; must be processed", nil},
}

// contactOf is the bound contact of a user ("" when none).
func contactOf(s *Server, user string) string {
	for _, b := range s.Bindings() {
		if b.User == user {
			return b.Contact
		}
	}
	return ""
}

// headerLine returns a header line's value from a message ("" if absent).
func headerLine(msg, name string) string {
	for _, l := range strings.Split(msg, "\r\n") {
		if n, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(n), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func code(answer string) int {
	f := strings.Fields(answer)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func TestRFC4475(t *testing.T) {
	if len(tortureCases) != 49 {
		t.Fatalf("%d cases, RFC 4475 has 49 messages", len(tortureCases))
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "rfc4475", "*.dat"))
	if len(files) != 49 {
		t.Fatalf("%d messages in testdata/rfc4475", len(files))
	}
	for _, c := range tortureCases {
		t.Run(c.section+"_"+c.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "rfc4475", c.name+".dat"))
			if err != nil {
				t.Fatal(err)
			}
			s, addr := serve(t, nil) // a fresh server: no case sees another's bindings
			p := newPhone(t, "127.0.0.1")
			malformed := s.malformed.Load()
			p.send(addr, string(raw))
			wait := 2 * time.Second
			if c.want == silent {
				wait = 300 * time.Millisecond // nothing is to come: how long to listen for a wrong answer
			}
			answer := p.recv(wait)
			if c.want != accepted {
				for strings.HasPrefix(answer, "SIP/2.0 1") { // the final answer is the one the RFC speaks of
					answer = p.recv(2 * time.Second)
				}
			}
			switch {
			case c.want == silent:
				if answer != "" {
					t.Fatalf("%s\nanswered %q", c.why, status(answer))
				}
				// Valid responses are parsed (dropped as not ours); only an
				// unparsable one counts as malformed.
				want := int64(0)
				if c.name == "bigcode" {
					want = 1
				}
				if got := s.malformed.Load() - malformed; got != want {
					t.Errorf("%s\nmalformed counted %d, want %d", c.why, got, want)
				}
			case c.want == accepted:
				if answer == "" || refusals[code(answer)] {
					t.Fatalf("%s\nanswered %q", c.why, status(answer))
				}
			default:
				if code(answer) != c.want {
					t.Fatalf("%s\nanswered %q, want %d", c.why, status(answer), c.want)
				}
			}
			if c.check != nil {
				c.check(t, s, answer)
			}
			if c.name == "dblreq" { // one request, one answer
				if extra := p.recv(300 * time.Millisecond); extra != "" {
					t.Errorf("a second answer: %q", status(extra))
				}
			}
			outcomesAddUp(t, s)
		})
	}
}

// TestParseViaWhiteSpace: RFC 4475 3.1.1.1's Via forms, white space
// around each "/" and around the parameters' "=", parse to their parts.
func TestParseViaWhiteSpace(t *testing.T) {
	for _, c := range []struct{ in, transport, host, branch string }{
		{"SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw", "UDP", "192.0.2.2", "390skdjuw"},
		{"SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8", "TCP", "spindle.example.com", "z9hG4bK9ikj8"},
		{"SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-1", "UDP", "10.0.0.5", "z9hG4bK-1"},
	} {
		v, err := ParseVia(c.in)
		if err != nil || v.Transport != c.transport || v.Host != c.host || v.Branch() != c.branch {
			t.Errorf("%q: %+v %v", c.in, v, err)
		}
	}
	for _, bad := range []string{"SIP/2.0 host", "SIP/2.0/ host", "HTTP/1.1/TCP host", "SIP/2.0/U/DP host", "SIP/2.0/UDP"} {
		if _, err := ParseVia(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestEmptyElement: doubled and leading separators in Via and Contact
// are refused (RFC 4475 3.1.2.1); separators inside quotes and <> are
// not separators; one trailing separator passes.
func TestEmptyElement(t *testing.T) {
	for v, want := range map[string]bool{
		"SIP/2.0/UDP 192.0.2.15;;,;,,":          true,
		`"Joe" <sip:joe@example.org>;;;;`:       true,
		"SIP/2.0/UDP a;branch=1,,SIP/2.0/UDP b": true,
		";branch=1":                             true,
		"":                                      true,
		"SIP/2.0/UDP a;branch=1;rport, SIP/2.0/UDP b;branch=2":             false,
		`"a;;b,,c" <sip:x@y;;lr,,>;expires=60`:                             false,
		`<sip:1@h;transport=udp>;+sip.instance="<urn:uuid:1;;2>";reg-id=1`: false,
		"<sip:1@h>;": false,
	} {
		if got := emptyElement(v); got != want {
			t.Errorf("%q: %v, want %v", v, got, want)
		}
	}
}
