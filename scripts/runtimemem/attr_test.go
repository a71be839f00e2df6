package main

import (
	"debug/elf"
	"encoding/binary"
	"strings"
	"testing"
)

// TestAttributeSplit: a page shared by span-set blocks and a spine is
// split by bytes, what they leave of a chunk's page is the chunk's
// (persistentalloc-other), a page no range covers is unattributed, and
// the parts add up to the resident pages.
func TestAttributeSplit(t *testing.T) {
	const page = 4096
	const chunk = 0x10000
	w := &walk{}
	w.add(persistentOther, chunk, 4*page)
	w.add(spansetBlocks, chunk, 4608)      // page 0 whole, 512 B of page 1
	w.add(spansetSpines, chunk+4608, 2048) // 2 KB of page 1
	w.add(heapSpans, 0x100000, 8192)       // two pages, one resident
	w.add(heapFree, 0x100000, 1<<20)       // the arena around it
	pages := []uint64{chunk, chunk + page, chunk + 3*page, 0x100000, 0x200000}
	r := w.attribute(pages, page)
	want := map[string]uint64{
		"spanset-blocks":        4 + 1, // 4,608 B
		"spanset-spines":        2,
		"persistentalloc-other": 1 + 4, // the rest of page 1, page 3
		"heap-spans":            4,
		"heap-free":             0,
		"unattributed":          4, // 0x200000
	}
	for name, kb := range want {
		var got uint64
		for _, l := range r.lines {
			if l.name == name {
				got = l.kb
			}
		}
		if got != kb {
			t.Errorf("%s: %d KB, want %d\n%s", name, got, kb, r.text())
		}
	}
	var sum uint64
	for _, l := range r.lines {
		sum += l.kb
	}
	if r.total != uint64(len(pages))*page>>10 || sum != r.total {
		t.Errorf("total %d, parts %d, resident %d KB", r.total, sum, len(pages)*page>>10)
	}
	if len(r.lines) != int(nparts) {
		t.Errorf("%d lines, want every part (%d)", len(r.lines), nparts)
	}
}

// TestRoundKB: figures rounded to KB still add up to the total.
func TestRoundKB(t *testing.T) {
	var b [nparts]uint64
	b[spansetBlocks], b[spansetSpines], b[unattributed] = 1536, 1536, 1024
	kb := roundKB(b, 4)
	if kb[spansetBlocks]+kb[spansetSpines]+kb[unattributed] != 4 || kb[unattributed] != 1 {
		t.Errorf("rounded %v", kb)
	}
}

// TestMissingNames: a field, type, constant or symbol the executable
// lacks (another Go version) is an error naming it, not a zero.
func TestMissingNames(t *testing.T) {
	// the test binary has no DWARF (go test links with -w): the
	// allocator's twin with symbols has
	_, symbols := buildTwins(t)
	f, im := loadSymbols(t, symbols)
	mheap, err := im.variable("runtime.mheap_")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mheap.field("pages.nosuchfield"); err == nil || !strings.Contains(err.Error(), "nosuchfield") {
		t.Errorf("a missing field: %v", err)
	}
	if _, err := im.typ("runtime.nosuchtype"); err == nil || !strings.Contains(err.Error(), "runtime.nosuchtype") {
		t.Errorf("a missing type: %v", err)
	}
	if _, err := im.constant("runtime.nosuchconst"); err == nil || !strings.Contains(err.Error(), "runtime.nosuchconst") {
		t.Errorf("a missing constant: %v", err)
	}
	if _, err := im.variable("runtime.nosuchvar"); err == nil || !strings.Contains(err.Error(), "runtime.nosuchvar") {
		t.Errorf("a missing variable: %v", err)
	}
	// and what is there is found, at the word size of the ELF class
	if want := map[elf.Class]uint64{elf.ELFCLASS64: 8, elf.ELFCLASS32: 4}[f.Class]; im.ptr != want {
		t.Errorf("pointer size %d for %v", im.ptr, f.Class)
	}
	if _, err := mheap.field("pages.summary"); err != nil {
		t.Error(err)
	}
}

// zeros is the memory of a process whose every byte is 0.
type zeros struct{}

func (zeros) ReadAt(b []byte, _ int64) (int, error) {
	clear(b)
	return len(b), nil
}

// TestWalksResolve: every name, field and constant the walks use is
// found in the router's two word sizes and byte orders: the amd64 build
// and the 32-bit big-endian mips one (no mips process can be read here:
// qemu-user's /proc is the emulator's). The walks run over memory of
// zeros, where every list is empty, so what is checked is the types:
// an error is a name the walks need and the executable lacks.
func TestWalksResolve(t *testing.T) {
	for _, c := range []struct {
		env   []string
		ptr   uint64
		order binary.ByteOrder
	}{
		{[]string{"GOARCH=amd64"}, 8, binary.LittleEndian},
		{[]string{"GOARCH=mips", "GOMIPS=softfloat"}, 4, binary.BigEndian},
	} {
		_, symbols := buildTwins(t, c.env...)
		_, im := loadSymbols(t, symbols)
		if im.ptr != c.ptr || im.order != c.order {
			t.Errorf("%v: pointer size %d, %v; want %d, %v", c.env, im.ptr, im.order, c.ptr, c.order)
		}
		w := &walk{m: &memory{f: zeros{}, order: im.order, ptr: im.ptr}, im: im, page: 4096}
		for name, walk := range map[string]func() error{"heap": w.heap, "spanSets": w.spanSets, "markBits": w.markBits,
			"spanQueues": w.spanQueues, "getrandom": w.getrandom, "persistent": w.persistent, "buckets": w.buckets, "pageAlloc": w.pageAlloc} {
			if err := walk(); err != nil {
				t.Errorf("%v: %s: %v", c.env, name, err)
			}
		}
		t.Logf("%v: %q", c.env, w.details)
	}
}
