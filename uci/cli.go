package uci

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Exit codes and error lines of the uci tool.
const (
	errInval    = 2 // UCI_ERR_INVAL
	errNotFound = 3 // UCI_ERR_NOTFOUND
)

const usage = `Usage: uci [<options>] <command> [<arguments>]

Commands:
	export     [<config>]
	changes    [<config>]
	commit     [<config>]
	add        <config> <section-type>
	add_list   <config>.<section>.<option>=<string>
	del_list   <config>.<section>.<option>=<string>
	show       [<config>[.<section>[.<option>]]]
	get        <config>.<section>[.<option>]
	set        <config>.<section>[.<option>]=<value>
	delete     <config>[.<section>[[.<option>][=<id>]]]
	rename     <config>.<section>[.<option>]=<name>
	revert     <config>[.<section>[.<option>]]

Options:
	-c <path>  set the search path for config files (default: /etc/config)
	-t <path>  set the search path for config change files (default: /tmp/.uci)
	-d <str>   set the delimiter for list values in uci show
	-q         quiet mode (don't print error messages)
	-X         do not use extended syntax on 'show'

`

// CLI runs uci commands against a Store with the uci tool's arguments,
// output and exit codes, for hosts that have no uci binary.
type CLI struct {
	Store  Store
	Stdout io.Writer
	Stderr io.Writer
	delim  string
	quiet  bool
	noExt  bool
}

// RunCLI parses options like `uci [-c confdir] [-t savedir] ...` and runs
// the command; it returns the process exit code.
func RunCLI(args []string, stdout, stderr io.Writer) int {
	c := &CLI{Store: Store{ConfDir: "/etc/config", SaveDir: "/tmp/.uci"}, Stdout: stdout, Stderr: stderr, delim: " "}
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && len(args[0]) == 2 {
		opt := args[0][1]
		args = args[1:]
		switch opt {
		case 'c', 't', 'P', 'd':
			if len(args) == 0 {
				fmt.Fprint(stderr, usage)
				return 0
			}
			switch opt {
			case 'c':
				c.Store.ConfDir = args[0]
			case 't', 'P':
				c.Store.SaveDir = args[0]
			case 'd':
				c.delim = args[0]
			}
			args = args[1:]
		case 'q':
			c.quiet = true
		case 'X':
			c.noExt = true
		case 's', 'S', 'n', 'N', 'm':
			// strict mode is always on; naming and merging apply to
			// commands this implementation does not carry
		default:
			fmt.Fprint(stderr, usage)
			return 0
		}
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 0
	}
	rc := c.Run(args)
	if rc == 255 {
		fmt.Fprint(stderr, usage)
	}
	return rc
}

// perror prints an error the way uci_perror does.
func (c *CLI) perror(err error) {
	if c.quiet {
		return
	}
	var pe *ParseError
	switch {
	case errors.As(err, &pe):
		fmt.Fprintf(c.Stderr, "uci: %s\n", pe.Error())
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintln(c.Stderr, "uci: Entry not found")
	case errors.Is(err, errPtr):
		fmt.Fprintln(c.Stderr, "uci: Parse error")
	case errors.Is(err, errInvalid):
		fmt.Fprintln(c.Stderr, "uci: Invalid argument")
	default:
		fmt.Fprintf(c.Stderr, "uci: I/O error (%v)\n", err)
	}
}

var errInvalid = errors.New("invalid argument")

// Run executes one command (args[0] is its name).
func (c *CLI) Run(args []string) int {
	cmd, rest := strings.ToLower(args[0]), args[1:]
	switch cmd {
	case "show", "export", "changes", "commit":
		if len(rest) > 1 {
			return 255
		}
		if len(rest) == 1 {
			return c.packageCmd(cmd, rest[0])
		}
		names, err := c.Store.List()
		if err != nil {
			c.perror(fmt.Errorf("%w", fs.ErrNotExist))
			return 1
		}
		for _, n := range names {
			c.packageCmd(cmd, n)
		}
		return 0
	case "get", "set", "add_list", "del_list", "delete", "del", "rename", "ren", "revert":
		if len(rest) != 1 {
			return 255
		}
		return c.sectionCmd(cmd, rest[0])
	case "add":
		if len(rest) != 2 {
			return 255
		}
		return c.add(rest[0], rest[1])
	case "help":
		fmt.Fprint(c.Stderr, usage)
		return 0
	}
	return 255
}

func (c *CLI) packageCmd(cmd, arg string) int {
	ptr, err := ParsePtr(arg)
	if err != nil {
		c.perror(err)
		return 1
	}
	if cmd == "commit" {
		if err := c.Store.Commit(ptr.Package); err != nil {
			c.perror(err)
			return 1
		}
		return 0
	}
	l, err := c.Store.Load(ptr.Package)
	if err != nil {
		c.perror(err)
		return 1
	}
	switch cmd {
	case "changes":
		c.showChanges(l)
	case "export":
		c.Stdout.Write(Export(l.Package, true))
	case "show":
		if ptr.Section == "" {
			c.showPackage(l.Package)
			return 0
		}
		s, err := l.lookupSection(ptr.Section)
		if err != nil || s == nil {
			c.perror(fs.ErrNotExist)
			return 1
		}
		if ptr.Option == "" {
			c.showSection(l.Package, s, s.Name)
			return 0
		}
		o := s.Option(ptr.Option)
		if o == nil {
			c.perror(fs.ErrNotExist)
			return 1
		}
		c.showOption(l.Package, s.Name, o)
	}
	return 0
}

func (c *CLI) showPackage(p *Package) {
	counts := map[string]int{}
	for _, s := range p.Sections {
		ref := s.Name
		if s.Anonymous && !c.noExt {
			ref = fmt.Sprintf("@%s[%d]", s.Type, counts[s.Type])
		}
		counts[s.Type]++
		c.showSection(p, s, ref)
	}
}

