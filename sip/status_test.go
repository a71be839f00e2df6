package sip

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestShedCountsNamed: the shed table's members are the causes' names, in
// the causes' order, and Causes gives each counter under its own name, so
// that a cause added or renamed cannot drop out of the status or the
// metrics unseen.
func TestShedCountsNamed(t *testing.T) {
	var c ShedCounts
	v := reflect.ValueOf(&c).Elem()
	if v.NumField() != numShed {
		t.Fatalf("ShedCounts has %d members, want %d causes", v.NumField(), numShed)
	}
	for i := range numShed {
		v.Field(i).SetInt(int64(100 + i))
		if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ","); name != shedNames[i] {
			t.Errorf("member %d is %q, want %q", i, name, shedNames[i])
		}
	}
	for i, cause := range c.Causes() {
		if cause.Cause != shedNames[i] || cause.Count != int64(100+i) {
			t.Errorf("cause %d: %+v, want %s %d", i, cause, shedNames[i], 100+i)
		}
	}
	b, err := json.Marshal(Status{Shed: c})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"shed":{"registrations":100,`) {
		t.Errorf("status JSON: %s", b)
	}
}
