// Package config is phonebookd's settings, read from the UCI package
// "phonebook" (/etc/config/phonebook). One table of fields gives each
// setting its section, option, default and bounds; the same table loads,
// validates and names a bad value in its error, so a reader finds every
// option here and nowhere else.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/aredn/phonebookd/httpc"
	"github.com/aredn/phonebookd/uci"
)

// Package is the UCI package name.
const Package = "phonebook"

// Config is the daemon's complete configuration.
type Config struct {
	Main     Main
	SIP      SIP
	Health   Health
	Fetcher  Fetcher
	Monitor  Monitor
	Metrics  Metrics
	Reporter Reporter
}

// Main holds the paths (section "main", type "phonebook"). Every file the
// daemon touches lives under one of them, so a test can relocate all.
type Main struct {
	StateDir string // flash: crash history, last good phonebook
	RunDir   string // RAM: run marker, crash output, restart count
	WWWDir   string // web root: published directory, CGI data
	AppsDir  string // RAM: the AREDN app launcher's badge
	// Buses the daemon publishes on: "auto" (ubus where ubusd's socket
	// exists, D-Bus where a system bus does), "1" or "0". Applied at start.
	Ubus        string
	DBus        string
	DBusAddress string // "" is the system bus; a D-Bus address otherwise (tests)
	// DBusMaxCalls bounds the D-Bus method calls answered at once; past
	// it a call gets org.freedesktop.DBus.Error.LimitsExceeded. Applied
	// at start, with the bus.
	DBusMaxCalls int
}

// Metrics holds the optional Prometheus listener (section "metrics").
type Metrics struct {
	Listen         string // "" is off; IP:port otherwise
	MaxConnections int    // scrapes served at once; past it refused
	// MaxConnectionsPerSource bounds the connections one source address
	// holds, so that a few slow clients cannot starve another's scrapes.
	MaxConnectionsPerSource int
	RequestTimeout          int // seconds a whole request may take to arrive
}

// Reporter holds the collector reports (section "reporter", the
// specification's health_reporter).
type Reporter struct {
	URL      string // "" is off
	Interval int    // seconds between reports
	Queue    int    // reports kept in RAM while the collector is unreachable
	Timeout  int    // seconds per POST
	Node     string // node name in the report; "" is the host name
}

// SIP holds the registrar/proxy settings (section "sip").
type SIP struct {
	Listen          string
	MaxBindings     int // registered users
	MaxContacts     int // bindings per user
	DefaultExpires  int
	MinExpires      int
	DNSSuffix       string
	MaxTransactions int // proxied INVITEs open at once
	MaxCalls        int // active calls
	// MaxTransactionsPerSource and MaxCallsPerSource are the shares of
	// those tables one source address may hold, so that one host cannot
	// fill them (used as min(share, table size)).
	MaxTransactionsPerSource int
	MaxCallsPerSource        int
	TimerT1MS                int // RFC 3261 T1
	TimerC                   int // seconds an INVITE may ring (RFC 3261 16.6 Timer C)
	MaxMessageSize           int // bytes
	TCPMaxConnections        int // 0: no TCP
	TCPIdleTimeout           int // seconds
	TCPHeaderTimeout         int // seconds
	// TCPReaders bounds the goroutines reading TCP connections at once
	// (read at each hand-off: a reload applies it).
	TCPReaders int
	// TCPWriteTimeout is how long, in seconds, what waits in a TCP
	// connection's write queue may pass without the peer taking a byte
	// before the connection is given up (a peer that does not read); a
	// peer that reads, however slowly, is kept. Writes never wait for it.
	TCPWriteTimeout int
}

