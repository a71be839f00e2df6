package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// privateNet is the wrapper that starts a daemon in a network namespace
// of its own (unshare -n): there it can bind the ports it binds on a
// router (5060, or one below 1024) whatever holds them on the test
// machine. The ubus socket is a file, reachable across namespaces.
func privateNet(t *testing.T) []string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("this test starts the daemon in a network namespace of its own: run it as root (CI does)")
	}
	if out, err := exec.Command("unshare", "-n", "true").CombinedOutput(); err != nil {
		t.Fatalf("unshare -n (util-linux): %v %s", err, out)
	}
	return []string{"unshare", "-n"}
}

// inNetOf runs fn on an OS thread moved into the network namespace of
// process pid: sockets fn opens live there (the namespace's loopback is
// brought up first). The thread is thrown away afterwards, so no other
// goroutine runs in that namespace.
func inNetOf(t *testing.T, pid int, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine's thread ends with it.
		runtime.LockOSThread()
		errc <- func() error {
			f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err != nil {
				return err
			}
			defer f.Close()
			if err := unix.Unshare(unix.CLONE_FS); err != nil { // setns wants no shared fs info
				return fmt.Errorf("unshare CLONE_FS: %w", err)
			}
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("setns: %w", err)
			}
			if err := loopbackUp(); err != nil {
				return err
			}
			return fn()
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in the daemon's network namespace: %v", err)
	}
}

// loopbackUp sets lo up in the calling thread's network namespace (a new
// namespace has it down).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// optionsIn sends a SIP OPTIONS over UDP to addr inside the network
// namespace of pid and returns the first line of the answer.
func optionsIn(t *testing.T, pid int, addr string) string {
	t.Helper()
	var conn *net.UDPConn
	inNetOf(t, pid, func() error {
		raddr, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		conn, err = net.DialUDP("udp", nil, raddr)
		return err
	})
	defer conn.Close()
	msg := "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP " + conn.LocalAddr().String() + ";branch=z9hG4bKns\r\nFrom: <sip:9@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: ns1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	b := make([]byte, 4096)
	// UDP may be lost: a few tries, each waiting for its answer.
	for range 5 {
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := conn.Read(b); err == nil {
			first, _, _ := strings.Cut(string(b[:n]), "\r\n")
			return first
		}
	}
	return ""
}
