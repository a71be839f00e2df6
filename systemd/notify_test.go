package systemd

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestSendAndWatchdogInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	n := FromEnv()
	if err := n.Send("READY=1\nSTATUS=healthy"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, err := ln.Read(buf)
	if err != nil || string(buf[:k]) != "READY=1\nSTATUS=healthy" {
		t.Fatalf("got %q, %v", buf[:k], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if FromEnv() != nil {
		t.Fatal("a notifier without $NOTIFY_SOCKET")
	}
	var none *Notifier
	if err := none.Send("READY=1"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WATCHDOG_USEC", "4000000")
	if d, err := WatchdogInterval(); d != 4*time.Second || err != nil {
		t.Fatalf("%v %v", d, err)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if d, _ := WatchdogInterval(); d != 0 {
		t.Fatal("watchdog of another pid taken")
	}
	t.Setenv("WATCHDOG_PID", "")
	t.Setenv("WATCHDOG_USEC", "abc")
	if _, err := WatchdogInterval(); err == nil {
		t.Fatal("bad WATCHDOG_USEC accepted")
	}
}