// Health holds the software-health settings (section "health", type
// "software_health"), the specification's options plus the detectors'.
type Health struct {
	Enabled             bool
	CrashReporting      bool
	ThreadMonitoring    bool
	MemoryLeakDetection bool
	HealthEndpoint      bool
	HealthCheckInterval int // seconds
	HistoryStep         int // seconds between history points
	HistoryPoints       int // points the history ring keeps
	CrashHistoryDays    int
	CrashHistoryMax     int
	MaxRestartAttempts  int
	RestartWindow       int // seconds in which restarts are counted
	CrashCoalesce       int // seconds: crash records closer than this are merged
	// MemoryLimitMB is the Go memory limit; 0 derives it: MemTotal /
	// MemoryLimitShare within [MemoryLimitMinMB, MemoryLimitMaxMB]
	// (runtimetune). GOMEMLIMIT in the environment wins over both.
	MemoryLimitMB    int
	MemoryLimitShare int // the derived limit is this fraction (1/N) of the RAM
	MemoryLimitMinMB int // the derived limit's floor
	MemoryLimitMaxMB int // the derived limit's ceiling (below the floor: the floor)
	// GCPercent is GOGC for a small heap (GOGC in the environment wins):
	// the runtime's minimum heap goal is 4 MB x GCPercent/100.
	GCPercent int
	// ScavengeInterval is the seconds between the scavenger's looks at
	// the heap (runtimetune.Scavenger).
	ScavengeInterval int
	// CodePageOut pages the executable's resident code out once start-up
	// is done and after a load falls (runtimetune.PageOutCode).
	CodePageOut         bool
	LeakWarmup          int     // seconds before the baseline is taken
	LeakWindow          int     // seconds of samples in the trend
	LeakGrowthFactor    float64 // the specification's 1.5 x baseline rule
	LeakMinSlopeKB      int     // KiB per hour the trend must exceed
	LeakMinFit          float64 // R squared the trend must reach
	FDLeakMin           int     // descriptors above baseline that count as a leak
	DiskMinFreeKB       int     // per filesystem (flash state, RAM run)
	StackWarnKB         int
	GoroutineWarn       int
	WorkerGoroutineWarn int
	OSThreadWarn        int // OS threads of the process
	SIPErrorsWarn       int // per hour
	ProbeFailuresWarn   int // per hour
	FetchFailuresWarn   int // per hour
	Watchdog            bool
}

// Fetcher holds the directory fetcher's settings (section "fetcher").
type Fetcher struct {
	Servers  []string
	Interval int // seconds
	Timeout  int // seconds, connect and read
	MaxKB    int
	XMLPath  string // relative to www_dir unless absolute
}

// Monitor holds the mesh monitor's settings (section "monitor").
type Monitor struct {
	Targets           []string
	Interval          int // seconds
	ProbeTimeoutMS    int
	JitterThresholdMS int
	ProbePhones       bool
}

type kind int

const (
	kBool kind = iota
	kInt
	kFloat
	kString
	kList
)

type field struct {
	section, option string
	kind            kind
	def             string
	min, max        float64
	ptr             func(*Config) any
	doc             string
	// check, when set, validates a value beyond its type (addresses).
	check func(string) error
}

// Sections maps each section name to its UCI type.
var Sections = map[string]string{
	"main": "phonebook", "sip": "sip", "health": "software_health", "fetcher": "fetcher", "monitor": "monitor",
	"metrics": "metrics", "reporter": "reporter",
}

