// Package uci reads, edits and writes OpenWrt UCI configuration the way
// libuci and the uci tool do: the same parser (and the same error text, line
// and byte), the same delta files in the save directory, the same output of
// show, export and changes, and byte-identical committed files.
//
// phonebookd is configured through /etc/config/phonebook; the module proxy
// does not serve a Go UCI library, and hosts without OpenWrt have no uci
// binary, so this package is the project's one implementation of the format.
package uci

import (
	"fmt"
	"strings"
)

// Package is one configuration file (/etc/config/<Name>), in file order.
type Package struct {
	Name     string
	Sections []*Section
	// counter numbers anonymous sections (cfgNNHHHH) like libuci's n_section:
	// one step per section ever allocated while this package was loaded.
	counter int
}

// Section is a "config <type> [name]" block.
type Section struct {
	Name      string
	Type      string
	Anonymous bool
	Options   []*Option
}

// Option is an "option" (single value) or a "list" (ordered values).
type Option struct {
	Name   string
	IsList bool
	Value  string   // when !IsList
	Values []string // when IsList
}

// Section returns the section called name, or nil.
func (p *Package) Section(name string) *Section {
	for _, s := range p.Sections {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Option returns the option called name, or nil.
func (s *Section) Option(name string) *Option {
	for _, o := range s.Options {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// Get returns an option's value (a list's values joined by a space, as
// `uci get` prints them unquoted) and whether it exists.
func (s *Section) Get(name string) (string, bool) {
	o := s.Option(name)
	if o == nil {
		return "", false
	}
	if o.IsList {
		return strings.Join(o.Values, " "), true
	}
	return o.Value, true
}

// djbhash is the hash libuci uses to name anonymous sections.
func djbhash(h uint32, s string) uint32 {
	if h == ^uint32(0) {
		h = 5381
	}
	for i := 0; i < len(s); i++ {
		h = (h << 5) + h + uint32(s[i])
	}
	return h & 0x7fffffff
}

// newSection appends a section. An anonymous one gets libuci's generated
// name at once (hashed from its type only, before any option exists).
func (p *Package) newSection(typ, name string) *Section {
	p.counter++
	s := &Section{Name: name, Type: typ}
	if name == "" {
		s.Anonymous = true
		s.Name = fmt.Sprintf("cfg%02x%04x", p.counter&0xff, djbhash(^uint32(0), typ)%(1<<16))
	}
	p.Sections = append(p.Sections, s)
	return s
}

// AddSection adds an anonymous section of the given type, as `uci add` does,
// and returns it with its generated name.
func (p *Package) AddSection(typ string) *Section { return p.newSection(typ, "") }

// SetSection creates a named section or changes the type of an existing one.
func (p *Package) SetSection(name, typ string) *Section {
	if s := p.Section(name); s != nil {
		s.Type = typ
		return s
	}
	return p.newSection(typ, name)
}

// Set sets a single-valued option with libuci's semantics: an empty value
// deletes it; a changed value replaces the option where it stands.
func (s *Section) Set(name, value string) {
	if value == "" {
		s.Delete(name)
		return
	}
	for i, o := range s.Options {
		if o.Name == name {
			s.Options[i] = &Option{Name: name, Value: value}
			return
		}
	}
	s.Options = append(s.Options, &Option{Name: name, Value: value})
}

// AddList appends a value to a list option; a single-valued option becomes
// a list holding its old value first, in its place, as libuci converts it.
func (s *Section) AddList(name, value string) {
	for i, o := range s.Options {
		if o.Name != name {
			continue
		}
		if o.IsList {
			o.Values = append(o.Values, value)
		} else {
			s.Options[i] = &Option{Name: name, IsList: true, Values: []string{o.Value, value}}
		}
		return
	}
	s.Options = append(s.Options, &Option{Name: name, IsList: true, Values: []string{value}})
}

// DelList removes every occurrence of value from a list option.
func (s *Section) DelList(name, value string) {
	o := s.Option(name)
	if o == nil || !o.IsList {
		return
	}
	kept := o.Values[:0]
	for _, v := range o.Values {
		if v != value {
			kept = append(kept, v)
		}
	}
	o.Values = kept
}

// Delete removes an option.
func (s *Section) Delete(name string) {
	for i, o := range s.Options {
		if o.Name == name {
			s.Options = append(s.Options[:i], s.Options[i+1:]...)
			return
		}
	}
}

// DeleteSection removes a section.
func (p *Package) DeleteSection(name string) {
	for i, s := range p.Sections {
		if s.Name == name {
			p.Sections = append(p.Sections[:i], p.Sections[i+1:]...)
			return
		}
	}
}

// validName reports whether str is a valid name as libuci's
// uci_validate_str judges it: a section or option name is letters, digits
// and '_' (shell compatibility); a package name, like a type, any
// printable ASCII but space (uci_validate_package).
func validName(str string, pkg bool) bool {
	if pkg {
		return validType(str)
	}
	if str == "" {
		return false
	}
	for i := 0; i < len(str); i++ {
		c := str[i]
		if isAlnum(c) || c == '_' {
			continue
		}
		return false
	}
	return true
}

// validType reports whether str is a valid section type (printable ASCII
// without spaces).
func validType(str string) bool {
	if str == "" {
		return false
	}
	for i := 0; i < len(str); i++ {
		c := str[i]
		if !isAlnum(c) && c != '_' && (c < 33 || c > 126) {
			return false
		}
	}
	return true
}

// validText reports whether a value may be stored, as libuci's
// uci_validate_text judges values given on the command line: any byte but
// the control characters other than tab, newline and carriage return.
// A value with a newline is written quoted over several lines, and read
// back whole.
func validText(str string) bool {
	for i := 0; i < len(str); i++ {
		c := str[i]
		if c < 32 && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// isSpace is C's isspace in the C locale.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}