func (c *CLI) showSection(p *Package, s *Section, ref string) {
	fmt.Fprintf(c.Stdout, "%s.%s=%s\n", p.Name, ref, s.Type)
	for _, o := range s.Options {
		c.showOption(p, ref, o)
	}
}

func (c *CLI) showOption(p *Package, ref string, o *Option) {
	fmt.Fprintf(c.Stdout, "%s.%s.%s=%s\n", p.Name, ref, o.Name, c.value(o, true))
}

// value renders an option as show (quoted) or get (bare, list items quoted
// only when they hold white space) print it.
func (c *CLI) value(o *Option, q bool) string {
	if !o.IsList {
		if q {
			return quote(o.Value)
		}
		return o.Value
	}
	items := make([]string, len(o.Values))
	for i, v := range o.Values {
		if q || strings.ContainsAny(v, " \t\r\n") {
			items[i] = quote(v)
		} else {
			items[i] = v
		}
	}
	return strings.Join(items, c.delim)
}

func (c *CLI) showChanges(l *Loaded) {
	for _, d := range l.Saved {
		prefix, op := "", "="
		switch d.Cmd {
		case CmdRemove:
			prefix = "-"
		case CmdListAdd:
			op = "+="
		case CmdListDel:
			op = "-="
		}
		line := prefix + l.Name + "." + d.Section
		if d.Option != "" {
			line += "." + d.Option
		}
		if d.Cmd != CmdRemove {
			line += op + quote(d.Value)
		}
		fmt.Fprintln(c.Stdout, line)
	}
}

func (c *CLI) sectionCmd(cmd, arg string) int {
	ptr, err := ParsePtr(arg)
	if err != nil {
		c.perror(err)
		return 1
	}
	if cmd == "revert" {
		if err := c.Store.Revert(ptr); err != nil {
			c.perror(err)
		}
		return 0
	}
	takesValue := cmd != "get"
	if ptr.HasValue && !takesValue {
		return 1
	}
	l, err := c.Store.Load(ptr.Package)
	if err != nil {
		c.perror(err)
		return 1
	}
	s, err := l.lookupSection(ptr.Section)
	if err != nil {
		c.perror(errInvalid)
		return 1
	}
	if s != nil {
		ptr.Section = s.Name // deltas record the real name, not @type[N]
	}
	var d Delta
	switch cmd {
	case "get":
		if s == nil || ptr.Section == "" {
			c.perror(fs.ErrNotExist)
			return 1
		}
		if ptr.Option == "" {
			fmt.Fprintln(c.Stdout, s.Type)
			return 0
		}
		o := s.Option(ptr.Option)
		if o == nil {
			c.perror(fs.ErrNotExist)
			return 1
		}
		fmt.Fprintln(c.Stdout, c.value(o, false))
		return 0
	case "set":
		if !ptr.HasValue || ptr.Section == "" || (ptr.Option != "" && s == nil) {
			c.perror(errInvalid)
			return 1
		}
		if ptr.Value == "" && (s == nil || (ptr.Option != "" && s.Option(ptr.Option) == nil)) {
			return 0 // setting something absent to nothing: no change
		}
		if ptr.Option != "" && ptr.Value != "" {
			if o := s.Option(ptr.Option); o != nil && !o.IsList && o.Value == ptr.Value {
				return 0
			}
		}
		d = Delta{Cmd: CmdChange, Section: ptr.Section, Option: ptr.Option, Value: ptr.Value, HasValue: true}
		if ptr.Value == "" {
			d = Delta{Cmd: CmdRemove, Section: ptr.Section, Option: ptr.Option}
		}
	case "add_list", "del_list":
		if !ptr.HasValue || ptr.Option == "" || s == nil {
			c.perror(errInvalid)
			return 1
		}
		d = Delta{Cmd: CmdListAdd, Section: ptr.Section, Option: ptr.Option, Value: ptr.Value, HasValue: true}
		if cmd == "del_list" {
			o := s.Option(ptr.Option)
			if o == nil || !o.IsList {
				return 0
			}
			d.Cmd = CmdListDel
		}
	case "delete", "del":
		if s == nil || ptr.Section == "" || (ptr.Option != "" && s.Option(ptr.Option) == nil) {
			c.perror(fs.ErrNotExist)
			return 1
		}
		d = Delta{Cmd: CmdRemove, Section: ptr.Section, Option: ptr.Option, Value: ptr.Value, HasValue: ptr.HasValue && ptr.Value != ""}
	case "rename", "ren":
		if s == nil || !ptr.HasValue || (ptr.Option != "" && s.Option(ptr.Option) == nil) {
			c.perror(fs.ErrNotExist)
			return 1
		}
		d = Delta{Cmd: CmdRename, Section: ptr.Section, Option: ptr.Option, Value: ptr.Value, HasValue: true}
	}
	if err := l.Apply(d); err != nil {
		c.perror(errInvalid)
		return 1
	}
	if err := c.Store.Save(l.Name, []Delta{d}); err != nil {
		c.perror(err)
		return 1
	}
	return 0
}

func (c *CLI) add(pkg, typ string) int {
	l, err := c.Store.Load(pkg)
	if err != nil {
		c.perror(err)
		return errNotFound
	}
	if !validType(typ) {
		c.perror(errInvalid)
		return errInval
	}
	s := l.AddSection(typ)
	if err := c.Store.Save(pkg, []Delta{{Cmd: CmdAdd, Section: s.Name, Value: typ, HasValue: true}}); err != nil {
		c.perror(err)
		return 1
	}
	fmt.Fprintln(c.Stdout, s.Name)
	return 0
}
