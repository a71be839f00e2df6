package main

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// needRoot skips a test that reads another process's memory.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("reading another process's memory (/proc/PID/mem, pagemap) needs root")
	}
}

// allocator is a program that allocates objects of many sizes (so
// spans in many size classes), keeps them, frees every other of 64
// large ones (free heap pages between live ones: the heap goal stays
// above what is retained, so the scavenger has no reason to release
// them), starts goroutines (stacks), says it is up, then sleeps.
const allocator = `package main

import (
	"os"
	"runtime"
	"time"
)

var keep, large [][]byte

func main() {
	for size := 8; size <= 40000; size += size/8 + 8 {
		for range 4 {
			keep = append(keep, make([]byte, size))
		}
	}
	for range 64 {
		b := make([]byte, 64<<10)
		b[0], b[len(b)-1] = 1, 1
		large = append(large, b)
	}
	for i := range large {
		if i%2 == 0 {
			large[i] = nil
		}
	}
	runtime.GC()
	block := make(chan struct{})
	for range 16 {
		go func() { <-block }()
	}
	os.Stdout.WriteString("up\n")
	time.Sleep(time.Hour)
}
`

// gocmd is the go command, or a skip.
func gocmd(t *testing.T) string {
	t.Helper()
	g, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build with: %v", err)
	}
	return g
}

// buildTwins builds the allocator as the router build is built
// (-trimpath, static) twice: stripped (-ldflags '-s -w') and with
// symbols; env adds to the build's environment (GOARCH=mips, ...).
func buildTwins(t *testing.T, env ...string) (stripped, symbols string) {
	t.Helper()
	g := gocmd(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(allocator), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module allocator\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stripped, symbols = filepath.Join(dir, "stripped"), filepath.Join(dir, "symbols")
	for out, flags := range map[string][]string{stripped: {"-ldflags=-s -w"}, symbols: nil} {
		args := append(append([]string{"build", "-trimpath"}, flags...), "-o", out, ".")
		cmd := exec.Command(g, args...)
		cmd.Dir, cmd.Env = dir, append(append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS="), env...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, b)
		}
	}
	return stripped, symbols
}

// loadSymbols opens the executable with symbols at path and loads its
// runtime's names (load); the file is closed at the test's end.
func loadSymbols(t *testing.T, path string) (*elf.File, *image) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	im, err := load(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f, im
}

// start runs exe with args, waits for its "up", and kills it at the
// test's end.
func start(t *testing.T, exe string, args ...string) int {
	t.Helper()
	cmd := exec.Command(exe, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "up\n" {
		t.Fatalf("%s said %q (%v)", exe, line, err)
	}
	return cmd.Process.Pid
}

// anonRSS is the resident sum in KB of pid's anonymous mappings (no
// file, [stack], [heap], [anon: ...]) by /proc/PID/smaps: the kernel's own count,
// independent of the pagemap walk.
func anonRSS(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	anon := false
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			anon = len(f) < 6 || anonymousPath(strings.Join(f[5:], " "))
			continue
		}
		if f[0] == "Rss:" && anon {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("smaps line %q", l)
			}
			sum += kb
		}
	}
	return sum
}

// kb is part's KB in r.
func kb(t *testing.T, r *report, name string) uint64 {
	t.Helper()
	for _, l := range r.lines {
		if l.name == name {
			return l.kb
		}
	}
	t.Fatalf("no part %s in\n%s", name, r.text())
	return 0
}

// TestMeasureRunning: on a running stripped program, with its twin's
// symbols, the parts add up to the anonymous mappings' resident sum as
// smaps counts it; there are heap spans, free heap pages (the
// allocator's holes: found only if the arenas' base is right) and
// span-set blocks; little is left unattributed.
func TestMeasureRunning(t *testing.T) {
	needRoot(t)
	stripped, symbols := buildTwins(t)
	checkMeasure(t, start(t, stripped), symbols, "heap-free")
}

