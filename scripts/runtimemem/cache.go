package main

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The process's executable is read whole (sameBuild compares its code
// and data with the twin's), and a read goes through the page cache: it
// would bring back every page of the executable the daemon's code
// page-out dropped, and the daemon's next fault in its code would then
// map a whole fault-around block (64 KB) of cached pages instead of
// reading the one page it needs, so the measure would raise the RssFile
// of every later sample (scripts/footprint.sh runs it at each one, and
// its READ_AHEAD_KB runs are about exactly those faults). So the pages
// the read brings into the cache are dropped again after it: which pages
// were cached before is read first (mincore on a mapping of the file
// that is never touched), and the pages cached after and not before are
// given back (POSIX_FADV_DONTNEED, which leaves alone a page some
// process maps: the daemon's own faults meanwhile stay).

// cachedPages says, for each page of f, whether it is in the page cache
// (mincore's low bit).
func cachedPages(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 {
		return nil, nil
	}
	page := int64(os.Getpagesize())
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %s to read its pages in the page cache: %w", f.Name(), err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (st.Size()+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return nil, fmt.Errorf("mincore of %s: %w", f.Name(), e)
	}
	for i := range vec {
		vec[i] &= 1
	}
	return vec, nil
}

// dropCachedSince gives back to the kernel the pages of f in the page
// cache now that were not in before (cachedPages before the reads).
func dropCachedSince(f *os.File, before []byte) error {
	after, err := cachedPages(f)
	if err != nil {
		return err
	}
	page := int64(os.Getpagesize())
	isNew := func(i int) bool { return after[i] == 1 && (i >= len(before) || before[i] == 0) }
	for i := 0; i < len(after); {
		if !isNew(i) {
			i++
			continue
		}
		j := i
		for j < len(after) && isNew(j) {
			j++
		}
		if err := unix.Fadvise(int(f.Fd()), int64(i)*page, int64(j-i)*page, unix.FADV_DONTNEED); err != nil {
			return fmt.Errorf("drop the pages %d-%d of %s from the page cache: %w", i, j-1, f.Name(), err)
		}
		i = j
	}
	return nil
}
