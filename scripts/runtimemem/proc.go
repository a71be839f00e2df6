package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/aredn/phonebookd/procfs"
)

// memory reads a process's memory (/proc/PID/mem) in the words of its
// executable.
type memory struct {
	f     io.ReaderAt // /proc/PID/mem
	order binary.ByteOrder
	ptr   uint64
	// absent, when set, says whether the page at a page-aligned address
	// is an anonymous page not resident: read as zeros, never touched
	// (pages of size page).
	absent func(pageAddr uint64) bool
	page   uint64
}

// maxRead bounds one read of the process: the largest structure a walk
// reads whole is a heapArena's span table or the page allocator's L1
// (64 KB each on amd64) or a span set's spine (a few KB); a length past
// this came from a process that changed under the reads (a torn or
// moved structure), and allocating it would end runtimemem, on a
// router by running it out of memory.
const maxRead = 64 << 20

// read reads n bytes at addr, page by page where absent is set.
func (m *memory) read(addr, n uint64) ([]byte, error) {
	if n > maxRead {
		return nil, fmt.Errorf("read %d bytes at %#x of the process: more than any structure walked (it changed under the reads?)", n, addr)
	}
	b := make([]byte, n)
	if m.absent == nil {
		if got, err := m.f.ReadAt(b, int64(addr)); uint64(got) != n {
			return nil, fmt.Errorf("read %d bytes at %#x of the process: got %d: %w", n, addr, got, err)
		}
		return b, nil
	}
	for off := uint64(0); off < n; {
		a := addr + off
		end := min(a-a%m.page+m.page, addr+n)
		if !m.absent(a - a%m.page) {
			if got, err := m.f.ReadAt(b[off:end-addr], int64(a)); uint64(got) != end-a {
				return nil, fmt.Errorf("read %d bytes at %#x of the process: got %d: %w", end-a, a, got, err)
			}
		}
		off = end - addr
	}
	return b, nil
}

// absentIn is memory's absent for the mappings ms whose resident
// anonymous pages are pages (in address order, as resident gives them):
// a page of an anonymous mapping not among them. Pages of file mappings
// are never absent: reading them maps no new anonymous memory.
func absentIn(ms []mapping, pages []uint64) func(uint64) bool {
	var anon []mapping
	for _, m := range ms {
		if m.anonymous() {
			anon = append(anon, m)
		}
	}
	return func(p uint64) bool {
		i := sort.Search(len(anon), func(i int) bool { return anon[i].end > p })
		if i == len(anon) || anon[i].start > p {
			return false
		}
		j := sort.Search(len(pages), func(j int) bool { return pages[j] >= p })
		return j == len(pages) || pages[j] != p
	}
}

// word decodes the unsigned integer of len(b) bytes (1, 2, 4 or 8).
func (m *memory) word(b []byte) (uint64, error) {
	switch len(b) {
	case 1:
		return uint64(b[0]), nil
	case 2:
		return uint64(m.order.Uint16(b)), nil
	case 4:
		return uint64(m.order.Uint32(b)), nil
	case 8:
		return m.order.Uint64(b), nil
	}
	return 0, fmt.Errorf("an integer of %d bytes", len(b))
}

// uint reads o, an integer or pointer of o's type's size.
func (m *memory) uint(o obj) (uint64, error) {
	n, err := size(o.name, o.t)
	if err != nil {
		return 0, err
	}
	b, err := m.read(o.addr, n)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", o.name, err)
	}
	v, err := m.word(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", o.name, err)
	}
	return v, nil
}

// field reads o's integer or pointer field at path.
func (m *memory) field(o obj, path string) (uint64, error) {
	f, err := o.field(path)
	if err != nil {
		return 0, err
	}
	return m.uint(f)
}

// words reads n pointer-sized words at addr.
func (m *memory) words(addr, n uint64) ([]uint64, error) {
	if n > maxRead/m.ptr { // and n*m.ptr does not wrap
		return nil, fmt.Errorf("read %d words at %#x of the process: more than any structure walked (it changed under the reads?)", n, addr)
	}
	b, err := m.read(addr, n*m.ptr)
	if err != nil {
		return nil, err
	}
	out := make([]uint64, n)
	for i := range out {
		out[i], _ = m.word(b[uint64(i)*m.ptr : uint64(i+1)*m.ptr])
	}
	return out, nil
}

// slice reads the array pointer and capacity of o, a Go slice, and the
// size of its elements.
func (m *memory) slice(o obj) (array, capacity, elem uint64, err error) {
	a, err := o.field("array")
	if err != nil {
		return 0, 0, 0, err
	}
	et, err := pointee(a.name, a.t)
	if err != nil {
		return 0, 0, 0, err
	}
	if elem, err = size(a.name+"[0]", et); err != nil {
		return 0, 0, 0, err
	}
	if array, err = m.uint(a); err != nil {
		return 0, 0, 0, err
	}
	if capacity, err = m.field(o, "cap"); err != nil {
		return 0, 0, 0, err
	}
	return array, capacity, elem, nil
}

// mapping is one line of /proc/PID/maps.
type mapping struct {
	start, end uint64
	perms      string
	path       string // "" for an anonymous mapping
}

// maps reads /proc/PID/maps.
func maps(pid int) ([]mapping, error) {
	ms, err := procfs.ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	out := make([]mapping, len(ms))
	for i, m := range ms {
		out[i] = mapping{start: m.Start, end: m.End, perms: m.Perms, path: m.Path}
	}
	return out, nil
}

// anonymous says whether m is anonymous memory: no file, the main
// thread's [stack], or a mapping the runtime named ("[anon: Go: heap]",
// on kernels with CONFIG_ANON_VMA_NAME); the kernel's [vdso], [vvar]
// and [vsyscall] are not.
func (m mapping) anonymous() bool {
	return anonymousPath(m.path)
}

// anonymousPath says whether a mapping shown with path in
// /proc/PID/maps is anonymous memory.
func anonymousPath(path string) bool {
	return path == "" || path == "[stack]" || path == "[heap]" || strings.HasPrefix(path, "[anon:")
}

// resident lists the resident pages (their addresses) of pid's
// anonymous mappings, in address order, from /proc/PID/pagemap (bit 63:
// present). Mappings with no access (the runtime's reservations) are
// skipped: no page of them can be present.
func resident(pid int, ms []mapping, page uint64) ([]uint64, error) {
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	const batch = 1 << 16 // pages per read: 512 KB of pagemap
	var out []uint64
	buf := make([]byte, batch*8)
	for _, m := range ms {
		if !m.anonymous() || m.perms[:3] == "---" {
			continue
		}
		for first := m.start / page; first < m.end/page; first += batch {
			n := min(uint64(batch), m.end/page-first)
			b := buf[:n*8]
			if got, err := pm.ReadAt(b, int64(first*8)); uint64(got) != n*8 {
				return nil, fmt.Errorf("pagemap of %d at %#x: %d of %d bytes: %w", pid, first*page, got, n*8, err)
			}
			for i := range n {
				if binary.NativeEndian.Uint64(b[i*8:])>>63 == 1 {
					out = append(out, (first+i)*page)
				}
			}
		}
	}
	return out, nil
}
