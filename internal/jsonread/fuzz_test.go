package jsonread

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// FuzzUnmarshal holds the decoder to encoding/json as the oracle: a text
// encoding/json calls valid is accepted (unless nested past the depth
// limit, then refused for that) and read into the same values, into an
// interface and into a document type; a text it calls invalid is refused
// with a SyntaxError; nothing panics.
func FuzzUnmarshal(f *testing.F) {
	full, _ := json.Marshal(sample())
	indented, _ := json.MarshalIndent(sample(), "", "\t")
	for _, seed := range []string{string(full), string(indented), `{}`, `[]`, `null`, `true`, `-0.0e-0`, `1e400`, `18446744073709551616`,
		`"\ud83d\ude00\ud800\udc00\udfff\ud800"`, `"\u2028<&>"`, "\"\xff\xfe\"", `{"a":1,"a":2}`, `{"NAME":"x","name":"y"}`,
		`{"fixed":[1,2,3,4,5]}`, `{"count":2147483648}`, `{"count":1.0}`, `{"when":"not a time"}`, `[1,]`, `{"a" 1}`, `01`,
		strings.Repeat("[", 70) + strings.Repeat("]", 70), `{"threads":{"a":null,"b":{"a":1}}}`, ` {"any":[{}]} `} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		valid := json.Valid(data)
		err := Valid(data, Limits{})
		var se *SyntaxError
		switch {
		case valid && err != nil && !strings.Contains(err.Error(), "nesting deeper than"):
			t.Fatalf("valid JSON refused: %v\n%q", err, data)
		case !valid && err == nil:
			t.Fatalf("invalid JSON accepted: %q", data)
		case err != nil && !errors.As(err, &se):
			t.Fatalf("error %v is not a SyntaxError", err)
		}
		if err != nil {
			var v any
			if uerr := Unmarshal(data, &v); uerr == nil || v != nil {
				t.Fatalf("refused text read: %v, %v", uerr, v)
			}
			return
		}
		var want, got any
		jerr := json.Unmarshal(data, &want)
		uerr := Unmarshal(data, &got)
		if (jerr == nil) != (uerr == nil) || !reflect.DeepEqual(got, want) {
			t.Fatalf("into any:\n got %#v (%v)\nwant %#v (%v)", got, uerr, want, jerr)
		}
		var wantDoc, gotDoc doc
		jerr = json.Unmarshal(data, &wantDoc)
		uerr = Unmarshal(data, &gotDoc)
		if (jerr == nil) != (uerr == nil) || !reflect.DeepEqual(gotDoc, wantDoc) {
			t.Fatalf("into a document:\n got %+v (%v)\nwant %+v (%v)", gotDoc, uerr, wantDoc, jerr)
		}
	})
}
