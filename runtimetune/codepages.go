package runtimetune

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// PageOutCode asks the kernel to reclaim the resident pages of the
// executable's own file mappings (its code and read-only data): the
// start-up touches most of a Go binary once, and those pages stay
// resident (4.4-4.7 MB of a router build's RSS) though the daemon runs in
// a small part of them. The pages it still runs in fault back in (read
// again from the file: on a router, from flash); the rest stay out. It
// returns how many bytes were advised (MADV_PAGEOUT, Linux 5.4; an older
// kernel refuses it, and that is returned as the error).
func PageOutCode() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("page out code: %w", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("page out code: %w", err)
	}
	total := 0
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		start, end, perms, path, ok := parseMapsLine(sc.Text())
		if !ok || path != exe || perms[1] == 'w' {
			continue
		}
		// The mapping is the kernel's, not a Go object: madvise by
		// address, as the maps file gives it.
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_PAGEOUT); e != 0 {
			return total, fmt.Errorf("page out code: madvise: %w", e)
		}
		total += int(end - start)
	}
	return total, nil
}

// parseMapsLine reads a /proc/self/maps line: "start-end perms offset
// dev inode path".
func parseMapsLine(line string) (start, end uintptr, perms, path string, ok bool) {
	f := bytes.Fields([]byte(line))
	if len(f) < 6 || len(f[1]) < 4 {
		return 0, 0, "", "", false
	}
	lo, hi, found := bytes.Cut(f[0], []byte("-"))
	if !found {
		return 0, 0, "", "", false
	}
	s, err1 := strconv.ParseUint(string(lo), 16, 64)
	e, err2 := strconv.ParseUint(string(hi), 16, 64)
	if err1 != nil || err2 != nil || e <= s {
		return 0, 0, "", "", false
	}
	return uintptr(s), uintptr(e), string(f[1]), string(bytes.Join(f[5:], []byte(" "))), true
}
