// Package jsonread is the daemon's JSON reader: a tokenizer and a
// decoder into Go values, for what this project reads (the health
// documents, the crash history and run state, the saved history and
// binding table, ubus call arguments).
//
// It exists for the router's flash. Every program that links log/slog
// carries encoding/json's encoder (slog's handlers call it for JSON
// output, and the linker cannot prove that branch dead), so the daemon
// writes its JSON with encoding/json at no cost; encoding/json's decoder
// is what a project's own use adds, and this package reads the same in
// less (docs/BENCHMARKS.md). It reads what encoding/json wrote, so that
// files already on flash still load; its tests hold it to encoding/json
// as the oracle, fuzzing included.
//
// The input of the decoder comes from outside (files, the network): its
// nesting and size are bounded (Limits), a malformed text is an error
// with its offset, and no input makes it panic.
package jsonread

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Limits bound what a decoder accepts, so that a hostile or damaged text
// costs no more than its caller allows.
type Limits struct {
	// Depth is the deepest nesting of objects and arrays (0: DefaultDepth).
	Depth int
	// Size is the largest text in bytes (0: DefaultSize).
	Size int
}

// DefaultDepth is the nesting accepted unless Limits say otherwise: the
// documents nest fewer than ten levels.
const DefaultDepth = 64

// DefaultSize is the largest text accepted unless Limits say otherwise.
// It is a backstop: the text is already in memory, and each reader
// bounds its own file by its settings (the binding table by
// sip.max_bindings x sip.max_contacts), which on a host can reach
// hundreds of MB; a reader of smaller texts (ubus arguments) sets its
// own Limits.
const DefaultSize = 1 << 30

func (l Limits) depth() int {
	if l.Depth <= 0 {
		return DefaultDepth
	}
	return l.Depth
}

func (l Limits) size() int {
	if l.Size <= 0 {
		return DefaultSize
	}
	return l.Size
}

// SyntaxError is a text that is not JSON, or is past a limit.
type SyntaxError struct {
	Offset int // bytes read before the error
	Msg    string
}

// Error says where the text went wrong and how.
func (e *SyntaxError) Error() string { return fmt.Sprintf("JSON at offset %d: %s", e.Offset, e.Msg) }

// Kind is what a token is.
type Kind uint8

// The kinds of tokens.
const (
	ObjectStart Kind = iota + 1
	ObjectEnd
	ArrayStart
	ArrayEnd
	String // Token.Text is the decoded string (a member name too)
	Number // Token.Text is the literal, as written
	True
	False
	Null
)

// Token is one step of a JSON text.
type Token struct {
	Kind Kind
	Text string
	// Offset is where the token starts in the text.
	Offset int
}

// what the scanner expects next
type state uint8

const (
	stValue      state = iota // a value (top level, after ':' or an array's ',')
	stValueOrEnd              // after '[': a value or ']'
	stKeyOrEnd                // after '{': a member name or '}'
	stKey                     // after an object's ',': a member name
	stCommaOrEnd              // after a value inside an object or array
	stDone                    // the top-level value is complete
)

// Scanner reads a JSON text token by token, checking its grammar as it
// goes (commas, colons, nesting) within its Limits. Its zero value is not
// usable: see NewScanner.
type Scanner struct {
	data  []byte
	pos   int
	stack []byte // the open '{' and '['
	st    state
	lim   Limits
	err   error
	// check: the grammar only, no token texts (Valid's first pass)
	check bool
}

// NewScanner returns a scanner of data within lim.
func NewScanner(data []byte, lim Limits) *Scanner {
	s := &Scanner{data: data, lim: lim}
	if len(data) > lim.size() {
		s.err = &SyntaxError{Offset: 0, Msg: fmt.Sprintf("text of %d bytes is larger than the limit of %d", len(data), lim.size())}
	}
	return s
}

// Offset is how far the scanner has read.
func (s *Scanner) Offset() int { return s.pos }

// Depth is how many objects and arrays are open.
func (s *Scanner) Depth() int { return len(s.stack) }

func (s *Scanner) fail(msg string) error {
	s.err = &SyntaxError{Offset: s.pos, Msg: msg}
	return s.err
}

