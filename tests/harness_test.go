// Package tests holds whole-daemon tests: they build phonebookd (with and
// without the "faults" tag) and the development broker, run them as
// processes over real unix sockets, and drive them as an operator would.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aredn/phonebookd/internal/poll"
	"github.com/aredn/phonebookd/page"
	"github.com/aredn/phonebookd/uci"
)

var bins struct{ daemon, faults, broker, router string }

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// make test-unit: the whole-daemon tests build four binaries and
		// run for minutes; make test-system runs them.
		fmt.Println("tests: whole-daemon tests skipped under -short (make test-system runs them)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "phonebookd-bin")
	if err != nil {
		panic(err)
	}
	build := func(out string, args ...string) {
		cmd := exec.Command("go", append([]string{"build", "-o", out}, args...)...)
		cmd.Dir = ".."
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", out, err, b)
			os.Exit(2)
		}
	}
	bins.daemon = filepath.Join(dir, "phonebookd")
	bins.faults = filepath.Join(dir, "phonebookd-faults")
	bins.broker = filepath.Join(dir, "ubus-broker")
	bins.router = filepath.Join(dir, "phonebookd-router")
	build(bins.daemon, "./cmd/phonebookd")
	// The router build, as packaged: its RSS is what a router sees.
	os.Setenv("CGO_ENABLED", "0")
	build(bins.router, "-trimpath", "-ldflags", "-s -w", "./cmd/phonebookd")
	os.Unsetenv("CGO_ENABLED")
	build(bins.faults, "-tags", "faults", "./cmd/phonebookd")
	build(bins.broker, "./cmd/ubus-broker")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// shortDir is a temporary directory with a short path (unix sockets are
// limited to 108 bytes).
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "pb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *syncBuf
	done chan struct{}
	code int
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(bin, args...), out: &syncBuf{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.code = -int(ws.Signal())
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(bin), p.out.String())
		}
	})
	return p
}

// wait returns the exit code (negative: killed by that signal).
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("process did not exit within %s", timeout)
		return 0
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func startBroker(t *testing.T, sock string) *proc {
	t.Helper()
	p := start(t, bins.broker, "-s", sock)
	waitFor(t, 10*time.Second, "broker socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

// waitFor waits up to timeout for cond (a daemon's state, a process).
var waitFor = poll.Within

// tree is a daemon's whole file system: configuration, save directory,
// flash state, RAM run directory and web root, all under one directory.
type tree struct {
	dir, sock                               string
	confDir, saveDir, stateDir, runDir, www string
}

// newTree writes /etc/config/phonebook from the shipped file with the
// paths moved into dir and the given options ("section.option": value).
func newTree(t *testing.T, sock string, opts map[string]string) *tree {
	t.Helper()
	dir := shortDir(t)
	tr := &tree{dir: dir, sock: sock, confDir: filepath.Join(dir, "etc/config"), saveDir: filepath.Join(dir, "tmp/.uci"),
		stateDir: filepath.Join(dir, "etc/phonebook"), runDir: filepath.Join(dir, "tmp/phonebook"), www: filepath.Join(dir, "www")}
	os.MkdirAll(tr.confDir, 0o755)
	shipped, err := os.ReadFile("../files/etc/config/phonebook")
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := uci.Parse("phonebook", shipped)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]string{"main.dbus": "0", "main.state_dir": tr.stateDir, "main.run_dir": tr.runDir, "main.www_dir": tr.www, "sip.listen": "127.0.0.1:0"}
	for k, v := range opts {
		all[k] = v
	}
	for k, v := range all {
		sec, opt, _ := strings.Cut(k, ".")
		s := pkg.Section(sec)
		if s == nil {
			t.Fatalf("no section %s", sec)
		}
		s.Set(opt, v)
	}
	if err := os.WriteFile(filepath.Join(tr.confDir, "phonebook"), uci.Export(pkg, false), 0o644); err != nil {
		t.Fatal(err)
	}
	return tr
}

func (tr *tree) start(t *testing.T, bin string) *proc {
	t.Helper()
	return tr.startWith(t, nil, bin)
}

// startWith runs the daemon under a wrapper command (prlimit, setpriv).
func (tr *tree) startWith(t *testing.T, wrapper []string, bin string) *proc {
	t.Helper()
	args := append(append([]string{}, wrapper...), bin, "-c", tr.confDir, "-t", tr.saveDir, "-s", tr.sock)
	p := start(t, args[0], args[1:]...)
	waitFor(t, 10*time.Second, "phonebook.health on ubus", func() bool {
		if p.exited() {
			t.Fatalf("daemon exited with %d", p.code)
		}
		_, rc := callRaw(tr.sock, "phonebook.health", "check", "")
		return rc == 0
	})
	return p
}

// callRaw runs `phonebookd call` and returns stdout and the exit code.
func callRaw(sock, obj, method, arg string) (string, int) {
	return callTimeout(sock, 5, obj, method, arg)
}

// callTimeout is callRaw with ubus's timeout in seconds.
func callTimeout(sock string, timeout int, obj, method, arg string) (string, int) {
	args := []string{"call", "-s", sock, "-t", strconv.Itoa(timeout), obj, method}
	if arg != "" {
		args = append(args, arg)
	}
	cmd := exec.Command(bins.daemon, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Run()
	return out.String(), cmd.ProcessState.ExitCode()
}

// call runs `phonebookd call` and decodes its JSON reply.
func call(t *testing.T, sock, obj, method, arg string) map[string]any {
	t.Helper()
	out, rc := callRaw(sock, obj, method, arg)
	if rc != 0 {
		t.Fatalf("call %s %s %s: exit %d", obj, method, arg, rc)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("call %s %s: %v\n%s", obj, method, err, out)
	}
	return m
}

// get walks a decoded document: get(m, "threads", "fetcher", "status").
var get = page.At

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

var _ = context.Background

func decode(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func syscallHUP() os.Signal { return syscall.SIGHUP }

func syscallUSR1() os.Signal { return syscall.SIGUSR1 }
