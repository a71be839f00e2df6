package jsonread

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Unmarshaler is a type that reads itself from its JSON text (the same
// method encoding/json calls, so that time.Time and the documents' own
// types read the same either way).
type Unmarshaler interface {
	UnmarshalJSON([]byte) error
}

// TypeError is a JSON value that does not fit the Go value it is read
// into (a string for a number, a number out of an integer's range).
type TypeError struct {
	Value  string // the JSON value's kind: "string", "number 1.5", ...
	Type   string // the Go type
	Field  string // the member's path, dotted, where known
	Offset int
}

// Error names the value, the Go type and the member.
func (e *TypeError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("JSON at offset %d: cannot read %s into Go struct field %s of type %s", e.Offset, e.Value, e.Field, e.Type)
	}
	return fmt.Sprintf("JSON at offset %d: cannot read %s into Go value of type %s", e.Offset, e.Value, e.Type)
}

// Unmarshal reads the JSON text data into the value v points to, within
// the default Limits. See Limits.Unmarshal.
func Unmarshal(data []byte, v any) error { return Limits{}.Unmarshal(data, v) }

// Unmarshal reads the JSON text data into the value v points to, as
// encoding/json.Unmarshal does: the whole text is checked first (a text
// that is not JSON changes nothing); objects fill structs by their
// fields' json tags (an exact name first, else one equal under case
// folding; unknown members are skipped) and maps with string keys;
// arrays fill slices and arrays; null sets pointers, maps, slices and
// interfaces to nil and leaves other values alone; a value that does not
// fit its Go type is skipped and the first such is the error, after the
// rest is read; an Unmarshaler reads its own text.
func (l Limits) Unmarshal(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("jsonread: Unmarshal into %T: not a non-nil pointer", v)
	}
	if err := Valid(data, l); err != nil {
		return err
	}
	d := decoder{s: NewScanner(data, l), fields: map[reflect.Type][]field{}}
	t, err := d.s.Next()
	if err != nil {
		return err
	}
	if err := d.value(t, rv); err != nil {
		return err
	}
	return d.typeErr
}

type decoder struct {
	s       *Scanner
	fields  map[reflect.Type][]field
	typeErr error // the first value that did not fit
	path    []string
}

func (d *decoder) mismatch(t Token, typ reflect.Type) {
	if d.typeErr != nil {
		return
	}
	what := map[Kind]string{ObjectStart: "object", ArrayStart: "array", String: "string", Number: "number", True: "bool", False: "bool"}[t.Kind]
	if t.Kind == Number {
		what = "number " + t.Text
	}
	d.typeErr = &TypeError{Value: what, Type: typ.String(), Field: strings.Join(d.path, "."), Offset: t.Offset}
}