func (s *Scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// describe names the byte at the scanner's position for an error.
func (s *Scanner) describe() string {
	if s.pos >= len(s.data) {
		return "unexpected end of JSON input"
	}
	return "invalid character " + strconv.QuoteRune(rune(s.data[s.pos]))
}

// Next returns the next token; io.EOF after the top-level value and the
// white space after it; a *SyntaxError for a text that is not JSON (then
// on every later call too).
func (s *Scanner) Next() (Token, error) {
	if s.err != nil {
		return Token{}, s.err
	}
	s.skipSpace()
	switch s.st {
	case stDone:
		if s.pos == len(s.data) {
			return Token{}, io.EOF
		}
		return Token{}, s.fail(s.describe() + " after top-level value")
	case stCommaOrEnd:
		if s.pos == len(s.data) {
			return Token{}, s.fail("unexpected end of JSON input")
		}
		top := s.stack[len(s.stack)-1]
		switch c := s.data[s.pos]; {
		case c == ',':
			s.pos++
			s.skipSpace()
			if top == '{' {
				return s.key()
			}
			return s.value()
		case top == '{' && c == '}', top == '[' && c == ']':
			return s.end()
		}
		if top == '{' {
			return Token{}, s.fail(s.describe() + " after object member")
		}
		return Token{}, s.fail(s.describe() + " after array element")
	case stKeyOrEnd:
		if s.pos < len(s.data) && s.data[s.pos] == '}' {
			return s.end()
		}
		return s.key()
	case stKey:
		return s.key()
	case stValueOrEnd:
		if s.pos < len(s.data) && s.data[s.pos] == ']' {
			return s.end()
		}
	}
	return s.value()
}

// end closes the innermost object or array.
func (s *Scanner) end() (Token, error) {
	t := Token{Kind: ObjectEnd, Offset: s.pos}
	if s.data[s.pos] == ']' {
		t.Kind = ArrayEnd
	}
	s.pos++
	s.stack = s.stack[:len(s.stack)-1]
	s.afterValue()
	return t, nil
}

func (s *Scanner) afterValue() {
	if len(s.stack) == 0 {
		s.st = stDone
	} else {
		s.st = stCommaOrEnd
	}
}

// key reads a member name and its colon.
func (s *Scanner) key() (Token, error) {
	if s.pos >= len(s.data) || s.data[s.pos] != '"' {
		return Token{}, s.fail(s.describe() + " looking for beginning of object key string")
	}
	t, err := s.str()
	if err != nil {
		return Token{}, err
	}
	s.skipSpace()
	if s.pos >= len(s.data) || s.data[s.pos] != ':' {
		return Token{}, s.fail(s.describe() + " after object key")
	}
	s.pos++
	s.st = stValue
	return t, nil
}

// value reads the start of a value: a scalar whole, '{' or '['.
func (s *Scanner) value() (Token, error) {
	if s.pos >= len(s.data) {
		return Token{}, s.fail("unexpected end of JSON input")
	}
	start := s.pos
	switch c := s.data[s.pos]; c {
	case '{', '[':
		if len(s.stack) >= s.lim.depth() {
			return Token{}, s.fail(fmt.Sprintf("nesting deeper than %d", s.lim.depth()))
		}
		s.stack = append(s.stack, c)
		s.pos++
		if c == '{' {
			s.st = stKeyOrEnd
			return Token{Kind: ObjectStart, Offset: start}, nil
		}
		s.st = stValueOrEnd
		return Token{Kind: ArrayStart, Offset: start}, nil
	case '"':
		t, err := s.str()
		if err == nil {
			s.afterValue()
		}
		return t, err
	case 't':
		return s.literal("true", True)
	case 'f':
		return s.literal("false", False)
	case 'n':
		return s.literal("null", Null)
	}
	return s.number()
}

func (s *Scanner) literal(word string, k Kind) (Token, error) {
	start := s.pos
	for i := 0; i < len(word); i++ {
		if s.pos >= len(s.data) || s.data[s.pos] != word[i] {
			return Token{}, s.fail(s.describe() + " in literal " + word)
		}
		s.pos++
	}
	s.afterValue()
	return Token{Kind: k, Offset: start}, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number reads a number by the grammar of RFC 8259.
func (s *Scanner) number() (Token, error) {
	start := s.pos
	d := s.data
	if d[s.pos] == '-' {
		s.pos++
	}
	switch {
	case s.pos < len(d) && d[s.pos] == '0':
		s.pos++
	case s.pos < len(d) && d[s.pos] >= '1' && d[s.pos] <= '9':
		for s.pos < len(d) && isDigit(d[s.pos]) {
			s.pos++
		}
	default:
		if s.pos == start {
			return Token{}, s.fail(s.describe() + " looking for beginning of value")
		}
		return Token{}, s.fail(s.describe() + " in numeric literal")
	}
	if s.pos < len(d) && d[s.pos] == '.' {
		s.pos++
		if s.pos >= len(d) || !isDigit(d[s.pos]) {
			return Token{}, s.fail(s.describe() + " after decimal point in numeric literal")
		}
		for s.pos < len(d) && isDigit(d[s.pos]) {
			s.pos++
		}
	}
	if s.pos < len(d) && (d[s.pos] == 'e' || d[s.pos] == 'E') {
		s.pos++
		if s.pos < len(d) && (d[s.pos] == '+' || d[s.pos] == '-') {
			s.pos++
		}
		if s.pos >= len(d) || !isDigit(d[s.pos]) {
			return Token{}, s.fail(s.describe() + " in exponent of numeric literal")
		}
		for s.pos < len(d) && isDigit(d[s.pos]) {
			s.pos++
		}
	}
	s.afterValue()
	if s.check {
		return Token{Kind: Number, Offset: start}, nil
	}
	return Token{Kind: Number, Text: string(d[start:s.pos]), Offset: start}, nil
}

// str reads a string at s.pos (its opening quote) and decodes it as
// encoding/json does: escapes resolved, a lone surrogate and each byte of
// invalid UTF-8 as U+FFFD.
func (s *Scanner) str() (Token, error) {
	start := s.pos
	d := s.data
	s.pos++
	// The common case: no escapes, valid UTF-8; the text is a slice.
	plain := true
	i := s.pos
	for ; i < len(d); i++ {
		c := d[i]
		if c == '"' {
			break
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	if plain && i < len(d) {
		s.pos = i + 1
		if s.check {
			return Token{Kind: String, Offset: start}, nil
		}
		return Token{Kind: String, Text: string(d[start+1 : i]), Offset: start}, nil
	}
	var out []byte
	if !s.check {
		out = make([]byte, 0, i-start+16)
		out = append(out, d[start+1:i]...)
	}
	s.pos = i
	for {
		if s.pos >= len(d) {
			return Token{}, s.fail("unexpected end of JSON input")
		}
		c := d[s.pos]
		switch {
		case c == '"':
			s.pos++
			if s.check {
				return Token{Kind: String, Offset: start}, nil
			}
			return Token{Kind: String, Text: string(out), Offset: start}, nil
		case c < 0x20:
			return Token{}, s.fail(s.describe() + " in string literal")
		case c == '\\':
			r, err := s.escape()
			if err != nil {
				return Token{}, err
			}
			if !s.check {
				out = utf8.AppendRune(out, r)
			}
		case c < utf8.RuneSelf:
			if !s.check {
				out = append(out, c)
			}
			s.pos++
		case s.check:
			s.pos++ // any byte of 0x80 and up is read (invalid UTF-8 as U+FFFD)
		default:
			r, size := utf8.DecodeRune(d[s.pos:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, d[s.pos:s.pos+size]...)
			}
			s.pos += size
		}
	}
}

// escape reads one escape at s.pos (its backslash); a \u escape of a
// surrogate pair takes both halves.
func (s *Scanner) escape() (rune, error) {
	d := s.data
	if s.pos+1 >= len(d) {
		s.pos = len(d)
		return 0, s.fail("unexpected end of JSON input")
	}
	s.pos++
	c := d[s.pos]
	s.pos++
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, ok := s.hex4()
		if !ok {
			return 0, s.err
		}
		if !utf16.IsSurrogate(r) {
			return r, nil
		}
		// A pair is a high half and an escaped low half; anything else
		// leaves the first half alone, as U+FFFD, and the rest to be read.
		if s.pos+1 < len(d) && d[s.pos] == '\\' && d[s.pos+1] == 'u' {
			save := s.pos
			s.pos += 2
			r2, ok := s.hex4()
			if !ok {
				return 0, s.err
			}
			if p := utf16.DecodeRune(r, r2); p != utf8.RuneError {
				return p, nil
			}
			s.pos = save
		}
		return utf8.RuneError, nil
	}
	s.pos--
	return 0, s.fail(s.describe() + " in string escape code")
}

// hex4 reads the four hex digits of a \u escape.
func (s *Scanner) hex4() (rune, bool) {
	var r rune
	for i := 0; i < 4; i++ {
		if s.pos >= len(s.data) {
			s.fail("unexpected end of JSON input")
			return 0, false
		}
		c := s.data[s.pos]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			s.fail(s.describe() + " in \\u hexadecimal character escape")
			return 0, false
		}
		r = r<<4 | rune(c)
		s.pos++
	}
	return r, true
}

// Skip reads the rest of a value whose first token was t: nothing more
// for a scalar, through the matching end for an object or array.
func (s *Scanner) Skip(t Token) error {
	if t.Kind != ObjectStart && t.Kind != ArrayStart {
		return nil
	}
	depth := len(s.stack)
	for len(s.stack) >= depth {
		if _, err := s.Next(); err != nil {
			if errors.Is(err, io.EOF) {
				return s.fail("unexpected end of JSON input")
			}
			return err
		}
	}
	return nil
}

// Valid reports whether data is one JSON value within lim, and if not,
// why (a *SyntaxError).
func Valid(data []byte, lim Limits) error {
	s := NewScanner(data, lim)
	s.check = true
	for {
		if _, err := s.Next(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}
