package health

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/HEALTH.md's condition table from the registry")

// TestHealthDocTable: docs/HEALTH.md's condition table is the registry's
// (go test ./health -run TestHealthDocTable -update rewrites it).
func TestHealthDocTable(t *testing.T) {
	path := filepath.Join("..", "docs", "HEALTH.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- conditions: generated from health/registry.go -->\n", "<!-- /conditions -->"
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no generated condition table between %q and %q", path, begin, end)
	}
	want := ConditionTable()
	if got := doc[i+len(begin) : j]; got != want {
		if *update {
			os.WriteFile(path, []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644)
			return
		}
		t.Errorf("docs/HEALTH.md's condition table differs from the registry; run go test ./health -run TestHealthDocTable -update\n--- doc\n%s--- registry\n%s", got, want)
	}
}

// TestRegisterTwicePanics: a condition code is registered once; a
// second registration (two owners picking the same name) stops the
// daemon at start rather than merge two meanings. That every code
// raised is registered is the compiler's to check: there are no codes,
// only handles.
func TestRegisterTwicePanics(t *testing.T) {
	for _, code := range []string{Overload.Code, "", "a:b"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", code)
				}
			}()
			Register(&Descriptor{Code: code, Level: LevelWarning, Text: sprintf("x")})
		}()
	}
	n := 0
	for _, d := range Descriptors() {
		if d.Code == Overload.Code {
			n++
		}
	}
	if n != 1 {
		t.Errorf("overload registered %d times", n)
	}
}

// TestEchoesHiddenBehindRootCause: with the mesh unreachable, the failed
// probes, fetch failures and silent phones it causes are not shown (nor
// scored); they show again when the root cause clears.
func TestEchoesHiddenBehindRootCause(t *testing.T) {
	clock := newFakeClock()
	h := newSystem(t, clock, testConfig())
	h.SetUnhealthy(ProbeFailed, "node-a", Args{ArgCount: "3", ArgTotal: "3", ArgError: "timeout"})
	h.SetUnhealthy(PhonesUnreachable, "", Args{ArgCount: "3", ArgTotal: "3"})
	h.mu.Lock()
	h.reach["monitor"] = reachState{lastFail: clock.Now(), failingSince: clock.Now().Add(-unreachableWindow), fails: 20}
	h.mu.Unlock()
	s := h.Sample()
	if alert(s, "network_unreachable") == nil || alert(s, "probe_failed:node-a") != nil || alert(s, "phones_unreachable") != nil || s.Score != 90 {
		t.Fatalf("root cause with echoes: score %d, alerts %+v", s.Score, s.Alerts)
	}
	h.mu.Lock()
	h.reach["monitor"] = reachState{lastOK: clock.Now()}
	h.mu.Unlock()
	if s := h.Sample(); alert(s, "probe_failed:node-a") == nil || alert(s, "network_unreachable") != nil {
		t.Errorf("after the mesh came back: %+v", s.Alerts)
	}
}

// TestFamilyCapped: 40 targets failing at once show 5 alerts and one
// "and 35 more", and cost 5 penalties, not 40.
func TestFamilyCapped(t *testing.T) {
	clock := newFakeClock()
	h := newSystem(t, clock, testConfig())
	for i := 0; i < 40; i++ {
		h.SetUnhealthy(ProbeFailed, fmt.Sprintf("node-%02d", i), Args{ArgError: "timeout"})
	}
	s := h.Sample()
	more := alert(s, "probe_failed:more")
	if len(s.Alerts) != DefaultMaxShown+1 || more == nil || !strings.Contains(more.Message, "and 35 more") || s.Score != 100-5*DefaultMaxShown {
		t.Errorf("%d alerts, score %d, more %+v", len(s.Alerts), s.Score, more)
	}
}

// TestStateDirUnwritableIsACondition: a state directory the daemon cannot
// write (here a path under a regular file, which fails even for root;
// a read-only overlay fails access(2) the same way) raises
// state_dir_unwritable (before: no alert at all).
func TestStateDirUnwritableIsACondition(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	clock := newFakeClock()
	h := NewSystem(Options{Clock: clock, Rates: NewRates(clock), StateDir: filepath.Join(dir, "file", "state"), RunDir: dir}, testConfig())
	if a := alert(h.Sample(), "state_dir_unwritable"); a == nil || !strings.Contains(a.Message, "not a directory") {
		t.Errorf("alert %+v", a)
	}
	h2 := NewSystem(Options{Clock: clock, Rates: NewRates(clock), StateDir: filepath.Join(dir, "new", "state"), RunDir: dir}, testConfig())
	if a := alert(h2.Sample(), "state_dir_unwritable"); a != nil {
		t.Errorf("a directory still to be created under a writable parent: %+v", a)
	}
}
