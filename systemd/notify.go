// Package systemd speaks the service manager's notify protocol
// (sd_notify(3)): datagrams such as "READY=1" to the unix socket named by
// $NOTIFY_SOCKET, and the watchdog period from $WATCHDOG_USEC. It is the
// few lines the protocol needs, written here rather than taken from a
// library (README's dependency table).
package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Notifier sends state changes to the service manager; the zero of a nil
// *Notifier (not started by systemd) sends nothing.
type Notifier struct {
	addr *net.UnixAddr
}

// FromEnv returns a notifier for $NOTIFY_SOCKET, or nil when the daemon
// was not started with Type=notify. An abstract socket is named "@...".
func FromEnv() *Notifier {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" || (name[0] != '/' && name[0] != '@') {
		return nil
	}
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
}

// Send sends one message of newline-separated assignments ("READY=1").
func (n *Notifier) Send(state string) error {
	if n == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("notify %s: %w", n.addr.Name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %s: %w", n.addr.Name, err)
	}
	return nil
}

// WatchdogInterval is WatchdogSec= as passed in $WATCHDOG_USEC, or 0 when
// the watchdog is off or meant for another process ($WATCHDOG_PID).
func WatchdogInterval() (time.Duration, error) {
	s := os.Getenv("WATCHDOG_USEC")
	if s == "" {
		return 0, nil
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
		return 0, nil
	}
	us, err := strconv.ParseUint(s, 10, 63)
	if err != nil || us == 0 {
		return 0, errors.New("WATCHDOG_USEC " + strconv.Quote(s) + " is not a positive number of microseconds")
	}
	return time.Duration(us) * time.Microsecond, nil
}
