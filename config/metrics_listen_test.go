package config

import (
	"errors"
	"strings"
	"testing"
)

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
