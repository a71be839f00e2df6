package sip

import (
	"bytes"
	"os"
	"strings"
	"testing"

	gosip "github.com/emiago/sipgo/sip"
)

func TestBadRequestAndMissing(t *testing.T) {
	req := []byte("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1\r\nFrom: <sip:100@x>;tag=a\r\nTo: <sip:100@x>\r\nCall-ID: c1\r\nContent-Length: 0\r\n\r\n")
	if m := missingHeader(req); m != "cseq" {
		t.Errorf("missing %q, want cseq", m)
	}
	resp := string(BadRequest(req))
	for _, want := range []string{"SIP/2.0 400 Bad Request\r\n", "Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1\r\n", "To: <sip:100@x>;tag=pb400\r\n", "Call-ID: c1\r\n"} {
		if !strings.Contains(resp, want) {
			t.Errorf("400 lacks %q:\n%s", want, resp)
		}
	}
	if BadRequest([]byte("SIP/2.0 200 OK\r\nVia: x\r\n\r\n")) != nil {
		t.Error("answered a response")
	}
	if BadRequest([]byte("\x00\x01garbage")) != nil {
		t.Error("answered garbage with no request line")
	}
	good := []byte("OPTIONS sip:a SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK2\r\nf: <sip:a>;tag=1\r\nt: <sip:a>\r\ni: x\r\nCSeq: 1 OPTIONS\r\n\r\n")
	if m := missingHeader(good); m != "" {
		t.Errorf("compact headers: missing %q", m)
	}
}

func FuzzBadRequest(f *testing.F) {
	f.Add([]byte("INVITE sip:200@h SIP/2.0\r\nVia: a\r\n\r\nbody"))
	f.Add([]byte("REGISTER sip:x SIP/2.0\nTo: <sip:1@x>\n folded\n\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, raw []byte) {
		missingHeader(raw)
		resp := BadRequest(raw)
		if resp != nil && !bytes.HasPrefix(resp, []byte("SIP/2.0 400 Bad Request\r\n")) {
			t.Fatalf("bad answer %q", resp)
		}
	})
}

func TestForUsKnowsOwnNames(t *testing.T) {
	s := &Server{addr: "0.0.0.0:5060", self: selfNames("10.1.2.3", "local.mesh")}
	h, _ := os.Hostname()
	for _, host := range []string{"10.1.2.3", "127.0.0.1", strings.ToUpper(h) + ".local.mesh", h} {
		if !s.forUs(gosip.Uri{Host: host}) {
			t.Errorf("%s not recognised as this node", host)
		}
	}
	for _, u := range []gosip.Uri{{Host: "other-node.local.mesh"}, {Host: "10.9.9.9"}, {Host: "10.1.2.3", Port: 5070}} {
		if s.forUs(u) {
			t.Errorf("%v taken for this node", u)
		}
	}
}
