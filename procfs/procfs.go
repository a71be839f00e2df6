// Package procfs reads what the kernel says of this process: memory
// (/proc/self/status and the Go runtime's metrics), file descriptors,
// CPU time of the process and of single threads, free space and
// writability of directories, the boot id. Where a figure cannot be read
// it says so (a Known flag, ok false, an error), never a made-up value.
package procfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// atClkTck is the auxiliary vector entry holding the kernel's USER_HZ, the
// unit of the CPU times in /proc.
const atClkTck = 17

// ClockTicks reads USER_HZ from /proc/self/auxv; 0 when it cannot be read
// (then CPU shares are reported as null rather than guessed).
func ClockTicks() float64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 0
	}
	word := int(unsafe.Sizeof(uintptr(0)))
	for i := 0; i+2*word <= len(b); i += 2 * word {
		var key, val uint64
		if word == 8 {
			key, val = binary.NativeEndian.Uint64(b[i:]), binary.NativeEndian.Uint64(b[i+8:])
		} else {
			key, val = uint64(binary.NativeEndian.Uint32(b[i:])), uint64(binary.NativeEndian.Uint32(b[i+4:]))
		}
		if key == atClkTck {
			return float64(val)
		}
		if key == 0 {
			break
		}
	}
	return 0
}

// ThreadTicks reads a thread's user+system CPU time in clock ticks. It
// is for a rare read (a thread's last, as it ends); what reads every
// second keeps a StatReader.
func ThreadTicks(tid int) (uint64, time.Time, bool) {
	var r StatReader
	return r.Thread(tid)
}

// ProcessTicks reads the whole process's CPU time in clock ticks (a rare
// read; see StatReader).
func ProcessTicks() (uint64, bool) {
	var r StatReader
	return r.Process()
}

// StatReader reads CPU ticks from /proc/self/stat and
// /proc/self/task/<tid>/stat without allocating: the daemon reads them
// every second, for the process and for each measured thread, and a new
// path, file, buffer and field slice per read were most of what the idle
// daemon allocated (about 9 KB/s of its heap growth, measured with a heap
// profile of the router build). Not safe for concurrent use: each caller
// keeps its own, under its own lock.
type StatReader struct {
	path [64]byte
	// buf holds the stat line: about 300 bytes; the fields read come
	// before the long tail, so a longer line cut here is still read.
	buf [512]byte
}

// Thread reads a thread's user+system CPU time in clock ticks, and when.
func (r *StatReader) Thread(tid int) (uint64, time.Time, bool) {
	p := append(r.path[:0], "/proc/self/task/"...)
	p = strconv.AppendInt(p, int64(tid), 10)
	p = append(p, "/stat\x00"...)
	t, ok := r.read(p)
	return t, time.Now(), ok
}

// Process reads the whole process's user+system CPU time in clock ticks.
func (r *StatReader) Process() (uint64, bool) {
	return r.read(append(r.path[:0], "/proc/self/stat\x00"...))
}

// read opens path (NUL-terminated, in r.path), reads it into r.buf and
// parses the ticks. The path is handed to openat as bytes: os.Open and
// unix.Open would copy it to a new NUL-terminated string each time.
func (r *StatReader) read(path []byte) (uint64, bool) {
	if len(path) == 0 || path[len(path)-1] != 0 {
		return 0, false
	}
	fd, _, errno := syscall.Syscall6(syscall.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(&path[0])),
		uintptr(syscall.O_RDONLY|syscall.O_CLOEXEC), 0, 0, 0)
	if errno != 0 {
		return 0, false
	}
	n := 0
	for n < len(r.buf) {
		k, err := syscall.Read(int(fd), r.buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || k <= 0 {
			break
		}
		n += k
	}
	syscall.Close(int(fd))
	return statTicks(r.buf[:n])
}

// atFDCWD is AT_FDCWD as openat's first argument.
var atFDCWD = func() uintptr { v := unix.AT_FDCWD; return uintptr(v) }()

// statTicks extracts utime+stime (fields 14 and 15) from a stat line; the
// command name in parentheses may hold spaces, so fields count from ')'.
// It parses in place: no field slice, no strings.
func statTicks(b []byte) (uint64, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	var vals [2]uint64
	field := 0 // fields after ')': state is 0, utime 11, stime 12
	rest := b[i+1:]
	for field <= 12 {
		for len(rest) > 0 && rest[0] == ' ' {
			rest = rest[1:]
		}
		if len(rest) == 0 {
			return 0, false
		}
		j := 0
		for j < len(rest) && rest[j] != ' ' && rest[j] != '\n' {
			j++
		}
		if field >= 11 {
			v, ok := parseUint(rest[:j])
			if !ok {
				return 0, false
			}
			vals[field-11] = v
		}
		rest = rest[j:]
		if len(rest) > 0 && rest[0] == '\n' {
			rest = rest[:0]
		}
		field++
	}
	return vals[0] + vals[1], true
}

