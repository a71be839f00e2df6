package ubus

import (
	"fmt"
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

// ValuesOf turns a struct (or a pointer to one) into the members of a
// blobmsg table, so that a document is one Go type whose json tags name
// its members for ubus and for JSON alike. Members follow the fields'
// order: string, bool (int8), int32, int64 and int (int64), float64
// (double); a nil pointer is null (left out with omitempty); structs and
// maps with string keys (sorted) are tables; slices are arrays (nil: an
// empty array); a Valuer encodes itself; a []Value field tagged
// `ubus:",inline"` adds its members to the table.
func ValuesOf(v any) []Value {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		panic(fmt.Sprintf("ubus.ValuesOf: %s is not a struct", rv.Type()))
	}
	return structMembers(rv)
}

func structMembers(rv reflect.Value) []Value {
	t := rv.Type()
	out := make([]Value, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		fv := rv.Field(i)
		if opt, _ := f.Tag.Lookup("ubus"); opt == ",inline" {
			if vs, ok := fv.Interface().([]Value); ok {
				out = append(out, vs...)
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
		out = append(out, valueOf(name, fv))
	}
	return out
}

func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		return v.IsNil()
	}
	return false
}

func valueOf(name string, v reflect.Value) Value {
	if v.Type().Implements(valuerType) {
		return v.Interface().(Valuer).UbusValue(name)
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return Null(name)
		}
		return valueOf(name, v.Elem())
	case reflect.String:
		return Str(name, v.String())
	case reflect.Bool:
		return Bool(name, v.Bool())
	case reflect.Int32:
		return I32(name, int32(v.Int()))
	case reflect.Int, reflect.Int64:
		return I64(name, v.Int())
	case reflect.Float64:
		return Dbl(name, v.Float())
	case reflect.Struct:
		return Tbl(name, structMembers(v)...)
	case reflect.Map:
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		t := Tbl(name)
		for _, k := range keys {
			t.List = append(t.List, valueOf(k, v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key()))))
		}
		return t
	case reflect.Slice:
		a := Arr(name)
		for i := 0; i < v.Len(); i++ {
			a.List = append(a.List, valueOf("", v.Index(i)))
		}
		return a
	}
	panic(fmt.Sprintf("ubus.ValuesOf: member %q of type %s has no blobmsg form", name, v.Type()))
}
