package ubus

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestParseJSONObject: `ubus call` arguments become blobmsg values by
// the ubus tool's rules, in order; what is not one JSON object, or nests
// deeper than a message may, is refused.
func TestParseJSONObject(t *testing.T) {
	got, err := ParseJSONObject(` {"a":1,"b":2147483648,"c":-1.5e1,"d":true,"e":null,"f":"x\u00e9","g":[1,{"h":false}],"j":{},"a":2} `)
	if err != nil {
		t.Fatal(err)
	}
	want := []Value{I32("a", 1), I64("b", 2147483648), Dbl("c", -15), Bool("d", true), {Name: "e", Kind: Unspec}, Str("f", "x\u00e9"),
		Arr("g", I32("", 1), Tbl("", Bool("h", false))), Tbl("j"), I32("a", 2)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	ok := strings.Repeat(`{"x":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1)
	if _, err := ParseJSONObject(ok); err != nil {
		t.Errorf("%d levels: %v", MaxDepth+1, err)
	}
	for _, bad := range []string{`[1]`, `"s"`, `{"a":1} {}`, `{"a":1,}`, `{"a" 1}`, `{`, ``, `{"a":01}`,
		strings.Repeat(`{"x":`, MaxDepth+2) + "1" + strings.Repeat("}", MaxDepth+2)} {
		if v, err := ParseJSONObject(bad); err == nil {
			t.Errorf("%.40q: accepted as %+v", bad, v)
		} else if !strings.HasPrefix(err.Error(), "parse JSON: ") {
			t.Errorf("%.40q: error %q", bad, err)
		}
	}
}

// FuzzParseJSONObject: `ubus call` arguments are accepted exactly when
// encoding/json calls them one valid JSON object (within MaxDepth+1
// levels), with one value per member; nothing panics.
func FuzzParseJSONObject(f *testing.F) {
	for _, seed := range []string{`{}`, `{"a":1,"b":[true,null,{"c":"d"}]}`, `{"n":-1.5e300,"i":9223372036854775807,"j":9223372036854775808}`,
		`{"s":"\u00e9\ud83d\ude00\ud800"}`, `[1]`, `null`, ` {} `, `{"a":1}x`, `{"a":}`, strings.Repeat(`{"x":`, 70) + "1" + strings.Repeat("}", 70)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		vs, err := ParseJSONObject(s)
		var members map[string]json.RawMessage
		object := json.Valid([]byte(s)) && strings.HasPrefix(strings.TrimLeft(s, " \t\r\n"), "{") && json.Unmarshal([]byte(s), &members) == nil
		deep := depthOf(s) > MaxDepth+1
		switch {
		case err == nil && (!object || deep):
			t.Fatalf("%q accepted: not one JSON object within the depth", s)
		case err != nil && object && !deep:
			t.Fatalf("%q refused: %v", s, err)
		case err == nil && len(vs) < len(members):
			t.Fatalf("%q: %d values for %d distinct members", s, len(vs), len(members))
		}
	})
}

// depthOf is the deepest nesting of a JSON text (strings skipped).
func depthOf(s string) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}
