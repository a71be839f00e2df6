package tests

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/aredn/phonebookd/page"
)

// validate checks a decoded JSON value against the subset of JSON Schema
// the documents' schemas in docs/schema use: type (one or a list),
// enum, required, properties, additionalProperties (a schema), items,
// minimum, maximum and format date-time. Unknown keywords fail the test,
// so that a schema cannot silently say more than is checked.
func validate(schema map[string]any, v any, path string) []string {
	var errs []string
	fail := func(f string, a ...any) { errs = append(errs, path+": "+fmt.Sprintf(f, a...)) }
	for k := range schema {
		switch k {
		case "$schema", "$id", "title", "description", "type", "enum", "required", "properties", "additionalProperties", "items", "minimum", "maximum", "format":
		default:
			fail("schema keyword %q is not checked by this validator", k)
		}
	}
	if t, ok := schema["type"]; ok {
		types := []any{t}
		if l, ok := t.([]any); ok {
			types = l
		}
		match := false
		for _, tt := range types {
			match = match || typeOf(v, tt.(string))
		}
		if !match {
			fail("type %T (%v), want %v", v, v, t)
			return errs
		}
	}
	if e, ok := schema["enum"].([]any); ok {
		found := false
		for _, x := range e {
			found = found || x == v
		}
		if !found {
			fail("%v not one of %v", v, e)
		}
	}
	if f, ok := schema["format"]; ok && f == "date-time" {
		if s, ok := v.(string); ok {
			if _, err := time.Parse(time.RFC3339, s); err != nil {
				fail("not a date-time: %q", s)
			}
		}
	}
	if n, ok := v.(float64); ok {
		if m, ok := schema["minimum"].(float64); ok && n < m {
			fail("%v below %v", n, m)
		}
		if m, ok := schema["maximum"].(float64); ok && n > m {
			fail("%v above %v", n, m)
		}
	}
	if obj, ok := v.(map[string]any); ok {
		for _, r := range asList(schema["required"]) {
			if _, ok := obj[r.(string)]; !ok {
				fail("required %q missing", r)
			}
		}
		props, _ := schema["properties"].(map[string]any)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if ps, ok := props[k].(map[string]any); ok {
				errs = append(errs, validate(ps, obj[k], path+"."+k)...)
			}
			if ap, ok := schema["additionalProperties"].(map[string]any); ok {
				errs = append(errs, validate(ap, obj[k], path+"."+k)...)
			}
		}
	}
	if arr, ok := v.([]any); ok {
		if is, ok := schema["items"].(map[string]any); ok {
			for i, x := range arr {
				errs = append(errs, validate(is, x, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	}
	return errs
}

func asList(v any) []any { l, _ := v.([]any); return l }

func typeOf(v any, t string) bool {
	switch t {
	case "null":
		return v == nil
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		n, ok := v.(float64)
		return ok && n == math.Trunc(n)
	}
	return false
}

func loadSchema(t *testing.T, name string) map[string]any {
	b, err := os.ReadFile("../docs/schema/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return s
}

// TestDocumentsMatchSchemas: the status and healthcheck documents, with
// the daemon up (after a crash, so last_crash is set) and down (the CGI's
// own document), field by field and type by type against docs/schema.
func TestDocumentsMatchSchemas(t *testing.T) {
	sh, hc := loadSchema(t, "software_health.schema.json"), loadSchema(t, "healthcheck.schema.json")
	e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1", "health.crash_coalesce": "0"})
	e.start()
	check := func(schema map[string]any, doc map[string]any, what string) {
		for _, err := range validate(schema, doc, what) {
			t.Error(err)
		}
	}
	check(sh, e.health(), "status")
	check(hc, call(t, e.sock, "phonebook.health", "check", ""), "check")
	e.inject("fetcher", "panic")
	waitFor(t, 10*time.Second, "the crash recorded", func() bool { return e.health()["last_crash"] != nil })
	check(sh, e.health(), "status after a crash")
	check(sh, call(t, e.sock, "phonebook", "status", "")["software_health"].(map[string]any), "phonebook status software_health")
	var down map[string]any
	if err := json.Unmarshal(page.DownDocument(time.Now(), fmt.Errorf("phonebookd is not running")), &down); err != nil {
		t.Fatal(err)
	}
	check(hc, down, "check, daemon down")
	// The validator itself fails on a wrong document.
	bad := map[string]any{"status": "fine", "timestamp": "yesterday"}
	if errs := validate(hc, bad, "bad"); len(errs) < 3 {
		t.Errorf("validator accepted a bad document: %v", errs)
	}
}
