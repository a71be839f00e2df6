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

// TestMetricsListenNotSIPs: metrics.listen on SIP's port, on the same or
// an overlapping address, is rejected with a message naming sip.listen
// (before, it was accepted and the Prometheus listener took SIP's TCP
// port at start); the previous good value, or off, stays in force.
func TestMetricsListenNotSIPs(t *testing.T) {
	for _, c := range []struct {
		sip, metrics string
		reject       bool
	}{
		{"0.0.0.0:5060", "0.0.0.0:5060", true},
		{"0.0.0.0:5060", "127.0.0.1:5060", true},
		{"127.0.0.1:5060", "0.0.0.0:5060", true},
		{"127.0.0.1:5060", "127.0.0.1:5060", true},
		{"[::]:5060", "127.0.0.1:5060", true}, // [::] is dual-stack
		{"[::]:5060", "[::1]:5060", true},
		{"0.0.0.0:5060", "[::]:5060", true},
		{"10.0.0.1:5060", "[::ffff:10.0.0.1]:5060", true},
		{"0.0.0.0:5060", "[::1]:5060", false}, // an IPv4 wildcard leaves IPv6 alone
		{"127.0.0.1:5060", "10.0.0.1:5060", false},
		{"0.0.0.0:5060", "0.0.0.0:9100", false},
		{"127.0.0.1:0", "127.0.0.1:0", false}, // each a free port
		{"0.0.0.0:5060", "", false},
	} {
		text := "config sip sip\n\toption listen '" + c.sip + "'\nconfig metrics metrics\n\toption listen '" + c.metrics + "'\n"
		got, errs := Load(parse(t, text), nil)
		var fe *FieldError
		rejected := len(errs) == 1 && errors.As(errs[0], &fe) && fe.Path == "phonebook.metrics.listen"
		if rejected != c.reject || (!c.reject && len(errs) > 0) {
			t.Errorf("sip %s, metrics %s: errors %v, want rejected %v", c.sip, c.metrics, errs, c.reject)
			continue
		}
		if c.reject {
			if !strings.Contains(errs[0].Error(), "phonebook.sip.listen "+c.sip) {
				t.Errorf("message does not name sip.listen: %v", errs[0])
			}
			if got.Metrics.Listen != "" {
				t.Errorf("sip %s, metrics %s: metrics.listen %q in force, want off", c.sip, c.metrics, got.Metrics.Listen)
			}
		} else if got.Metrics.Listen != c.metrics {
			t.Errorf("sip %s: metrics.listen %q, want %q", c.sip, got.Metrics.Listen, c.metrics)
		}
	}
	// On reload the previous good value stays in force.
	prev, _ := Load(parse(t, "config metrics metrics\n\toption listen '127.0.0.1:9100'\n"), nil)
	got, errs := Load(parse(t, "config metrics metrics\n\toption listen '0.0.0.0:5060'\n"), &prev)
	if len(errs) != 1 || got.Metrics.Listen != "127.0.0.1:9100" {
		t.Errorf("reload: errors %v, metrics.listen %q, want the previous 127.0.0.1:9100", errs, got.Metrics.Listen)
	}
}