// checkMeasure measures pid with the symbols of its twin and checks
// the report against smaps and the bounds; the parts named in more
// must not be 0 either.
func checkMeasure(t *testing.T, pid int, symbols string, more ...string) {
	t.Helper()
	// The runtime may map or release a page between the walk and smaps
	// (its background scavenger, sysmon): a try counts when smaps reads
	// the same sum before and after the walk.
	for try := 0; ; try++ {
		before := anonRSS(t, pid)
		r, err := measure(pid, symbols)
		if err != nil {
			t.Fatal(err)
		}
		after := anonRSS(t, pid)
		if before != after {
			if try == 5 {
				t.Fatalf("the process's anonymous RSS kept changing: %d then %d KB", before, after)
			}
			continue
		}
		t.Logf("smaps: %d KB anonymous resident; runtimemem:\n%s", after, r.text())
		if r.total != after {
			t.Errorf("total %d KB, the anonymous mappings' resident sum %d KB", r.total, after)
		}
		var sum uint64
		for _, l := range r.lines {
			sum += l.kb
		}
		if sum != r.total {
			t.Errorf("the parts add up to %d KB, the total says %d", sum, r.total)
		}
		for _, name := range append([]string{"heap-spans", "manual-spans", "spanset-blocks", "spanset-spines", "exe-bss"}, more...) {
			if kb(t, r, name) == 0 {
				t.Errorf("%s: 0 KB", name)
			}
		}
		// Unattributed is what the walk does not know: runtime memory
		// mapped outside the structures walked. On the router build it
		// was 20 KB of 2,452 (0.8 %) by hand (gdb, pagemap), 4 KB here;
		// 10 % leaves room for a smaller program's share and a changed
		// runtime, and still fails if a whole part (the span-set
		// blocks, the bss: 5-20 % each) goes unattributed.
		if u := kb(t, r, "unattributed"); u*10 > r.total {
			t.Errorf("unattributed %d KB of %d", u, r.total)
		}
		return
	}
}

// TestMeasureRouterDaemon: the same on the real target, the stripped
// router build (scripts/router-build.sh) running as the daemon, idle,
// read with its twin built with the same flags but -ldflags.
func TestMeasureRouterDaemon(t *testing.T) {
	needRoot(t)
	g := gocmd(t)
	dir := t.TempDir()
	router, twin, broker := filepath.Join(dir, "router"), filepath.Join(dir, "twin"), filepath.Join(dir, "broker")
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = "../..", append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, b)
		}
	}
	run("sh", "scripts/router-build.sh", router)
	run("env", "SYMBOLS=1", "sh", "scripts/router-build.sh", twin)
	run(g, "build", "-o", broker, "./cmd/ubus-broker")

	// the shipped configuration, its directories in dir, SIP on a
	// free port of the loopback
	conf, tmp := filepath.Join(dir, "etc", "config"), filepath.Join(dir, "tmp", ".uci")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../files/etc/config/phonebook")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "phonebook"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, kv := range []string{"main.state_dir=" + filepath.Join(dir, "state"), "main.run_dir=" + filepath.Join(dir, "run"),
		"main.www_dir=" + filepath.Join(dir, "www"), "main.apps_dir=" + filepath.Join(dir, "apps"), "sip.listen=127.0.0.1:0"} {
		run(router, "uci", "-c", conf, "-t", tmp, "set", "phonebook."+kv)
	}
	run(router, "uci", "-c", conf, "-t", tmp, "commit", "phonebook")

	sock := filepath.Join(dir, "ubus.sock")
	bcmd := exec.Command(broker, "-s", sock)
	if err := bcmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bcmd.Process.Kill(); bcmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("the ubus broker made no socket %s", sock)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d := exec.Command(router, "-c", conf, "-t", tmp, "-s", sock)
	logs, err := d.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Kill(); d.Wait() })
	// up: started, listening, on the bus; its log is drained after
	sc := bufio.NewScanner(logs)
	for sc.Scan() && !strings.Contains(sc.Text(), "ubus connected") {
	}
	if sc.Err() != nil {
		t.Fatalf("the daemon's log: %v", sc.Err())
	}
	go io.Copy(io.Discard, logs)
	checkMeasure(t, d.Process.Pid, twin)
}