func fields() []field {
	return []field{
		{"main", "state_dir", kString, "/etc/phonebook", 0, 0, func(c *Config) any { return &c.Main.StateDir }, "flash directory for the crash history and the last good phonebook", checkAbsPath},
		{"main", "run_dir", kString, "/tmp/phonebook", 0, 0, func(c *Config) any { return &c.Main.RunDir }, "RAM directory for the run marker, crash output and restart count", checkAbsPath},
		{"main", "www_dir", kString, "/www", 0, 0, func(c *Config) any { return &c.Main.WWWDir }, "web root", checkAbsPath},
		{"main", "apps_dir", kString, "/tmp/apps/phonebook", 0, 0, func(c *Config) any { return &c.Main.AppsDir }, "RAM directory of the app launcher badge", checkAbsPath},
		{"main", "ubus", kString, "auto", 0, 0, func(c *Config) any { return &c.Main.Ubus }, "publish on ubus: auto (when ubusd is there), 1 or 0", CheckBus},
		{"main", "dbus", kString, "auto", 0, 0, func(c *Config) any { return &c.Main.DBus }, "publish on D-Bus as org.aredn.Phonebook1: auto (when a system bus is there), 1 or 0", CheckBus},
		{"main", "dbus_address", kString, "", 0, 0, func(c *Config) any { return &c.Main.DBusAddress }, "D-Bus address; empty is the system bus", checkDBusAddress},
		{"main", "dbus_max_calls", kInt, "4", 1, 64, func(c *Config) any { return &c.Main.DBusMaxCalls }, "D-Bus method calls answered at once; past it a call gets LimitsExceeded and counts as shed (applied at start)", nil},

		{"sip", "listen", kString, "0.0.0.0:5060", 0, 0, func(c *Config) any { return &c.SIP.Listen }, "UDP/TCP address of the registrar/proxy (IP:port; 0.0.0.0 every interface)", checkListen},
		{"sip", "max_bindings", kInt, "256", 1, 100000, func(c *Config) any { return &c.SIP.MaxBindings }, "registered users kept at most; past it a new phone's REGISTER gets 503", nil},
		{"sip", "max_contacts", kInt, "4", 1, 16, func(c *Config) any { return &c.SIP.MaxContacts }, "bindings per user; past it the one refreshed longest ago gives way", nil},
		{"sip", "default_expires", kInt, "3600", 60, 86400, func(c *Config) any { return &c.SIP.DefaultExpires }, "binding lifetime when a phone asks for none", nil},
		{"sip", "min_expires", kInt, "60", 1, 3600, func(c *Config) any { return &c.SIP.MinExpires }, "shortest binding accepted; shorter gets 423 with Min-Expires", nil},
		{"sip", "dns_suffix", kString, "local.mesh", 0, 0, func(c *Config) any { return &c.SIP.DNSSuffix }, "callee host when not registered: <number>.<suffix>", checkHostName},
		{"sip", "max_transactions", kInt, "128", 1, 4096, func(c *Config) any { return &c.SIP.MaxTransactions }, "proxied INVITE transactions open at once; past it 503", nil},
		{"sip", "max_calls", kInt, "64", 1, 4096, func(c *Config) any { return &c.SIP.MaxCalls }, "active calls; past it a new INVITE gets 503", nil},
		{"sip", "max_transactions_per_source", kInt, "32", 1, 4096, func(c *Config) any { return &c.SIP.MaxTransactionsPerSource }, "proxied INVITE transactions one source address may hold open; past it 503 (at most max_transactions)", nil},
		{"sip", "max_calls_per_source", kInt, "16", 1, 4096, func(c *Config) any { return &c.SIP.MaxCallsPerSource }, "active calls one source address may hold; past it a new INVITE gets 503 (at most max_calls)", nil},
		{"sip", "timer_t1_ms", kInt, "500", 10, 5000, func(c *Config) any { return &c.SIP.TimerT1MS }, "RFC 3261 T1 (round-trip estimate); transactions end after 64*T1", nil},
		{"sip", "timer_c", kInt, "180", 1, 600, func(c *Config) any { return &c.SIP.TimerC }, "seconds a forwarded INVITE may ring before it is cancelled and answered 408 (RFC 3261 wants more than 180); provisional answers extend it to at most twice this", nil},
		{"sip", "max_message_size", kInt, "8192", 1500, 65535, func(c *Config) any { return &c.SIP.MaxMessageSize }, "largest SIP message read; larger gets 513", nil},
		{"sip", "tcp_max_connections", kInt, "64", 0, 4096, func(c *Config) any { return &c.SIP.TCPMaxConnections }, "SIP over TCP connections at once (0: no TCP); past it refused", nil},
		{"sip", "tcp_idle_timeout", kInt, "120", 1, 86400, func(c *Config) any { return &c.SIP.TCPIdleTimeout }, "seconds a TCP connection may stay without a message", nil},
		{"sip", "tcp_readers", kInt, "4", 1, 64, func(c *Config) any { return &c.SIP.TCPReaders }, "goroutines reading SIP over TCP connections at once; a reload applies it to the next hand-off", nil},
		{"sip", "tcp_write_timeout", kInt, "2", 1, 60, func(c *Config) any { return &c.SIP.TCPWriteTimeout }, "seconds what waits for a TCP peer may pass without the peer taking a byte before the connection is given up (a peer that reads, however slowly, is kept)", nil},
		{"sip", "tcp_header_timeout", kInt, "10", 1, 300, func(c *Config) any { return &c.SIP.TCPHeaderTimeout }, "seconds a message's header may take to arrive over TCP", nil},

		{"health", "enabled", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.Enabled }, "software health monitoring on or off", nil},
		{"health", "crash_reporting", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.CrashReporting }, "keep crash records on flash", nil},
		{"health", "thread_monitoring", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.ThreadMonitoring }, "heartbeat deadlines and restarts of workers", nil},
		{"health", "memory_leak_detection", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.MemoryLeakDetection }, "memory and descriptor leak detection", nil},
		{"health", "health_endpoint", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.HealthEndpoint }, "serve /cgi-bin/healthcheck", nil},
		{"health", "health_check_interval", kInt, "60", 1, 86400, func(c *Config) any { return &c.Health.HealthCheckInterval }, "seconds between health evaluations", nil},
		{"health", "history_step", kInt, "60", 10, 3600, func(c *Config) any { return &c.Health.HistoryStep }, "seconds between points of the in-RAM history (phonebook.health history)", nil},
		{"health", "history_points", kInt, "1440", 10, 10080, func(c *Config) any { return &c.Health.HistoryPoints }, "history points kept in RAM (1440 at 60 s is 24 h, about 60 KB)", nil},
		{"health", "crash_history_days", kInt, "7", 1, 3650, func(c *Config) any { return &c.Health.CrashHistoryDays }, "days of crash records kept", nil},
		{"health", "crash_history_max", kInt, "50", 1, 1000, func(c *Config) any { return &c.Health.CrashHistoryMax }, "crash records kept at most", nil},
		{"health", "max_restart_attempts", kInt, "3", 0, 1000, func(c *Config) any { return &c.Health.MaxRestartAttempts }, "worker restarts inside restart_window before it is failed", nil},
		{"health", "restart_window", kInt, "600", 1, 86400, func(c *Config) any { return &c.Health.RestartWindow }, "seconds in which worker restarts are counted", nil},
		{"health", "crash_coalesce", kInt, "600", 0, 86400, func(c *Config) any { return &c.Health.CrashCoalesce }, "seconds within which crash records share one flash write", nil},
		{"health", "memory_limit_mb", kInt, "0", 0, 4096, func(c *Config) any { return &c.Health.MemoryLimitMB }, "Go memory limit in MB; 0 derives it from the RAM (memory_limit_share, _min_mb, _max_mb); GOMEMLIMIT in the environment wins", nil},
		{"health", "memory_limit_share", kInt, "8", 1, 64, func(c *Config) any { return &c.Health.MemoryLimitShare }, "the derived memory limit is the RAM divided by this", nil},
		{"health", "memory_limit_min_mb", kInt, "8", 1, 4096, func(c *Config) any { return &c.Health.MemoryLimitMinMB }, "the derived memory limit's floor (MB)", nil},
		{"health", "memory_limit_max_mb", kInt, "64", 1, 4096, func(c *Config) any { return &c.Health.MemoryLimitMaxMB }, "the derived memory limit's ceiling (MB; below the floor, the floor)", nil},
		{"health", "gc_percent", kInt, "50", 10, 1000, func(c *Config) any { return &c.Health.GCPercent }, "GOGC: heap growth over the live heap before a collection, in percent (minimum goal 4 MB x this/100); GOGC in the environment wins", nil},
		{"health", "scavenge_interval", kInt, "10", 1, 3600, func(c *Config) any { return &c.Health.ScavengeInterval }, "seconds between the scavenger's looks at the heap (free memory given back after a load, idle garbage collected)", nil},
		{"health", "code_pageout", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.CodePageOut }, "page the executable's code out after start-up and after a load (0: never; each page used again is read back from flash)", nil},
		{"health", "leak_warmup", kInt, "300", 0, 86400, func(c *Config) any { return &c.Health.LeakWarmup }, "seconds after start before the memory baseline is taken", nil},
		{"health", "leak_window", kInt, "1800", 60, 604800, func(c *Config) any { return &c.Health.LeakWindow }, "seconds of samples the leak trend is fitted over", nil},
		{"health", "leak_growth_factor", kFloat, "1.5", 1.01, 100, func(c *Config) any { return &c.Health.LeakGrowthFactor }, "growth over the baseline that, still rising, is a leak", nil},
		{"health", "leak_min_slope_kb", kInt, "256", 1, 1 << 20, func(c *Config) any { return &c.Health.LeakMinSlopeKB }, "KiB per hour of steady growth that is a leak", nil},
		{"health", "leak_min_fit", kFloat, "0.8", 0, 1, func(c *Config) any { return &c.Health.LeakMinFit }, "R squared the growth trend must reach", nil},
		{"health", "fd_leak_min", kInt, "8", 1, 100000, func(c *Config) any { return &c.Health.FDLeakMin }, "descriptors above baseline, still rising, that are a leak", nil},
		{"health", "disk_min_free_kb", kInt, "256", 0, 1 << 30, func(c *Config) any { return &c.Health.DiskMinFreeKB }, "free KiB each of the state and run filesystems needs", nil},
		{"health", "stack_warn_kb", kInt, "4096", 1, 1 << 20, func(c *Config) any { return &c.Health.StackWarnKB }, "total goroutine stack KiB that raises a warning", nil},
		{"health", "goroutine_warn", kInt, "1000", 1, 1 << 20, func(c *Config) any { return &c.Health.GoroutineWarn }, "goroutines that raise a warning", nil},
		{"health", "worker_goroutine_warn", kInt, "200", 1, 1 << 20, func(c *Config) any { return &c.Health.WorkerGoroutineWarn }, "goroutines of one worker that raise a warning", nil},
		{"health", "os_thread_warn", kInt, "32", 1, 1 << 14, func(c *Config) any { return &c.Health.OSThreadWarn }, "OS threads of the process that raise a warning", nil},
		{"health", "sip_errors_warn", kInt, "100", 1, 1 << 30, func(c *Config) any { return &c.Health.SIPErrorsWarn }, "SIP errors per hour that raise a warning", nil},
		{"health", "probe_failures_warn", kInt, "30", 1, 1 << 30, func(c *Config) any { return &c.Health.ProbeFailuresWarn }, "probe failures per hour that raise a warning", nil},
		{"health", "fetch_failures_warn", kInt, "3", 1, 1 << 30, func(c *Config) any { return &c.Health.FetchFailuresWarn }, "fetch failures per hour that raise a warning", nil},
		{"health", "watchdog", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.Watchdog }, "re-arm procd's watchdog while healthy", nil},

		{"fetcher", "server", kList, "", 0, 0, func(c *Config) any { return &c.Fetcher.Servers }, "phonebook CSV URLs, tried in order", checkHTTPURL},
		{"fetcher", "interval", kInt, "3600", 300, 604800, func(c *Config) any { return &c.Fetcher.Interval }, "seconds between fetches", nil},
		{"fetcher", "timeout", kInt, "20", 1, 600, func(c *Config) any { return &c.Fetcher.Timeout }, "seconds to connect and to read", nil},
		{"fetcher", "max_kb", kInt, "1024", 1, 65536, func(c *Config) any { return &c.Fetcher.MaxKB }, "largest CSV accepted", nil},
		{"fetcher", "xml_path", kString, "arednstack/phonebook_generic_direct.xml", 0, 0, func(c *Config) any { return &c.Fetcher.XMLPath }, "published directory, under www_dir", checkWebPath},

		{"monitor", "target", kList, "", 0, 0, func(c *Config) any { return &c.Monitor.Targets }, "mesh hosts probed with SIP OPTIONS (host or host:port)", checkHostPort},
		{"monitor", "interval", kInt, "60", 5, 86400, func(c *Config) any { return &c.Monitor.Interval }, "seconds between probe rounds", nil},
		{"monitor", "probe_timeout_ms", kInt, "2000", 10, 60000, func(c *Config) any { return &c.Monitor.ProbeTimeoutMS }, "milliseconds a probe may take", nil},
		{"monitor", "jitter_threshold_ms", kInt, "50", 1, 60000, func(c *Config) any { return &c.Monitor.JitterThresholdMS }, "jitter that raises an alert", nil},
		{"metrics", "listen", kString, "", 0, 0, func(c *Config) any { return &c.Metrics.Listen }, "Prometheus /metrics listener (IP:port, never on sip.listen's port); empty is off (AREDN serves /metrics itself)", checkListen},
		{"metrics", "max_connections", kInt, "4", 1, 64, func(c *Config) any { return &c.Metrics.MaxConnections }, "scrapes served at once; past it the connection is refused", nil},
		{"metrics", "max_connections_per_source", kInt, "2", 1, 64, func(c *Config) any { return &c.Metrics.MaxConnectionsPerSource }, "connections one source address may hold; past it refused, and a source holding more gives way to another's scrape", nil},
		{"metrics", "request_timeout", kInt, "2", 1, 60, func(c *Config) any { return &c.Metrics.RequestTimeout }, "seconds a whole request may take to arrive; a slower client is cut off", nil},

		{"reporter", "url", kString, "", 0, 0, func(c *Config) any { return &c.Reporter.URL }, "collector URL the agent health report is POSTed to (http://); empty is off", checkHTTPURL},
		{"reporter", "interval", kInt, "300", 10, 86400, func(c *Config) any { return &c.Reporter.Interval }, "seconds between reports (and one at once on a change of status)", nil},
		{"reporter", "queue", kInt, "32", 1, 1024, func(c *Config) any { return &c.Reporter.Queue }, "reports kept in RAM while the collector is unreachable; past it the oldest is dropped and counted", nil},
		{"reporter", "timeout", kInt, "10", 1, 300, func(c *Config) any { return &c.Reporter.Timeout }, "seconds a POST may take", nil},
		{"reporter", "node", kString, "", 0, 0, func(c *Config) any { return &c.Reporter.Node }, "node name in the report; empty is the host name", checkHostName},

		{"monitor", "probe_phones", kBool, "1", 0, 0, func(c *Config) any { return &c.Monitor.ProbePhones }, "probe registered phones too", nil},
	}
}

