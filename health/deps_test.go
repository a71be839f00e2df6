package health

import (
	"os/exec"
	"strings"
	"testing"
)

// wireFree are the packages of the health core: they keep documents and
// records as Go types and leave every wire format to the fronts.
var wireFree = []string{"github.com/aredn/phonebookd/health", "github.com/aredn/phonebookd/supervisor", "github.com/aredn/phonebookd/crash"}

// TestCoreFreeOfUbus: no package of the health core reaches the ubus
// packages, in any build (go list -deps of the real import graph, test
// files left out), so that blobmsg stays at the ubus front's edge.
func TestCoreFreeOfUbus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	for _, tags := range []string{"", "noubus", "nodbus", "faults"} {
		args := append([]string{"list", "-deps", "-tags", tags}, wireFree...)
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < len(wireFree) {
			t.Fatalf("go list named %d packages: %s", len(deps), out)
		}
		for _, p := range deps {
			if p == "github.com/aredn/phonebookd/ubus" || strings.HasPrefix(p, "github.com/aredn/phonebookd/ubus/") {
				t.Errorf("tags %q: the health core reaches %s", tags, p)
			}
		}
	}
}
