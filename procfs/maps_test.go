package procfs

import (
	"os"
	"testing"
)

// TestParseMapsLine reads /proc/PID/maps lines as the kernel writes
// them, and refuses what is not one.
func TestParseMapsLine(t *testing.T) {
	for _, c := range []struct {
		line string
		want Mapping
		ok   bool
	}{
		{"00400000-00a5b000 r-xp 00000000 08:01 1234 /usr/sbin/phonebookd",
			Mapping{Start: 0x400000, End: 0xa5b000, Perms: "r-xp", Major: 8, Minor: 1, Inode: 1234, Path: "/usr/sbin/phonebookd"}, true},
		{"7f00-8f00 r--p 0001f000 fd:0a 99 /tmp/a dir/phone book\n",
			Mapping{Start: 0x7f00, End: 0x8f00, Perms: "r--p", Offset: 0x1f000, Major: 0xfd, Minor: 0xa, Inode: 99, Path: "/tmp/a dir/phone book"}, true},
		{"7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ", Mapping{Start: 0x7ffd1000, End: 0x7ffd2000, Perms: "rw-p"}, true},
		{"7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]", Mapping{Start: 0x7ffd1000, End: 0x7ffd2000, Perms: "rw-p", Path: "[stack]"}, true},
		{"zz-10 r-xp 0 0:0 0 /x", Mapping{}, false},
		{"20-10 r-xp 0 0:0 0 /x", Mapping{}, false},
		{"10-20 r-xp 0 00 0 /x", Mapping{}, false},
		{"10-20 rx 0 0:0 0 /x", Mapping{}, false},
		{"10-20 r-xp 0 0:0", Mapping{}, false},
		{"", Mapping{}, false},
	} {
		m, err := ParseMapsLine(c.line)
		if (err == nil) != c.ok || m != c.want {
			t.Errorf("%q: %+v, %v; want %+v (ok %v)", c.line, m, err, c.want, c.ok)
		}
	}
}

// TestReadMapsSelf: this process's maps parse whole, and the
// executable is among them.
func TestReadMapsSelf(t *testing.T) {
	ms, err := ReadMaps(0)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i, m := range ms {
		found = found || m.Path == exe
		if i > 0 && m.Start < ms[i-1].End {
			t.Errorf("mapping %d starts at %#x before the last ends (%#x)", i, m.Start, ms[i-1].End)
		}
	}
	if !found {
		t.Errorf("no mapping of %s among %d", exe, len(ms))
	}
}

// FuzzParseMapsLine: no line makes the parser panic, and a line it
// takes has a range that is not empty.
func FuzzParseMapsLine(f *testing.F) {
	f.Add("00400000-00a5b000 r-xp 00000000 08:01 1234 /usr/sbin/phonebookd")
	f.Add("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]")
	f.Add("10-20 r-xp 0 0:0")
	f.Fuzz(func(t *testing.T, line string) {
		m, err := ParseMapsLine(line)
		if err == nil && m.End <= m.Start {
			t.Errorf("%q: range [%#x, %#x)", line, m.Start, m.End)
		}
	})
}
