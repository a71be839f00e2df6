package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aredn/phonebookd/internal/dbustest"
)

const dbusPolicy = "../contrib/dbus/org.aredn.Phonebook1.conf"

// dbusCall runs dbus-send against the daemon and returns the reply's
// literal text (a JSON document for the document methods).
func dbusCall(addr, path, member string, args ...string) (string, error) {
	a := append([]string{"--bus=" + addr, "--print-reply=literal", "--reply-timeout=5000", "--dest=org.aredn.Phonebook1", path, member}, args...)
	out, err := exec.Command("dbus-send", a...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// withoutClock drops what is computed at the moment of the call, and
// says every fraction as "ubus call" prints it (libubox's %f: six
// decimals; D-Bus's encoding/json keeps every digit).
func withoutClock(m map[string]any) map[string]any {
	delete(m, "uptime_seconds")
	delete(m, "timestamp")
	return sixDecimals(m).(map[string]any)
}

func sixDecimals(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = sixDecimals(e)
		}
	case []any:
		for i, e := range x {
			x[i] = sixDecimals(e)
		}
	case float64:
		f, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 6, 64), 64)
		return f
	}
	return v
}

// sameDoc fetches a document over ubus, D-Bus, and ubus again until the
// two ubus answers agree (no evaluation in between); the D-Bus one must
// then be the same document.
func sameDoc(t *testing.T, sock, obj, method, addr, path, member string) map[string]any {
	t.Helper()
	for i := 0; i < 20; i++ {
		a := withoutClock(call(t, sock, obj, method, ""))
		out, err := dbusCall(addr, path, member)
		if err != nil {
			t.Fatalf("dbus-send %s: %v\n%s", member, err, out)
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("%s over D-Bus is not JSON: %v\n%s", member, err, out)
		}
		b := withoutClock(call(t, sock, obj, method, ""))
		if !reflect.DeepEqual(a, b) {
			continue // a new evaluation came between: ask again
		}
		if !reflect.DeepEqual(a, withoutClock(d)) {
			t.Fatalf("%s differs:\nubus  %v\nD-Bus %v", member, a, d)
		}
		return a
	}
	t.Fatalf("%s: no two ubus answers agreed", method)
	return nil
}

// TestDBusAnswersLikeUbus: the daemon on a real dbus-daemon (the
// shipped policy) beside ubus: dbus-send from a shell gets the same
// status, check and threads documents as ubus call; busctl reads the
// typed properties; a restart over D-Bus restarts the worker; after the
// bus restarts the daemon is back on it.
func TestDBusAnswersLikeUbus(t *testing.T) {
	bus := dbustest.Start(t, dbusPolicy)
	e := newFaultEnv(t, map[string]string{"main.dbus": "1", "main.dbus_address": bus.Address})
	p := e.start()
	health := "/org/aredn/Phonebook1/Health"
	waitFor(t, 15*time.Second, "the daemon on D-Bus", func() bool {
		_, err := dbusCall(bus.Address, health, "org.aredn.Phonebook1.Health.Check")
		return err == nil
	})
	st := sameDoc(t, e.sock, "phonebook.health", "status", bus.Address, health, "org.aredn.Phonebook1.Health.Status")
	if st["threads"] == nil || st["memory"] == nil {
		t.Fatalf("status lacks sections: %v", st)
	}
	sameDoc(t, e.sock, "phonebook.health", "check", bus.Address, health, "org.aredn.Phonebook1.Health.Check")
	sameDoc(t, e.sock, "phonebook.threads", "list", bus.Address, "/org/aredn/Phonebook1/Threads", "org.aredn.Phonebook1.Threads.List")

	check := call(t, e.sock, "phonebook.health", "check", "")
	out, err := exec.Command("busctl", "--address="+bus.Address, "get-property", "org.aredn.Phonebook1", health,
		"org.aredn.Phonebook1.Health", "HealthScore", "Status").CombinedOutput()
	want := fmt.Sprintf("i %d\ns %q", int(num(check["health_score"])), check["status"])
	if err != nil || strings.TrimSpace(string(out)) != want {
		t.Fatalf("busctl get-property: %v\n%s\nwant\n%s", err, out, want)
	}
	hist, err := dbusCall(bus.Address, health, "org.aredn.Phonebook1.Health.History", "int32:10", "int32:0")
	if err != nil || !strings.Contains(hist, `"step_seconds":60`) {
		t.Fatalf("History over D-Bus: %v %s", err, hist)
	}

	before := num(e.thread("fetcher")["restart_count"])
	if out, err := dbusCall(bus.Address, "/org/aredn/Phonebook1/Threads", "org.aredn.Phonebook1.Threads.Restart", "string:fetcher"); err != nil {
		t.Fatalf("Restart over D-Bus: %v %s", err, out)
	}
	waitFor(t, 10*time.Second, "fetcher restarted", func() bool { return num(e.thread("fetcher")["restart_count"]) > before })

	// A fault changes the status: the D-Bus property follows the check.
	e.inject("fetcher", "panic")
	waitFor(t, 15*time.Second, "the Status property to follow the crash", func() bool {
		out, err := exec.Command("busctl", "--address="+bus.Address, "get-property", "org.aredn.Phonebook1", health,
			"org.aredn.Phonebook1.Health", "Status").CombinedOutput()
		st := call(t, e.sock, "phonebook.health", "check", "")["status"]
		return err == nil && st != "healthy" && strings.TrimSpace(string(out)) == fmt.Sprintf("s %q", st)
	})

	bus.Stop()
	time.Sleep(300 * time.Millisecond)
	bus.Start()
	waitFor(t, 30*time.Second, "the daemon back on the restarted bus", func() bool {
		_, err := dbusCall(bus.Address, health, "org.aredn.Phonebook1.Health.Status")
		return err == nil
	})
	if p.exited() {
		t.Fatal("daemon exited")
	}
}