// FieldError is a setting whose value was rejected; the previous good value
// (or the default) stays in force.
type FieldError struct {
	Path  string // phonebook.<section>.<option>
	Value string
	Want  string
}

// Error names the setting and its value, with the credentials of a URL
// (user:password@) redacted: the text goes to the log, config_errors and
// a health condition.
func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: invalid value %q: want %s", e.Path, httpc.Redact(e.Value), e.Want)
}

// Defaults returns the configuration with every default applied.
func Defaults() Config {
	var c Config
	for _, f := range fields() {
		if err := f.set(&c, f.def); err != nil {
			panic(fmt.Sprintf("config: default of %s.%s: %v", f.section, f.option, err))
		}
	}
	return c
}

// set parses text into the field's place in c. A value that fails its
// type or its check leaves c unchanged: nothing is written before every
// check has passed.
func (f field) set(c *Config, text string) error {
	switch p := f.ptr(c).(type) {
	case *bool:
		switch text {
		case "1", "on", "true", "yes", "enabled":
			*p = true
		case "0", "off", "false", "no", "disabled":
			*p = false
		default:
			return errors.New("a boolean (1/0, on/off, true/false, yes/no)")
		}
	case *int:
		n, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
		if err != nil || float64(n) < f.min || float64(n) > f.max {
			return fmt.Errorf("an integer from %d to %d", int64(f.min), int64(f.max))
		}
		*p = int(n)
	case *float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
		if err != nil || math.IsNaN(x) || x < f.min || x > f.max {
			return fmt.Errorf("a number from %g to %g", f.min, f.max)
		}
		*p = x
	case *string:
		if text == "" && f.def == "" { // optional: empty is off
			*p = ""
			return nil
		}
		if text == "" {
			return errors.New("a non-empty string")
		}
		if err := checkPrintable(text); err != nil {
			return err
		}
		if f.check != nil {
			if err := f.check(text); err != nil {
				return err
			}
		}
		*p = text
	case *[]string:
		if text == "" {
			*p = nil
			return nil
		}
		if err := checkPrintable(text); err != nil {
			return err
		}
		if f.check != nil {
			if err := f.check(text); err != nil {
				return err
			}
		}
		*p = append(*p, text)
	}
	return nil
}