// TestMeasureOtherBuild: a file that is not the process's build is
// refused, so is the stripped file itself (no symbols).
func TestMeasureOtherBuild(t *testing.T) {
	needRoot(t)
	stripped, _ := buildTwins(t)
	pid := start(t, stripped)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := measure(pid, exe); err == nil || !strings.Contains(err.Error(), "does not run the build") {
		t.Errorf("another program's executable: %v", err)
	}
	if _, err := measure(pid, stripped); err == nil || !strings.Contains(err.Error(), "symbol table") {
		t.Errorf("the stripped executable: %v", err)
	}
}

// TestRouterBuildTwins: the router build (scripts/router-build.sh) and
// the same build without -ldflags (SYMBOLS=1 scripts/router-build.sh)
// load the same bytes at the same
// addresses, so the stripped build can be read with its twin's symbols;
// without -trimpath the linker flags go into the build information and
// the addresses move, which sameBuild catches.
func TestRouterBuildTwins(t *testing.T) {
	g := gocmd(t)
	dir := t.TempDir()
	router := filepath.Join(dir, "router")
	cmd := exec.Command("sh", "scripts/router-build.sh", router)
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("router build: %v\n%s", err, b)
	}
	build := func(out string, flags ...string) string {
		t.Helper()
		args := append(append([]string{"build"}, flags...), "-gcflags", "github.com/aredn/...=-l", "-tags", "nodbus", "-o", out, "./cmd/phonebookd")
		cmd := exec.Command(g, args...)
		cmd.Dir, cmd.Env = "../..", append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, b)
		}
		return out
	}
	// the twin as scripts/footprint.sh builds it
	twin := filepath.Join(dir, "twin")
	cmd = exec.Command("sh", "scripts/router-build.sh", twin)
	cmd.Dir, cmd.Env = "../..", append(os.Environ(), "SYMBOLS=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("SYMBOLS=1 router build: %v\n%s", err, b)
	}
	untrimmed := build(filepath.Join(dir, "untrimmed"), "-ldflags=-s -w")
	open := func(p string) *elf.File {
		f, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	if err := sameBuild(open(router), open(twin)); err != nil {
		t.Errorf("router build and its twin with symbols: %v", err)
	}
	if err := sameBuild(open(router), open(untrimmed)); err == nil {
		t.Errorf("router build and a build without -trimpath: no difference found")
	}
	if _, err := load(open(twin)); err != nil {
		t.Errorf("the twin's symbols and DWARF: %v", err)
	}
	if _, err := load(open(router)); err == nil {
		t.Errorf("the stripped router build: symbols and DWARF found")
	}
}

// TestMeasureTouchesNothing: measuring a quiet process leaves its
// anonymous RSS as it was. Reading through /proc/PID/mem an anonymous
// page the process never touched allocates it, and the walks read
// whole structures (a heapArena's span table is 64 KB on amd64, of which
// a small heap uses a page): before runtimemem read only resident pages,
// its first run added 56 KB to the idle daemon's RssAnon.
func TestMeasureTouchesNothing(t *testing.T) {
	needRoot(t)
	stripped, symbols := buildTwins(t)
	pid := start(t, stripped)
	// quiet first: three equal reads in a row (the allocator has
	// collected and sleeps; its runtime may still settle a page)
	last, same := anonRSS(t, pid), 0
	for i := 0; same < 2; i++ {
		if i == 50 {
			t.Fatalf("the allocator's anonymous RSS never settled (last %d KB)", last)
		}
		time.Sleep(100 * time.Millisecond)
		now := anonRSS(t, pid)
		if now == last {
			same++
		} else {
			last, same = now, 0
		}
	}
	r, err := measure(pid, symbols)
	if err != nil {
		t.Fatal(err)
	}
	// growth only: the runtime's own scavenger may release a page
	// meanwhile, and that is not the measure's doing
	if after := anonRSS(t, pid); after > last {
		t.Errorf("measuring grew the process's anonymous RSS: %d KB before, %d KB after", last, after)
	}
	if r.total != last {
		t.Errorf("total %d KB, the anonymous mappings' resident sum before %d KB", r.total, last)
	}
}

