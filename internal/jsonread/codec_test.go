package jsonread

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// stamp is a type with its own JSON (as health.Time): ISO or null.
type stamp struct{ time.Time }

func (t stamp) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return []byte(`"` + t.UTC().Format(time.RFC3339) + `"`), nil
}

func (t *stamp) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339, s)
	t.Time = v
	return err
}

// texty is a type that is a string through MarshalText.
type texty int

func (t texty) MarshalText() ([]byte, error) { return []byte("t<" + string(rune('a'+t)) + ">"), nil }

type Inner struct {
	A int    `json:"a"`
	B string `json:"b,omitempty"`
}

type Inner2 struct {
	Hidden int `json:"hidden"`
	Shadow string
}

// doc has every feature the project's documents use, and a few more.
type doc struct {
	Inner
	*Inner2
	Name     string             `json:"name"`
	Shadow   string             `json:"Shadow"`
	Count    int32              `json:"count"`
	Big      int64              `json:"big"`
	U        uint64             `json:"u,omitempty"`
	Score    *float64           `json:"score"`
	Ratio    float64            `json:"ratio"`
	Small    float32            `json:"small,omitempty"`
	OK       bool               `json:"ok"`
	When     stamp              `json:"when"`
	At       time.Time          `json:"at"`
	Maybe    *stamp             `json:"maybe,omitempty"`
	Tags     []string           `json:"tags"`
	Nums     []int64            `json:"nums,omitempty"`
	Fixed    [3]int64           `json:"fixed"`
	Threads  map[string]*Inner  `json:"threads,omitempty"`
	Counts   map[string]uint64  `json:"counts"`
	Any      any                `json:"any"`
	Text     texty              `json:"text"`
	Skip     string             `json:"-"`
	Dash     string             `json:"-,"`
	NoTag    int                // by its Go name
	Nested   *doc               `json:"nested,omitempty"`
	Rows     []Inner            `json:"rows"`
	Zero     time.Time          `json:"zero,omitzero"`
	Empty    map[string]float64 `json:"empty,omitempty"`
	private  int
	EmptyArr []int `json:"empty_arr"`
}

func sample() doc {
	s := 87.5
	return doc{
		Inner:  Inner{A: 7, B: "b & <b>"},
		Inner2: &Inner2{Hidden: 3, Shadow: "inner"},
		Name:   "Ünïcode \u2028 \x01 \b\f\n\r\t \"q\" \\ / \xff end", Shadow: "outer",
		Count: -5, Big: math.MaxInt64, U: math.MaxUint64, Score: &s, Ratio: 1e-7, Small: 3.25e21, OK: true,
		When: stamp{time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)}, At: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC),
		Tags: []string{"x", "", "<y>"}, Nums: []int64{1, -2, 3}, Fixed: [3]int64{4, 5, 6},
		Threads: map[string]*Inner{"sip": {A: 1}, "directory": nil, "a": {B: "z"}},
		Counts:  map[string]uint64{"b": 2, "a": 1}, Any: map[string]any{"k": []any{1.5, "s", nil, true}},
		Text: 2, Skip: "no", Dash: "dash", NoTag: 9, Nested: &doc{Name: "n", Tags: []string{}},
		Rows: []Inner{{A: 1}, {A: 2, B: "two"}}, EmptyArr: []int{},
	}
}