// checkPrintable refuses control characters (newline, tab, carriage
// return, NUL...) in a string setting. UCI carries them (a quoted value
// may span lines), but no path, address or name the daemon uses has
// one: such a value is a mistake in the file.
func checkPrintable(v string) error {
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("text without control characters (found %q)", r)
		}
	}
	return nil
}

// checkAbsPath accepts an absolute path: the daemon's directories must
// not depend on the directory it was started from.
func checkAbsPath(v string) error {
	if !strings.HasPrefix(v, "/") {
		return errors.New("an absolute path such as /tmp/phonebook")
	}
	return nil
}

// checkWebPath accepts an absolute path or one relative to www_dir that
// stays under it.
func checkWebPath(v string) error {
	if strings.HasPrefix(v, "/") {
		return nil
	}
	for _, part := range strings.Split(v, "/") {
		if part == ".." {
			return errors.New("a path under www_dir (no ..) or an absolute path")
		}
	}
	return nil
}

// checkDBusAddress accepts a D-Bus server address list as the D-Bus
// specification writes it: transport:key=value,... separated by ';'.
func checkDBusAddress(v string) error {
	bad := errors.New("a D-Bus address such as unix:path=/run/dbus/system_bus_socket")
	for _, a := range strings.Split(v, ";") {
		if a == "" {
			continue
		}
		transport, params, ok := strings.Cut(a, ":")
		if !ok || transport == "" {
			return bad
		}
		for _, r := range transport {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return bad
			}
		}
		if params == "" {
			continue
		}
		for _, kv := range strings.Split(params, ",") {
			if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
				return bad
			}
		}
	}
	return nil
}

