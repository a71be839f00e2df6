package shared

import (
	"bufio"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Event is one step of a ubusd capture: a message (Dir "C>D" or "D>C") or
// the client closing its side (Dir "close").
type Event struct {
	Conn  int
	Dir   string
	Bytes []byte
	FDs   int
}

// Capture returns the events of ubus-vectors/<name> in order: messages from
// the .hex file, close events placed where the annotated .txt has them.
func Capture(t testing.TB, name string) []Event {
	t.Helper()
	dir := filepath.Join(Dir(t), "ubus-vectors")
	hexf, err := os.Open(filepath.Join(dir, name+".hex"))
	if err != nil {
		t.Fatal(err)
	}
	defer hexf.Close()
	var msgs []Event
	sc := bufio.NewScanner(hexf)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		conn, err := strconv.Atoi(f[0])
		if err != nil {
			t.Fatalf("%s: bad line %q", name, sc.Text())
		}
		b, err := hex.DecodeString(f[2])
		if err != nil {
			t.Fatalf("%s: bad hex: %v", name, err)
		}
		ev := Event{Conn: conn, Dir: f[1], Bytes: b}
		if len(f) > 3 && strings.HasPrefix(f[3], "fds=") {
			ev.FDs, _ = strconv.Atoi(strings.TrimPrefix(f[3], "fds="))
		}
		msgs = append(msgs, ev)
	}
	txt, err := os.ReadFile(filepath.Join(dir, name+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	msgRe := regexp.MustCompile(`^#(\d+) (C>D|D>C) t=`)
	closeRe := regexp.MustCompile(`^# conn (\d+) C>D closed`)
	var out []Event
	i := 0
	for _, line := range strings.Split(string(txt), "\n") {
		if m := msgRe.FindStringSubmatch(line); m != nil {
			if i >= len(msgs) {
				t.Fatalf("%s: .txt has more messages than .hex", name)
			}
			out = append(out, msgs[i])
			i++
		} else if m := closeRe.FindStringSubmatch(line); m != nil {
			c, _ := strconv.Atoi(m[1])
			out = append(out, Event{Conn: c, Dir: "close"})
		}
	}
	if i != len(msgs) {
		t.Fatalf("%s: .txt names %d messages, .hex holds %d", name, i, len(msgs))
	}
	return out
}

// CaptureNames lists the captures (file names without extension).
func CaptureNames(t testing.TB) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(Dir(t), "ubus-vectors", "*.hex"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no ubus vectors found: %v", err)
	}
	var names []string
	for _, p := range m {
		names = append(names, strings.TrimSuffix(filepath.Base(p), ".hex"))
	}
	return names
}
