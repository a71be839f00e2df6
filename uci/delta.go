package uci

import (
	"errors"
	"fmt"
	"github.com/aredn/phonebookd/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Cmd is the kind of one saved change, marked by the first character of its
// line in the delta file.
type Cmd byte

// The delta commands and their line prefixes.
const (
	CmdChange  Cmd = 0   // package.section[.option]='value'
	CmdRemove  Cmd = '-' // -package.section[.option]
	CmdRename  Cmd = '@' // @package.section[.option]='newname'
	CmdAdd     Cmd = '+' // +package.cfgXXXXXX='type'
	CmdReorder Cmd = '^' // ^package.section='position'
	CmdListAdd Cmd = '|' // |package.section.option='value'
	CmdListDel Cmd = '~' // ~package.section.option='value'
)

// Delta is one uncommitted change, as `uci set` and friends leave it in the
// save directory (/tmp/.uci/<package> on a router).
type Delta struct {
	Cmd      Cmd
	Section  string
	Option   string
	Value    string
	HasValue bool
}

// Ptr is a parsed "package[.section[.option]][=value]" reference, the
// argument form of the uci tool and of delta lines.
type Ptr struct {
	Package, Section, Option, Value string
	HasValue                        bool
}

// errPtr marks a reference that does not parse (libuci's UCI_ERR_PARSE).
var errPtr = errors.New("invalid reference")

// ParsePtr splits a reference the way uci_parse_ptr does.
func ParsePtr(str string) (Ptr, error) {
	var ptr Ptr
	if i := strings.IndexByte(str, '='); i >= 0 {
		ptr.Value, ptr.HasValue = str[i+1:], true
		str = str[:i]
	}
	parts := strings.Split(str, ".")
	if len(parts) > 3 {
		return Ptr{}, errPtr
	}
	ptr.Package = parts[0]
	if len(parts) > 1 {
		ptr.Section = parts[1]
	}
	if len(parts) > 2 {
		ptr.Option = parts[2]
	}
	if !validName(ptr.Package, true) {
		return Ptr{}, errPtr
	}
	if len(parts) > 2 && !validName(ptr.Option, false) {
		return Ptr{}, errPtr
	}
	if ptr.HasValue && !validText(ptr.Value) {
		return Ptr{}, errPtr
	}
	return ptr, nil
}

// lookupSection finds a section by name or by the extended form
// @type[index] (negative indexes count from the end), as libuci does.
func (p *Package) lookupSection(ref string) (*Section, error) {
	if validName(ref, false) {
		return p.Section(ref), nil
	}
	if !strings.HasPrefix(ref, "@") || !strings.HasSuffix(ref, "]") {
		return nil, errPtr
	}
	open := strings.IndexByte(ref, '[')
	if open < 0 {
		return nil, errPtr
	}
	typ := ref[1:open]
	idx, err := strconv.Atoi(ref[open+1 : len(ref)-1])
	if err != nil || (typ != "" && !validType(typ)) {
		return nil, errPtr
	}
	var matches []*Section
	for _, s := range p.Sections {
		if typ == "" || s.Type == typ {
			matches = append(matches, s)
		}
	}
	if idx < 0 {
		idx += len(matches)
	}
	if idx < 0 || idx >= len(matches) {
		return nil, nil
	}
	return matches[idx], nil
}

// ParseDeltas reads a delta file of package pkg. Lines that do not parse or
// name another package are skipped, as libuci skips them. A quoted value
// may span lines (uci set accepts newlines and writes them as they are),
// so the file is read as one stream, as uci_parse_delta reads it.
func ParseDeltas(pkg string, data []byte) []Delta {
	var out []Delta
	p := &parser{in: data}
	for !p.eof {
		p.pos = 0
		p.getln(0)
		if p.ch(0) == 0 {
			continue
		}
		arg, err := p.argument()
		if err != nil || arg == "" {
			continue
		}
		d := Delta{Cmd: CmdChange}
		switch c := Cmd(arg[0]); c {
		case CmdRemove, CmdRename, CmdAdd, CmdReorder, CmdListAdd, CmdListDel:
			d.Cmd = c
			arg = arg[1:]
		}
		ptr, err := ParsePtr(arg)
		if err != nil || ptr.Package != pkg || ptr.Section == "" || !deltaTupleValid(d.Cmd, ptr) {
			continue
		}
		d.Section, d.Option, d.Value, d.HasValue = ptr.Section, ptr.Option, ptr.Value, ptr.HasValue
		out = append(out, d)
	}
	return out
}

// deltaTupleValid applies uci_parse_delta_tuple's rules: no extended
// section reference; a value for every command but a removal; a reorder
// names a section only, a rename a valid new name, a list change an
// option.
func deltaTupleValid(c Cmd, ptr Ptr) bool {
	if !validName(ptr.Section, false) || (c != CmdRemove && !ptr.HasValue) {
		return false
	}
	switch c {
	case CmdReorder:
		return ptr.Option == ""
	case CmdRename:
		return validName(ptr.Value, false)
	case CmdListAdd, CmdListDel:
		return ptr.Option != ""
	}
	return true
}

// Line renders a delta as uci_save writes it into the delta file.
func (d Delta) Line(pkg string) string {
	var b strings.Builder
	if d.Cmd != CmdChange {
		b.WriteByte(byte(d.Cmd))
	}
	b.WriteString(pkg + "." + d.Section)
	if d.Option != "" {
		b.WriteString("." + d.Option)
	}
	if d.Cmd != CmdRemove || d.HasValue {
		b.WriteString("=" + quote(d.Value))
	}
	b.WriteByte('\n')
	return b.String()
}

// Apply performs one change on the package. It returns an error naming what
// was not found or not valid; the package is unchanged then.
func (p *Package) Apply(d Delta) error {
	s, err := p.lookupSection(d.Section)
	if err != nil {
		return fmt.Errorf("%s.%s: %w", p.Name, d.Section, err)
	}
	notFound := fmt.Errorf("%s.%s: %w", p.Name, d.Section, fs.ErrNotExist)
	switch d.Cmd {
	case CmdChange, CmdAdd:
		if d.Option == "" {
			if d.Value == "" {
				if s != nil {
					p.DeleteSection(s.Name)
				}
				return nil
			}
			if !validType(d.Value) {
				return fmt.Errorf("%s.%s: invalid section type %q", p.Name, d.Section, d.Value)
			}
			if s == nil {
				if !validName(d.Section, false) {
					return notFound
				}
				s = p.newSection(d.Value, d.Section)
			}
			s.Type = d.Value
			if d.Cmd == CmdAdd {
				s.Anonymous = true
			}
			return nil
		}
		if s == nil {
			return notFound
		}
		s.Set(d.Option, d.Value)
	case CmdRemove:
		if s == nil {
			return notFound
		}
		if d.Option == "" {
			p.DeleteSection(s.Name)
			return nil
		}
		o := s.Option(d.Option)
		if o == nil {
			return notFound
		}
		if o.IsList && d.HasValue && d.Value != "" {
			i, err := strconv.Atoi(d.Value)
			if err != nil {
				return fmt.Errorf("%s.%s.%s: list index %q: %w", p.Name, d.Section, d.Option, d.Value, err)
			}
			if i >= 0 && i < len(o.Values) {
				o.Values = append(o.Values[:i], o.Values[i+1:]...)
			}
			return nil
		}
		s.Delete(d.Option)
	case CmdListAdd:
		if s == nil || d.Option == "" {
			return notFound
		}
		s.AddList(d.Option, d.Value)
	case CmdListDel:
		if s == nil || d.Option == "" {
			return notFound
		}
		s.DelList(d.Option, d.Value)
	case CmdRename:
		if s == nil {
			return notFound
		}
		if !validName(d.Value, false) {
			return fmt.Errorf("%s.%s: invalid new name %q", p.Name, d.Section, d.Value)
		}
		if d.Option == "" {
			s.Name, s.Anonymous = d.Value, false
			return nil
		}
		o := s.Option(d.Option)
		if o == nil {
			return notFound
		}
		o.Name = d.Value
	case CmdReorder:
		if s == nil {
			return notFound
		}
		pos, err := strconv.Atoi(d.Value)
		if err != nil || pos < 0 {
			return fmt.Errorf("%s.%s: invalid position %q", p.Name, d.Section, d.Value)
		}
		p.DeleteSection(s.Name)
		if pos > len(p.Sections) {
			pos = len(p.Sections)
		}
		p.Sections = append(p.Sections[:pos], append([]*Section{s}, p.Sections[pos:]...)...)
	default:
		return fmt.Errorf("unknown delta command %q", byte(d.Cmd))
	}
	return nil
}

// Store is a configuration directory and its save directory, the pair a
// uci context works on (/etc/config and /tmp/.uci on a router).
type Store struct {
	ConfDir string
	SaveDir string
}

// Loaded is a package as libuci loads it: the committed file with the saved
// deltas applied, and those deltas (what `uci changes` lists).
type Loaded struct {
	*Package
	Saved []Delta
}

// Load reads package name from the configuration directory and applies its
// saved deltas. A missing file is an error wrapping fs.ErrNotExist.
func (st Store) Load(name string) (*Loaded, error) {
	if !validName(name, true) {
		return nil, fmt.Errorf("load %q: invalid package name", name)
	}
	path := filepath.Join(st.ConfDir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	pkg, err := Parse(name, data)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	l := &Loaded{Package: pkg}
	if st.SaveDir == "" {
		return l, nil
	}
	delta, err := os.ReadFile(filepath.Join(st.SaveDir, name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load %s: %w", filepath.Join(st.SaveDir, name), err)
	}
	for _, d := range ParseDeltas(name, delta) {
		l.Saved = append(l.Saved, d)
		_ = pkg.Apply(d) // libuci skips a change that no longer applies
	}
	return l, nil
}

// Save appends changes to the package's delta file, as `uci set` does
// without `commit`. The save directory is RAM on a router.
func (st Store) Save(pkg string, ds []Delta) error {
	if len(ds) == 0 {
		return nil
	}
	if err := os.MkdirAll(st.SaveDir, 0o700); err != nil {
		return fmt.Errorf("save %s: %w", pkg, err)
	}
	path := filepath.Join(st.SaveDir, pkg)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	for _, d := range ds {
		if _, err := f.WriteString(d.Line(pkg)); err != nil {
			f.Close()
			return fmt.Errorf("save %s: %w", path, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// Commit writes the package with its saved changes applied to the
// configuration directory, atomically, and clears the delta file. Nothing
// is written when there are no saved changes.
func (st Store) Commit(name string) error {
	l, err := st.Load(name)
	if err != nil {
		return err
	}
	if len(l.Saved) == 0 {
		return nil
	}
	if err := atomicfile.Write(filepath.Join(st.ConfDir, name), Export(l.Package, false), 0o644); err != nil {
		return fmt.Errorf("commit %s: %w", name, err)
	}
	if err := os.Remove(filepath.Join(st.SaveDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("commit %s: %w", name, err)
	}
	return nil
}

// Revert drops the saved changes of a package, or of one section or option.
func (st Store) Revert(ptr Ptr) error {
	path := filepath.Join(st.SaveDir, ptr.Package)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("revert %s: %w", path, err)
	}
	var keep []byte
	if ptr.Section != "" {
		for _, d := range ParseDeltas(ptr.Package, data) {
			if d.Section == ptr.Section && (ptr.Option == "" || d.Option == ptr.Option) {
				continue
			}
			keep = append(keep, d.Line(ptr.Package)...)
		}
	}
	if len(keep) == 0 {
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("revert %s: %w", path, err)
		}
		return nil
	}
	return atomicfile.Write(path, keep, 0o600)
}

// List returns the package names in the configuration directory, sorted,
// skipping names libuci skips (with a '.', or not valid package names).
func (st Store) List() ([]string, error) {
	ents, err := os.ReadDir(st.ConfDir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", st.ConfDir, err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || strings.Contains(n, ".") || !validName(n, true) {
			continue
		}
		names = append(names, n)
	}
	return names, nil
}