// checkListen accepts IP:port (0.0.0.0 or :: for every interface; port
// 0 for any free port, as tests use); a host name would need DNS at
// start, which the mesh may not have yet.
func checkListen(v string) error {
	if _, err := netip.ParseAddrPort(v); err != nil {
		return errors.New("an IP address and port, such as 0.0.0.0:5060")
	}
	return nil
}

// CheckBus accepts the tri-state of a bus choice (main.ubus, main.dbus,
// and the daemon's -ubus and -dbus flags).
func CheckBus(v string) error {
	switch v {
	case "auto", "1", "0":
		return nil
	}
	return errors.New("auto, 1 or 0")
}

// checkHostName accepts a DNS name (letters, digits, '-', '.').
func checkHostName(v string) error {
	for _, label := range strings.Split(v, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return errors.New("a DNS name such as local.mesh")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return errors.New("a DNS name such as local.mesh")
			}
		}
	}
	return nil
}

// checkHostPort accepts host or host:port (an IP or a DNS name).
func checkHostPort(v string) error {
	host, port := v, ""
	if h, p, err := net.SplitHostPort(v); err == nil {
		host, port = h, p
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return errors.New("host or host:port with a port from 1 to 65535")
		}
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if checkHostName(host) != nil {
		return errors.New("host or host:port (an IP address or a DNS name)")
	}
	return nil
}

