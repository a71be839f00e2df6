package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/aredn/phonebookd/uci"
)

func parse(t *testing.T, text string) *uci.Package {
	t.Helper()
	p, err := uci.Parse(Package, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestShippedConfig: the shipped file parses, yields exactly the defaults
// and documents every option.
func TestShippedConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "files", "etc", "config", "phonebook"))
	if err != nil {
		t.Fatal(err)
	}
	c, errs := Load(parse(t, string(data)), nil)
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	if !reflect.DeepEqual(c, Defaults()) {
		t.Errorf("shipped config differs from defaults:\n%+v\n%+v", c, Defaults())
	}
	for _, o := range Options() {
		opt := o.Path[strings.LastIndex(o.Path, ".")+1:]
		if !strings.Contains(string(data), " "+opt+" ") {
			t.Errorf("%s not in the shipped file", o.Path)
		}
	}
}

func TestBadValuesNamed(t *testing.T) {
	for _, v := range []string{"abc", "-5", "99999999"} {
		c, errs := Load(parse(t, "config software_health health\n\toption health_check_interval '"+v+"'\n"), nil)
		if len(errs) != 1 {
			t.Fatalf("%q: errors %v", v, errs)
		}
		var fe *FieldError
		if !errors.As(errs[0], &fe) || fe.Path != "phonebook.health.health_check_interval" || fe.Value != v {
			t.Errorf("%q: error %v", v, errs[0])
		}
		if !strings.Contains(errs[0].Error(), "phonebook.health.health_check_interval") || !strings.Contains(errs[0].Error(), v) {
			t.Errorf("message %q lacks path or value", errs[0])
		}
		if c.Health.HealthCheckInterval != 60 {
			t.Errorf("%q: interval %d, want default 60", v, c.Health.HealthCheckInterval)
		}
	}
}

func TestReloadKeepsPreviousGoodValue(t *testing.T) {
	prev, _ := Load(parse(t, "config software_health health\n\toption health_check_interval '30'\n"), nil)
	c, errs := Load(parse(t, "config software_health health\n\toption health_check_interval 'abc'\n\toption enabled '0'\n"), &prev)
	if len(errs) != 1 || c.Health.HealthCheckInterval != 30 || c.Health.Enabled {
		t.Errorf("got interval %d enabled %v errors %v", c.Health.HealthCheckInterval, c.Health.Enabled, errs)
	}
}

func TestMissingFileMeansDefaults(t *testing.T) {
	c, errs := LoadStore(uci.Store{ConfDir: t.TempDir(), SaveDir: t.TempDir()}, nil)
	if len(errs) != 0 || !reflect.DeepEqual(c, Defaults()) {
		t.Errorf("got %+v %v", c, errs)
	}
}

func TestListsAndUncommittedChanges(t *testing.T) {
	st := uci.Store{ConfDir: t.TempDir(), SaveDir: t.TempDir()}
	os.WriteFile(filepath.Join(st.ConfDir, Package), []byte("config fetcher fetcher\n\tlist server 'http://a/x.csv'\n\tlist server 'http://b/y.csv'\n"), 0o644)
	os.WriteFile(filepath.Join(st.SaveDir, Package), []byte("phonebook.fetcher.interval='600'\n"), 0o600)
	c, errs := LoadStore(st, nil)
	if len(errs) != 0 || len(c.Fetcher.Servers) != 2 || c.Fetcher.Servers[1] != "http://b/y.csv" || c.Fetcher.Interval != 600 {
		t.Errorf("got %+v %v", c.Fetcher, errs)
	}
}

func TestWrongSectionType(t *testing.T) {
	_, errs := Load(parse(t, "config sip health\n"), nil)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "phonebook.health") {
		t.Errorf("errors %v", errs)
	}
}

// garbage holds, for every string and list option of the schema, a value
// its check rejects. TestStringOptionGarbage fails when an option is
// added without one, so no string option goes unchecked.
var garbage = map[string]string{
	"main.state_dir":    "garbage",
	"main.run_dir":      "garbage",
	"main.www_dir":      "garbage",
	"main.apps_dir":     "garbage",
	"main.ubus":         "garbage",
	"main.dbus":         "garbage",
	"main.dbus_address": "garbage",
	"sip.listen":        "garbage",
	"sip.dns_suffix":    "gar bage",
	"fetcher.server":    "garbage",
	"fetcher.xml_path":  "../garbage",
	"monitor.target":    "gar bage",
	"metrics.listen":    "garbage",
	"reporter.url":      "garbage",
	"reporter.node":     "gar bage",
}

