package ubus

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/aredn/phonebookd/internal/jsonread"
)

// ParseJSONObject converts a JSON object into a blobmsg table body with the
// ubus tool's rules: integers as int32 when they fit, else int64; booleans
// as int8; other numbers as double; null as unspec; member order kept.
// The text is bounded as a ubus message is (MaxMessageLen bytes, the
// nesting MaxDepth allows).
func ParseJSONObject(s string) ([]Value, error) {
	sc := jsonread.NewScanner([]byte(s), jsonread.Limits{Depth: MaxDepth + 1, Size: MaxMessageLen})
	tok, err := sc.Next()
	if err != nil {
		return nil, fmt.Errorf("parse JSON: %w", err)
	}
	if tok.Kind != jsonread.ObjectStart {
		return nil, errors.New("parse JSON: the message must be a JSON object")
	}
	v, err := jsonMembers(sc, jsonread.ObjectEnd)
	if err != nil {
		return nil, fmt.Errorf("parse JSON: %w", err)
	}
	if _, err := sc.Next(); err != io.EOF {
		return nil, errors.New("parse JSON: trailing data after the object")
	}
	return v, nil
}

func jsonMembers(sc *jsonread.Scanner, end jsonread.Kind) ([]Value, error) {
	var out []Value
	for {
		tok, err := sc.Next()
		if err != nil {
			return nil, err
		}
		if tok.Kind == end {
			return out, nil
		}
		name := ""
		if end == jsonread.ObjectEnd {
			name = tok.Text // the scanner gives only a string here
			if tok, err = sc.Next(); err != nil {
				return nil, err
			}
		}
		v, err := jsonValue(sc, tok)
		if err != nil {
			return nil, err
		}
		v.Name = name
		out = append(out, v)
	}
}

func jsonValue(sc *jsonread.Scanner, tok jsonread.Token) (Value, error) {
	switch tok.Kind {
	case jsonread.Null:
		return Value{Kind: Unspec}, nil
	case jsonread.True, jsonread.False:
		return Bool("", tok.Kind == jsonread.True), nil
	case jsonread.String:
		return Str("", tok.Text), nil
	case jsonread.Number:
		lit := tok.Text
		if !strings.ContainsAny(lit, ".eE") {
			if i, err := strconv.ParseInt(lit, 10, 64); err == nil {
				if i >= math.MinInt32 && i <= math.MaxInt32 {
					return I32("", int32(i)), nil
				}
				return I64("", i), nil
			}
		}
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil {
			return Value{}, fmt.Errorf("number %s: %w", lit, err)
		}
		return Dbl("", f), nil
	case jsonread.ObjectStart:
		m, err := jsonMembers(sc, jsonread.ObjectEnd)
		return Tbl("", m...), err
	case jsonread.ArrayStart:
		m, err := jsonMembers(sc, jsonread.ArrayEnd)
		return Arr("", m...), err
	}
	return Value{}, fmt.Errorf("unexpected JSON token at offset %d", tok.Offset)
}

// FormatJSON renders a table (or array) body as libubox's
// blobmsg_format_json_indent does: indent < 0 for one line, else tabs
// starting at that level. `ubus call` prints each reply with indent 0.
func FormatJSON(members []Value, array bool, indent int) string {
	f := jsonFormatter{indent: indent >= 0, level: indent}
	f.list(members, array)
	return f.b.String()
}

// FormatSignature renders one method of an object's signature the way
// `ubus -v list` prints it: "name":{"arg":"String",...}.
func FormatSignature(method Value) string {
	f := jsonFormatter{typeNames: true}
	f.element(method, false)
	return f.b.String()
}

type jsonFormatter struct {
	b         bytes.Buffer
	indent    bool
	level     int
	typeNames bool
}

func (f *jsonFormatter) sep() {
	if !f.indent {
		return
	}
	f.b.WriteByte('\n')
	for i := 0; i < f.level && i < 16; i++ {
		f.b.WriteByte('\t')
	}
}

func (f *jsonFormatter) list(members []Value, array bool) {
	open, closing := byte('{'), byte('}')
	if array {
		open, closing = '[', ']'
	}
	f.b.WriteByte(open)
	f.level++
	f.sep()
	for i, m := range members {
		if i > 0 {
			f.b.WriteByte(',')
			f.sep()
		}
		f.element(m, array)
	}
	f.level--
	f.sep()
	f.b.WriteByte(closing)
}

// signature type names as the ubus tool prints them
var sigTypes = map[int64]string{int64(Int8): `"Boolean"`, int64(Int32): `"Integer"`, int64(String): `"String"`, int64(Array): `"Array"`, int64(Table): `"Table"`}

func (f *jsonFormatter) element(v Value, inArray bool) {
	if !inArray && v.Name != "" {
		f.str(v.Name)
		if f.indent {
			f.b.WriteString(": ")
		} else {
			f.b.WriteByte(':')
		}
	}
	if f.typeNames && v.Kind == Int32 {
		name, ok := sigTypes[v.Int]
		if !ok {
			name = `"(unknown)"`
		}
		f.b.WriteString(name)
		return
	}
	switch v.Kind {
	case Unspec:
		f.b.WriteString("null")
	case Int8:
		if v.Int != 0 {
			f.b.WriteString("true")
		} else {
			f.b.WriteString("false")
		}
	case Int16, Int32, Int64:
		f.b.WriteString(strconv.FormatInt(v.Int, 10))
	case Double:
		f.b.WriteString(formatDouble(v.Float))
	case String:
		f.str(v.Str)
	case Array:
		f.list(v.List, true)
	case Table:
		f.list(v.List, false)
	}
}

// formatDouble prints like C's "%lf".
func formatDouble(x float64) string {
	switch {
	case math.IsNaN(x):
		return "nan"
	case math.IsInf(x, 1):
		return "inf"
	case math.IsInf(x, -1):
		return "-inf"
	}
	return strconv.FormatFloat(x, 'f', 6, 64)
}

// str escapes a string as libubox does (it also escapes '/').
func (f *jsonFormatter) str(s string) {
	f.b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\b':
			f.b.WriteString(`\b`)
		case '\n':
			f.b.WriteString(`\n`)
		case '\t':
			f.b.WriteString(`\t`)
		case '\r':
			f.b.WriteString(`\r`)
		case '"', '\\', '/':
			f.b.WriteByte('\\')
			f.b.WriteByte(c)
		default:
			if c < ' ' {
				fmt.Fprintf(&f.b, `\u00%02x`, c)
			} else {
				f.b.WriteByte(c)
			}
		}
	}
	f.b.WriteByte('"')
}
