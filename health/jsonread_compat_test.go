package health

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/aredn/phonebookd/internal/jsonread"
)

// bothDecoders reads b into a new *T with encoding/json and with
// internal/jsonread, and fails where they differ.
func bothDecoders[T any](t *testing.T, what string, b []byte) *T {
	t.Helper()
	want, got := new(T), new(T)
	jerr := json.Unmarshal(b, want)
	err := jsonread.Unmarshal(b, got)
	if jerr != nil || err != nil {
		t.Fatalf("%s: encoding/json: %v, jsonread: %v", what, jerr, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: jsonread read\n%+v\nencoding/json read\n%+v", what, got, want)
	}
	return got
}

// TestDocumentsReadAsEncodingJSON: the documents the page decodes (here
// the golden ubus texts) and the same documents as encoding/json writes
// them for D-Bus and the reporter read into the same Go values with
// jsonread as with encoding/json.
func TestDocumentsReadAsEncodingJSON(t *testing.T) {
	st, err := os.ReadFile(filepath.Join("testdata", "status.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := os.ReadFile(filepath.Join("testdata", "check.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The golden files mark measured figures; any number stands in.
	st, ck = bytes.ReplaceAll(st, []byte("<measured>"), []byte("12")), bytes.ReplaceAll(ck, []byte("<measured>"), []byte("0.5"))
	sh := bothDecoders[SoftwareHealth](t, "status.golden.json", st)
	c := bothDecoders[Check](t, "check.golden.json", ck)
	if len(sh.Threads) == 0 || len(c.Alerts) == 0 || c.Timestamp.IsZero() {
		t.Fatalf("the golden documents read as nearly empty: %+v %+v", sh, c)
	}
	for _, doc := range []any{sh, c} {
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		switch doc.(type) {
		case *SoftwareHealth:
			bothDecoders[SoftwareHealth](t, "status as encoding/json writes it", b)
		case *Check:
			bothDecoders[Check](t, "check as encoding/json writes it", b)
		}
	}
}

// TestHistoryFileWrittenByEncodingJSONLoads: a history file as the
// previous release wrote it (encoding/json) is read back whole.
func TestHistoryFileWrittenByEncodingJSONLoads(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	f := savedHistory{Version: historyVersion, Marks: []savedMark{{Time: now.Add(-time.Hour).Unix(), Kind: "restart", Worker: "sip", Reason: "panic: \"quoted\" <html> \u00e9"}}}
	for i := 0; i < 30; i++ {
		f.Points = append(f.Points, [10]int64{now.Add(time.Duration(i-30) * time.Minute).Unix(), 1, 95, 6400, 1750, 12, int64(i), 0, 0, 0})
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	bothDecoders[savedHistory](t, "history", b)
	path := filepath.Join(t.TempDir(), HistoryFile)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h := NewHistory(time.Minute, 1440)
	n, err := h.Load(path, now, nil)
	if err != nil || n != 30 {
		t.Fatalf("loaded %d points (%v), want 30", n, err)
	}
	if len(h.marks) != 1 || h.marks[0].Reason != f.Marks[0].Reason {
		t.Errorf("marks %+v", h.marks)
	}
}
