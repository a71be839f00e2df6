package runtimetune

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"
	"unsafe"
)

// childEnv runs TestStartupCollectionsSettleRuntime's measurement in a
// fresh process of the test binary: the runtime's first collections are
// what it measures, and the parent test process has collected many times.
const childEnv = "RUNTIMETUNE_TEST_STARTUP_CHILD"

// TestStartupCollectionsSettleRuntime: the collections that end start-up
// leave the runtime's memory outside the heap arenas at its settled
// size, so that the idle daemon's later collections (the runtime's own,
// every 2 minutes, and the idle rule's) do not raise it. Measured in a
// fresh process: that memory, resident, after the scavenger's start-up
// and after 4 more collections. The runtime's mark-bit arenas (64 KB
// each, a current, next and previous one) are cleared whole when first
// reused, from the fourth collection on: with 3 start-up collections the
// next two raised it by 132 KB (880 -> 1,012 KB in a small program;
// +60 and +64 KB at the daemon's first two idle collections, 120 and
// 240 s after start).
func TestStartupCollectionsSettleRuntime(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		startupChild(t)
		return
	}
	if _, err := os.Stat("/proc/self/smaps"); err != nil {
		t.Skip("no /proc/self/smaps")
	}
	bin := os.Args[0]
	if raceEnabled {
		// The race detector's shadow memory is off-heap memory that
		// grows with each allocation: the child is this package's test
		// binary built without it, so that the suite, run with -race,
		// measures too.
		bin = plainTestBinary(t)
	}
	cmd := exec.Command(bin, "-test.run=^TestStartupCollectionsSettleRuntime$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1", "GOGC=", "GOMEMLIMIT=", "GODEBUG=")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var after, later int
	for l := range strings.Lines(string(out)) {
		if _, rest, ok := strings.Cut(l, "off-heap resident KB: "); ok {
			if _, err := fmt.Sscanf(rest, "%d after start-up, %d after 4 more collections", &after, &later); err != nil {
				t.Fatalf("child line %q: %v", l, err)
			}
		}
	}
	if after == 0 {
		t.Fatal("the child reported no figures")
	}
	// The settled runtime's noise is a few pages (span structures, work
	// buffers); one mark-bit arena cleared is 64 KB.
	if later-after > 32 {
		t.Errorf("the runtime's off-heap memory grew by %d KB over 4 collections after start-up (%d -> %d KB): start-up left it unsettled", later-after, after, later)
	}
}

// plainTestBinary builds this package's test binary without the race
// detector (GOFLAGS cleared: it may carry -race) into the test's
// temporary directory.
func plainTestBinary(t *testing.T) string {
	if testing.Short() {
		t.Skip("-short: no build of a test binary without the race detector")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool to build the child without the race detector: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "runtimetune.test")
	cmd := exec.Command(goTool, "test", "-c", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	return bin
}

var churn [][]byte

// startupChild runs the scavenger's start-up on the real runtime, then
// collects 4 more times with some allocation in between, as the idle
// daemon does, and prints the off-heap resident memory at both points.
func startupChild(t *testing.T) {
	// A heap of a few hundred spans of many size classes, as the daemon's.
	for i := range 3000 {
		churn = append(churn, make([]byte, 16+i%2000))
	}
	cycles := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	c0 := cycles()
	s, clk, stop := realScavenger(t)
	s.Started()
	waitFor(t, func() bool { return cycles() >= c0+StartupCollections }, "the start-up collections")
	waitTimer(t, clk) // the start-up handled, the next period armed
	stop()
	after := offHeapKB(t)
	for range 4 {
		// the idle daemon's trickle: a few KB between collections
		for j := range 100 {
			churn[j] = make([]byte, 16+j%100)
		}
		debug.FreeOSMemory()
	}
	later := offHeapKB(t)
	t.Logf("off-heap resident KB: %d after start-up, %d after 4 more collections", after, later)
}

// smapsBuf holds /proc/self/smaps while offHeapKB reads it, allocated
// once before the start-up: the measurement must not allocate itself,
// or its garbage would be what the next collections handle.
var smapsBuf = make([]byte, 4<<20)

// offHeapKB is the resident KB of the process's anonymous mappings that
// hold neither the heap (a heap object's address) nor the binary's
// data and bss (a package variable's address): the runtime's own
// structures (mark bits, span structures, the page allocator's
// summaries).
func offHeapKB(t *testing.T) int {
	heap := uintptr(unsafe.Pointer(&smapsBuf[0]))
	bss := uintptr(unsafe.Pointer(&smapsBuf))
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for n < len(smapsBuf) {
		m, err := f.Read(smapsBuf[n:])
		n += m
		if err != nil || m == 0 {
			break
		}
	}
	f.Close()
	if n == len(smapsBuf) {
		t.Fatal("smaps larger than its buffer")
	}
	total, counting := 0, false
	for line := range bytes.Lines(smapsBuf[:n]) {
		if v, ok := bytes.CutPrefix(line, []byte("Rss:")); ok {
			if counting {
				total += atoiKB(v)
			}
			continue
		}
		// A mapping's header: "start-end perms offset dev inode [path]".
		dash := bytes.IndexByte(line, '-')
		sp := bytes.IndexByte(line, ' ')
		if dash <= 0 || sp < dash || len(line) < sp+5 {
			continue
		}
		start, end := hexAt(line[:dash]), hexAt(line[dash+1:sp])
		perms := line[sp+1 : sp+5]
		// an anonymous mapping's header has no path after the inode
		anon := len(bytes.Fields(line)) == 5
		counting = anon && string(perms) == "rw-p" && !(start <= heap && heap < end) && !(start <= bss && bss < end)
	}
	return total
}

// hexAt reads a hexadecimal address of a maps line.
func hexAt(b []byte) uintptr {
	var v uintptr
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uintptr(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uintptr(c-'a'+10)
		}
	}
	return v
}

// atoiKB reads " 1234 kB".
func atoiKB(b []byte) int {
	v := 0
	for _, c := range b {
		if c >= '0' && c <= '9' {
			v = v*10 + int(c-'0')
		}
	}
	return v
}
