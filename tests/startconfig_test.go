package tests

import (
	"strings"
	"testing"
	"time"
)

// TestGarbageListenAtStart: with sip.listen=garbage at start the daemon
// serves SIP on the default (0.0.0.0:5060) and shows the rejected
// setting in config_errors. It runs in a network namespace of its own,
// where 5060 is free whatever holds it on the test machine. Before: the
// rejected value stayed in force, main was blocked on it and the log
// said "default kept".
func TestGarbageListenAtStart(t *testing.T) {
	wrapper := privateNet(t)
	sock := shortDir(t) + "/ubus.sock"
	startBroker(t, sock)
	tr := newTree(t, sock, map[string]string{"sip.listen": "garbage"})
	p := tr.startWith(t, wrapper, bins.daemon)

	waitFor(t, 10*time.Second, "main serving", func() bool {
		return get(call(t, sock, "phonebook.threads", "list", ""), "threads", "main", "status") == "healthy"
	})
	st := call(t, sock, "phonebook", "status", "")
	if l := get(st, "sip", "listen"); l != "0.0.0.0:5060" {
		t.Errorf("SIP bound to %v, want the default 0.0.0.0:5060", l)
	}
	errs, _ := st["config_errors"].([]any)
	if len(errs) != 1 || !strings.Contains(errs[0].(string), "phonebook.sip.listen") || !strings.Contains(errs[0].(string), `"garbage"`) {
		t.Errorf("config_errors: %v", st["config_errors"])
	}
	if ans := optionsIn(t, p.cmd.Process.Pid, "127.0.0.1:5060"); ans != "SIP/2.0 200 OK" {
		t.Errorf("OPTIONS to the default address: %q", ans)
	}
}
