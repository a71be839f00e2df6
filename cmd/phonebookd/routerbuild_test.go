package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestRouterBuildFlagsAgree: the router build's tags and gcflags are
// written in scripts/router-build.sh (which Makefile, the scripts and the
// whole-daemon tests use) and again, in OpenWrt's terms, in
// Makefile.openwrt; a package built by the OpenWrt SDK must be the binary
// the tests measured.
func TestRouterBuildFlagsAgree(t *testing.T) {
	script, err := os.ReadFile("../../scripts/router-build.sh")
	if err != nil {
		t.Fatal(err)
	}
	sdk, err := os.ReadFile("../../Makefile.openwrt")
	if err != nil {
		t.Fatal(err)
	}
	one := func(re, in, what string) string {
		m := regexp.MustCompile(re).FindSubmatch([]byte(in))
		if m == nil {
			t.Fatalf("%s: no match for %s", what, re)
		}
		return string(m[1])
	}
	s := string(script)
	tags := one(`tags=\$\{2-([^}]*)\}`, s, "router-build.sh tags")
	gc := one(`-gcflags '([^']*)'`, s, "router-build.sh gcflags")
	ld := one(`(?m)^ldflags='([^']*)'$`, s, "router-build.sh ldflags")
	// the flags above are those of the one build line (SYMBOLS=1 only
	// empties its ldflags): a second line would be one this test does
	// not read
	if n := strings.Count(s, "exec go build"); n != 1 {
		t.Errorf("scripts/router-build.sh has %d go build lines, want 1", n)
	}
	o := string(sdk)
	for _, c := range []struct{ name, script, sdk string }{
		{"tags", tags, one(`(?m)^GO_PKG_TAGS:=(.*)$`, o, "Makefile.openwrt GO_PKG_TAGS")},
		{"gcflags", gc, one(`(?m)^GO_PKG_GCFLAGS:=(.*)$`, o, "Makefile.openwrt GO_PKG_GCFLAGS")},
		{"ldflags", ld, one(`(?m)^GO_PKG_LDFLAGS:=(.*)$`, o, "Makefile.openwrt GO_PKG_LDFLAGS")},
	} {
		if c.script != c.sdk {
			t.Errorf("%s: scripts/router-build.sh %q, Makefile.openwrt %q", c.name, c.script, c.sdk)
		}
	}
}
