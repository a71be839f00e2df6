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