// cachedCount counts the pages of f in the page cache (mincore, the
// test's own count) and its pages in all.
func cachedCount(t *testing.T, f *os.File) (cached, all int) {
	t.Helper()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	for _, v := range vec {
		cached += int(v & 1)
	}
	return cached, len(vec)
}

// rssFile is the RssFile line of pid's status.
func rssFile(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if strings.HasPrefix(l, "RssFile:") {
			return l
		}
	}
	t.Fatalf("/proc/%d/status has no RssFile", pid)
	return ""
}

// TestMeasureKeepsPageCache: measuring a process leaves the page cache
// of its executable as it was. runtimemem reads the executable whole
// (sameBuild compares its bytes with the twin's); through the page
// cache, that brought back every page the daemon's code page-out had
// dropped, and each later fault of the daemon in its code then mapped a
// whole fault-around block of them: every sample after the first one in
// scripts/footprint.sh counted more code (RssFile) than the daemon
// alone would have, READ_AHEAD_KB=0 runs most of all.
func TestMeasureKeepsPageCache(t *testing.T) {
	needRoot(t)
	stripped, symbols := buildTwins(t)
	pid := start(t, stripped)
	f, err := os.Open(stripped)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil { // clean pages only can be dropped
		t.Fatal(err)
	}
	// A fault of the program during the measure caches pages too (its
	// read-around): such a try, seen in its RssFile, is done again.
	for try := 0; ; try++ {
		if try == 5 {
			t.Fatal("the program kept faulting its executable in during the measure")
		}
		// as the code page-out leaves it: only the pages the program
		// maps are cached
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
		before, all := cachedCount(t, f)
		if before == all {
			t.Skip("the file system keeps every page of the executable cached (tmpfs?): nothing to check")
		}
		if before == 0 {
			t.Fatal("no page of the running program's executable is cached: the count is wrong")
		}
		file := rssFile(t, pid)
		if _, err := measure(pid, symbols); err != nil {
			t.Fatal(err)
		}
		after, _ := cachedCount(t, f)
		if rssFile(t, pid) != file {
			continue
		}
		t.Logf("the executable's pages in the page cache: %d of %d before the measure, %d after", before, all, after)
		if after != before {
			t.Errorf("the executable's pages in the page cache: %d of %d before the measure, %d after", before, all, after)
		}
		return
	}
}

// guestMemory is the memory of a program qemu-user runs: guest address
// a is at base+a in qemu's own address space.
type guestMemory struct {
	f    *os.File // qemu's /proc/PID/mem
	base int64
}

func (g guestMemory) ReadAt(b []byte, off int64) (int, error) { return g.f.ReadAt(b, off+g.base) }

