package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nobody is the unprivileged user the test drops to (as procd drops to
// phonebook).
const nobody = 65534

// setprivArgs runs a command as nobody with CAP_NET_BIND_SERVICE only,
// as procd's user, group and capabilities parameters do.
var setprivArgs = []string{"setpriv", "--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--clear-groups",
	"--inh-caps", "-all,+net_bind_service", "--ambient-caps", "-all,+net_bind_service", "--bounding-set", "-all,+net_bind_service"}

// forNobody returns a copy of a binary that the unprivileged user can
// run, after checking that the test can drop privileges at all.
func forNobody(t *testing.T, bin string) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("this test drops privileges: run it as root (CI does)")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv missing (Debian package util-linux)")
	}
	dir := shortDir(t)
	os.Chmod(dir, 0o755)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(bin))
	if err := os.WriteFile(out, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// privPort is below 1024: binding it needs CAP_NET_BIND_SERVICE, which is
// what the test proves the daemon keeps. It is bound in a network
// namespace of the daemon's own, so nothing on the machine can hold it.
const privPort = 1023

// TestUnprivilegedDaemon: as an unprivileged user with only
// CAP_NET_BIND_SERVICE the daemon binds a port below 1024 (in a network
// namespace of its own: no fixed port of the machine is taken) and
// answers SIP there, writes its state (run marker, crash records) and
// answers on ubus; with its state directory not writable for it, it
// refuses to start and says why. Before: it bound 127.0.0.1:5060 of the
// machine, and failed wherever another process held that port.
func TestUnprivilegedDaemon(t *testing.T) {
	netns := privateNet(t)
	// Everything the daemon needs must be reachable for nobody.
	bin := forNobody(t, bins.faults)
	sock := filepath.Join(shortDir(t), "ubus.sock")
	os.Chmod(filepath.Dir(sock), 0o755)
	startBroker(t, sock)
	os.Chmod(sock, 0o666)
	listen := "127.0.0.1:" + strconv.Itoa(privPort)
	tr := newTree(t, sock, map[string]string{"sip.listen": listen, "health.crash_coalesce": "0"})
	os.Chmod(tr.dir, 0o755)
	for _, d := range []string{filepath.Join(tr.dir, "etc"), tr.confDir, filepath.Join(tr.dir, "tmp"), tr.www} {
		os.MkdirAll(d, 0o755)
		os.Chmod(d, 0o755)
	}
	// As the init script does: the state and run directories are the
	// daemon user's.
	for _, d := range []string{tr.stateDir, tr.runDir, tr.saveDir} {
		os.MkdirAll(d, 0o755)
		os.Chown(d, nobody, nobody)
	}
	os.Chmod(filepath.Join(tr.confDir, "phonebook"), 0o644)

	// unshare and setpriv each exec the next: the pid is the daemon's.
	p := tr.startWith(t, append(netns, setprivArgs...), bin)
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	var uid, capEff string
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
			uid = f[1]
		} else if len(f) > 1 && f[0] == "CapEff:" {
			capEff = f[1]
		}
	}
	// setpriv execs the daemon: the pid is the daemon's.
	if uid != strconv.Itoa(nobody) || capEff != "0000000000000400" {
		t.Errorf("daemon runs as uid %s with capabilities %s, want %d and only CAP_NET_BIND_SERVICE (0x400)", uid, capEff, nobody)
	}
	if host, port := sipAddr(t, tr.sock); host != "127.0.0.1" || port != privPort {
		t.Errorf("SIP bound to %s:%d, want %s", host, port, listen)
	}
	if ans := optionsIn(t, p.cmd.Process.Pid, listen); ans != "SIP/2.0 200 OK" {
		t.Errorf("OPTIONS to %s: %q", listen, ans)
	}
	// It writes its state: the run marker (RAM) and, after a crash, the
	// crash history (flash), as its own user.
	call(t, sock, "phonebook.faults", "inject", `{"worker":"fetcher","fault":"panic"}`)
	waitFor(t, 10*time.Second, "the crash history written", func() bool {
		st, err := os.Stat(filepath.Join(tr.stateDir, "crashes.json"))
		return err == nil && st.Size() > 0
	})
	if _, err := os.Stat(filepath.Join(tr.runDir, "running")); err != nil {
		t.Errorf("run marker: %v", err)
	}
	p.cmd.Process.Signal(os.Interrupt)
	p.wait(5 * time.Second)

	// Its state directory not writable for it: it refuses to start and
	// names the directory, the uid and the setting.
	os.RemoveAll(tr.stateDir)
	os.MkdirAll(tr.stateDir, 0o755) // root's
	args := append(append([]string{}, setprivArgs[1:]...), bin, "-c", tr.confDir, "-t", tr.saveDir, "-s", sock)
	out, err := exec.Command(setprivArgs[0], args...).CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "state directory (flash) "+tr.stateDir+" is not writable by uid 65534") || !strings.Contains(string(out), "phonebook.main.state_dir") {
		t.Errorf("with an unwritable state directory: exit %d\n%s", code, out)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestCGIAsWebUser: the healthcheck CGI and the app page, run as an
// unprivileged web-server user, read what they need (the UCI file, the
// ubus socket) and answer; nothing in them needs root.
func TestCGIAsWebUser(t *testing.T) {
	bin := forNobody(t, bins.daemon)
	e := newFaultEnv(t, nil)
	os.Chmod(filepath.Dir(e.sock), 0o755)
	os.Chmod(e.sock, 0o666)
	for _, d := range []string{e.tr.dir, filepath.Join(e.tr.dir, "etc"), e.tr.confDir} {
		os.Chmod(d, 0o755)
	}
	os.Chmod(filepath.Join(e.tr.confDir, "phonebook"), 0o644)
	e.tr.start(t, bins.daemon)
	asNobody := func(args ...string) (string, error) {
		cmd := exec.Command("setpriv", append([]string{"--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--clear-groups", bin}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := asNobody("cgi", "healthcheck", "-s", e.sock, "-c", e.tr.confDir, "-t", e.tr.saveDir)
	if err != nil || !strings.HasPrefix(out, "Status: 200 OK") || !strings.Contains(out, `"status": "healthy"`) {
		t.Errorf("healthcheck as uid %d: %v\n%s", nobody, err, out)
	}
	out, err = asNobody("page", "-s", e.sock)
	if err != nil || !strings.Contains(out, "Health score") {
		t.Errorf("app page as uid %d: %v\n%.300s", nobody, err, out)
	}
}
