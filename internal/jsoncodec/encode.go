package jsoncodec

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Marshaler is a type that writes its own JSON text (the method
// encoding/json calls: time.Time's, the documents' times).
type Marshaler interface {
	MarshalJSON() ([]byte, error)
}

// texter is a type that is a JSON string: its MarshalText.
type texter interface {
	MarshalText() ([]byte, error)
}

var (
	marshalerType = reflect.TypeFor[Marshaler]()
	texterType    = reflect.TypeFor[texter]()
)

// maxEncodeDepth stops a value that contains itself (through pointers)
// from growing the output without end.
const maxEncodeDepth = 1000

// Options say how a value is written; the zero value is compact JSON with
// texts as they are.
type Options struct {
	// EscapeHTML writes <, > and & in strings as \u003c, \u003e, \u0026
	// (what encoding/json.Marshal does by default).
	EscapeHTML bool
	// Prefix and Indent lay the text out on lines as
	// encoding/json.MarshalIndent does; both empty: one line.
	Prefix, Indent string
}

// Marshal writes v as encoding/json.Marshal does (HTML characters
// escaped).
func Marshal(v any) ([]byte, error) { return Options{EscapeHTML: true}.Append(nil, v) }

// MarshalIndent writes v as encoding/json.MarshalIndent does.
func MarshalIndent(v any, prefix, indent string) ([]byte, error) {
	return Options{EscapeHTML: true, Prefix: prefix, Indent: indent}.Append(nil, v)
}

// Append appends v's JSON text to dst, as encoding/json writes it: struct
// fields in order by their json tags (omitempty, omitzero, "-",
// embedded structs promoted), maps with their keys sorted, nil slices,
// maps and pointers as null, numbers in encoding/json's forms (a float
// in exponent form below 1e-6 and from 1e21), a Marshaler's own text, a
// MarshalText as a string. NaN, infinities and types with no JSON form
// (channels, functions, complex numbers, byte slices, maps without string
// keys) are an error.
func (o Options) Append(dst []byte, v any) ([]byte, error) {
	e := encoder{escapeHTML: o.EscapeHTML, fields: map[reflect.Type][]field{}}
	if o.Prefix == "" && o.Indent == "" {
		e.buf = dst
		if err := e.value(reflect.ValueOf(v), 0); err != nil {
			return dst, err
		}
		return e.buf, nil
	}
	if err := e.value(reflect.ValueOf(v), 0); err != nil {
		return dst, err
	}
	return appendIndent(dst, e.buf, o.Prefix, o.Indent), nil
}

type encoder struct {
	buf        []byte
	escapeHTML bool
	fields     map[reflect.Type][]field
}

// UnsupportedError is a value with no JSON form.
type UnsupportedError struct{ What string }

func (e *UnsupportedError) Error() string { return "jsoncodec: unsupported " + e.What }

func (e *encoder) value(v reflect.Value, depth int) error {
	if !v.IsValid() {
		e.buf = append(e.buf, "null"...)
		return nil
	}
	if depth > maxEncodeDepth {
		return &UnsupportedError{What: fmt.Sprintf("value: nested deeper than %d (a cycle?)", maxEncodeDepth)}
	}
	t := v.Type()
	if t.Kind() != reflect.Pointer && v.CanAddr() && reflect.PointerTo(t).Implements(marshalerType) {
		return e.marshaler(v.Addr())
	}
	if t.Implements(marshalerType) {
		return e.marshaler(v)
	}
	if t.Kind() != reflect.Pointer && v.CanAddr() && reflect.PointerTo(t).Implements(texterType) {
		return e.text(v.Addr())
	}
	if t.Implements(texterType) {
		return e.text(v)
	}
	switch v.Kind() {
	case reflect.Bool:
		e.buf = strconv.AppendBool(e.buf, v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		e.buf = strconv.AppendInt(e.buf, v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		e.buf = strconv.AppendUint(e.buf, v.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		return e.float(v.Float(), t.Bits())
	case reflect.String:
		e.buf = AppendString(e.buf, v.String(), e.escapeHTML)
	case reflect.Struct:
		return e.object(v, depth)
	case reflect.Map:
		return e.mapping(v, depth)
	case reflect.Slice:
		if v.IsNil() {
			e.buf = append(e.buf, "null"...)
			return nil
		}
		if t.Elem().Kind() == reflect.Uint8 {
			return &UnsupportedError{What: "type " + t.String() + " (base64 is not written)"}
		}
		return e.array(v, depth)
	case reflect.Array:
		return e.array(v, depth)
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			e.buf = append(e.buf, "null"...)
			return nil
		}
		return e.value(v.Elem(), depth+1)
	default:
		return &UnsupportedError{What: "type " + t.String()}
	}
	return nil
}

func (e *encoder) marshaler(v reflect.Value) error {
	if v.Kind() == reflect.Pointer && v.IsNil() {
		e.buf = append(e.buf, "null"...)
		return nil
	}
	b, err := v.Interface().(Marshaler).MarshalJSON()
	if err != nil {
		return fmt.Errorf("jsoncodec: MarshalJSON of %s: %w", v.Type(), err)
	}
	if err := Valid(b, Limits{}); err != nil {
		return fmt.Errorf("jsoncodec: MarshalJSON of %s: %w", v.Type(), err)
	}
	e.buf = appendCompact(e.buf, b, e.escapeHTML)
	return nil
}

func (e *encoder) text(v reflect.Value) error {
	if v.Kind() == reflect.Pointer && v.IsNil() {
		e.buf = append(e.buf, "null"...)
		return nil
	}
	b, err := v.Interface().(texter).MarshalText()
	if err != nil {
		return fmt.Errorf("jsoncodec: MarshalText of %s: %w", v.Type(), err)
	}
	e.buf = AppendString(e.buf, string(b), e.escapeHTML)
	return nil
}

// float writes f as encoding/json does: the shortest form that reads
// back, in exponent form below 1e-6 and from 1e21, exponents without
// a leading zero.
func (e *encoder) float(f float64, bits int) error {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return &UnsupportedError{What: "value: " + strconv.FormatFloat(f, 'g', -1, bits)}
	}
	format := byte('f')
	if a := math.Abs(f); a != 0 {
		if bits == 64 && (a < 1e-6 || a >= 1e21) || bits == 32 && (float32(a) < 1e-6 || float32(a) >= 1e21) {
			format = 'e'
		}
	}
	b := strconv.AppendFloat(e.buf, f, format, -1, bits)
	if format == 'e' {
		// e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	e.buf = b
	return nil
}

func (e *encoder) object(v reflect.Value, depth int) error {
	fs, ok := e.fields[v.Type()]
	if !ok {
		fs = fieldsOf(v.Type())
		e.fields[v.Type()] = fs
	}
	e.buf = append(e.buf, '{')
	first := true
	for i := range fs {
		f := &fs[i]
		fv, ok := fieldOf(v, f.index)
		if !ok || f.omitEmpty && isEmpty(fv) || f.omitZero && isZero(fv) {
			continue
		}
		if !first {
			e.buf = append(e.buf, ',')
		}
		first = false
		e.buf = append(AppendString(e.buf, f.name, e.escapeHTML), ':')
		if err := e.value(fv, depth+1); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, '}')
	return nil
}

// fieldOf is v's field at index; false where a nil embedded pointer
// leaves it out.
func fieldOf(v reflect.Value, index []int) (reflect.Value, bool) {
	for i, x := range index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return reflect.Value{}, false
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v, true
}

func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}

// isZero is omitzero's test: the type's IsZero method where it has one.
func isZero(v reflect.Value) bool {
	if !v.CanInterface() {
		return v.IsZero()
	}
	if z, ok := v.Interface().(interface{ IsZero() bool }); ok {
		if v.Kind() == reflect.Pointer && v.IsNil() {
			return true
		}
		return z.IsZero()
	}
	return v.IsZero()
}

func (e *encoder) mapping(v reflect.Value, depth int) error {
	if v.IsNil() {
		e.buf = append(e.buf, "null"...)
		return nil
	}
	if v.Type().Key().Kind() != reflect.String {
		return &UnsupportedError{What: "type " + v.Type().String() + " (map keys that are not strings)"}
	}
	keys := v.MapKeys()
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	e.buf = append(e.buf, '{')
	for i, k := range keys {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.buf = append(AppendString(e.buf, k.String(), e.escapeHTML), ':')
		if err := e.value(v.MapIndex(k), depth+1); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, '}')
	return nil
}

func (e *encoder) array(v reflect.Value, depth int) error {
	e.buf = append(e.buf, '[')
	for i := 0; i < v.Len(); i++ {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		if err := e.value(v.Index(i), depth+1); err != nil {
			return err
		}
	}
	e.buf = append(e.buf, ']')
	return nil
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string the way encoding/json writes
// it: quote and backslash escaped, \b \f \n \r \t, other control
// characters as \u00XX, U+2028 and U+2029 escaped, each byte of invalid
// UTF-8 as \ufffd, and with escapeHTML <, > and & as \u003c, \u003e,
// \u0026.
func AppendString(dst []byte, s string, escapeHTML bool) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && (!escapeHTML || c != '<' && c != '>' && c != '&') {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(append(dst, s[start:i]...), `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(append(dst, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(append(dst, s[start:]...), '"')
}

// appendCompact appends a valid JSON text without its white space
// (outside strings), with escapeHTML <, >, & and U+2028, U+2029 escaped,
// as encoding/json treats a Marshaler's text.
func appendCompact(dst, src []byte, escapeHTML bool) []byte {
	inString, escaped := false, false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if escapeHTML && (c == '<' || c == '>' || c == '&') {
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			escaped = false
			continue
		}
		if escapeHTML && c == 0xe2 && i+2 < len(src) && src[i+1] == 0x80 && src[i+2]&^1 == 0xa8 {
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[src[i+2]&0xf])
			i += 2
			escaped = false
			continue
		}
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// appendIndent lays out a compact JSON text as encoding/json.Indent does:
// each member and element on its own line, after prefix and one indent
// per level, "name": value, empty objects and arrays kept as {} and [].
func appendIndent(dst, src []byte, prefix, indent string) []byte {
	depth := 0
	inString, escaped := false, false
	newline := func() {
		dst = append(dst, '\n')
		dst = append(dst, prefix...)
		for i := 0; i < depth; i++ {
			dst = append(dst, indent...)
		}
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		if inString {
			dst = append(dst, c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
			dst = append(dst, c)
		case '{', '[':
			dst = append(dst, c)
			if i+1 < len(src) && (src[i+1] == '}' || src[i+1] == ']') {
				dst = append(dst, src[i+1])
				i++
				continue
			}
			depth++
			newline()
		case ',':
			dst = append(dst, c)
			newline()
		case ':':
			dst = append(dst, ':', ' ')
		case '}', ']':
			depth--
			newline()
			dst = append(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
