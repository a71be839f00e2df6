package main

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/uci"
)

// The floor runs with the defaults when no -c is given: they must be the
// settings the package ships, on every field runtimetune reads.
func TestShippedHealthIsDefaults(t *testing.T) {
	dir := filepath.Join("..", "..", "files", "etc", "config")
	c, errs := config.LoadStore(uci.Store{ConfDir: dir}, nil)
	if len(errs) > 0 {
		t.Fatalf("load the shipped settings: %v", errs)
	}
	shipped, def := c.Health, config.Defaults().Health
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"memory_limit_mb", shipped.MemoryLimitMB, def.MemoryLimitMB},
		{"memory_limit_share", shipped.MemoryLimitShare, def.MemoryLimitShare},
		{"memory_limit_min_mb", shipped.MemoryLimitMinMB, def.MemoryLimitMinMB},
		{"memory_limit_max_mb", shipped.MemoryLimitMaxMB, def.MemoryLimitMaxMB},
		{"gc_percent", shipped.GCPercent, def.GCPercent},
		{"scavenge_interval", shipped.ScavengeInterval, def.ScavengeInterval},
		{"code_pageout", shipped.CodePageOut, def.CodePageOut},
	} {
		if f.got != f.want {
			t.Errorf("phonebook.health.%s: shipped %v, config.Defaults %v", f.name, f.got, f.want)
		}
	}
	got, from, err := healthSettings(dir, "")
	if err != nil || got != shipped || from != dir {
		t.Errorf("healthSettings(%q): %+v from %q, %v; want the shipped settings", dir, got, from, err)
	}
	if got, from, _ := healthSettings("", ""); got != def || from != "defaults" {
		t.Errorf("healthSettings without -c: %+v from %q; want the defaults", got, from)
	}
	if _, _, err := healthSettings(t.TempDir(), ""); err != nil {
		t.Errorf("a directory without the package: %v; want the defaults, as the daemon", err)
	}
}

// Every figure of the log line exists in this Go's runtime/metrics (a
// renamed one would silently drop out of the line), and the memory
// classes read at once add up to the total.
func TestMemLine(t *testing.T) {
	have := make(map[string]bool)
	for _, d := range metrics.All() {
		have[d.Name] = true
	}
	for _, m := range memMetrics {
		if !have[m.name] {
			t.Errorf("%s (%s): not in runtime/metrics of this Go", m.key, m.name)
		}
	}
	attrs := newMemReader().read()
	if len(attrs) != len(memMetrics) {
		t.Fatalf("%d figures read, want %d: %v", len(attrs), len(memMetrics), attrs)
	}
	var sum, total uint64
	for _, a := range attrs {
		switch {
		case a.Key == "total_kb":
			total = a.Value.Uint64()
		case strings.HasSuffix(a.Key, "_kb"):
			sum += a.Value.Uint64()
		}
	}
	// each class is rounded down to a KB: the sum is short by less than
	// one KB per class
	if total == 0 || sum > total || total-sum >= uint64(len(memMetrics)) {
		t.Errorf("memory classes sum to %d KB, total %d KB", sum, total)
	}
}

// The program built as a command: it listens, logs the runtime line at
// each tick (threads included) and stops with status 0 on SIGTERM.
func TestRunStopsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "floorprog")
	if b, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	cmd := exec.Command(bin, "-every", "50ms", "-c", t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stderr)
	var started, line bool
	for sc.Scan() && !line {
		l := sc.Text()
		started = started || strings.Contains(l, "msg=\"floorprog started\"") && strings.Contains(l, "udp=127.0.0.1:")
		line = started && strings.Contains(l, "msg=runtime ") && strings.Contains(l, " threads=") && strings.Contains(l, " heap_released_kb=")
	}
	if !started || !line {
		t.Fatalf("no start line and runtime line in the log (started %v)", started)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30 s after SIGTERM")
	}
}
