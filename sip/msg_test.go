package sip

import (
	"net/netip"
	"strings"
	"testing"
)

const sampleRegister = "REGISTER sip:127.0.0.1 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-1;rport\r\n" +
	"v: SIP/2.0/TCP 10.0.0.9;branch=z9hG4bK-0\r\n" +
	"From: \"Alice, A.\" <sip:1001@10.0.0.1>;tag=abc\r\n" +
	"t: <sip:1001@10.0.0.1>\r\n" +
	"Call-ID: reg-1@host\r\n" +
	"CSeq: 7 REGISTER\r\n" +
	"Contact: <sip:1001@10.0.0.5:5062>;expires=60, \"B\" <sip:1001@10.0.0.6>\r\n" +
	"Max-Forwards: 70\r\n" +
	"Subject: folded\r\n line\r\n" +
	"l: 4\r\n\r\nbodyEXTRA"

func TestParse(t *testing.T) {
	var m Msg
	if err := Parse(sampleRegister, &m); err != nil {
		t.Fatal(err)
	}
	if !m.Request || m.Method != "REGISTER" || m.URI != "sip:127.0.0.1" || m.Version != "SIP/2.0" {
		t.Errorf("start line: %+v", m)
	}
	if err := m.CheckRequest(); err != nil {
		t.Errorf("CheckRequest: %v", err)
	}
	if m.Get("to") != "<sip:1001@10.0.0.1>" || m.Get("subject") != "folded line" || m.Body != "body" {
		t.Errorf("headers: to %q subject %q body %q", m.Get("to"), m.Get("subject"), m.Body)
	}
	var vias, contacts []string
	m.Each("via", func(v string) bool { vias = append(vias, v); return true })
	m.Each("contact", func(v string) bool { contacts = append(contacts, v); return true })
	if len(vias) != 2 || len(contacts) != 2 || contacts[1] != "\"B\" <sip:1001@10.0.0.6>" {
		t.Errorf("lists: %q %q", vias, contacts)
	}
	v, err := m.TopVia()
	if err != nil || v.Host != "10.0.0.5" || v.Port != 5062 || v.Branch() != "z9hG4bK-1" || v.Transport != "UDP" {
		t.Errorf("top via %+v %v", v, err)
	}
	if m.Tag("from") != "abc" || m.Tag("to") != "" {
		t.Errorf("tags %q %q", m.Tag("from"), m.Tag("to"))
	}
	cs, err := m.CSeq()
	if err != nil || cs.Num != 7 || cs.Method != "REGISTER" {
		t.Errorf("cseq %+v %v", cs, err)
	}
}

func TestParseErrors(t *testing.T) {
	for name, raw := range map[string]string{
		"empty":            "",
		"no end of header": "OPTIONS sip:x SIP/2.0\r\nVia: x\r\n",
		"bad start line":   "HELLO\r\n\r\n",
		"bad version":      "OPTIONS sip:x HTTP/1.1\r\n\r\n",
		"bad status":       "SIP/2.0 99 Low\r\n\r\n",
		"header no colon":  "OPTIONS sip:x SIP/2.0\r\nVia\r\n\r\n",
		"bad header name":  "OPTIONS sip:x SIP/2.0\r\nV i a: x\r\n\r\n",
		"fold first":       "OPTIONS sip:x SIP/2.0\r\n folded\r\n\r\n",
		"short body":       "OPTIONS sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc",
		"bad length":       "OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n",
		"too many headers": "OPTIONS sip:x SIP/2.0\r\n" + strings.Repeat("X: y\r\n", MaxHeaders+1) + "\r\n",
	} {
		var m Msg
		err := Parse(raw, &m)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if strings.Contains(err.Error(), "sip:x") {
			t.Errorf("%s: error quotes the input: %v", name, err)
		}
	}
}