// notifyManager plays systemd's side of sd_notify: it collects the
// datagrams the daemon sends to $NOTIFY_SOCKET.
type notifyManager struct {
	mu   sync.Mutex
	msgs []string
}

func (m *notifyManager) count(state string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, s := range m.msgs {
		for _, line := range strings.Split(s, "\n") {
			if line == state {
				n++
			}
		}
	}
	return n
}

func startNotifyManager(t *testing.T) (*notifyManager, string) {
	path := filepath.Join(shortDir(t), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	m := &notifyManager{}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			m.mu.Lock()
			m.msgs = append(m.msgs, string(buf[:n]))
			m.mu.Unlock()
		}
	}()
	return m, path
}

// TestSystemdNotifyAndWatchdog: the daemon started as systemd's
// Type=notify service sends READY=1, WATCHDOG=1 at half of WatchdogSec=
// while its essential workers are alive and none while main's SIP
// handler is stuck, and STOPPING=1 on SIGTERM, then exits 0.
func TestSystemdNotifyAndWatchdog(t *testing.T) {
	m, path := startNotifyManager(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "2000000") // WatchdogSec=2: WATCHDOG=1 every second
	e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1", "health.max_restart_attempts": "10"})
	p := e.start()
	waitFor(t, 10*time.Second, "READY=1", func() bool { return m.count("READY=1") == 1 })
	// Messages keep coming while healthy. How many per second is the
	// daemon's ticker at half of WATCHDOG_USEC, not asserted here against
	// this machine's clock (systemd's TestSendAndWatchdogInterval reads
	// the interval).
	w0 := m.count("WATCHDOG=1")
	waitFor(t, 30*time.Second, "three WATCHDOG=1 while healthy", func() bool { return m.count("WATCHDOG=1")-w0 >= 3 })
	e.inject("main", "sip_stuck")
	waitFor(t, 15*time.Second, "main unresponsive", func() bool {
		th := e.thread("main")
		return th != nil && th["status"] != "healthy"
	})
	w1 := m.count("WATCHDOG=1")
	time.Sleep(6 * time.Second) // through main's restarts, which cannot cure it
	if n := m.count("WATCHDOG=1") - w1; n != 0 {
		t.Errorf("%d WATCHDOG=1 while main's SIP handler was stuck", n)
	}
	if m.count("STOPPING=1") != 0 {
		t.Fatal("STOPPING=1 before a stop")
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(5 * time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	if m.count("STOPPING=1") != 1 {
		t.Errorf("STOPPING=1 sent %d times", m.count("STOPPING=1"))
	}
}
