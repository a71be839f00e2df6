// Command coderes says which parts of a running program's executable are
// resident: for each allocated ELF section of the file (.text, .rodata,
// .gopclntab, ...), its size, its resident pages and how many of its
// 64 KB blocks have at least one page resident. scripts/footprint.sh
// prints it beside each sample, so that the executable's share of the
// RSS (RssFile) is accounted for by section.
//
//	coderes PID EXECUTABLE
//
// The resident pages come from /proc/PID/pagemap (bit 63: present),
// which needs root (CAP_SYS_ADMIN) for other processes' PFNs but gives
// the present bit to the process's owner. The 64 KB blocks are the
// kernel's fault-around window (fault_around_bytes, 64 KB by default):
// one fault maps every page of its block that is in the page cache, so
// the blocks touched, not the pages the program ran in, set RssFile.
//
// It prints one line: "section size_kb resident_kb blocks/total" per
// section, separated by ";".
package main

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// block is the fault-around window.
const block = 64 << 10

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: coderes PID EXECUTABLE")
		os.Exit(2)
	}
	pid, err := strconv.Atoi(os.Args[1])
	if err != nil || pid <= 0 {
		fmt.Fprintln(os.Stderr, "coderes: PID must be a process id")
		os.Exit(2)
	}
	line, err := residency(pid, os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "coderes:", err)
		os.Exit(1)
	}
	fmt.Println(line)
}

// residency reads the sections of exe and the present bits of their
// pages in pid's address space. The addresses are the file's own: a
// static, non-PIE Go executable is mapped where its headers say.
func residency(pid int, exe string) (string, error) {
	f, err := elf.Open(exe)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", exe, err)
	}
	defer f.Close()
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return "", err
	}
	defer pm.Close()
	page := uint64(os.Getpagesize())
	// sections under a page (notes, build info) are left out
	var out []string
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type == elf.SHT_NOBITS || s.Addr == 0 || s.Size < page {
			continue
		}
		first, last := s.Addr/page, (s.Addr+s.Size-1)/page
		buf := make([]byte, (last-first+1)*8)
		if _, err := pm.ReadAt(buf, int64(first*8)); err != nil && err != io.EOF {
			return "", fmt.Errorf("pagemap of %s: %w", s.Name, err)
		}
		resident := 0
		blocks := map[uint64]bool{}
		for i := range last - first + 1 {
			if binary.NativeEndian.Uint64(buf[i*8:])>>63 == 1 {
				resident++
				blocks[(first+i)*page/block] = true
			}
		}
		total := (s.Addr+s.Size-1)/block - s.Addr/block + 1
		out = append(out, fmt.Sprintf("%s %d %d %d/%d", s.Name, s.Size>>10, uint64(resident)*page>>10, len(blocks), total))
	}
	return strings.Join(out, "; "), nil
}
