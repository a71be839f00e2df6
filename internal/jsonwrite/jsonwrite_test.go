package jsonwrite

import (
	"encoding/json"
	"testing"
)

// FuzzAppendString: the hand-written string encoding reads back as
// encoding/json's own encoding of the same string (URIs come from the
// network: quotes, controls, invalid UTF-8).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "sip:2000@10.0.0.1:5060", `a"b\c`, "line\r\nnext\x00\x1f\x7f", "\xff\xfe bad", "日本語", "\u2028\u2029<>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mine := AppendString(nil, s)
		theirs, _ := json.Marshal(s)
		var a, b string
		if err := json.Unmarshal(mine, &a); err != nil {
			t.Fatalf("%q encoded as %s: %v", s, mine, err)
		}
		if err := json.Unmarshal(theirs, &b); err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Fatalf("%q reads back as %q, encoding/json's as %q", s, a, b)
		}
	})
}

// TestAppendStringAsEncodingJSON: without <, > and &, the bytes are
// encoding/json's own, short escapes included.
func TestAppendStringAsEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "a\"b\\c", "\n\r\t\b\f\x00\x01\x1f\x7f", "\xff\xfe", "日本", "\u2028\u2029"} {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	}
}
