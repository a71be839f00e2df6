package main

import (
	"os/exec"
	"strings"
	"testing"
)

// linksUbus lists the ubus packages a build of this command links.
func linksUbus(t *testing.T, tags string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-tags", tags, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps -tags %q: %v\n%s", tags, err, out)
	}
	var found []string
	for _, p := range strings.Fields(string(out)) {
		if p == "github.com/aredn/phonebookd/ubus" || strings.HasPrefix(p, "github.com/aredn/phonebookd/ubus/") {
			found = append(found, p)
		}
	}
	return found
}

// TestNoubusLinksNoUbus: the Debian build (tagged noubus) links no ubus
// package, the codec included; the router build does link it, so that
// the check itself can fail.
func TestNoubusLinksNoUbus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	for _, tags := range []string{"noubus", "noubus nodbus"} {
		if got := linksUbus(t, tags); len(got) > 0 {
			t.Errorf("tags %q link %v", tags, got)
		}
	}
	if got := linksUbus(t, "nodbus"); len(got) == 0 {
		t.Error("the router build (nodbus) links no ubus package: the check above proves nothing")
	}
}
