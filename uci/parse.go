package uci

import (
	"bytes"
	"errors"
	"fmt"
)

// ParseError is a syntax error, reported with libuci's reason text, the
// 1-based line number and the byte offset within the (possibly multi-line)
// statement, exactly as `uci` prints them.
type ParseError struct {
	Reason string
	Line   int
	Byte   int
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("Parse error (%s) at line %d, byte %d", e.Reason, e.Line, e.Byte)
}

// MaxFileSize bounds what Parse accepts: a router's configuration file is a
// few kilobytes; anything this large is not a configuration file.
const MaxFileSize = 4 << 20

// Parse reads a configuration file's contents as package name. The
// package's name comes from the caller (the file name), as libuci's loader
// does; a "package" line inside is checked and otherwise ignored.
func Parse(name string, data []byte) (pkg *Package, err error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("parse %s: %d bytes exceeds the %d-byte limit", name, len(data), MaxFileSize)
	}
	p := &parser{in: data, pkg: &Package{Name: name}}
	defer func() {
		if r := recover(); r != nil {
			pe, ok := r.(*ParseError)
			if !ok {
				panic(r)
			}
			pkg, err = nil, pe
		}
	}()
	for !p.eof {
		p.pos = 0
		p.getln(0)
		if p.ch(0) != 0 {
			p.parseLine()
		}
	}
	return p.pkg, nil
}

// parser follows libuci's parser step by step, over a line buffer that
// quoted multi-line values extend, so that error positions match.
// A NUL byte in buf plays the part of C's string terminator.
type parser struct {
	in     []byte
	off    int
	eof    bool
	buf    []byte
	filled int
	pos    int
	line   int

	pkg     *Package
	section *Section
}

func (p *parser) fail(reason string) {
	panic(&ParseError{Reason: reason, Line: p.line, Byte: p.pos})
}

// getln reads the next input line into the buffer at offset, as uci_getln.
func (p *parser) getln(offset int) {
	for len(p.buf) < offset {
		p.buf = append(p.buf, 0)
	}
	p.buf = p.buf[:offset]
	if p.off >= len(p.in) {
		p.eof = true
		return
	}
	end := bytes.IndexByte(p.in[p.off:], '\n')
	var line []byte
	if end < 0 {
		line = p.in[p.off:]
		p.off = len(p.in)
		p.eof = true
	} else {
		line = p.in[p.off : p.off+end+1]
		p.off += end + 1
	}
	// A NUL inside a line ends it for libuci's string functions; keep the
	// newline so that line counting stays right.
	if i := bytes.IndexByte(line, 0); i >= 0 {
		nl := line[len(line)-1] == '\n'
		line = line[:i]
		if nl {
			line = append(line[:i:i], '\n')
		}
	}
	p.buf = append(p.buf, line...)
	p.filled = len(p.buf)
	if len(line) > 0 && line[len(line)-1] == '\n' {
		p.line++
	}
}

func (p *parser) ch(i int) byte {
	if i >= 0 && i < len(p.buf) {
		return p.buf[i]
	}
	return 0
}

func (p *parser) setc(i int, c byte) {
	for len(p.buf) <= i {
		p.buf = append(p.buf, 0)
	}
	p.buf[i] = c
}

// cstr returns the NUL-terminated string starting at i.
func (p *parser) cstr(i int) string {
	j := i
	for p.ch(j) != 0 {
		j++
	}
	if i >= len(p.buf) {
		return ""
	}
	return string(p.buf[i:j])
}

func (p *parser) skipSpace() {
	for p.ch(p.pos) != 0 && isSpace(p.ch(p.pos)) {
		p.pos++
	}
}

func (p *parser) increasePos(add int, reason string) {
	if p.pos+add > p.filled {
		p.fail(reason)
	}
	p.pos += add
}

func (p *parser) parseLine() {
	p.skipSpace()
	for {
		// strtok(cur, " \t"): the word, NUL-terminated in place.
		i := p.pos
		for p.ch(i) == ' ' || p.ch(i) == '\t' {
			i++
		}
		if p.ch(i) == 0 {
			return
		}
		j := i
		for c := p.ch(j); c != 0 && c != ' ' && c != '\t'; c = p.ch(j) {
			j++
		}
		word := string(p.buf[i:j])
		if p.ch(j) != 0 {
			p.setc(j, 0)
		}
		switch {
		case word[0] == '#':
			return
		case word == "p" || word == "package":
			p.parsePackage()
		case word == "c" || word == "config":
			p.parseConfig()
		case word == "o" || word == "option":
			p.parseOption(false)
		case word == "l" || word == "list":
			p.parseOption(true)
		default:
			p.fail("invalid command")
		}
	}
}

