package config

import "testing"

// TestDBusMaxCalls: main.dbus_max_calls defaults to 4 and takes 1 to 64;
// 0 (no bound) or a value a router cannot afford is refused with the
// default kept.
func TestDBusMaxCalls(t *testing.T) {
	if d := Defaults().Main.DBusMaxCalls; d != 4 {
		t.Errorf("default %d, want 4", d)
	}
	for v, want := range map[string]int{"1": 1, "16": 16, "64": 64, "0": 4, "65": 4, "-1": 4, "many": 4} {
		c, errs := Load(parse(t, "config phonebook main\n\toption dbus_max_calls '"+v+"'\n"), nil)
		if c.Main.DBusMaxCalls != want {
			t.Errorf("%q: %d, want %d", v, c.Main.DBusMaxCalls, want)
		}
		if refused := want == 4 && v != "4"; refused != (len(errs) == 1) {
			t.Errorf("%q: errors %v", v, errs)
		}
	}
}
