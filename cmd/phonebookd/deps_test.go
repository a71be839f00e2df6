package main

import (
	"os"
	"os/exec"
	"path/filepath"
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

// TestRouterBuildLinksNoCryptoNoJSONDecoder: the router build (tags
// nodbus, as the package is built) links no crypto/* and no math/big
// (the branch MAC is internal/siphash, its key from getrandom), and no
// encoding/json decoder (internal/jsonread reads). encoding/json itself
// stays linked: log/slog imports it and keeps its encoder in every
// program (slog's handlers call it for JSON output), so the daemon
// writes its JSON with it; the test checks the decoder's symbols are
// gone and the encoder's are there, so that it reads the right table.
func TestRouterBuildLinksNoCryptoNoJSONDecoder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	out, err := exec.Command("go", "list", "-deps", "-tags", "nodbus", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "crypto" || strings.HasPrefix(p, "crypto/") || p == "math/big" {
			t.Errorf("the router build links %s", p)
		}
	}
	bin := filepath.Join(t.TempDir(), "phonebookd")
	build := exec.Command("go", "build", "-trimpath", "-tags", "nodbus", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err = exec.Command("go", "tool", "nm", bin).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	has := func(prefix string) bool {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && strings.HasPrefix(f[2], prefix) {
				return true
			}
		}
		return false
	}
	for _, gone := range []string{"crypto/", "math/big.", "encoding/json.Unmarshal", "encoding/json.(*decodeState)", "encoding/json.(*Decoder)"} {
		if has(gone) {
			t.Errorf("the router binary has %s* symbols", gone)
		}
	}
	for _, there := range []string{"encoding/json.(*encodeState)", "github.com/aredn/phonebookd/internal/jsonread.", "github.com/aredn/phonebookd/internal/siphash.Sum64"} {
		if !has(there) {
			t.Errorf("the router binary has no %s* symbols: the check above reads the wrong table", there)
		}
	}
}
