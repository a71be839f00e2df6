package ubus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Kind is a blobmsg value type.
type Kind uint8

// The blobmsg types (BLOBMSG_TYPE_*). Booleans travel as Int8.
const (
	Unspec Kind = 0
	Array  Kind = 1
	Table  Kind = 2
	String Kind = 3
	Int64  Kind = 4
	Int32  Kind = 5
	Int16  Kind = 6
	Int8   Kind = 7
	Double Kind = 8
)

var kindNames = [...]string{"unspec", "array", "table", "string", "int64", "int32", "int16", "int8", "double"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Value is one blobmsg value with its name (empty inside arrays). Tables
// and arrays keep their members in order in List.
type Value struct {
	Name  string
	Kind  Kind
	Str   string
	Int   int64
	Float float64
	List  []Value
}

// Constructors for the common kinds.

// Str is a named string.
func Str(name, s string) Value { return Value{Name: name, Kind: String, Str: s} }

// I32 is a named int32.
func I32(name string, v int32) Value { return Value{Name: name, Kind: Int32, Int: int64(v)} }

// I64 is a named int64.
func I64(name string, v int64) Value { return Value{Name: name, Kind: Int64, Int: v} }

// Bool is a named boolean (an int8 of 0 or 1).
func Bool(name string, b bool) Value {
	v := Value{Name: name, Kind: Int8}
	if b {
		v.Int = 1
	}
	return v
}

// Dbl is a named double.
func Dbl(name string, f float64) Value { return Value{Name: name, Kind: Double, Float: f} }

// Null is a named JSON null (unspec).
func Null(name string) Value { return Value{Name: name, Kind: Unspec} }

// Tbl is a named table.
func Tbl(name string, members ...Value) Value { return Value{Name: name, Kind: Table, List: members} }

// Arr is a named array; its items' names are ignored on the wire.
func Arr(name string, items ...Value) Value {
	for i := range items {
		items[i].Name = ""
	}
	return Value{Name: name, Kind: Array, List: items}
}

// Get returns the member of a table body called name.
func Get(members []Value, name string) (Value, bool) {
	for _, m := range members {
		if m.Name == name {
			return m, true
		}
	}
	return Value{}, false
}

// IsInt reports whether the value is one of the integer kinds.
func (v Value) IsInt() bool { return v.Kind >= Int64 && v.Kind <= Int8 }

// MaxDepth bounds nesting when decoding untrusted blobmsg.
const MaxDepth = 64

// ErrBlobmsg marks malformed blobmsg data.
var ErrBlobmsg = errors.New("ubus: malformed blobmsg")

// AppendValue encodes one value as a blobmsg attribute, in place: the
// header is written first and its length patched at the end, so that a
// document of any depth costs no allocation beyond dst's growth.
func AppendValue(dst []byte, v Value) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0) // the attribute header, written by finishAttr
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(v.Name)))
	dst = append(dst, v.Name...)
	dst = append(dst, 0)
	for (len(dst)-start-attrHdrLen)%4 != 0 { // the name header is padded
		dst = append(dst, 0)
	}
	switch v.Kind {
	case String:
		dst = append(append(dst, v.Str...), 0)
	case Int64:
		dst = binary.BigEndian.AppendUint64(dst, uint64(v.Int))
	case Int32:
		dst = binary.BigEndian.AppendUint32(dst, uint32(v.Int))
	case Int16:
		dst = binary.BigEndian.AppendUint16(dst, uint16(v.Int))
	case Int8:
		dst = append(dst, uint8(v.Int))
	case Double:
		dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(v.Float))
	case Array, Table:
		dst = AppendValues(dst, v.List)
	}
	return finishAttr(dst, start, uint8(v.Kind), true)
}

// AppendValues encodes a table or array body.
func AppendValues(dst []byte, vs []Value) []byte {
	for _, v := range vs {
		dst = AppendValue(dst, v)
	}
	return dst
}

// DecodeValues decodes a blobmsg table or array body. Untrusted input gets
// an error, never a panic; every length and the nesting depth are bounded.
func DecodeValues(b []byte) ([]Value, error) { return decodeValues(b, 0) }