func (p *parser) parsePackage() {
	p.increasePos(len(p.cstr(p.pos))+1, "package without name")
	p.nextArg(true, true, true)
	p.assertEOL()
}

func (p *parser) parseConfig() {
	p.increasePos(len(p.cstr(p.pos))+1, "config without name")
	typ := p.nextArg(true, false, false)
	if !validType(typ) {
		p.fail("invalid character in type field")
	}
	name := p.nextArg(false, true, false)
	p.assertEOL()
	if name == "" {
		p.section = p.pkg.AddSection(typ)
		return
	}
	if s := p.pkg.Section(name); s != nil && s.Type != typ {
		p.fail("section of different type overwrites prior section with same name")
	}
	p.section = p.pkg.SetSection(name, typ)
}

func (p *parser) parseOption(list bool) {
	if p.section == nil {
		p.fail("option/list command found before the first section")
	}
	p.increasePos(len(p.cstr(p.pos))+1, "option without name")
	name := p.nextArg(true, true, false)
	value := p.nextArg(false, false, false)
	p.assertEOL()
	if list {
		p.section.AddList(name, value)
	} else {
		p.section.Set(name, value)
	}
}

func (p *parser) assertEOL() {
	p.skipSpace()
	if p.nextArg(false, false, false) != "" {
		p.fail("too many arguments")
	}
}

// nextArg extracts the next (possibly quoted) word.
func (p *parser) nextArg(required, name, pkg bool) string {
	p.skipSpace()
	val, target := p.pos, p.pos
	if p.ch(p.pos) == ';' {
		p.setc(p.pos, 0)
		p.pos++
	} else {
		p.parseStr(&target)
	}
	s := p.cstr(val)
	if s == "" {
		if required {
			p.fail("insufficient arguments")
		}
		return ""
	}
	if name && !validName(s, pkg) {
		p.fail("invalid character in name field")
	}
	return s
}

func (p *parser) addc(target *int) {
	p.setc(*target, p.ch(p.pos))
	*target++
	p.pos++
}

// backslash skips a backslash; at the end of a line it joins the next line
// and reports false (nothing to add).
func (p *parser) backslash() bool {
	p.pos++
	c := p.ch(p.pos)
	if c == 0 || c == '\n' || (c == '\r' && p.ch(p.pos+1) == '\n' && p.ch(p.pos+2) == 0) {
		p.getln(p.pos)
		return false
	}
	return true
}

func (p *parser) parseStr(target *int) {
	next := true
loop:
	for {
		switch p.ch(p.pos) {
		case '\'':
			p.parseQuoted(target, '\'')
		case '"':
			p.parseQuoted(target, '"')
		case '#':
			p.setc(p.pos, 0)
			break loop
		case 0:
			break loop
		case ';':
			next = false
			break loop
		case '\\':
			if p.backslash() {
				p.addc(target)
			}
		default:
			p.addc(target)
		}
		if c := p.ch(p.pos); c == 0 || isSpace(c) {
			break
		}
	}
	if p.ch(p.pos) != 0 && next {
		p.pos++
	}
	p.setc(*target, 0)
}

// parseQuoted reads a quoted string; backslash escapes apply inside double
// quotes only. A quote left open reads on into the next lines.
func (p *parser) parseQuoted(target *int, quote byte) {
	p.pos++
	for {
		switch c := p.ch(p.pos); {
		case c == quote:
			p.pos++
			return
		case c == 0:
			p.getln(p.pos)
			if p.ch(p.pos) == 0 {
				p.fail("EOF with unterminated " + string(quote))
			}
		case c == '\\' && quote == '"':
			if p.backslash() {
				p.addc(target)
			}
		default:
			p.addc(target)
		}
	}
}

// argument reads one uci-quoted word from the statement in the buffer
// (the form of a line in a delta file; a quoted word may read on into the
// next lines), as uci_parse_argument does. Anything after the word is an
// error.
func (p *parser) argument() (arg string, err error) {
	defer func() {
		if r := recover(); r != nil {
			pe, ok := r.(*ParseError)
			if !ok {
				panic(r)
			}
			arg, err = "", pe
		}
	}()
	arg = p.nextArg(false, false, false)
	if rest := p.cstr(p.pos); rest != "" {
		return "", errors.New("trailing characters after argument")
	}
	return arg, nil
}
