package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/PID/maps: the addresses [Start, End)
// map the file Major:Minor Inode (Path) from Offset, or anonymous
// memory when Inode is 0 (Path empty, or a kernel name in brackets such
// as [stack] or [anon: Go: heap]). The daemon pages out its own code by
// these ranges (runtimetune), and the footprint's tools (scripts/coderes,
// scripts/runtimemem) split a process's memory by them.
type Mapping struct {
	Start, End   uint64
	Perms        string // "r-xp": read, write, execute, private or shared
	Offset       uint64
	Major, Minor uint32
	Inode        uint64
	Path         string
}

// ParseMapsLine reads one line of /proc/PID/maps as the kernel writes
// it, "start-end perms offset major:minor inode [path]"; a path may hold
// spaces. A line that is not one is an error naming it.
func ParseMapsLine(line string) (Mapping, error) {
	f := strings.Fields(line)
	bad := func() (Mapping, error) {
		return Mapping{}, fmt.Errorf("not a maps line: %q", strings.TrimSpace(line))
	}
	if len(f) < 5 || len(f[1]) != 4 {
		return bad()
	}
	lo, hi, ok1 := strings.Cut(f[0], "-")
	maj, mnr, ok2 := strings.Cut(f[3], ":")
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	off, err3 := strconv.ParseUint(f[2], 16, 64)
	mj, err4 := strconv.ParseUint(maj, 16, 32)
	mn, err5 := strconv.ParseUint(mnr, 16, 32)
	ino, err6 := strconv.ParseUint(f[4], 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil || err6 != nil || end <= start {
		return bad()
	}
	m := Mapping{Start: start, End: end, Perms: f[1], Offset: off, Major: uint32(mj), Minor: uint32(mn), Inode: ino}
	if len(f) > 5 {
		m.Path = strings.Join(f[5:], " ")
	}
	return m, nil
}

// ReadMaps reads the mappings of process pid (0: this process), in
// address order as the kernel lists them.
func ReadMaps(pid int) ([]Mapping, error) {
	path := "/proc/self/maps"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/maps", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var out []Mapping
	for line := range strings.Lines(string(b)) {
		m, err := ParseMapsLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, m)
	}
	return out, nil
}
