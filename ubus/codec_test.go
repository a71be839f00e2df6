package ubus

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/aredn/phonebookd/internal/shared"
)

// TestVectorsRoundTrip: every message of every capture of the real ubusd
// decodes, and re-encoding gives the same bytes; every DATA and SIGNATURE
// payload decodes as blobmsg and re-encodes to the same bytes.
func TestVectorsRoundTrip(t *testing.T) {
	total := 0
	for _, name := range shared.CaptureNames(t) {
		for i, ev := range shared.Capture(t, name) {
			if ev.Dir == "close" {
				continue
			}
			total++
			m, err := Unmarshal(ev.Bytes)
			if err != nil {
				t.Fatalf("%s #%d: %v", name, i, err)
			}
			if got := m.Marshal(); !bytes.Equal(got, ev.Bytes) {
				t.Fatalf("%s #%d: re-encoded\n%x\nwant\n%x", name, i, got, ev.Bytes)
			}
			if m.Type == MsgMonitor {
				continue // monitor records reuse attribute ids 0-5
			}
			for _, a := range m.Attrs {
				if a.ID != AttrData && a.ID != AttrSignature {
					continue
				}
				vs, err := DecodeValues(a.Data)
				if err != nil {
					// The monitor's own "add" call carries raw blob
					// attributes, not blobmsg (capture 09).
					if name == "09-monitor" {
						continue
					}
					t.Fatalf("%s #%d attr %d: %v", name, i, a.ID, err)
				}
				if got := AppendValues(nil, vs); !bytes.Equal(got, a.Data) {
					t.Fatalf("%s #%d attr %d: blobmsg re-encoded\n%x\nwant\n%x", name, i, a.ID, got, a.Data)
				}
			}
		}
	}
	if total < 100 {
		t.Fatalf("only %d messages checked", total)
	}
	t.Logf("%d messages round-tripped", total)
}

