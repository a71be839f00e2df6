// Package dbustest runs a private dbus-daemon (Debian package
// dbus-daemon) for tests: the system bus's default-deny rules plus a
// given policy file, on a socket any user can reach, restartable on the
// same address. Used only by tests.
package dbustest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/internal/poll"
)

// Bus is a private dbus-daemon (Debian package dbus-daemon) with the
// system bus's default-deny policy and the shipped policy file, on a
// socket any user can reach.
type Bus struct {
	t       *testing.T
	dir     string
	Address string
	cmd     *exec.Cmd
}

// Start starts a private system-like bus; the test fails without
// dbus-daemon.
func Start(t *testing.T, policy string) *Bus {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Fatalf("dbus-daemon not found (Debian package dbus-daemon; scripts/setup.sh installs it): %v", err)
	}
	dir, err := os.MkdirTemp("", "pbdbus")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	abs, _ := filepath.Abs(policy)
	conf := `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=` + dir + `/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>` + abs + `</include>
</busconfig>
`
	if err := os.WriteFile(filepath.Join(dir, "bus.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &Bus{t: t, dir: dir, Address: "unix:path=" + dir + "/bus"}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// Start (re)starts the daemon on the same address.
func (b *Bus) Start() {
	b.t.Helper()
	os.Remove(filepath.Join(b.dir, "bus"))
	b.cmd = exec.Command("dbus-daemon", "--nofork", "--nopidfile", "--config-file="+filepath.Join(b.dir, "bus.conf"))
	// Its complaints (no phonebook user on a test machine, the fd limit)
	// are expected here; they go to the test log.
	b.cmd.Stderr = &testLog{b.t}
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	poll.Within(b.t, 10*time.Second, "dbus-daemon's socket", func() bool {
		_, err := os.Stat(filepath.Join(b.dir, "bus"))
		return err == nil
	})
}

// Stop kills the daemon.
func (b *Bus) Stop() {
	if b.cmd != nil && b.cmd.Process != nil {
		b.cmd.Process.Kill()
		b.cmd.Wait()
		b.cmd = nil
	}
}

type testLog struct{ t *testing.T }

func (l *testLog) Write(p []byte) (int, error) {
	l.t.Logf("dbus-daemon: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}