func TestCheckRequest(t *testing.T) {
	base := "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:x>\r\nCall-ID: c\r\n"
	for name, c := range map[string]struct {
		raw string
		ok  bool
	}{
		"ok":               {base + "CSeq: 1 OPTIONS\r\n\r\n", true},
		"no cseq":          {base + "\r\n", false},
		"cseq method":      {base + "CSeq: 1 INVITE\r\n\r\n", false},
		"two call-ids":     {base + "CSeq: 1 OPTIONS\r\ni: d\r\n\r\n", false},
		"max-forwards bad": {base + "CSeq: 1 OPTIONS\r\nMax-Forwards: x\r\n\r\n", false},
	} {
		var m Msg
		if err := Parse(c.raw, &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := m.CheckRequest(); (err == nil) != c.ok {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseURI(t *testing.T) {
	for in, want := range map[string]URI{
		"sip:1001@10.0.0.5:5062;transport=udp": {Scheme: "sip", User: "1001", Host: "10.0.0.5", Port: 5062, Params: ";transport=udp"},
		"SIP:node.local.mesh":                  {Scheme: "sip", Host: "node.local.mesh"},
		"sips:u:pw@[2001:db8::1]:5061":         {Scheme: "sips", User: "u", Host: "2001:db8::1", Port: 5061},
		"tel:+4155551212;phone-context=x":      {Scheme: "tel", User: "+4155551212", Params: ";phone-context=x"},
	} {
		got, err := ParseURI(in)
		if err != nil || got != want {
			t.Errorf("%s: %+v %v", in, got, err)
		}
	}
	if _, err := ParseURI("mailto:a@b"); err != ErrScheme {
		t.Errorf("mailto: %v", err)
	}
	for _, bad := range []string{"sip:", "sip:a@", "sip:h:99999", "sip:[::1", "nocolon"} {
		if _, err := ParseURI(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestTopViaReceivedRport(t *testing.T) {
	src := netip.MustParseAddrPort("192.0.2.7:40000")
	got := string(appendTopVia(nil, "SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-1;rport;received=1.2.3.4", src))
	want := "SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-1;rport=40000;received=192.0.2.7"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	same := netip.MustParseAddrPort("10.0.0.5:5062")
	if got := string(appendTopVia(nil, "SIP/2.0/UDP 10.0.0.5:5062;branch=b", same)); got != "SIP/2.0/UDP 10.0.0.5:5062;branch=b" {
		t.Errorf("no received wanted: %s", got)
	}
}

func TestResponseStableToTag(t *testing.T) {
	var m Msg
	if err := Parse(sampleRegister, &m); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("10.0.0.5:5062")
	a := string(appendResponse(nil, &m, 200, "OK", src, nil))
	b := string(appendResponse(nil, &m, 200, "OK", src, nil))
	if a != b || !strings.Contains(a, "To: <sip:1001@10.0.0.1>;tag=pb") || !strings.Contains(a, "rport=5062") {
		t.Errorf("response:\n%s", a)
	}
	var r Msg
	if err := Parse(a, &r); err != nil || r.Request || r.Status != 200 || r.Count("via") != 2 {
		t.Errorf("response does not parse back: %v %+v", err, r)
	}
}

// FuzzParse: no input panics the parser or the answer built from it; an
// accepted message re-parses from the answer's own headers.
func FuzzParse(f *testing.F) {
	f.Add(sampleRegister)
	f.Add("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n")
	f.Add("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKpbx.1\r\nCSeq: 1 INVITE\r\n\r\n")
	f.Add("INVITE sip:1@h SIP/2.0\r\nv: SIP/2.0/UDP h\r\nm: *\r\nl: 3\r\n\r\nabc")
	f.Add("REGISTER sip:x SIP/3.0\r\nVia: SIP/2.0/UDP a:1;branch=1\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		var m Msg
		src := netip.MustParseAddrPort("127.0.0.1:5060")
		badRequest(nil, raw, 400, "Bad Request", src)
		if Parse(raw, &m) != nil {
			return
		}
		m.CheckRequest()
		m.TopVia()
		m.CSeq()
		m.MaxForwards()
		m.Tag("from")
		ParseURI(m.URI)
		m.Each("contact", func(v string) bool { ParseAddr(v); return true })
		if !m.Request {
			return
		}
		out := appendResponse(nil, &m, 400, "Bad Request", src, nil)
		var r Msg
		if err := Parse(string(out), &r); err != nil {
			t.Fatalf("our answer does not parse: %v\n%q", err, out)
		}
	})
}
