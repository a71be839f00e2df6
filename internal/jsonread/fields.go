package jsonread

import (
	"reflect"
	"strings"
)

// field is a struct member as JSON sees it.
type field struct {
	name   string
	index  []int // the path of field indexes from the outer struct
	tagged bool  // named by its tag
}

// fieldsOf lists t's members in encoding/json's way: exported fields by
// their json tag's name (else the Go name; "-" left out), the fields of
// embedded structs without a tag promoted in place, and where several
// share a name, the shallowest wins (a tagged one among equals), or none
// when that is ambiguous. The decoder keeps one list per type for the
// call.
func fieldsOf(t reflect.Type) []field {
	var all []field
	depthOf := map[string]int{}
	var walk func(t reflect.Type, index []int, seen map[reflect.Type]bool)
	walk = func(t reflect.Type, index []int, seen map[reflect.Type]bool) {
		if seen[t] {
			return
		}
		seen[t] = true
		defer delete(seen, t)
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			ft := sf.Type
			if sf.Anonymous {
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if !sf.IsExported() && ft.Kind() != reflect.Struct {
					continue
				}
				if name == "" && ft.Kind() == reflect.Struct {
					walk(ft, append(append([]int(nil), index...), i), seen)
					continue
				}
			} else if !sf.IsExported() {
				continue
			}
			f := field{name: name, index: append(append([]int(nil), index...), i), tagged: name != ""}
			if !validName(f.name) {
				f.name, f.tagged = sf.Name, false
			}
			if d, ok := depthOf[f.name]; !ok || len(f.index) < d {
				depthOf[f.name] = len(f.index)
			}
			all = append(all, f)
		}
	}
	walk(t, nil, map[reflect.Type]bool{})
	// Keep per name the shallowest field, the tagged one among several.
	var out []field
	for i, f := range all {
		if len(f.index) != depthOf[f.name] {
			continue
		}
		n, tagged, first := 0, 0, -1
		for j, g := range all {
			if g.name == f.name && len(g.index) == len(f.index) {
				n++
				if g.tagged {
					tagged++
					if first < 0 {
						first = j
					}
				}
			}
		}
		if n == 1 || (tagged == 1 && first == i) {
			out = append(out, f)
		}
	}
	return out
}

// validName is encoding/json's test of a tag's name.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case c == '\\' || c == '"' || c == '`' || c == '\'' || c == ',':
			return false
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c > 0x7f:
		default:
			return false
		}
	}
	return true
}

func (d *decoder) fieldsOf(t reflect.Type) []field {
	fs, ok := d.fields[t]
	if !ok {
		fs = fieldsOf(t)
		d.fields[t] = fs
	}
	return fs
}
