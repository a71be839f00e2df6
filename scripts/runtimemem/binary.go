package main

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
)

// sameBuild says whether the files run and sym load the same bytes at
// the same addresses: equal loadable segments, and equal addresses,
// sizes and bytes for the allocated sections that hold code and data.
// The notes differ (the Go build ID hashes the linker flags) and are
// left out; so are the sections only one file has (the symbol table and
// DWARF).
func sameBuild(run, sym *elf.File) error {
	if run.Class != sym.Class || run.Machine != sym.Machine || run.ByteOrder != sym.ByteOrder {
		return fmt.Errorf("the process runs %v %v, the file is %v %v", run.Class, run.Machine, sym.Class, sym.Machine)
	}
	var lr, ls []elf.ProgHeader
	for _, p := range run.Progs {
		if p.Type == elf.PT_LOAD {
			lr = append(lr, p.ProgHeader)
		}
	}
	for _, p := range sym.Progs {
		if p.Type == elf.PT_LOAD {
			ls = append(ls, p.ProgHeader)
		}
	}
	if len(lr) != len(ls) {
		return fmt.Errorf("the process's executable has %d loadable segments, the file %d", len(lr), len(ls))
	}
	for i := range lr {
		if lr[i] != ls[i] {
			return fmt.Errorf("loadable segment %d: the process's executable has %+v, the file %+v", i, lr[i], ls[i])
		}
	}
	for _, name := range []string{".text", ".rodata", ".typelink", ".itablink", ".gopclntab", ".go.buildinfo", ".noptrdata", ".data", ".bss", ".noptrbss"} {
		a, b := run.Section(name), sym.Section(name)
		if a == nil && b == nil {
			continue
		}
		if a == nil || b == nil {
			return fmt.Errorf("section %s is in only one of the process's executable and the file", name)
		}
		if a.Addr != b.Addr || a.Size != b.Size {
			return fmt.Errorf("section %s: the process's executable has it at %#x, %d bytes, the file at %#x, %d bytes", name, a.Addr, a.Size, b.Addr, b.Size)
		}
		if a.Type == elf.SHT_NOBITS {
			continue
		}
		da, err1 := a.Data()
		db, err2 := b.Data()
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("section %s: %w", name, err)
		}
		if !bytes.Equal(da, db) {
			return fmt.Errorf("section %s: same address and size, other bytes", name)
		}
	}
	return nil
}

// image is the executable with symbols: its symbols' addresses, its
// DWARF types, variables and constants, its word.
type image struct {
	order   binary.ByteOrder
	ptr     uint64 // pointer size in bytes, from the ELF class
	syms    map[string]uint64
	d       *dwarf.Data
	types   map[string]dwarf.Offset // named types
	vars    map[string]dwarf.Offset // a variable's type
	consts  map[string]int64
	rwStart uint64 // the writable loadable segment, bss included
	rwEnd   uint64
}

// load reads f's symbol table and indexes its DWARF.
func load(f *elf.File) (*image, error) {
	im := &image{order: f.ByteOrder, ptr: 8, syms: map[string]uint64{},
		types: map[string]dwarf.Offset{}, vars: map[string]dwarf.Offset{}, consts: map[string]int64{}}
	if f.Class == elf.ELFCLASS32 {
		im.ptr = 4
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_W != 0 {
			im.rwStart, im.rwEnd = p.Vaddr, p.Vaddr+p.Memsz
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("symbol table: %w (a build without -s is needed)", err)
	}
	for _, s := range syms {
		im.syms[s.Name] = s.Value
	}
	if im.d, err = f.DWARF(); err != nil {
		return nil, fmt.Errorf("DWARF: %w (a build without -w is needed)", err)
	}
	r := im.d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("DWARF: %w", err)
		}
		if e == nil {
			break
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		switch e.Tag {
		case dwarf.TagSubprogram:
			r.SkipChildren()
		case dwarf.TagStructType, dwarf.TagTypedef, dwarf.TagArrayType, dwarf.TagBaseType, dwarf.TagPointerType:
			if name != "" {
				if _, ok := im.types[name]; !ok {
					im.types[name] = e.Offset
				}
			}
			if e.Children {
				r.SkipChildren()
			}
		case dwarf.TagVariable:
			if t, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok && name != "" {
				im.vars[name] = t
			}
		case dwarf.TagConstant:
			switch v := e.Val(dwarf.AttrConstValue).(type) {
			case int64:
				im.consts[name] = v
			case uint64:
				im.consts[name] = int64(v)
			}
		}
	}
	return im, nil
}

