package uci

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aredn/phonebookd/internal/shared"
)

func vector(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(shared.Path(t, "uci-vectors", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// run executes the CLI on a store and returns stdout, stderr and the code.
func run(t *testing.T, st Store, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"-c", st.ConfDir, "-t", st.SaveDir}, args...)
	rc := RunCLI(full, &out, &errb)
	return out.String(), errb.String(), rc
}

func newStore(t *testing.T, files map[string][]byte) Store {
	t.Helper()
	st := Store{ConfDir: t.TempDir(), SaveDir: t.TempDir()}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(st.ConfDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func stripExit(s string) string {
	i := strings.LastIndex(s, "exit=")
	if i < 0 {
		return s
	}
	return s[:i]
}

func TestShowAndExportVectors(t *testing.T) {
	for _, base := range []string{"handwritten", "written-by-uci"} {
		t.Run(base, func(t *testing.T) {
			pkg := "phonebook"
			if base == "handwritten" {
				pkg = "handwritten"
			}
			st := newStore(t, map[string][]byte{pkg: vector(t, base+".conf")})
			out, errs, rc := run(t, st, "show", pkg)
			if rc != 0 || errs != "" {
				t.Fatalf("show: rc=%d stderr=%q", rc, errs)
			}
			if want := stripExit(string(vector(t, base+".show.txt"))); out != want {
				t.Errorf("show:\n got %q\nwant %q", out, want)
			}
			out, _, rc = run(t, st, "export", pkg)
			if want := string(vector(t, base+".export.txt")); rc != 0 || out != want {
				t.Errorf("export rc=%d:\n got %q\nwant %q", rc, out, want)
			}
		})
	}
}

func TestCommitBytesOfUCIWrittenFile(t *testing.T) {
	want := vector(t, "written-by-uci.conf")
	p, err := Parse("phonebook", want)
	if err != nil {
		t.Fatal(err)
	}
	if got := Export(p, false); !bytes.Equal(got, want) {
		t.Errorf("commit bytes:\n got %q\nwant %q", got, want)
	}
}

// TestInvalidVectors feeds every input of invalid.txt to `show` and
// compares libuci's message, line, byte and exit code.
func TestInvalidVectors(t *testing.T) {
	text := string(vector(t, "invalid.txt"))
	blocks := strings.Split(text, "--- input ")[1:]
	if len(blocks) != 9 {
		t.Fatalf("expected 9 cases, got %d", len(blocks))
	}
	for _, b := range blocks {
		name := b[:strings.Index(b, ":")]
		rest := b[strings.Index(b, "\n")+1:]
		marker := "--- uci show " + name + ":\n"
		i := strings.Index(rest, marker)
		input, expect := rest[:i], rest[i+len(marker):]
		t.Run(name, func(t *testing.T) {
			st := newStore(t, map[string][]byte{name: []byte(input)})
			out, errs, rc := run(t, st, "show", name)
			got := out + errs + "exit=" + itoa(rc) + "\n"
			if got != expect {
				t.Errorf("got %q\nwant %q", got, expect)
			}
		})
	}
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(n)) }

func fmtInt(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	if neg {
		b = append([]byte{'-'}, b...)
	}
	return string(b)
}

// TestUncommittedDelta applies the save-directory delta the real uci left.
func TestUncommittedDelta(t *testing.T) {
	text := string(vector(t, "uncommitted-delta.txt"))
	var delta, show []string
	inShow := false
	for _, line := range strings.SplitAfter(text, "\n") {
		switch {
		case strings.HasPrefix(line, "# uci show"):
			inShow = true
		case strings.HasPrefix(line, "#"):
		case inShow:
			show = append(show, line)
		default:
			delta = append(delta, line)
		}
	}
	st := newStore(t, map[string][]byte{"phonebook": vector(t, "written-by-uci.conf")})
	if err := os.WriteFile(filepath.Join(st.SaveDir, "phonebook"), []byte(strings.Join(delta, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, rc := run(t, st, "get", "phonebook.health.enabled")
	if rc != 0 || out != "0\n" {
		t.Errorf("get: rc=%d out=%q", rc, out)
	}
	out, _, _ = run(t, st, "show", "phonebook")
	if want := strings.Join(show, ""); out != want {
		t.Errorf("show with delta:\n got %q\nwant %q", out, want)
	}
}

// TestCommandsReproduceUCIFiles replays the uci commands that made
// written-by-uci.conf and after-edit.conf and compares changes and bytes.
func TestCommandsReproduceUCIFiles(t *testing.T) {
	st := newStore(t, map[string][]byte{"phonebook": nil})
	must := func(args ...string) string {
		t.Helper()
		out, errs, rc := run(t, st, args...)
		if rc != 0 {
			t.Fatalf("%v: rc=%d stderr=%q", args, rc, errs)
		}
		return out
	}
	must("set", "phonebook.health=software_health")
	for _, kv := range []string{"enabled=1", "crash_reporting=1", "thread_monitoring=1", "memory_leak_detection=1",
		"health_check_interval=60", "crash_history_days=7", "max_restart_attempts=3", "health_endpoint=1"} {
		must("set", "phonebook.health."+kv)
	}
	must("set", "phonebook.fetcher=fetcher")
	must("add_list", "phonebook.fetcher.server=10.0.0.1:80/phonebook.csv")
	must("add_list", "phonebook.fetcher.server=it's a server")
	ann := strings.TrimSpace(must("add", "phonebook", "contact"))
	must("set", "phonebook."+ann+".name=Ann O'Neil")
	must("set", "phonebook."+ann+`.note=line1 "quoted" \ backslash`)
	bob := strings.TrimSpace(must("add", "phonebook", "contact"))
	must("set", "phonebook."+bob+".name=Bob")

	want := string(vector(t, "written-by-uci.changes.txt"))
	want = want[strings.Index(want, "\n")+1:] // drop the comment line
	if got := must("changes", "phonebook"); got != want {
		t.Errorf("changes:\n got %q\nwant %q", got, want)
	}
	must("commit", "phonebook")
	got, _ := os.ReadFile(filepath.Join(st.ConfDir, "phonebook"))
	if want := vector(t, "written-by-uci.conf"); !bytes.Equal(got, want) {
		t.Errorf("commit:\n got %q\nwant %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(st.SaveDir, "phonebook")); !os.IsNotExist(err) {
		t.Errorf("delta file left after commit: %v", err)
	}
	if out := must("changes", "phonebook"); out != "" {
		t.Errorf("changes after commit: %q", out)
	}

	must("set", "phonebook.health.enabled=0")
	must("delete", "phonebook.health.health_endpoint")
	must("rename", "phonebook.fetcher=mesh_fetcher")
	must("commit", "phonebook")
	got, _ = os.ReadFile(filepath.Join(st.ConfDir, "phonebook"))
	if want := vector(t, "after-edit.conf"); !bytes.Equal(got, want) {
		t.Errorf("after edit:\n got %q\nwant %q", got, want)
	}
}

func TestCLIErrors(t *testing.T) {
	st := newStore(t, map[string][]byte{"phonebook": vector(t, "written-by-uci.conf")})
	cases := []struct {
		args []string
		out  string
		err  string
		rc   int
	}{
		{[]string{"get", "phonebook.nosuch.x"}, "", "uci: Entry not found\n", 1},
		{[]string{"get", "nosuchpkg.a.b"}, "", "uci: Entry not found\n", 1},
		{[]string{"delete", "phonebook.health.nosuch"}, "", "uci: Entry not found\n", 1},
		{[]string{"get", "phonebook.fetcher.server"}, "10.0.0.1:80/phonebook.csv 'it'\\''s a server'\n", "", 0},
		{[]string{"get", "phonebook.@contact[1].name"}, "Bob\n", "", 0},
		{[]string{"get", "phonebook.@contact[-1].name"}, "Bob\n", "", 0},
		{[]string{"get", "phonebook.health"}, "software_health\n", "", 0},
		{[]string{"show", "phonebook.@contact[0]"}, "phonebook.cfg038711=contact\nphonebook.cfg038711.name='Ann O'\\''Neil'\nphonebook.cfg038711.note='line1 \"quoted\" \\ backslash'\n", "", 0},
		{[]string{"add", "nosuchpkg", "x"}, "", "uci: Entry not found\n", 3},
		{[]string{"bogus"}, "", usage, 255},
	}
	for _, c := range cases {
		out, errs, rc := run(t, st, c.args...)
		if out != c.out || errs != c.err || rc != c.rc {
			t.Errorf("%v: got (%q, %q, %d) want (%q, %q, %d)", c.args, out, errs, rc, c.out, c.err, c.rc)
		}
	}
}

func TestRevert(t *testing.T) {
	st := newStore(t, map[string][]byte{"phonebook": vector(t, "written-by-uci.conf")})
	run(t, st, "set", "phonebook.health.enabled=0")
	run(t, st, "set", "phonebook.fetcher.x=1")
	run(t, st, "revert", "phonebook.health")
	out, _, _ := run(t, st, "changes", "phonebook")
	if out != "phonebook.fetcher.x='1'\n" {
		t.Errorf("after section revert: %q", out)
	}
	run(t, st, "revert", "phonebook")
	if out, _, _ := run(t, st, "changes", "phonebook"); out != "" {
		t.Errorf("after package revert: %q", out)
	}
}

// FuzzParse: no panic, and parse(write(parse(x))) == parse(x) for every
// accepted input.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"handwritten.conf", "written-by-uci.conf", "after-edit.conf"} {
		f.Add(vector(&testing.T{}, name))
	}
	if b, err := os.ReadFile(filepath.Join("..", "..", "shared", "uci-vectors", "invalid.txt")); err == nil {
		for _, blk := range strings.Split(string(b), "--- input ")[1:] {
			f.Add([]byte(blk))
		}
	}
	f.Add([]byte("config a b; option c 'd'\\\ne\n"))
	// Values uci set accepts with newlines, tabs and carriage returns.
	for _, c := range multiLineValues {
		f.Add([]byte("config t 's'\n\toption m " + c.quoted + "\n\tlist l " + c.quoted + "\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		out := Export(p, false)
		q, err := Parse("fuzz", out)
		if err != nil {
			t.Fatalf("re-parse of written output failed: %v\n%q", err, out)
		}
		if again := Export(q, false); !bytes.Equal(out, again) {
			t.Fatalf("round trip differs:\n%q\n%q", out, again)
		}
		for i, s := range p.Sections {
			if q.Sections[i].Name != s.Name && !s.Anonymous {
				t.Fatalf("section %d renamed", i)
			}
		}
	})
}
