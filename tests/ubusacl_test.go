package tests

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/ubus"
)

// aclMatch is ubusd's pattern rule: a trailing '*' matches a prefix.
func aclMatch(pattern, name string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, p)
	}
	return pattern == name
}

// TestUbusdACLNamesWhatTheDaemonUses: the ubusd ACL file is ubusd's
// format (user, publish, send, access with methods) and grants exactly
// what the daemon is seen doing on the bus: the objects it publishes,
// the events it sends, the methods it calls; every entry used, nothing
// it does left out.
func TestUbusdACLNamesWhatTheDaemonUses(t *testing.T) {
	b, err := os.ReadFile("../files/usr/share/acl.d/phonebook.json")
	if err != nil {
		t.Fatal(err)
	}
	var acl struct {
		User    string                         `json:"user"`
		Publish []string                       `json:"publish"`
		Send    []string                       `json:"send"`
		Access  map[string]map[string][]string `json:"access"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields() // listen, subscribe: the daemon does neither
	if err := dec.Decode(&acl); err != nil {
		t.Fatalf("acl.d/phonebook.json: %v", err)
	}
	if acl.User != "phonebook" {
		t.Errorf("user %q", acl.User)
	}

	e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// procd's side, and a listener for every event.
	watchdogCalls := fakeProcd(t, e.sock)
	var mu sync.Mutex
	events := map[string]bool{}
	conn, err := ubus.Dial(ctx, e.sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Listen(ctx, "*", func(ev string, _ []ubus.Value) { mu.Lock(); events[ev] = true; mu.Unlock() })

	e.tr.start(t, bins.daemon) // the router's build: no fault objects
	waitFor(t, 15*time.Second, "the watchdog call", func() bool { return watchdogCalls.Load() > 0 })
	// A status change sends the daemon's event.
	exec.Command(bins.daemon, "uci", "-c", e.tr.confDir, "-t", e.tr.saveDir, "set", "phonebook.health.goroutine_warn=x").Run()
	exec.Command(bins.daemon, "uci", "-c", e.tr.confDir, "-t", e.tr.saveDir, "commit", "phonebook").Run()
	call(t, e.sock, "phonebook", "reload", "")
	// ubusd's own events (ubus.object.add) came already: wait for the
	// daemon's, which its ubus front sends after the next evaluation.
	waitFor(t, 10*time.Second, "the daemon's event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for ev := range events {
			if !strings.HasPrefix(ev, "ubus.") {
				return true
			}
		}
		return false
	})

	objs, err := conn.Lookup(ctx, "*")
	if err != nil {
		t.Fatal(err)
	}
	var published []string
	for _, o := range objs {
		if o.Path != "service" {
			published = append(published, o.Path)
		}
	}
	sort.Strings(published)
	mu.Lock()
	var sent []string
	for ev := range events {
		if !strings.HasPrefix(ev, "ubus.") { // ubusd's own (ubus.object.add)
			sent = append(sent, ev)
		}
	}
	mu.Unlock()
	t.Logf("published %v, sent %v, called service.watchdog", published, sent)
	covers := func(what string, patterns, names []string) {
		for _, n := range names {
			ok := false
			for _, p := range patterns {
				ok = ok || aclMatch(p, n)
			}
			if !ok {
				t.Errorf("%s %q is not granted by the ACL", what, n)
			}
		}
		for _, p := range patterns {
			used := false
			for _, n := range names {
				used = used || aclMatch(p, n)
			}
			if !used {
				t.Errorf("ACL %s entry %q is not used by the daemon", what, p)
			}
		}
	}
	covers("publish", acl.Publish, published)
	covers("send", acl.Send, sent)
	if len(acl.Access) != 1 || len(acl.Access["service"]["methods"]) != 1 || acl.Access["service"]["methods"][0] != "watchdog" {
		t.Errorf("access %v, want exactly service: watchdog", acl.Access)
	}
	st, _ := os.Stat("../files/usr/share/acl.d/phonebook.json")
	if st.Mode().Perm()&0o033 != 0 { // ubusd ignores group/other-writable or other-executable files
		t.Errorf("mode %o: ubusd would ignore it", st.Mode().Perm())
	}
}