// parseUint reads a decimal number without making a string of it.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// MemSample is one reading of the process's memory.
type MemSample struct {
	RSS        uint64 // VmRSS, bytes
	PeakRSS    uint64 // VmHWM, bytes
	RSSAnon    uint64 // RssAnon: private memory (heap, stacks, runtime)
	RSSFile    uint64 // RssFile: mapped file pages (the executable's code), shared and reclaimable
	HeapLive   uint64 // live heap after the last GC
	HeapObjs   uint64 // heap objects now, garbage not yet swept included
	Stacks     uint64 // goroutine stack memory
	GoTotal    uint64 // all memory the Go runtime mapped
	Released   uint64 // heap memory returned to the OS
	Goroutines int
	GCCycles   uint64
	RSSKnown   bool // false where /proc/self/status is unreadable
	// Threads is the process's OS threads (Threads of /proc/self/status,
	// the kernel's count: the Go runtime's and any other), known where
	// ThreadsKnown.
	Threads      int
	ThreadsKnown bool
}

var memMetrics = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/sched/goroutines:goroutines",
	"/gc/cycles/total:gc-cycles",
	"/memory/classes/heap/objects:bytes",
}

// MemReader reads memory figures, reusing its buffers.
type MemReader struct {
	samples []metrics.Sample
	buf     []byte
}

// NewMemReader prepares a reader.
func NewMemReader() *MemReader {
	r := &MemReader{samples: make([]metrics.Sample, len(memMetrics)), buf: make([]byte, 4096)}
	for i, n := range memMetrics {
		r.samples[i].Name = n
	}
	return r
}

// Read samples the runtime and /proc/self/status. The live heap is known
// only once a garbage collection has run (the runtime forces one at least
// every two minutes); before that, HeapLive is not a measurement.
func (r *MemReader) Read() MemSample {
	metrics.Read(r.samples)
	var m MemSample
	get := func(i int) uint64 {
		if r.samples[i].Value.Kind() == metrics.KindUint64 {
			return r.samples[i].Value.Uint64()
		}
		return 0
	}
	m.HeapLive, m.Stacks, m.GoTotal, m.Released = get(0), get(1), get(2), get(3)
	m.Goroutines = int(get(4))
	m.GCCycles = get(5)
	m.HeapObjs = get(6)
	if n, ok := r.readFile("/proc/self/status"); ok {
		m.RSS, m.RSSKnown = statusKB(r.buf[:n], "VmRSS:")*1024, true
		m.PeakRSS = statusKB(r.buf[:n], "VmHWM:") * 1024
		m.RSSAnon = statusKB(r.buf[:n], "RssAnon:") * 1024
		m.RSSFile = statusKB(r.buf[:n], "RssFile:") * 1024
		if v, ok := statusValue(r.buf[:n], "Threads:"); ok {
			m.Threads, m.ThreadsKnown = int(v), true
		}
	}
	return m
}

func (r *MemReader) readFile(path string) (int, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	n := 0
	for n < len(r.buf) {
		k, err := f.Read(r.buf[n:])
		n += k
		if err != nil || k == 0 {
			break
		}
	}
	return n, true
}

func statusKB(b []byte, key string) uint64 {
	v, _ := statusValue(b, key)
	return v
}

// statusValue is the number after key in /proc/self/status; false where
// the key is not there.
func statusValue(b []byte, key string) (uint64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := b[i+len(key):]
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	f := bytes.Fields(rest)
	if len(f) == 0 {
		return 0, false
	}
	return parseUint(f[0])
}

// FDSample counts the process's open file descriptors by kind.
type FDSample struct {
	Open, Max                 int
	Socket, File, Pipe, Other int
	Known                     bool
}

// ReadFDs lists /proc/self/fd (not counting the descriptor used to read
// it) and reads the RLIMIT_NOFILE soft limit (a rare read; the health
// evaluation keeps an FDReader).
func ReadFDs() FDSample {
	var r FDReader
	return r.Read()
}

// FDReader counts the open descriptors without allocating: the health
// evaluation does it each time (every second at health_check_interval
// 1), and os.ReadDir's names, the link paths and the directory buffer
// the os package pools (8 KB anew after each collection) were most of
// what an evaluation allocated. Not safe for concurrent use.
type FDReader struct {
	dents [2048]byte
	link  [64]byte
}