// checkHTTPURL accepts http://host[:port]/path (the mesh carries plain
// HTTP; encryption is not permitted on amateur radio).
func checkHTTPURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.User != nil {
		return errors.New("an http:// URL such as http://server.local.mesh/phonebook.csv")
	}
	return checkHostPort(u.Host)
}

// Load reads settings from a parsed package. A missing option takes its
// default. A rejected one is reported and leaves the value that was in
// force before: the previous good configuration on reload (prev), the
// default at start (prev nil). The rule is per option: a list with one
// rejected value keeps its whole previous value, never a part of the new.
func Load(pkg *uci.Package, prev *Config) (Config, []error) {
	c := Defaults()
	var errs []error
	if pkg == nil {
		return c, nil
	}
	base := Defaults()
	if prev != nil {
		base = *prev
	}
	for name, typ := range Sections {
		if s := pkg.Section(name); s != nil && s.Type != typ {
			errs = append(errs, fmt.Errorf("%s.%s: section type %q, want %q", Package, name, s.Type, typ))
		}
	}
	for _, f := range fields() {
		s := pkg.Section(f.section)
		if s == nil {
			continue
		}
		o := s.Option(f.option)
		if o == nil {
			continue
		}
		values := []string{o.Value}
		if o.IsList {
			values = o.Values
		}
		if f.kind != kList && len(values) > 1 {
			values = values[len(values)-1:]
		}
		// Parse into a scratch copy; only a wholly accepted option
		// reaches c.
		scratch := c
		if f.kind == kList {
			*(f.ptr(&scratch).(*[]string)) = nil
		}
		rejected := false
		for _, v := range values {
			if err := f.set(&scratch, v); err != nil {
				path := fmt.Sprintf("%s.%s.%s", Package, f.section, f.option)
				errs = append(errs, &FieldError{Path: path, Value: v, Want: err.Error()})
				rejected = true
			}
		}
		if rejected {
			copyField(f, &c, &base)
		} else {
			copyField(f, &c, &scratch)
		}
	}
	if err := checkMetricsListen(c.Metrics.Listen, c.SIP.Listen); err != nil {
		errs = append(errs, &FieldError{Path: Package + ".metrics.listen", Value: c.Metrics.Listen, Want: err.Error()})
		c.Metrics.Listen = "" // off: the previous value may collide with the new sip.listen too
		if prev != nil && checkMetricsListen(prev.Metrics.Listen, c.SIP.Listen) == nil {
			c.Metrics.Listen = prev.Metrics.Listen
		}
	}
	return c, errs
}

