package ubus

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// Exit codes of the ubus tool (when its stderr is not a terminal): a failed
// lookup exits with the status, a failed call with (-status) & 0xff.
const (
	exitConnect = 255 // -1: could not connect
	exitUsage   = 254 // -2: bad usage
)

func callExit(s Status) int { return int(-int32(s)) & 0xff }

// CLI holds the ubus tool's options shared by its commands.
type CLI struct {
	Stdout, Stderr io.Writer
}

func (c *CLI) flags(name string) (*flag.FlagSet, *string, *int, *bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	sock := fs.String("s", DefaultSocket, "ubusd socket")
	timeout := fs.Int("t", 30, "timeout in seconds")
	verbose := fs.Bool("v", false, "verbose output")
	return fs, sock, timeout, verbose
}

// connect opens a connection whose context ends after the timeout;
// done releases both.
func (c *CLI) connect(sock string, timeout int) (ctx context.Context, conn *Conn, done func(), ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeout)*time.Second)
	conn, err := Dial(ctx, sock, nil)
	if err != nil {
		cancel()
		fmt.Fprintln(c.Stderr, "Failed to connect to ubus")
		return nil, nil, nil, false
	}
	return ctx, conn, func() { conn.Close(); cancel() }, true
}

// Call runs `call [-s SOCKET] [-t TIMEOUT] OBJECT METHOD [JSON]` and
// returns the exit code.
func (c *CLI) Call(args []string) int {
	fs, sock, timeout, _ := c.flags("call")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) < 2 || len(rest) > 3 {
		fmt.Fprintln(c.Stderr, "Usage: phonebookd call [-s <socket>] [-t <timeout>] <path> <method> [<message>]")
		return exitUsage
	}
	ctx, conn, done, ok := c.connect(*sock, *timeout)
	if !ok {
		return exitConnect
	}
	defer done()
	var msg []Value
	if len(rest) == 3 {
		var err error
		if msg, err = ParseJSONObject(rest[2]); err != nil {
			fmt.Fprintln(c.Stderr, "Failed to parse message data")
			return callExit(StatusParseError)
		}
	}
	id, err := conn.LookupID(ctx, rest[0])
	if err != nil {
		return c.fail(err, false)
	}
	replies, err := conn.Invoke(ctx, id, rest[1], msg)
	for _, r := range replies {
		fmt.Fprintln(c.Stdout, FormatJSON(r, false, 0))
	}
	if err != nil {
		return c.fail(err, true)
	}
	return 0
}

func (c *CLI) fail(err error, invoke bool) int {
	var st Status
	if !errors.As(err, &st) {
		st = StatusUnknownError
	}
	fmt.Fprintf(c.Stderr, "Command failed: %s\n", st.Error())
	if invoke {
		return callExit(st)
	}
	return int(st)
}

// List runs `list [-s SOCKET] [-v] [PATTERN]` and returns the exit code.
func (c *CLI) List(args []string) int {
	fs, sock, timeout, verbose := c.flags("list")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(c.Stderr, "Usage: phonebookd list [-s <socket>] [-v] [<path>]")
		return exitUsage
	}
	ctx, conn, done, ok := c.connect(*sock, *timeout)
	if !ok {
		return exitConnect
	}
	defer done()
	objs, err := conn.Lookup(ctx, fs.Arg(0))
	if err != nil {
		return c.fail(err, false)
	}
	for _, o := range objs {
		if !*verbose {
			fmt.Fprintln(c.Stdout, o.Path)
			continue
		}
		fmt.Fprintf(c.Stdout, "'%s' @%08x\n", o.Path, o.ID)
		for _, m := range o.Signature {
			fmt.Fprintf(c.Stdout, "\t%s\n", FormatSignature(m))
		}
	}
	return 0
}