// pkgWith is a package whose section holds one option (a list for list
// options) with the given values.
func pkgWith(f field, values ...string) *uci.Package {
	p := &uci.Package{Name: Package}
	s := p.SetSection(f.section, Sections[f.section])
	for _, v := range values {
		if f.kind == kList {
			s.AddList(f.option, v)
		} else {
			s.Set(f.option, v)
		}
	}
	return p
}

// TestStringOptionGarbage: every string and list option set to a value
// its check rejects, at start, leaves the default in force and reports
// the rejection by path and value; on reload it leaves the previous good
// value. A control character (UCI carries newlines in quoted values) is
// rejected by every one of them. Before: the value was written before
// its check and reverted only on reload, so sip.listen=garbage at start
// stayed in force.
func TestStringOptionGarbage(t *testing.T) {
	def := Defaults()
	seen := 0
	for _, f := range fields() {
		if f.kind != kString && f.kind != kList {
			continue
		}
		seen++
		key := f.section + "." + f.option
		bad, ok := garbage[key]
		if !ok {
			t.Errorf("%s: no garbage value in the test's table", key)
			continue
		}
		path := Package + "." + key
		for _, v := range []string{bad, "line1\nline2", "tab\there", "cr\rhere"} {
			var c Config
			var errs []error
			if f.kind == kList {
				// One good value beside the bad one: the option as a
				// whole keeps the default.
				good := map[string]string{"fetcher.server": "http://a.local.mesh/x.csv", "monitor.target": "node.local.mesh"}[key]
				c, errs = Load(pkgWith(f, good, v), nil)
			} else {
				c, errs = Load(pkgWith(f, v), nil)
			}
			if got, want := f.ptr(&c), f.ptr(&def); !reflect.DeepEqual(got, want) {
				t.Errorf("%s=%q at start: in force %v, want the default %v", key, v, reflect.ValueOf(got).Elem(), reflect.ValueOf(want).Elem())
			}
			var fe *FieldError
			if len(errs) != 1 || !errors.As(errs[0], &fe) || fe.Path != path || fe.Value != v {
				t.Errorf("%s=%q at start: errors %v, want one naming %s", key, v, errs, path)
			}
		}
		// Reload: the previous good value stays.
		prev := Defaults()
		good := map[kind]string{kString: "", kList: ""}[f.kind]
		switch key {
		case "main.state_dir", "main.run_dir", "main.www_dir", "main.apps_dir":
			good = "/srv/pb"
		case "main.ubus", "main.dbus":
			good = "0"
		case "main.dbus_address":
			good = "unix:path=/tmp/bus"
		case "sip.listen", "metrics.listen":
			good = "127.0.0.1:5999"
		case "sip.dns_suffix", "reporter.node":
			good = "node-1"
		case "fetcher.server", "reporter.url":
			good = "http://a.local.mesh/x.csv"
		case "fetcher.xml_path":
			good = "x/y.xml"
		case "monitor.target":
			good = "node.local.mesh:5060"
		}
		if err := f.set(&prev, good); err != nil {
			t.Fatalf("%s: good value %q rejected: %v", key, good, err)
		}
		c, errs := Load(pkgWith(f, bad), &prev)
		if got, want := f.ptr(&c), f.ptr(&prev); !reflect.DeepEqual(got, want) || len(errs) != 1 {
			t.Errorf("%s=%q on reload: in force %v, want the previous %v (errors %v)", key, bad, reflect.ValueOf(got).Elem(), reflect.ValueOf(want).Elem(), errs)
		}
	}
	if seen != len(garbage) {
		t.Errorf("%d string options in the schema, %d in the test's table", seen, len(garbage))
	}
}

// TestSetChecksBeforeWriting: a rejected value never reaches the
// configuration it was parsed into.
func TestSetChecksBeforeWriting(t *testing.T) {
	for _, f := range fields() {
		key := f.section + "." + f.option
		bad, ok := garbage[key]
		if !ok {
			continue
		}
		c := Defaults()
		if err := f.set(&c, bad); err == nil {
			t.Errorf("%s=%q accepted", key, bad)
		}
		if !reflect.DeepEqual(c, Defaults()) {
			t.Errorf("%s=%q: written before its check", key, bad)
		}
	}
}
