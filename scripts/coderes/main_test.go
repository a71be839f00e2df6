package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// resident is the resident KB residency reports for section name.
func resident(t *testing.T, line, name string) (kb string) {
	t.Helper()
	for f := range strings.SplitSeq(line, ";") {
		w := strings.Fields(f)
		if len(w) == 4 && w[0] == name {
			return w[2]
		}
	}
	t.Fatalf("no %s in %q", name, line)
	return ""
}

// TestResidencySelf: the running test's own code is resident.
func TestResidencySelf(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	line, err := residency(os.Getpid(), exe)
	if err != nil {
		t.Fatal(err)
	}
	if kb := resident(t, line, ".text"); kb == "0" {
		t.Errorf("the running program's .text: 0 KB resident (%s)", line)
	}
}

// sleeper builds a program that says it is up, then sleeps, with the
// given go build flags, and starts it; it is killed at the test's end.
func sleeper(t *testing.T, flags ...string) (pid int, exe string) {
	t.Helper()
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"os\"\n\t\"time\"\n)\n\nfunc main() {\n\tos.Stdout.WriteString(\"up\\n\")\n\ttime.Sleep(time.Hour)\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module sleeper\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(dir, "sleeper")
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build a program with: %v", err)
	}
	build := exec.Command(gocmd, append(append([]string{"build"}, flags...), "-o", exe, ".")...)
	build.Dir, build.Env = dir, append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build %v: %v\n%s", flags, err, out)
	}
	cmd := exec.Command(exe)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// up: the runtime has started, its code ran
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "up\n" {
		t.Fatalf("the sleeper said %q (%v)", line, err)
	}
	return cmd.Process.Pid, exe
}

// TestResidencyRunning: the running program's resident code is found
// where its executable is mapped: the static, non-PIE build (the
// router's), and a position-independent one, mapped away from its link
// addresses, not reported as nothing resident.
func TestResidencyRunning(t *testing.T) {
	for _, flag := range []string{"-ldflags=-s -w", "-buildmode=pie"} {
		pid, exe := sleeper(t, flag)
		line, err := residency(pid, exe)
		if err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		if kb := resident(t, line, ".text"); kb == "0" {
			t.Errorf("%s: a running program's .text: 0 KB resident (%s)", flag, line)
		}
	}
}

// TestResidencyNotItsExecutable: an executable the process does not map
// is an error, not a line of zeros.
func TestResidencyNotItsExecutable(t *testing.T) {
	_, exe := sleeper(t)
	if line, err := residency(os.Getpid(), exe); err == nil {
		t.Errorf("this test's process with another program's executable: %q, no error", line)
	}
}

// TestResidencyExited: a process that is gone is an error.
func TestResidencyExited(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	exe, _ := os.Executable()
	if line, err := residency(cmd.Process.Pid, exe); err == nil {
		t.Errorf("an exited process: %q, no error", line)
	}
}