// indirect walks v down to the value a token is stored into: pointers
// allocated on the way, stopping at an Unmarshaler, or at the first
// settable pointer when the token is null (it is set to nil). It follows
// encoding/json's rules.
func indirect(v reflect.Value, null bool) (Unmarshaler, reflect.Value) {
	v0 := v
	haveAddr := false
	// A named value that can be addressed: its pointer methods count.
	if v.Kind() != reflect.Pointer && v.Type().Name() != "" && v.CanAddr() {
		haveAddr = true
		v = v.Addr()
	}
	for {
		if v.Kind() == reflect.Interface && !v.IsNil() {
			e := v.Elem()
			if e.Kind() == reflect.Pointer && !e.IsNil() && (!null || e.Elem().Kind() == reflect.Pointer) {
				haveAddr = false
				v = e
				continue
			}
		}
		if v.Kind() != reflect.Pointer {
			break
		}
		if null && v.CanSet() {
			break
		}
		if v.Elem().Kind() == reflect.Interface && v.Elem().Elem().Equal(v) {
			v = v.Elem()
			break
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		if v.Type().NumMethod() > 0 && v.CanInterface() {
			if u, ok := v.Interface().(Unmarshaler); ok {
				return u, reflect.Value{}
			}
		}
		if haveAddr {
			v = v0
			haveAddr = false
		} else {
			v = v.Elem()
		}
	}
	return nil, v
}

// value stores the value starting with token t into v.
func (d *decoder) value(t Token, v reflect.Value) error {
	if !v.IsValid() { // nowhere to store it: read past it
		return d.s.Skip(t)
	}
	u, v := indirect(v, t.Kind == Null)
	if u != nil {
		start := t.Offset
		if err := d.s.Skip(t); err != nil {
			return err
		}
		return u.UnmarshalJSON(d.s.data[start:d.s.pos])
	}
	switch t.Kind {
	case ObjectStart:
		return d.object(t, v)
	case ArrayStart:
		return d.array(t, v)
	case Null:
		switch v.Kind() {
		case reflect.Interface, reflect.Pointer, reflect.Map, reflect.Slice:
			v.SetZero()
		}
	case True, False:
		b := t.Kind == True
		switch {
		case v.Kind() == reflect.Bool:
			v.SetBool(b)
		case v.Kind() == reflect.Interface && v.NumMethod() == 0:
			v.Set(reflect.ValueOf(b))
		default:
			d.mismatch(t, v.Type())
		}
	case String:
		switch {
		case v.Kind() == reflect.String:
			v.SetString(t.Text)
		case v.Kind() == reflect.Interface && v.NumMethod() == 0:
			v.Set(reflect.ValueOf(t.Text))
		default:
			d.mismatch(t, v.Type())
		}
	case Number:
		d.number(t, v)
	}
	return nil
}

func (d *decoder) number(t Token, v reflect.Value) {
	switch v.Kind() {
	case reflect.Interface:
		if v.NumMethod() != 0 {
			break
		}
		f, err := strconv.ParseFloat(t.Text, 64)
		if err != nil {
			break
		}
		v.Set(reflect.ValueOf(f))
		return
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(t.Text, 10, 64)
		if err != nil || v.OverflowInt(n) {
			break
		}
		v.SetInt(n)
		return
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		n, err := strconv.ParseUint(t.Text, 10, 64)
		if err != nil || v.OverflowUint(n) {
			break
		}
		v.SetUint(n)
		return
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(t.Text, v.Type().Bits())
		if err != nil || v.OverflowFloat(f) {
			break
		}
		v.SetFloat(f)
		return
	}
	d.mismatch(t, v.Type())
}

func (d *decoder) object(t Token, v reflect.Value) error {
	var fields []field
	switch {
	case v.Kind() == reflect.Interface && v.NumMethod() == 0:
		m := map[string]any{}
		if err := d.members(func(name string, vt Token) error {
			e := reflect.New(reflect.TypeFor[any]()).Elem()
			if err := d.value(vt, e); err != nil {
				return err
			}
			m[name] = e.Interface()
			return nil
		}); err != nil {
			return err
		}
		v.Set(reflect.ValueOf(m))
		return nil
	case v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String:
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		et, kt := v.Type().Elem(), v.Type().Key()
		return d.members(func(name string, vt Token) error {
			e := reflect.New(et).Elem()
			if err := d.value(vt, e); err != nil {
				return err
			}
			v.SetMapIndex(reflect.ValueOf(name).Convert(kt), e)
			return nil
		})
	case v.Kind() == reflect.Struct:
		fields = d.fieldsOf(v.Type())
	default:
		d.mismatch(t, v.Type())
		return d.s.Skip(t)
	}
	return d.members(func(name string, vt Token) error {
		f := lookup(fields, name)
		if f == nil {
			return d.s.Skip(vt)
		}
		fv, ok := fieldByIndex(v, f.index)
		if !ok {
			return d.s.Skip(vt)
		}
		d.path = append(d.path, f.name)
		err := d.value(vt, fv)
		d.path = d.path[:len(d.path)-1]
		return err
	})
}

// members reads an object's members after its '{', calling each with its
// name and the first token of its value.
func (d *decoder) members(each func(name string, t Token) error) error {
	for {
		k, err := d.s.Next()
		if err != nil {
			return err
		}
		if k.Kind == ObjectEnd {
			return nil
		}
		vt, err := d.s.Next()
		if err != nil {
			return err
		}
		if err := each(k.Text, vt); err != nil {
			return err
		}
	}
}

// lookup finds the field for a member name: the exact name, else the
// first equal under case folding (as encoding/json).
func lookup(fields []field, name string) *field {
	for i := range fields {
		if fields[i].name == name {
			return &fields[i]
		}
	}
	for i := range fields {
		if strings.EqualFold(fields[i].name, name) {
			return &fields[i]
		}
	}
	return nil
}

// fieldByIndex is v's field at index, embedded pointers allocated on the
// way; false where one cannot be (an unexported embedded pointer).
func fieldByIndex(v reflect.Value, index []int) (reflect.Value, bool) {
	for i, x := range index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				if !v.CanSet() {
					return reflect.Value{}, false
				}
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v, true
}

func (d *decoder) array(t Token, v reflect.Value) error {
	switch v.Kind() {
	case reflect.Interface:
		if v.NumMethod() != 0 {
			break
		}
		items := []any{}
		for {
			it, err := d.s.Next()
			if err != nil {
				return err
			}
			if it.Kind == ArrayEnd {
				v.Set(reflect.ValueOf(items))
				return nil
			}
			e := reflect.New(reflect.TypeFor[any]()).Elem()
			if err := d.value(it, e); err != nil {
				return err
			}
			items = append(items, e.Interface())
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 0, 0)
		for {
			it, err := d.s.Next()
			if err != nil {
				return err
			}
			if it.Kind == ArrayEnd {
				v.Set(s)
				return nil
			}
			s = reflect.Append(s, reflect.Zero(v.Type().Elem()))
			if err := d.value(it, s.Index(s.Len()-1)); err != nil {
				return err
			}
		}
	case reflect.Array:
		i := 0
		for ; ; i++ {
			it, err := d.s.Next()
			if err != nil {
				return err
			}
			if it.Kind == ArrayEnd {
				break
			}
			var e reflect.Value // past the array's length: read and dropped
			if i < v.Len() {
				e = v.Index(i)
			}
			if err := d.value(it, e); err != nil {
				return err
			}
		}
		for ; i < v.Len(); i++ {
			v.Index(i).SetZero()
		}
		return nil
	}
	d.mismatch(t, v.Type())
	return d.s.Skip(t)
}