// Read is ReadFDs with the reader's buffers.
func (r *FDReader) Read() FDSample {
	var s FDSample
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		s.Max = int(min(lim.Cur, 1<<31-1))
	}
	dir := []byte("/proc/self/fd\x00")
	dfd, _, errno := syscall.Syscall6(syscall.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(&dir[0])),
		uintptr(syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC), 0, 0, 0)
	if errno != 0 {
		return s
	}
	defer syscall.Close(int(dfd))
	for {
		n, err := unix.Getdents(int(dfd), r.dents[:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return FDSample{Max: s.Max}
		}
		if n <= 0 {
			break
		}
		for off := 0; off+19 < n; {
			// struct linux_dirent64: ino 8, off 8, reclen 2, type 1, name
			reclen := int(binary.NativeEndian.Uint16(r.dents[off+16:]))
			if reclen <= 19 || off+reclen > n {
				return FDSample{Max: s.Max}
			}
			name := r.dents[off+19 : off+reclen] // NUL-terminated, padded
			off += reclen
			fd, ok := parseUint(name[:max(bytes.IndexByte(name, 0), 0)])
			if !ok || uintptr(fd) == dfd { // ".", "..", the one listing
				continue
			}
			s.Open++
			k, _, errno := syscall.Syscall6(syscall.SYS_READLINKAT, dfd, uintptr(unsafe.Pointer(&name[0])),
				uintptr(unsafe.Pointer(&r.link[0])), uintptr(len(r.link)), 0, 0)
			if errno != 0 {
				s.Other++
				continue
			}
			target := r.link[:k]
			switch {
			case bytes.HasPrefix(target, []byte("socket:")):
				s.Socket++
			case bytes.HasPrefix(target, []byte("pipe:")):
				s.Pipe++
			case bytes.HasPrefix(target, []byte("/")):
				s.File++
			default:
				s.Other++
			}
		}
	}
	s.Known = true
	return s
}

// DiskSample is the free space of one filesystem.
type DiskSample struct {
	Path      string
	FreeBytes uint64
	Known     bool
	Err       string
}

// ReadDisk reads the free space (for unprivileged use) of the filesystem
// holding path, or of its nearest existing parent (the state directory is
// created only when first needed).
func ReadDisk(path string) DiskSample {
	d := DiskSample{Path: path}
	p := path
	for {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			d.FreeBytes = st.Bavail * uint64(st.Bsize)
			d.Known = true
			return d
		}
		parent := p[:max(strings.LastIndexByte(p, '/'), 0)]
		if parent == "" {
			parent = "/"
		}
		if parent == p {
			d.Err = fmt.Sprintf("statfs %s: %v", path, err)
			return d
		}
		p = parent
	}
}

// Writable reports why the daemon cannot write in dir (nil: it can),
// without writing: access(2) with W_OK, which also fails on a read-only
// mount, on dir or its nearest existing parent (the state directory is
// created on its first write). No flash is worn by asking.
func Writable(dir string) error {
	p := dir
	for {
		err := unix.Access(p, unix.W_OK)
		if err == nil {
			return nil
		}
		if err != unix.ENOENT {
			return fmt.Errorf("%s: %w", p, err)
		}
		parent := p[:max(strings.LastIndexByte(p, '/'), 0)]
		if parent == "" {
			parent = "/"
		}
		if parent == p {
			return fmt.Errorf("%s: %w", dir, err)
		}
		p = parent
	}
}

// BootID identifies the current boot (empty where unavailable).
func BootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// CPUWindow keeps the last CPUSpan of (time, cumulative ticks) samples.
type CPUWindow struct {
	at    [12]time.Time
	ticks [12]uint64
	n     int
}

// Add records the cumulative CPU ticks read at a time.
func (r *CPUWindow) Add(at time.Time, ticks uint64) {
	if r.n == len(r.at) {
		copy(r.at[:], r.at[1:])
		copy(r.ticks[:], r.ticks[1:])
		r.n--
	}
	r.at[r.n], r.ticks[r.n] = at, ticks
	r.n++
}

// Pct is the share of one CPU over the newest samples spanning at most
// CPUSpan; nil with fewer than two samples.
func (r *CPUWindow) Pct(clkTck float64) *float64 {
	if r.n < 2 || clkTck == 0 {
		return nil
	}
	last := r.n - 1
	first := 0
	for first < last-1 && r.at[last].Sub(r.at[first]) > CPUSpan {
		first++
	}
	dt := r.at[last].Sub(r.at[first]).Seconds()
	if dt <= 0 || r.ticks[last] < r.ticks[first] {
		return nil
	}
	p := float64(r.ticks[last]-r.ticks[first]) / clkTck / dt * 100
	return &p
}

// CPUSpan is the span over which CPU shares are reported: sampled every
// second, whenever they are asked for.
const CPUSpan = 10 * time.Second
