package procfs

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestStatReaderAllocatesNothing: the process's and a thread's CPU are
// read every second, each measured thread's too; before StatReader each
// read allocated a path, a file, a buffer and a slice of fields (about
// 750 bytes, 9 KB/s of the idle daemon's heap growth).
func TestStatReaderAllocatesNothing(t *testing.T) {
	var r StatReader
	if _, ok := r.Process(); !ok {
		t.Skip("no /proc/self/stat here")
	}
	tid := unix.Gettid()
	if _, _, ok := r.Thread(tid); !ok {
		t.Fatalf("thread %d not read", tid)
	}
	if n := testing.AllocsPerRun(100, func() {
		r.Process()
		r.Thread(tid)
	}); n != 0 {
		t.Errorf("%.1f allocations per read of the process and a thread, want 0", n)
	}
}

// TestStatReaderAgreesWithTheKernel: the ticks read in place are those
// of the stat line split into fields, and they rise with CPU used.
func TestStatReaderAgreesWithTheKernel(t *testing.T) {
	var r StatReader
	before, ok := r.Process()
	if !ok {
		t.Skip("no /proc/self/stat here")
	}
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	after, _ := r.Process()
	if u+s < before || u+s > after {
		t.Errorf("split fields %d, read in place %d then %d", u+s, before, after)
	}
	if _, _, ok := r.Thread(1 << 30); ok {
		t.Error("a thread that does not exist was read")
	}
}

func TestStatTicksEdges(t *testing.T) {
	for _, line := range []string{
		"",
		"4711 (x",
		"4711 (x) S 1 2 3 4 5 6 7 8 9 10 11", // utime without stime
		"4711 (x) S 1 2 3 4 5 6 7 8 9 10 x 12 13",                // not a number
		"4711 (x) S 1 2 3 4 5 6 7 8 9 10 11\n12 13 14",           // the line ends first
		"4711 (x) S 1 2 3 4 5 6 7 8 9 10 99999999999999999999 1", // overflows
	} {
		if n, ok := statTicks([]byte(line)); ok {
			t.Errorf("%q read as %d", line, n)
		}
	}
	if n, ok := statTicks([]byte("1 (x) S 1 2 3 4 5 6 7 8 9 10 7 8\n")); !ok || n != 15 {
		t.Errorf("a line ending at stime: %d %v", n, ok)
	}
}

// TestFDReaderAllocatesNothing: the evaluation counts descriptors each
// time; with os.ReadDir's names, a path string per descriptor and the
// os package's pooled 8 KB directory buffer it allocated about 5 KB per
// evaluation. The counts are those of listing /proc/self/fd the plain
// way, with more descriptors than one getdents buffer holds.
func TestFDReaderAllocatesNothing(t *testing.T) {
	var r FDReader
	if !r.Read().Known {
		t.Skip("no /proc/self/fd here")
	}
	var files []*os.File
	for range 150 { // past one 2 KB getdents read
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	got := r.Read()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var want FDSample
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the descriptor ReadDir listed with
		}
		want.Open++
		switch {
		case strings.HasPrefix(link, "socket:"):
			want.Socket++
		case strings.HasPrefix(link, "pipe:"):
			want.Pipe++
		case strings.HasPrefix(link, "/"):
			want.File++
		default:
			want.Other++
		}
	}
	if got.Open != want.Open || got.File != want.File || got.Socket != want.Socket || got.Pipe != want.Pipe || got.Open < 150 {
		t.Errorf("read %+v, listed %+v", got, want)
	}
	if n := testing.AllocsPerRun(20, func() { r.Read() }); n != 0 {
		t.Errorf("%.1f allocations per read, want 0", n)
	}
	if n := testing.AllocsPerRun(20, func() { ReadFDs() }); n != 0 { // the health evaluation's call
		t.Errorf("ReadFDs: %.1f allocations, want 0", n)
	}
}