// TestWalksMips: the walks on a running program of the 32-bit
// big-endian mips router build, which qemu-user runs: its memory is the
// guest's, at a fixed offset in qemu's (TestWalksResolve reads zeros,
// where no byte order, word size or decoded figure shows). The parts
// add up, there are spans found by their mspans' fields (heap spans,
// stacks, free heap pages between the allocator's live ones: found
// only if the arena base is right) and span-set blocks from the spines.
func TestWalksMips(t *testing.T) {
	needRoot(t)
	qemu, err := exec.LookPath("qemu-mips-static")
	if err != nil {
		t.Skipf("no qemu-mips-static: %v", err)
	}
	stripped, symbols := buildTwins(t, "GOARCH=mips", "GOMIPS=softfloat")
	pid := start(t, qemu, stripped)
	sf, im := loadSymbols(t, symbols)
	// the guest's base in qemu: where its executable's first segment
	// is mapped, less the segment's address
	ms, err := maps(pid)
	if err != nil {
		t.Fatal(err)
	}
	page := uint64(os.Getpagesize())
	var first uint64
	for _, p := range sf.Progs {
		if p.Type == elf.PT_LOAD && p.Off == 0 {
			first = p.Vaddr &^ (page - 1)
		}
	}
	base := uint64(0)
	for _, m := range ms {
		if m.path == stripped {
			base = m.start - first
			break
		}
	}
	if base == 0 && first == 0 {
		t.Fatalf("no mapping of %s in qemu's maps", stripped)
	}
	// the guest's mappings (its 4 GB) and their resident pages, in
	// guest addresses
	var host, guest []mapping
	for _, m := range ms {
		if m.start >= base && m.end <= base+1<<32 {
			host = append(host, m)
			m.start, m.end = m.start-base, m.end-base
			guest = append(guest, m)
		}
	}
	hp, err := resident(pid, host, page)
	if err != nil {
		t.Fatal(err)
	}
	pages := make([]uint64, len(hp))
	for i, p := range hp {
		pages[i] = p - base
	}
	mf, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	r, err := walkAll(guestMemory{mf, int64(base)}, im, guest, pages, page)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest base %#x in qemu; runtimemem:\n%s", base, r.text())
	var sum uint64
	for _, l := range r.lines {
		sum += l.kb
	}
	if sum != r.total || r.total != uint64(len(pages))*page>>10 {
		t.Errorf("the parts add up to %d KB, the total says %d, the resident pages %d KB", sum, r.total, uint64(len(pages))*page>>10)
	}
	for _, name := range []string{"heap-spans", "manual-spans", "heap-free", "spanset-blocks", "spanset-spines", "exe-bss", "arena-index", "pagealloc"} {
		if kb(t, r, name) == 0 {
			t.Errorf("%s: 0 KB", name)
		}
	}
}

// TestReadBounded: a length read from a process that changed under the
// reads (a torn spine length, a moved slice) is an error, not an
// allocation of that size.
func TestReadBounded(t *testing.T) {
	m := &memory{f: zeros{}, order: binary.BigEndian, ptr: 4, page: 4096}
	for _, n := range []uint64{1 << 40, 1 << 62} {
		if _, err := m.read(0x1000, n); err == nil {
			t.Errorf("a read of %d bytes: no error", n)
		}
		if _, err := m.words(0x1000, n); err == nil {
			t.Errorf("%d words: no error", n)
		}
	}
	if _, err := m.read(0x1000, 64<<10); err != nil {
		t.Errorf("a read of a heapArena's span table: %v", err)
	}
}

// recorder is a ReaderAt over a fake address space of 0xff bytes that
// records the pages read.
type recorder struct{ pages map[int64]bool }

func (r *recorder) ReadAt(b []byte, off int64) (int, error) {
	for a := off; a < off+int64(len(b)); a++ {
		r.pages[a-a%4096] = true
		b[a-off] = 0xff
	}
	return len(b), nil
}

// TestReadSkipsAbsentPages: a read across pages reads the present ones
// and gives zeros for the absent ones, which it never reads.
func TestReadSkipsAbsentPages(t *testing.T) {
	rec := &recorder{pages: map[int64]bool{}}
	absent := map[uint64]bool{0x2000: true, 0x4000: true}
	m := &memory{f: rec, page: 4096, absent: func(p uint64) bool { return absent[p] }}
	b, err := m.read(0x1ff0, 0x3020) // 0x1ff0 .. 0x5010: pages 0x1000-0x5000
	if err != nil {
		t.Fatal(err)
	}
	for p := range absent {
		if rec.pages[int64(p)] {
			t.Errorf("page %#x was read", p)
		}
	}
	for _, p := range []int64{0x1000, 0x3000, 0x5000} {
		if !rec.pages[p] {
			t.Errorf("page %#x was not read", p)
		}
	}
	for i, c := range b {
		a := uint64(0x1ff0 + i)
		want := byte(0xff)
		if absent[a-a%4096] {
			want = 0
		}
		if c != want {
			t.Fatalf("byte at %#x: %#x, want %#x", a, c, want)
		}
	}
}
