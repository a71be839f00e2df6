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
// A section is looked for where the process mapped its bytes of the file
// (/proc/PID/maps, the mappings of EXECUTABLE's device and inode), so a
// position-independent executable is read right too. A section the
// process does not map (another program's executable, a section past
// the mappings), a process that is gone or a short pagemap read is an
// error (exit status 1), never a line of zeros.
//
// It prints one line: "section size_kb resident_kb blocks/total" per
// section, separated by ";". A page two sections share counts in both,
// so the sum over sections may pass the mappings' Rss by a page per
// section.
package main

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/aredn/phonebookd/procfs"
	"golang.org/x/sys/unix"
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

// mapping is one line of /proc/PID/maps that maps the executable.
type mapping struct {
	start, end, off uint64 // addresses [start, end) map the file from off
}

// mappings reads the ranges of pid's address space that map the file
// with device dev and inode ino (/proc/PID/maps).
func mappings(pid int, dev, ino uint64) ([]mapping, error) {
	ms, err := procfs.ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	var out []mapping
	for _, m := range ms {
		if m.Inode == ino && unix.Mkdev(m.Major, m.Minor) == dev {
			out = append(out, mapping{m.Start, m.End, m.Offset})
		}
	}
	return out, nil
}

// addrOf is where pid mapped the n bytes of the file at offset off: the
// mapping holding off, and the mappings after it, without a gap, up to
// off+n. ok is false when some of them are not mapped.
func addrOf(maps []mapping, off, n uint64) (addr uint64, ok bool) {
	for i, m := range maps {
		if off < m.off || off >= m.off+(m.end-m.start) {
			continue
		}
		addr = m.start + (off - m.off)
		end := addr + n
		for j := i; j < len(maps) && end > maps[j].end; j++ {
			if j+1 == len(maps) || maps[j+1].start != maps[j].end || maps[j+1].off != maps[j].off+(maps[j].end-maps[j].start) {
				return 0, false
			}
		}
		return addr, true
	}
	return 0, false
}

// residency reads the sections of exe and the present bits of their
// pages in pid's address space. A section is looked for where pid
// mapped its bytes of the file (/proc/PID/maps), so a PIE, mapped away
// from its link addresses, is read right too; a section that pid does
// not map (another program, or a section past the mappings) is an
// error, not a line of zeros.
func residency(pid int, exe string) (string, error) {
	f, err := elf.Open(exe)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", exe, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Stat(exe, &st); err != nil {
		return "", fmt.Errorf("stat %s: %w", exe, err)
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return "", err
	}
	defer pm.Close()
	maps, err := mappings(pid, uint64(st.Dev), uint64(st.Ino))
	if err != nil {
		return "", err
	}
	if len(maps) == 0 {
		return "", fmt.Errorf("process %d does not map %s", pid, exe)
	}
	page := uint64(os.Getpagesize())
	// sections under a page (notes, build info) are left out
	var out []string
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type == elf.SHT_NOBITS || s.Addr == 0 || s.Size < page {
			continue
		}
		addr, ok := addrOf(maps, s.Offset, s.Size)
		if !ok {
			return "", fmt.Errorf("process %d does not map %s's %s (file offset %#x, %d bytes)", pid, exe, s.Name, s.Offset, s.Size)
		}
		first, last := addr/page, (addr+s.Size-1)/page
		buf := make([]byte, (last-first+1)*8)
		if n, err := pm.ReadAt(buf, int64(first*8)); n != len(buf) {
			return "", fmt.Errorf("pagemap of %d, %s: %d of %d bytes: %w", pid, s.Name, n, len(buf), err)
		}
		resident := 0
		blocks := map[uint64]bool{}
		for i := range last - first + 1 {
			if binary.NativeEndian.Uint64(buf[i*8:])>>63 == 1 {
				resident++
				blocks[(first+i)*page/block] = true
			}
		}
		total := (addr+s.Size-1)/block - addr/block + 1
		out = append(out, fmt.Sprintf("%s %d %d %d/%d", s.Name, s.Size>>10, uint64(resident)*page>>10, len(blocks), total))
	}
	return strings.Join(out, "; "), nil
}