func decodeValues(b []byte, depth int) ([]Value, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("nesting deeper than %d: %w", MaxDepth, ErrBlobmsg)
	}
	attrs, err := ParseAttrs(b)
	if err != nil {
		return nil, err
	}
	out := make([]Value, 0, len(attrs))
	for i, a := range attrs {
		v, err := decodeValue(a, depth)
		if err != nil {
			return nil, fmt.Errorf("member %d: %w", i, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// DecodeValue decodes a single blobmsg attribute.
func DecodeValue(a Attr) (Value, error) { return decodeValue(a, 0) }

func decodeValue(a Attr, depth int) (Value, error) {
	if !a.Ext {
		return Value{}, fmt.Errorf("attribute id %d without the extended flag: %w", a.ID, ErrBlobmsg)
	}
	k := Kind(a.ID)
	if k > Double {
		return Value{}, fmt.Errorf("unknown type %d: %w", a.ID, ErrBlobmsg)
	}
	d := a.Data
	if len(d) < 3 {
		return Value{}, fmt.Errorf("%d bytes for a name header: %w", len(d), ErrBlobmsg)
	}
	nl := int(binary.BigEndian.Uint16(d))
	hl := pad4(2 + nl + 1)
	if hl > len(d) || d[2+nl] != 0 {
		return Value{}, fmt.Errorf("name of %d bytes does not fit or is not terminated: %w", nl, ErrBlobmsg)
	}
	v := Value{Name: string(d[2 : 2+nl]), Kind: k}
	p := d[hl:]
	if n := fixedSize(k); n > 0 && len(p) != n {
		return Value{}, fmt.Errorf("%s %q: %d payload bytes, want %d: %w", k, v.Name, len(p), n, ErrBlobmsg)
	}
	switch k {
	case String:
		if len(p) == 0 || p[len(p)-1] != 0 {
			return Value{}, fmt.Errorf("string %q without NUL terminator: %w", v.Name, ErrBlobmsg)
		}
		v.Str = string(p[:len(p)-1])
	case Int64:
		v.Int = int64(binary.BigEndian.Uint64(p))
	case Int32:
		v.Int = int64(int32(binary.BigEndian.Uint32(p)))
	case Int16:
		v.Int = int64(int16(binary.BigEndian.Uint16(p)))
	case Int8:
		v.Int = int64(int8(p[0]))
	case Double:
		v.Float = math.Float64frombits(binary.BigEndian.Uint64(p))
	case Array, Table:
		list, err := decodeValues(p, depth+1)
		if err != nil {
			return Value{}, fmt.Errorf("%s %q: %w", k, v.Name, err)
		}
		v.List = list
	}
	return v, nil
}

// fixedSize is the payload size of the fixed-width kinds, 0 for others.
func fixedSize(k Kind) int {
	switch k {
	case Int64, Double:
		return 8
	case Int32:
		return 4
	case Int16:
		return 2
	case Int8:
		return 1
	}
	return 0
}

// FieldPayload finds a named member at the top level of an encoded table
// body and returns where its value's bytes start and how many there are,
// without decoding or allocating: a document encoded once can have a
// fixed-width field (a time, a counter) written in place when it is sent.
func FieldPayload(body []byte, name string) (off, n int, ok bool) {
	for i := 0; i+4 <= len(body); {
		hdr := binary.BigEndian.Uint32(body[i:])
		l := int(hdr & 0xffffff)
		if l < 4 || i+l > len(body) || hdr&0x80000000 == 0 || l < 6 {
			return 0, 0, false
		}
		nl := int(binary.BigEndian.Uint16(body[i+4:]))
		hl := pad4(2 + nl + 1)
		if 4+hl > l || 6+nl > l {
			return 0, 0, false
		}
		if string(body[i+6:i+6+nl]) == name {
			return i + 4 + hl, l - 4 - hl, true
		}
		i += pad4(l)
	}
	return 0, 0, false
}
