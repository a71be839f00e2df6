package ubus

import (
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
