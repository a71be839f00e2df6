package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
)

// part is where a resident page belongs. The order is the order of
// precedence: a page in the ranges of two parts goes to the first (the
// span-set blocks and spines lie inside persistentalloc chunks).
type part int

const (
	spansetBlocks part = iota
	spansetSpines
	markBits
	spanQueues
	getrandom
	profBuckets
	pageAlloc
	arenaIndex
	persistentOther
	heapSpans
	manualSpans
	heapFree
	exeBSS
	mainStack
	unattributed
	nparts
)

// names are the parts as printed: one word each, stable for scripts.
var names = [nparts]string{
	spansetBlocks:   "spanset-blocks",
	spansetSpines:   "spanset-spines",
	markBits:        "gc-markbits",
	spanQueues:      "gc-span-queues",
	getrandom:       "getrandom-states",
	profBuckets:     "profile-buckets",
	pageAlloc:       "pagealloc",
	arenaIndex:      "arena-index",
	persistentOther: "persistentalloc-other",
	heapSpans:       "heap-spans",
	manualSpans:     "manual-spans",
	heapFree:        "heap-free",
	exeBSS:          "exe-bss",
	mainStack:       "stack",
	unattributed:    "unattributed",
}

// rng is the addresses [start, end) of one part.
type rng struct {
	start, end uint64
	p          part
}

// walk is one measurement under way: the process's memory, the
// executable's types, and the ranges and details found so far.
type walk struct {
	m       *memory
	im      *image
	ranges  []rng
	details [nparts]string
	page    uint64 // the system's page size
}

func (w *walk) add(p part, start, n uint64) {
	if start != 0 && n != 0 {
		w.ranges = append(w.ranges, rng{start, start + n, p})
	}
}

// addMapped adds the n bytes at start that the runtime maps by
// themselves (sysAlloc, sysMap): their last page is theirs whole.
func (w *walk) addMapped(p part, start, n uint64) {
	w.add(p, start, (n+w.page-1)&^(w.page-1))
}

// measure attributes the resident anonymous pages of process pid, which
// runs the build exe is the unstripped twin of.
func measure(pid int, exe string) (*report, error) {
	sym, err := elf.Open(exe)
	if err != nil {
		return nil, err
	}
	defer sym.Close()
	// the process's executable, read without leaving its pages in the
	// page cache (cache.go)
	ef, err := os.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return nil, fmt.Errorf("the process's executable: %w", err)
	}
	defer ef.Close()
	cached, err := cachedPages(ef)
	if err != nil {
		return nil, fmt.Errorf("the process's executable: %w", err)
	}
	run, err := elf.NewFile(ef)
	if err != nil {
		err = fmt.Errorf("the process's executable: %w", err)
	} else if err = sameBuild(run, sym); err != nil {
		err = fmt.Errorf("process %d does not run the build %s is: %w", pid, exe, err)
	}
	if derr := dropCachedSince(ef, cached); derr != nil {
		return nil, errors.Join(err, fmt.Errorf("the process's executable: %w", derr))
	}
	if err != nil {
		return nil, err
	}
	if sym.Type != elf.ET_EXEC {
		return nil, fmt.Errorf("%s is %v: only a position-dependent executable is read (the router build is one)", exe, sym.Type)
	}
	im, err := load(sym)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", exe, err)
	}
	mf, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, err
	}
	defer mf.Close()
	page := uint64(os.Getpagesize())
	// The resident pages first, and only those are read: a read of an
	// anonymous page the process never touched through /proc/PID/mem
	// allocates it (measured: the first run raised the daemon's RssAnon
	// by 56 KB, its heapArena's span table read whole), so the walks
	// would add to the memory they measure. An anonymous page not
	// resident holds zeros (never touched, or released by the
	// scavenger), and is read as zeros without touching it.
	ms, err := maps(pid)
	if err != nil {
		return nil, err
	}
	pages, err := resident(pid, ms, page)
	if err != nil {
		return nil, err
	}
	return walkAll(mf, im, ms, pages, page)
}