// TestBlobmsgTypes pins the encoding of every type against the bytes of
// capture 03 (the "types" reply of the vec test server).
func TestBlobmsgTypes(t *testing.T) {
	want := []Value{
		Str("s", "hi"), Str("empty", ""), Bool("bool_true", true),
		{Name: "i8", Kind: Int8, Int: 127}, {Name: "i16", Kind: Int16, Int: 4660},
		I32("i32", -2), I64("i64", 72623859790382856), Dbl("d", 1.5), Null("null"),
		Arr("a", I32("", 1), Str("", "two")), Tbl("t", I32("k", 7)),
	}
	var found bool
	for _, ev := range shared.Capture(t, "03-invoke-data-status") {
		m, _ := Unmarshal(ev.Bytes)
		if m == nil || m.Type != MsgData {
			continue
		}
		if a, ok := m.Attr(AttrData); ok && len(a.Data) == 0xc8-4 {
			found = true
			if got := AppendValues(nil, want); !bytes.Equal(got, a.Data) {
				t.Fatalf("encoded\n%x\nwant\n%x", got, a.Data)
			}
			vs, err := DecodeValues(a.Data)
			if err != nil {
				t.Fatal(err)
			}
			if FormatJSON(vs, false, 0) != FormatJSON(want, false, 0) {
				t.Fatalf("decoded %v", vs)
			}
		}
	}
	if !found {
		t.Fatal("types reply not found in capture 03")
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := map[string][]byte{
		"short header":      {0x83, 0, 0},
		"length too small":  {0x83, 0, 0, 2},
		"length overruns":   {0x83, 0, 0, 0x20, 0, 1, 's', 0},
		"not extended":      {0x03, 0, 0, 8, 0, 0, 0, 0},
		"unknown type":      {0x89, 0, 0, 8, 0, 0, 0, 0},
		"name unterminated": {0x83, 0, 0, 8, 0, 2, 'a', 'b'},
		"string no NUL":     {0x83, 0, 0, 9, 0, 0, 0, 0, 'x', 0, 0, 0},
		"int32 wrong size":  {0x85, 0, 0, 10, 0, 0, 0, 0, 1, 2, 0, 0},
	}
	for name, b := range cases {
		if _, err := DecodeValues(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := Unmarshal([]byte{0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9}); err == nil {
		t.Error("message with container longer than itself: no error")
	}
}

// TestLibuboxCorpus: every input of libubox's own fuzz corpus decodes to a
// value or a clear error, never a panic.
func TestLibuboxCorpus(t *testing.T) {
	files, _ := filepath.Glob(shared.Path(t, "ubus-vectors", "libubox-fuzz-corpus", "*"))
	if len(files) == 0 {
		t.Fatal("no corpus")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		DecodeValues(b)
		Unmarshal(b)
		if len(b) >= 4 {
			if attrs, err := ParseAttrs(b); err == nil {
				for _, a := range attrs {
					DecodeValue(a)
				}
			}
		}
	}
	// The valid message decodes as one blobmsg table body.
	b, _ := os.ReadFile(shared.Path(t, "ubus-vectors", "libubox-fuzz-corpus", "valid-blobmsg.bin"))
	if _, err := ParseAttrs(b); err != nil {
		t.Errorf("valid-blobmsg.bin: %v", err)
	}
}

func seedFuzz(f *testing.F) {
	for _, name := range shared.CaptureNames(f) {
		for _, ev := range shared.Capture(f, name) {
			if len(ev.Bytes) > 0 {
				f.Add(ev.Bytes)
			}
		}
	}
	files, _ := filepath.Glob(shared.Path(f, "ubus-vectors", "libubox-fuzz-corpus", "*"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
}

// FuzzMessage: decode never panics; what decodes re-encodes and decodes
// to the same message.
func FuzzMessage(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			return
		}
		m2, err := Unmarshal(m.Marshal())
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !bytes.Equal(m.Marshal(), m2.Marshal()) {
			t.Fatal("round trip differs")
		}
	})
}

// FuzzBlobmsg: decode (as a table body) never panics; decode, encode,
// decode gives the same values.
func FuzzBlobmsg(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		vs, err := DecodeValues(b)
		if err != nil {
			return
		}
		enc := AppendValues(nil, vs)
		vs2, err := DecodeValues(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !bytes.Equal(AppendValues(nil, vs2), enc) {
			t.Fatal("round trip differs")
		}
	})
}

func TestFieldPayload(t *testing.T) {
	body := AppendValues(nil, []Value{Str("status", "degraded"), Str("timestamp", "2026-11-28T12:00:00Z"), I64("uptime_seconds", 42), Tbl("x", I32("y", 1))})
	off, n, ok := FieldPayload(body, "timestamp")
	if !ok || string(body[off:off+n]) != "2026-11-28T12:00:00Z\x00" {
		t.Fatalf("timestamp: %d %d %v %q", off, n, ok, body[off:off+n])
	}
	off, n, ok = FieldPayload(body, "uptime_seconds")
	if !ok || n != 8 || body[off+7] != 42 {
		t.Fatalf("uptime: %d %d %v", off, n, ok)
	}
	if _, _, ok := FieldPayload(body, "y"); ok {
		t.Error("found a nested member at the top level")
	}
	if _, _, ok := FieldPayload(body[:7], "status"); ok {
		t.Error("a cut body was read")
	}
}

type when string

func (w when) UbusValue(name string) Value {
	if w == "" {
		return Null(name)
	}
	return Str(name, string(w))
}

func TestValuesOf(t *testing.T) {
	f := 1.5
	doc := struct {
		A string           `json:"a"`
		B bool             `json:"b"`
		C int32            `json:"c"`
		D int64            `json:"d"`
		E *float64         `json:"e"`
		F *float64         `json:"f"`
		G *int32           `json:"g,omitempty"`
		H map[string]int32 `json:"h"`
		I []string         `json:"i"`
		J struct {
			K when `json:"k"`
		} `json:"j"`
		X     []Value `json:"-" ubus:",inline"`
		skip  int
		Skip2 int `json:"-"`
	}{A: "x", B: true, C: 3, D: 1 << 40, E: &f, H: map[string]int32{"z": 1, "a": 2}, X: []Value{Str("extra", "y")}}
	got := FormatJSON(ValuesOf(&doc), false, -1)
	want := `{"a":"x","b":true,"c":3,"d":1099511627776,"e":1.500000,"f":null,"h":{"a":2,"z":1},"i":[],"j":{"k":null},"extra":"y"}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	vs := ValuesOf(doc)
	if vs[2].Kind != Int32 || vs[3].Kind != Int64 || vs[1].Kind != Int8 {
		t.Errorf("kinds %v %v %v", vs[1].Kind, vs[2].Kind, vs[3].Kind)
	}
}
