package procfs

import (
	"os"
	"testing"
	"time"
)

func TestStatTicksCommandWithSpaces(t *testing.T) {
	// comm may hold spaces and ')': fields count from the last ')'.
	line := []byte("4711 (a b) c) S 1 4711 4711 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0")
	if n, ok := statTicks(line); !ok || n != 325 {
		t.Errorf("got %d %v, want 325", n, ok)
	}
	if _, ok := statTicks([]byte("4711 (x) S 1")); ok {
		t.Error("a short line was read")
	}
}

func TestReadFDsCountsOpenFiles(t *testing.T) {
	before := ReadFDs()
	if !before.Known {
		t.Skip("no /proc/self/fd here")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	after := ReadFDs()
	f.Close()
	if after.Open != before.Open+1 || after.File != before.File+1 || after.Max <= 0 {
		t.Errorf("before %+v, after opening a file %+v", before, after)
	}
}

func TestCPUWindow(t *testing.T) {
	var w CPUWindow
	if w.Pct(100) != nil {
		t.Fatal("a share from no samples")
	}
	t0 := time.Unix(0, 0)
	// 50 ticks a second at 100 Hz: half a CPU, over the last CPUSpan
	// even after 30 s of samples.
	for i := 0; i <= 30; i++ {
		w.Add(t0.Add(time.Duration(i)*time.Second), uint64(i*50))
	}
	if p := w.Pct(100); p == nil || *p < 49.9 || *p > 50.1 {
		t.Errorf("pct %v, want 50", p)
	}
	if w.Pct(0) != nil {
		t.Error("a share without USER_HZ")
	}
}
