package uci

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// multiLineValues are values libuci accepts on the command line
// (uci_validate_text: every byte but the control characters other than
// tab, newline and carriage return) with what the real uci writes and
// prints for them: a value goes between single quotes as it is, a quote
// closes, escapes and reopens them, a newline stays a newline; `uci show`
// and `uci changes` quote the same way (uci_print_value), `uci get`
// prints the bare value.
var multiLineValues = []struct {
	name, value string
	quoted      string // as written in the file, the delta and show
}{
	{"newline", "line1\nline2", "'line1\nline2'"},
	{"tab", "a\tb", "'a\tb'"},
	{"carriage return", "a\rb", "'a\rb'"},
	{"CRLF", "line1\r\nline2", "'line1\r\nline2'"},
	{"trailing newline", "x\n", "'x\n'"},
	{"leading newline", "\nx", "'\nx'"},
	{"only newlines", "\n\n", "'\n\n'"},
	{"quote and newline", "it's\nhere", "'it'\\''s\nhere'"},
	{"backslash at a line's end", "a\\\nb", "'a\\\nb'"},
	{"hash and semicolon over lines", "# x;\n; y", "'# x;\n; y'"},
}

// TestMultiLineValuesAsUCI: `uci set` of a value with newlines, tabs or
// carriage returns is accepted; the delta file, `uci changes`, `uci show`
// and `uci get` before the commit, the committed file, and `uci show`,
// `uci export` and `uci get` after it hold the value byte for byte as
// libuci writes and prints it. Before: "uci: Parse error".
func TestMultiLineValuesAsUCI(t *testing.T) {
	for _, c := range multiLineValues {
		t.Run(c.name, func(t *testing.T) {
			st := newStore(t, map[string][]byte{"p": nil})
			must := func(args ...string) string {
				t.Helper()
				out, errs, rc := run(t, st, args...)
				if rc != 0 || errs != "" {
					t.Fatalf("%q: rc=%d stderr=%q", args, rc, errs)
				}
				return out
			}
			must("set", "p.s=t")
			must("set", "p.s.m="+c.value)
			must("add_list", "p.s.l="+c.value)
			must("add_list", "p.s.l=plain")

			delta, err := os.ReadFile(filepath.Join(st.SaveDir, "p"))
			if err != nil {
				t.Fatal(err)
			}
			if want := "p.s='t'\np.s.m=" + c.quoted + "\n|p.s.l=" + c.quoted + "\n|p.s.l='plain'\n"; string(delta) != want {
				t.Errorf("delta file:\n got %q\nwant %q", delta, want)
			}
			if got, want := must("changes", "p"), "p.s='t'\np.s.m="+c.quoted+"\np.s.l+="+c.quoted+"\np.s.l+='plain'\n"; got != want {
				t.Errorf("changes:\n got %q\nwant %q", got, want)
			}
			show := "p.s=t\np.s.m=" + c.quoted + "\np.s.l=" + c.quoted + " 'plain'\n"
			if got := must("show", "p"); got != show {
				t.Errorf("show before commit:\n got %q\nwant %q", got, show)
			}
			if got := must("get", "p.s.m"); got != c.value+"\n" {
				t.Errorf("get before commit: %q", got)
			}
			// A list item with white space is quoted by get (strpbrk " \t\r\n").
			if got, want := must("get", "p.s.l"), c.quoted+" plain\n"; got != want {
				t.Errorf("get list:\n got %q\nwant %q", got, want)
			}

			must("commit", "p")
			file, _ := os.ReadFile(filepath.Join(st.ConfDir, "p"))
			if want := "\nconfig t 's'\n\toption m " + c.quoted + "\n\tlist l " + c.quoted + "\n\tlist l 'plain'\n\n"; string(file) != want {
				t.Errorf("committed file:\n got %q\nwant %q", file, want)
			}
			if got := must("show", "p"); got != show {
				t.Errorf("show after commit:\n got %q\nwant %q", got, show)
			}
			if got, want := must("export", "p"), "package p\n"+string(file); got != want {
				t.Errorf("export:\n got %q\nwant %q", got, want)
			}
			if got := must("get", "p.s.m"); got != c.value+"\n" {
				t.Errorf("get after commit: %q", got)
			}
		})
	}
}

// TestMultiLineDeltaThenLines: a multi-line value in the delta file does
// not swallow or break the changes saved after it, and a line that does
// not parse is skipped without losing the others, as uci_parse_delta
// reads the file.
func TestMultiLineDeltaThenLines(t *testing.T) {
	data := []byte("p.s='t'\np.s.a='one\ntwo'\nnot a delta\np.s.b\np.s.c='three'\n")
	ds := ParseDeltas("p", data)
	var got []string
	for _, d := range ds {
		got = append(got, d.Section+"."+d.Option+"="+d.Value)
	}
	want := []string{"s.=t", "s.a=one\ntwo", "s.c=three"}
	if len(got) != len(want) {
		t.Fatalf("deltas %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("delta %d: %q, want %q", i, got[i], want[i])
		}
	}
}

// FuzzValue: every value uci set accepts goes through the delta file and
// through a written file unchanged, byte for byte.
func FuzzValue(f *testing.F) {
	for _, c := range multiLineValues {
		f.Add(c.value)
	}
	f.Add("plain")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		if !validText(v) || bytes.IndexByte([]byte(v), 0) >= 0 {
			return
		}
		d := Delta{Cmd: CmdChange, Section: "s", Option: "m", Value: v, HasValue: true}
		ds := ParseDeltas("p", []byte(Delta{Cmd: CmdAdd, Section: "s", Value: "t", HasValue: true}.Line("p")+d.Line("p")+"p.s.z='end'\n"))
		if len(ds) != 3 || ds[1].Value != v || ds[2].Value != "end" {
			t.Fatalf("delta round trip of %q: %+v", v, ds)
		}
		pkg := &Package{Name: "p"}
		pkg.SetSection("s", "t").Set("m", v)
		pkg.Section("s").AddList("l", v)
		q, err := Parse("p", Export(pkg, false))
		if err != nil {
			t.Fatalf("%q: written file does not parse: %v", v, err)
		}
		if got, _ := q.Section("s").Get("m"); got != v {
			t.Fatalf("file round trip: %q, want %q", got, v)
		}
		if o := q.Section("s").Option("l"); o == nil || len(o.Values) != 1 || o.Values[0] != v {
			t.Fatalf("list round trip of %q: %+v", v, o)
		}
	})
}
