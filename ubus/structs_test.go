package ubus

import (
	"encoding/json"
	"testing"
	"time"
)

// stamp is a time that is text on the wire, or null when zero (as
// health.Time is).
type stamp struct{ time.Time }

func (s stamp) MarshalText() ([]byte, error) { return []byte(s.UTC().Format(time.RFC3339)), nil }
func (s stamp) MarshalJSON() ([]byte, error) {
	if s.IsZero() {
		return []byte("null"), nil
	}
	b, _ := s.MarshalText()
	return json.Marshal(string(b))
}

type extraA struct {
	N int32 `json:"n"`
}

type extraB struct {
	R *float64 `json:"r"`
}

type extras struct {
	*extraA
	*extraB
}

// TestAppendStructMatchesJSON: the blobmsg of a document with what the
// documents use (embedded groups of members, nil or not; texts that are
// null when zero; omitted empty strings; columns of plain values and of
// pointers, never nil: blobmsg has no null array) says what encoding/json says of the same value, member for
// member and in order, and equals the Value encoder's bytes.
func TestAppendStructMatchesJSON(t *testing.T) {
	one := 2.5
	type doc struct {
		Name  string   `json:"name"`
		Note  string   `json:"note,omitempty"`
		Empty string   `json:"empty,omitempty"`
		At    stamp    `json:"at"`
		Never stamp    `json:"never"`
		Col   []int32  `json:"col"`
		Ptrs  []*int32 `json:"ptrs"`
		Strs  []string `json:"strs"`
		extras
	}
	n := int32(7)
	for _, d := range []doc{
		{Name: "a", Note: "n", At: stamp{time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}, Col: []int32{1, -2}, Ptrs: []*int32{&n, nil}, Strs: []string{"x", ""},
			extras: extras{extraA: &extraA{N: 3}, extraB: &extraB{R: &one}}},
		{Name: "b", Col: []int32{}, Ptrs: []*int32{}, Strs: []string{}, extras: extras{extraB: &extraB{}}},
		{Col: []int32{}, Ptrs: []*int32{}, Strs: []string{}},
	} {
		body := AppendStruct(nil, &d)
		vs, err := DecodeValues(body)
		if err != nil {
			t.Fatal(err)
		}
		if again := AppendValues(nil, vs); string(again) != string(body) {
			t.Errorf("%+v: AppendStruct and AppendValues differ", d)
		}
		var fromBlob, fromJSON any
		if err := json.Unmarshal([]byte(FormatJSON(vs, false, -1)), &fromBlob); err != nil {
			t.Fatal(err)
		}
		j, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(j, &fromJSON); err != nil {
			t.Fatal(err)
		}
		if a, b := mustJSON(t, fromBlob), mustJSON(t, fromJSON); a != b {
			t.Errorf("blobmsg says %s\nJSON says    %s", a, b)
		}
		var names []string
		for _, v := range vs {
			names = append(names, v.Name)
		}
		want := []string{"name", "note", "at", "never", "col", "ptrs", "strs", "n", "r"}
		switch d.Name {
		case "b":
			want = []string{"name", "at", "never", "col", "ptrs", "strs", "r"}
		case "":
			want = []string{"name", "at", "never", "col", "ptrs", "strs"}
		}
		if mustJSON(t, names) != mustJSON(t, want) {
			t.Errorf("members %v, want %v", names, want)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