// typ is the DWARF type called name.
func (im *image) typ(name string) (dwarf.Type, error) {
	off, ok := im.types[name]
	if !ok {
		return nil, fmt.Errorf("DWARF has no type %s (another Go version?)", name)
	}
	return im.d.Type(off)
}

// constant is the runtime constant called name.
func (im *image) constant(name string) (int64, error) {
	v, ok := im.consts[name]
	if !ok {
		return 0, fmt.Errorf("DWARF has no constant %s (another Go version?)", name)
	}
	return v, nil
}

// variable is the variable called name: its address (symbol table)
// and type (DWARF).
func (im *image) variable(name string) (obj, error) {
	addr, ok := im.syms[name]
	if !ok {
		return obj{}, fmt.Errorf("the symbol table has no %s (another Go version?)", name)
	}
	off, ok := im.vars[name]
	if !ok {
		return obj{}, fmt.Errorf("DWARF has no variable %s (another Go version?)", name)
	}
	t, err := im.d.Type(off)
	if err != nil {
		return obj{}, fmt.Errorf("DWARF type of %s: %w", name, err)
	}
	return obj{addr: addr, t: t, name: name}, nil
}

// obj is a value of type t at addr in the process; name says where it
// came from, for errors.
type obj struct {
	addr uint64
	t    dwarf.Type
	name string
}

// under is t without its typedefs and qualifiers.
func under(t dwarf.Type) dwarf.Type {
	for {
		switch u := t.(type) {
		case *dwarf.TypedefType:
			t = u.Type
		case *dwarf.QualType:
			t = u.Type
		default:
			return t
		}
	}
}

// field is o's field called name, or its fields' fields with a dotted
// path ("state.s.value").
func (o obj) field(path string) (obj, error) {
	for _, name := range splitDots(path) {
		st, ok := under(o.t).(*dwarf.StructType)
		if !ok {
			return obj{}, fmt.Errorf("%s (%s) is not a struct, no field %s (another Go version?)", o.name, o.t, name)
		}
		found := false
		for _, f := range st.Field {
			if f.Name == name {
				o = obj{addr: o.addr + uint64(f.ByteOffset), t: f.Type, name: o.name + "." + name}
				found = true
				break
			}
		}
		if !found {
			return obj{}, fmt.Errorf("DWARF: %s (%s) has no field %s (another Go version?)", o.name, o.t, name)
		}
	}
	return o, nil
}

func splitDots(s string) []string {
	var out []string
	for {
		i := 0
		for i < len(s) && s[i] != '.' {
			i++
		}
		out = append(out, s[:i])
		if i == len(s) {
			return out
		}
		s = s[i+1:]
	}
}

// array is o as an array: its length and element type.
func (o obj) array() (n uint64, elem dwarf.Type, err error) {
	at, ok := under(o.t).(*dwarf.ArrayType)
	if !ok || at.Count < 0 {
		return 0, nil, fmt.Errorf("DWARF: %s (%s) is not an array (another Go version?)", o.name, o.t)
	}
	return uint64(at.Count), at.Type, nil
}

// index is o's element i, o an array.
func (o obj) index(i uint64) (obj, error) {
	n, elem, err := o.array()
	if err != nil {
		return obj{}, err
	}
	if i >= n {
		return obj{}, fmt.Errorf("%s[%d]: past its length %d", o.name, i, n)
	}
	return obj{addr: o.addr + i*uint64(elem.Size()), t: elem, name: fmt.Sprintf("%s[%d]", o.name, i)}, nil
}

// pointee is the type o points to, o a pointer.
func pointee(name string, t dwarf.Type) (dwarf.Type, error) {
	pt, ok := under(t).(*dwarf.PtrType)
	if !ok {
		return nil, fmt.Errorf("DWARF: %s (%s) is not a pointer (another Go version?)", name, t)
	}
	return pt.Type, nil
}

// size is t's size in bytes; a type without one is an error.
func size(name string, t dwarf.Type) (uint64, error) {
	if t.Size() <= 0 {
		return 0, fmt.Errorf("DWARF: %s (%s) has no size", name, t)
	}
	return uint64(t.Size()), nil
}