// TestDecodeAsEncodingJSON: texts encoding/json wrote read back into the
// same values as encoding/json reads them.
func TestDecodeAsEncodingJSON(t *testing.T) {
	in := sample()
	in.Any = nil
	for _, indent := range []string{"", "\t"} {
		b, err := json.MarshalIndent(in, "", indent)
		if err != nil {
			t.Fatal(err)
		}
		// texty has no UnmarshalText: both decoders say so, and read
		// the rest.
		var want, got doc
		jerr := json.Unmarshal(b, &want)
		err = Unmarshal(b, &got)
		if jerr == nil || err == nil {
			t.Errorf("the text member: errors %v, %v; want both", err, jerr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("indent %q:\n got %+v\nwant %+v", indent, got, want)
		}
	}
	// Case folding, unknown members, null, escapes, surrogates.
	text := `{"NAME":"a\u00e9\ud83d\ude00\ud800x\/","unknown":{"deep":[1,{"x":null}]},"score":null,"tags":null,"count":"7",
		"fixed":[1,2,3,4],"threads":{"x":{"a":1}},"any":{"n":[1,2e3,"s",true,null]},"when":null,"maybe":"2026-11-29T10:00:00Z","Hidden":4}`
	var want, got doc
	jerr := json.Unmarshal([]byte(text), &want)
	err := Unmarshal([]byte(text), &got)
	if (err == nil) != (jerr == nil) || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v (%v)\nwant %+v (%v)", got, err, want, jerr)
	}
	var te *TypeError
	if !errors.As(err, &te) || te.Field != "count" {
		t.Errorf("the string for count: error %v, want a TypeError on count", err)
	}
}

// TestDecodeErrors: texts that are not JSON are rejected with their
// offset, and change nothing; limits hold.
func TestDecodeErrors(t *testing.T) {
	for _, text := range []string{``, ` `, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `01`, `1.`, `1e`, `-`, `.5`, `"\x01"`, `"\u12"`,
		`"\q"`, `tru`, `nul`, `{} {}`, `{"a":1}x`, `"abc`, `[`, `{"a":1`, "\"\\", `{1:2}`, `["a":1]`, `+1`, `NaN`} {
		v := doc{Name: "kept"}
		err := Unmarshal([]byte(text), &v)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: error %v, want a SyntaxError", text, err)
		}
		if json.Valid([]byte(text)) {
			t.Errorf("%q: encoding/json calls it valid", text)
		}
		if v.Name != "kept" {
			t.Errorf("%q: the value changed", text)
		}
	}
	deep := strings.Repeat("[", 65) + strings.Repeat("]", 65)
	var v any
	if err := Unmarshal([]byte(deep), &v); err == nil || !strings.Contains(err.Error(), "nesting deeper than 64") {
		t.Errorf("65 levels: %v", err)
	}
	if err := (Limits{Depth: 65}).Unmarshal([]byte(deep), &v); err != nil {
		t.Errorf("65 levels with Depth 65: %v", err)
	}
	if err := (Limits{Size: 10}).Unmarshal([]byte(`"01234567890"`), &v); err == nil {
		t.Error("a text past the size limit was read")
	}
	if err := Unmarshal([]byte(`1`), v); err == nil {
		t.Error("Unmarshal into a non-pointer: no error")
	}
}

// TestScannerTokens: the tokenizer's view of a text, as the ubus call
// arguments parser uses it.
func TestScannerTokens(t *testing.T) {
	s := NewScanner([]byte(` {"a" : [1, -2.5e3, "x", true, false, null, {}], "b":{}} `), Limits{})
	var got []string
	for {
		tok, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string("?{}[]snTFN"[tok.Kind])+tok.Text)
	}
	want := "{ sa [ n1 n-2.5e3 sx T F N { } ] sb { } }"
	if strings.Join(got, " ") != want {
		t.Errorf("tokens %q, want %q", strings.Join(got, " "), want)
	}
}

// benchText is a table of 1,000 documents, as encoding/json writes it.
func benchText(b *testing.B) []byte {
	rows := make([]doc, 1000)
	for i := range rows {
		rows[i] = sample()
		rows[i].Any, rows[i].Text = nil, 0
	}
	text, err := json.Marshal(rows)
	if err != nil {
		b.Fatal(err)
	}
	return text
}

// BenchmarkUnmarshal and BenchmarkEncodingJSONUnmarshal read the same
// table: what a start costs reading the saved files, against
// encoding/json.
func BenchmarkUnmarshal(b *testing.B) {
	text := benchText(b)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		var rows []doc
		if err := Unmarshal(text, &rows); err != nil && !strings.Contains(err.Error(), "texty") {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodingJSONUnmarshal(b *testing.B) {
	text := benchText(b)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		var rows []doc
		if err := json.Unmarshal(text, &rows); err != nil && !strings.Contains(err.Error(), "texty") {
			b.Fatal(err)
		}
	}
}