// walkAll attributes the resident anonymous pages (pages) of the
// process whose memory mem holds, which runs the build im is, its
// mappings ms.
func walkAll(mem io.ReaderAt, im *image, ms []mapping, pages []uint64, page uint64) (*report, error) {
	m := &memory{f: mem, order: im.order, ptr: im.ptr, page: page, absent: absentIn(ms, pages)}
	w := &walk{m: m, im: im, page: page}
	if err := errors.Join(w.heap(), w.spanSets(), w.markBits(), w.spanQueues(), w.getrandom(), w.persistent(), w.buckets(), w.pageAlloc()); err != nil {
		return nil, err
	}
	w.add(exeBSS, im.rwStart, im.rwEnd-im.rwStart)
	for _, mp := range ms {
		if mp.path == "[stack]" {
			w.add(mainStack, mp.start, mp.end-mp.start)
		}
	}
	return w.attribute(pages, page), nil
}

// containers are the parts whose ranges hold other parts' ranges: a
// persistentalloc chunk holds span-set blocks and spines, a heap arena
// holds spans. They get what the other parts leave of a page.
func container(p part) bool { return p == persistentOther || p == heapFree }

// attribute splits each resident page between the parts whose ranges
// cover it, by bytes: first the parts that are not containers, in their
// order (they do not overlap unless the process changed under the
// reads), then what is left to the first container covering it, then
// the rest to unattributed. Span-set blocks (4,608 B on amd64) and
// spines share pages, which is why a page is split and not given whole
// to one part. The figures are rounded to KB so that they add up to the
// resident sum.
func (w *walk) attribute(pages []uint64, page uint64) *report {
	cov := make([][nparts]uint64, len(pages))
	for _, r := range w.ranges {
		i, _ := slices.BinarySearch(pages, r.start&^(page-1))
		for ; i < len(pages) && pages[i] < r.end; i++ {
			lo, hi := max(r.start, pages[i]), min(r.end, pages[i]+page)
			cov[i][r.p] = min(page, cov[i][r.p]+hi-lo)
		}
	}
	var bytes [nparts]uint64
	for _, c := range cov {
		rem := page
		for p := range nparts {
			if !container(p) {
				take := min(c[p], rem)
				bytes[p] += take
				rem -= take
			}
		}
		for p := range nparts {
			if container(p) && c[p] > 0 {
				take := min(c[p], rem)
				bytes[p] += take
				rem -= take
				break
			}
		}
		bytes[unattributed] += rem
	}
	total := uint64(len(pages)) * page >> 10
	kb := roundKB(bytes, total)
	rep := &report{total: total}
	for p := range nparts {
		rep.lines = append(rep.lines, line{names[p], kb[p], w.details[p]})
	}
	sort.SliceStable(rep.lines, func(i, j int) bool {
		if rep.lines[i].kb != rep.lines[j].kb {
			return rep.lines[i].kb > rep.lines[j].kb
		}
		return rep.lines[i].name < rep.lines[j].name
	})
	return rep
}

// roundKB rounds bytes to KB so that the figures add up to total (the
// sum of bytes, in KB): each is rounded down, and the KB missing go to
// the largest remainders, earlier parts first among equal ones.
func roundKB(bytes [nparts]uint64, total uint64) [nparts]uint64 {
	var kb [nparts]uint64
	var sum uint64
	order := make([]part, 0, nparts)
	for p := range nparts {
		kb[p] = bytes[p] >> 10
		sum += kb[p]
		order = append(order, p)
	}
	sort.SliceStable(order, func(i, j int) bool { return bytes[order[i]]&1023 > bytes[order[j]]&1023 })
	for i := 0; sum < total && i < len(order); i++ {
		kb[order[i]]++
		sum++
	}
	return kb
}

// line is one part's figure.
type line struct {
	name   string
	kb     uint64
	detail string
}

// report is the parts, largest first, and their total: the resident
// sum of the anonymous mappings, which the parts add up to.
type report struct {
	lines []line
	total uint64
}

func (r *report) text() string {
	var b strings.Builder
	for _, l := range r.lines {
		fmt.Fprintf(&b, "%s %d", l.name, l.kb)
		if l.detail != "" {
			fmt.Fprintf(&b, " %s", l.detail)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "total %d\n", r.total)
	return b.String()
}

func (r *report) markdown() string {
	var b strings.Builder
	for _, l := range r.lines {
		fmt.Fprintf(&b, "| %s | %d | %s |\n", l.name, l.kb, l.detail)
	}
	fmt.Fprintf(&b, "| total | %d | |\n", r.total)
	return b.String()
}
