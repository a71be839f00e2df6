package crash

import (
	"encoding/json"
	"testing"
	"time"
)

// TestMarkerAsEncodingJSON: the marker written by hand at each
// evaluation is byte for byte what encoding/json wrote before (sorted
// worker keys, RFC 3339 nanosecond times, a nil map as null), so that a
// marker left by either reads back the same.
func TestMarkerAsEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 29, 20, 40, 1, 123456789, time.FixedZone("x", 3600))
	for _, m := range []marker{
		{PID: 4242, Started: at, Alive: at.Add(time.Minute), BootID: "0f8c2d1e-aaaa-bbbb-cccc-123456789abc",
			Workers: map[string]uint64{"safety": 7, "main": 12, "fetcher": 1 << 63, "monitor": 0}},
		{PID: 1, Started: at.UTC(), Alive: at.UTC(), BootID: `odd"\` + "\x01", Workers: map[string]uint64{}},
		{},
	} {
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.appendJSON(nil); string(got) != string(want) {
			t.Errorf("marker %+v:\n got %s\nwant %s", m, got, want)
		}
	}
}
