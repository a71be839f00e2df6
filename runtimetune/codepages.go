package runtimetune

import (
	"fmt"
	"os"
	"sync"

	"github.com/aredn/phonebookd/procfs"
	"golang.org/x/sys/unix"
)

// CodePager pages the executable's code out (PageOut), with read-around
// turned off first.
type CodePager struct {
	random sync.Once
}

// NewCodePager is a pager for this process's executable.
func NewCodePager() *CodePager { return &CodePager{} }

// PageOut asks the kernel to reclaim the resident pages of the
// executable's own read-only file mappings (its code and read-only data,
// 4.4-4.7 MB of an amd64 router build's RSS once start-up has touched
// them, though the daemon runs in a small part of them).
//
// The first call sets MADV_RANDOM on those mappings (once; it stays): a
// fault on a paged-out page then reads that page alone rather than the
// mmap read-around (128 KB by default), which otherwise brings megabytes
// back for a few touched pages. Where the kernel honours it, this took
// RssFile from 4.7 MB to 1.0 MB rather than 3.1 MB (the lead's
// measurement at ee39f7c). The 6.18 kernel of the test machine does not for executable mappings: it
// reads ahead for VM_EXEC mappings whatever the advice (measured: ten
// touches 1 MB apart in a 20 MB file read 10 pages with PROT_READ and
// MADV_RANDOM, 4,096 with PROT_EXEC added), and there the router build's
// RssFile after the start-up page-out is 3.2-3.5 MB at 5 s and 3.6 MB
// over the next 10 minutes, against 4.66 MB never paged out.
//
// The cost is flash reads. Every page the daemon runs in again faults
// back in once, read again from the file; on a router the file is on
// squashfs (through the overlay), so a fault reads and decompresses the
// squashfs block holding the page (64-256 KB of xz), and the kernel keeps
// the block's other pages in its page cache, where fault-around (up to
// 64 KB) maps those the process touches: on a router a page-out brings
// back more than the one page per fault. The daemon's idle working set
// (1.4-3.6 MB as measured: it depends on the kernel's read-around) is
// read once after the start-up page-out. The Scavenger repeats the
// page-out only once the daemon is quiet after a load, at most every 10
// minutes (the start-up page-out aside), a re-read of that working set
// each time (at most 144 a day under loads every 10 minutes), and never
// at idle: there the minute's
// evaluations fault the same code back (a second page-out 70 s after
// start: RssFile 3.62 MB, 2.16 MB 5 s later, 3.27 MB at 180 s, for 0.35
// MB). It returns how many bytes were advised (MADV_PAGEOUT, Linux 5.4;
// an older kernel refuses it, and that is returned as the error).
func (p *CodePager) PageOut() (int, error) {
	var err error
	p.random.Do(func() { _, err = adviseCode(unix.MADV_RANDOM) })
	if err != nil {
		return 0, fmt.Errorf("page out code: no random access: %w", err)
	}
	return adviseCode(unix.MADV_PAGEOUT)
}

// PageOutCode pages the executable's read-only mappings out, without
// MADV_RANDOM (CodePager.PageOut sets it first).
func PageOutCode() (int, error) { return adviseCode(unix.MADV_PAGEOUT) }

// adviseCode gives advice to the executable's read-only file mappings;
// it returns how many bytes were advised.
func adviseCode(advice int) (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("page out code: %w", err)
	}
	maps, err := procfs.ReadMaps(0)
	if err != nil {
		return 0, fmt.Errorf("page out code: %w", err)
	}
	total := 0
	for _, m := range maps {
		if m.Path != exe || m.Perms[1] == 'w' {
			continue
		}
		// The mapping is the kernel's, not a Go object: madvise by
		// address, as the maps file gives it.
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(m.Start), uintptr(m.End-m.Start), uintptr(advice)); e != 0 {
			return total, fmt.Errorf("page out code: madvise %d: %w", advice, e)
		}
		total += int(m.End - m.Start)
	}
	return total, nil
}
