package ubus

import (
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
)

// Valuer is a type that encodes itself as one blobmsg value (a time as an
// ISO string or null, say).
type Valuer interface {
	UbusValue(name string) Value
}

var valuerType = reflect.TypeFor[Valuer]()

// texter is a type that is a string on the wire (its MarshalText), or
// null where it says it is zero: a time in a document, say, whose package
// need not know blobmsg (health.Time).
type texter interface {
	MarshalText() ([]byte, error)
}

// zeroer says a value is not known (null on the wire).
type zeroer interface {
	IsZero() bool
}

var texterType = reflect.TypeFor[texter]()

// AppendStruct encodes a struct (or a pointer to one) as the members of a
// blobmsg table body, appended to dst: the one encoder from the Go
// documents to the wire, so that a document is one Go type whose json tags
// name its members for ubus and for JSON alike. It writes straight into
// dst (no Value tree), so that a large document (the history's columns)
// costs about its own size. Members follow the fields' order: string,
// bool (int8), int32, int64 and int (int64), float64 (double); a nil
// pointer is null (left out with omitempty, as is an empty string);
// structs and maps with string keys (sorted) are tables; slices are
// arrays (nil: an empty array); a Valuer encodes itself; a type with
// MarshalText is a string, or null where its IsZero says so; an embedded
// struct (or a non-nil pointer to one) adds its members to the table, as
// encoding/json does; a []Value field tagged `ubus:",inline"` adds its
// members too.
func AppendStruct(dst []byte, v any) []byte {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return dst
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		panic(fmt.Sprintf("ubus.AppendStruct: %s is not a struct", rv.Type()))
	}
	return appendMembers(dst, rv)
}

// ValuesOf is AppendStruct's encoding as Values, for a handler that
// replies with a list.
func ValuesOf(v any) []Value {
	vs, err := DecodeValues(AppendStruct(nil, v))
	if err != nil { // our own encoding: cannot happen short of a bug
		panic(fmt.Sprintf("ubus.ValuesOf: %v", err))
	}
	return vs
}

func appendMembers(dst []byte, rv reflect.Value) []byte {
	t := rv.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		fv := rv.Field(i)
		if f.Anonymous && f.Tag.Get("json") == "" {
			// Embedded: its members join the table, as encoding/json
			// promotes them (exported or not; a nil pointer adds none).
			if fv.Kind() == reflect.Pointer {
				if fv.IsNil() {
					continue
				}
				fv = fv.Elem()
			}
			if fv.Kind() == reflect.Struct {
				dst = appendMembers(dst, fv)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if opt, _ := f.Tag.Lookup("ubus"); opt == ",inline" {
			if fv.CanInterface() {
				if vs, ok := fv.Interface().([]Value); ok {
					dst = AppendValues(dst, vs)
				}
			}
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || name == "" {
			continue
		}
		if opts == "omitempty" && isEmpty(fv) {
			continue
		}
		dst = appendMember(dst, name, fv)
	}
	return dst
}

func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		return v.IsNil()
	case reflect.String:
		return v.Len() == 0
	}
	return false
}

// openAttr starts an attribute named name; finishAttr closes it.
func openAttr(dst []byte, name string) ([]byte, int) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(name)))
	dst = append(dst, name...)
	dst = append(dst, 0)
	for (len(dst)-start-attrHdrLen)%4 != 0 {
		dst = append(dst, 0)
	}
	return dst, start
}

func appendMember(dst []byte, name string, v reflect.Value) []byte {
	// A value reached through an unexported embedded struct cannot be
	// asked how it encodes itself: it is encoded by its kind.
	switch {
	case !v.CanInterface():
	case v.Type().Implements(valuerType):
		return AppendValue(dst, v.Interface().(Valuer).UbusValue(name))
	case v.Kind() != reflect.Pointer && v.Type().Implements(texterType):
		if z, ok := v.Interface().(zeroer); ok && z.IsZero() {
			return AppendValue(dst, Null(name))
		}
		b, err := v.Interface().(texter).MarshalText()
		if err != nil {
			panic(fmt.Sprintf("ubus.AppendStruct: member %q: %v", name, err))
		}
		dst, start := openAttr(dst, name)
		return finishAttr(append(append(dst, b...), 0), start, uint8(String), true)
	}
	var kind Kind
	dst, start := openAttr(dst, name)
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			kind = Unspec
			break
		}
		return appendMember(dst[:start], name, v.Elem())
	case reflect.String, reflect.Bool, reflect.Int32, reflect.Int, reflect.Int64, reflect.Float64:
		dst, kind = appendScalar(dst, v)
	case reflect.Struct:
		kind = Table
		dst = appendMembers(dst, v)
	case reflect.Map:
		kind = Table
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		for _, k := range keys {
			dst = appendMember(dst, k, v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())))
		}
	case reflect.Slice:
		kind = Array
		// A column of plain numbers or strings (the history's) is
		// written without asking each item how it encodes itself.
		plain := isPlain(v.Type().Elem())
		for i := 0; i < v.Len(); i++ {
			if plain {
				dst = appendPlain(dst, v.Index(i))
			} else {
				dst = appendMember(dst, "", v.Index(i))
			}
		}
	default:
		panic(fmt.Sprintf("ubus.AppendStruct: member %q of type %s has no blobmsg form", name, v.Type()))
	}
	return finishAttr(dst, start, uint8(kind), true)
}

// isPlain: values of type t are numbers or strings, or pointers to them,
// that encode by their kind alone.
func isPlain(t reflect.Type) bool {
	if t.Implements(valuerType) || t.Implements(texterType) {
		return false
	}
	if t.Kind() == reflect.Pointer {
		return isPlain(t.Elem())
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int32, reflect.Int, reflect.Int64, reflect.Float64:
		return true
	}
	return false
}

// appendPlain encodes an unnamed array item of a plain type (isPlain).
func appendPlain(dst []byte, v reflect.Value) []byte {
	start := len(dst)
	// An unnamed attribute: the header, a zero name length and its
	// terminating NUL, padded to 4 bytes.
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return finishAttr(dst, start, uint8(Unspec), true)
		}
		v = v.Elem()
	}
	dst, kind := appendScalar(dst, v)
	return finishAttr(dst, start, uint8(kind), true)
}

// appendScalar appends the payload of a string, bool or number (a plain
// type, isPlain) and returns its blobmsg kind.
func appendScalar(dst []byte, v reflect.Value) ([]byte, Kind) {
	switch v.Kind() {
	case reflect.String:
		return append(append(dst, v.String()...), 0), String
	case reflect.Bool:
		b := uint8(0)
		if v.Bool() {
			b = 1
		}
		return append(dst, b), Int8
	case reflect.Int32:
		return binary.BigEndian.AppendUint32(dst, uint32(v.Int())), Int32
	case reflect.Int, reflect.Int64:
		return binary.BigEndian.AppendUint64(dst, uint64(v.Int())), Int64
	case reflect.Float64:
		return binary.BigEndian.AppendUint64(dst, math.Float64bits(v.Float())), Double
	}
	return dst, Unspec
}
