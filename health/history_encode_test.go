package health

import (
	"encoding/json"
	"testing"
)

// TestSavedHistoryAsEncodingJSON: the history copy written by hand at
// each history point is byte for byte what encoding/json wrote before
// (strings without the <, > and & encoding/json escapes for HTML), and a
// copy with any text reads back the same through the daemon's reader.
func TestSavedHistoryAsEncodingJSON(t *testing.T) {
	for _, f := range []savedHistory{
		{Version: historyVersion, Points: [][10]int64{{1_800_000_000, 2, 90, 5120, 2400, 17, 3, -1, 0, 1 << 40}, {1_800_000_060}},
			Marks: []savedMark{{Time: 1_800_000_030, Kind: "restart", Worker: "main", Reason: `stuck "for" 60 s` + "\n\x01"}, {}}},
		{Version: historyVersion, Points: [][10]int64{}, Marks: []savedMark{}},
		{},
	} {
		want, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.appendJSON(nil); string(got) != string(want) {
			t.Errorf("history %+v:\n got %s\nwant %s", f, got, want)
		}
	}
	f := savedHistory{Version: historyVersion, Points: [][10]int64{{1}}, Marks: []savedMark{{Time: 5, Kind: "crash", Reason: "panic: <nil> & \xff"}}}
	var back savedHistory
	if err := json.Unmarshal(f.appendJSON(nil), &back); err != nil {
		t.Fatal(err)
	}
	if back.Marks[0].Reason != "panic: <nil> & \ufffd" || back.Points[0] != f.Points[0] {
		t.Errorf("read back %+v", back)
	}
}
