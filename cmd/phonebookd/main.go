// Command phonebookd is the AREDN phonebook daemon: a SIP registrar and
// proxy with a phone directory fetched from mesh servers, watched by its
// own software-health system. It also carries small uci- and
// ubus-compatible subcommands for hosts without those tools.
//
//	phonebookd [-c CONFDIR] [-t UCI_SAVEDIR] [-s UBUS_SOCKET] [-ubus auto|1|0] [-dbus auto|1|0]
//	phonebookd uci [-c confdir] [-t savedir] <command> ...
//	phonebookd call [-s SOCKET] [-t TIMEOUT] OBJECT METHOD [JSON]
//	phonebookd list [-s SOCKET] [-v] [PATTERN]
//	phonebookd page [-s SOCKET]   (the AREDN app page, as CGI)
//	phonebookd cgi healthcheck [-s SOCKET] [-c CONFDIR] [-t SAVEDIR]
//
// call, list, page and cgi are ubus clients: a build tagged noubus (the
// Debian package, which has D-Bus and no ubusd) leaves them and the ubus
// codec out, and says so when they are asked for.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	stdlog "log"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/aredn/phonebookd/daemon"
	"github.com/aredn/phonebookd/runtimetune"
	"github.com/aredn/phonebookd/uci"
)

// sigs receives the daemon's signals from the earliest moment Go code
// runs (package init), so that procd's SIGTERM is a clean stop at any time.
var sigs <-chan os.Signal

func init() {
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") {
		sigs = daemon.Subscribe()
	}
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "uci":
			os.Exit(uci.RunCLI(os.Args[2:], os.Stdout, os.Stderr))
		case "call", "list", "page", "cgi":
			// ubus clients: in builds with ubus only (see ubuscmd.go).
			os.Exit(runUbusCommand(os.Args[1], os.Args[2:]))
		}
	}
	fs := flag.NewFlagSet("phonebookd", flag.ExitOnError)
	confDir := fs.String("c", "/etc/config", "UCI configuration directory")
	saveDir := fs.String("t", "/tmp/.uci", "UCI save directory (uncommitted changes)")
	socket := fs.String("s", defaultSocket, "ubusd socket")
	verbose := fs.Bool("v", false, "log debug messages")
	ubusFlag := fs.String("ubus", "", "publish on ubus: auto, 1 or 0 (overrides phonebook.main.ubus)")
	dbusFlag := fs.String("dbus", "", "publish on D-Bus: auto, 1 or 0 (overrides phonebook.main.dbus)")
	fs.Parse(os.Args[1:])
	socketGiven := false
	fs.Visit(func(f *flag.Flag) { socketGiven = socketGiven || f.Name == "s" })

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	// procd sends stderr to syslog. The log keeps a duplicate of it, so
	// that descriptor 2 can catch the runtime's crash text in RAM.
	stderr := os.Stderr
	if fd, err := syscall.Dup(2); err == nil {
		syscall.CloseOnExec(fd)
		stderr = os.NewFile(uintptr(fd), "stderr")
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	stdlog.SetOutput(stderr) // any library's log package output goes to syslog too
	// The runtime fitted to the router: a memory limit from its RAM,
	// GOGC, idle garbage collected and free heap given back after a load,
	// the code paged out after start-up (phonebook.health settings, which
	// the daemon hands the tuner at start and on each reload).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tuner := runtimetune.NewTuner(log)
	go tuner.Run(ctx)
	err := daemon.Run(ctx, daemon.Options{ConfDir: *confDir, SaveDir: *saveDir, Socket: *socket, SocketGiven: socketGiven, Ubus: *ubusFlag, DBus: *dbusFlag, Log: log, Stderr: stderr, Signals: sigs, Runtime: tuner})
	var fatal *daemon.FatalError
	switch {
	case errors.As(err, &fatal):
		log.Error("exiting for a restart", "reason", fatal.Record.Reason)
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(stderr, "phonebookd:", err)
		os.Exit(1)
	}
}