// checkMetricsListen rejects a metrics.listen that would take SIP's TCP
// port: the same port on the same address or on addresses that overlap
// (a wildcard, 0.0.0.0 for IPv4 or the dual-stack [::], takes the port on
// every address of its family). Port 0 (any free port) never collides.
func checkMetricsListen(metrics, sip string) error {
	m, err1 := netip.ParseAddrPort(metrics)
	s, err2 := netip.ParseAddrPort(sip)
	if err1 != nil || err2 != nil || m.Port() == 0 || m.Port() != s.Port() {
		return nil
	}
	a, b := m.Addr().Unmap(), s.Addr().Unmap()
	overlap := a == b ||
		a.IsUnspecified() && (a.Is6() || b.Is4()) ||
		b.IsUnspecified() && (b.Is6() || a.Is4())
	if overlap {
		return fmt.Errorf("an IP:port other than phonebook.sip.listen %s (the same port on an overlapping address takes SIP's TCP port)", sip)
	}
	return nil
}

func copyField(f field, dst, src *Config) {
	switch p := f.ptr(dst).(type) {
	case *bool:
		*p = *f.ptr(src).(*bool)
	case *int:
		*p = *f.ptr(src).(*int)
	case *float64:
		*p = *f.ptr(src).(*float64)
	case *string:
		*p = *f.ptr(src).(*string)
	case *[]string:
		*p = append([]string(nil), *f.ptr(src).(*[]string)...)
	}
}

// LoadStore reads the package from a UCI store (saved, uncommitted changes
// included, as libuci loads it). A missing file means defaults.
func LoadStore(st uci.Store, prev *Config) (Config, []error) {
	l, err := st.Load(Package)
	if errors.Is(err, fs.ErrNotExist) {
		return Load(nil, prev)
	}
	if err != nil {
		base := Defaults()
		if prev != nil {
			base = *prev
		}
		return base, []error{err}
	}
	return Load(l.Package, prev)
}

// Option describes one setting for documentation.
type Option struct {
	Path    string // phonebook.<section>.<option>
	Default string
	Doc     string
}

// Options lists every setting with its default and meaning.
func Options() []Option {
	var out []Option
	for _, f := range fields() {
		out = append(out, Option{Path: Package + "." + f.section + "." + f.option, Default: f.def, Doc: f.doc})
	}
	return out
}
