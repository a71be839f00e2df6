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
	"strconv"
	"strings"

	"github.com/aredn/phonebookd/uci"
)

// Package is the UCI package name.
const Package = "phonebook"

// Config is the daemon's complete configuration.
type Config struct {
	Main    Main
	SIP     SIP
	Health  Health
	Fetcher Fetcher
	Monitor Monitor
}

// Main holds the paths (section "main", type "phonebook"). Every file the
// daemon touches lives under one of them, so a test can relocate all.
type Main struct {
	StateDir string // flash: crash history, last good phonebook
	RunDir   string // RAM: run marker, crash output, restart count
	WWWDir   string // web root: published directory, CGI data
	AppsDir  string // RAM: the AREDN app launcher's badge
}

// SIP holds the registrar/proxy settings (section "sip").
type SIP struct {
	Listen         string
	MaxBindings    int
	DefaultExpires int
	DNSSuffix      string
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
	CrashHistoryDays    int
	CrashHistoryMax     int
	MaxRestartAttempts  int
	RestartWindow       int     // seconds in which restarts are counted
	CrashCoalesce       int     // seconds: crash records closer than this are merged
	MemoryLimitMB       int     // 0: no Go memory limit
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
}

// Sections maps each section name to its UCI type.
var Sections = map[string]string{
	"main": "phonebook", "sip": "sip", "health": "software_health", "fetcher": "fetcher", "monitor": "monitor",
}

func fields() []field {
	return []field{
		{"main", "state_dir", kString, "/etc/phonebook", 0, 0, func(c *Config) any { return &c.Main.StateDir }, "flash directory for the crash history and the last good phonebook"},
		{"main", "run_dir", kString, "/tmp/phonebook", 0, 0, func(c *Config) any { return &c.Main.RunDir }, "RAM directory for the run marker, crash output and restart count"},
		{"main", "www_dir", kString, "/www", 0, 0, func(c *Config) any { return &c.Main.WWWDir }, "web root"},
		{"main", "apps_dir", kString, "/tmp/apps/phonebook", 0, 0, func(c *Config) any { return &c.Main.AppsDir }, "RAM directory of the app launcher badge"},

		{"sip", "listen", kString, "0.0.0.0:5060", 0, 0, func(c *Config) any { return &c.SIP.Listen }, "UDP/TCP address of the registrar/proxy"},
		{"sip", "max_bindings", kInt, "256", 1, 100000, func(c *Config) any { return &c.SIP.MaxBindings }, "registrations kept at most; past it REGISTER gets 503"},
		{"sip", "default_expires", kInt, "3600", 60, 86400, func(c *Config) any { return &c.SIP.DefaultExpires }, "binding lifetime when a phone asks for none"},
		{"sip", "dns_suffix", kString, "local.mesh", 0, 0, func(c *Config) any { return &c.SIP.DNSSuffix }, "callee host when not registered: <number>.<suffix>"},

		{"health", "enabled", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.Enabled }, "software health monitoring on or off"},
		{"health", "crash_reporting", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.CrashReporting }, "keep crash records on flash"},
		{"health", "thread_monitoring", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.ThreadMonitoring }, "heartbeat deadlines and restarts of workers"},
		{"health", "memory_leak_detection", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.MemoryLeakDetection }, "memory and descriptor leak detection"},
		{"health", "health_endpoint", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.HealthEndpoint }, "serve /cgi-bin/healthcheck"},
		{"health", "health_check_interval", kInt, "60", 1, 86400, func(c *Config) any { return &c.Health.HealthCheckInterval }, "seconds between health evaluations"},
		{"health", "crash_history_days", kInt, "7", 1, 3650, func(c *Config) any { return &c.Health.CrashHistoryDays }, "days of crash records kept"},
		{"health", "crash_history_max", kInt, "50", 1, 1000, func(c *Config) any { return &c.Health.CrashHistoryMax }, "crash records kept at most"},
		{"health", "max_restart_attempts", kInt, "3", 0, 1000, func(c *Config) any { return &c.Health.MaxRestartAttempts }, "worker restarts inside restart_window before it is failed"},
		{"health", "restart_window", kInt, "600", 1, 86400, func(c *Config) any { return &c.Health.RestartWindow }, "seconds in which worker restarts are counted"},
		{"health", "crash_coalesce", kInt, "600", 0, 86400, func(c *Config) any { return &c.Health.CrashCoalesce }, "seconds within which crash records share one flash write"},
		{"health", "memory_limit_mb", kInt, "0", 0, 4096, func(c *Config) any { return &c.Health.MemoryLimitMB }, "Go memory limit (0: none)"},
		{"health", "leak_warmup", kInt, "300", 0, 86400, func(c *Config) any { return &c.Health.LeakWarmup }, "seconds after start before the memory baseline is taken"},
		{"health", "leak_window", kInt, "1800", 60, 604800, func(c *Config) any { return &c.Health.LeakWindow }, "seconds of samples the leak trend is fitted over"},
		{"health", "leak_growth_factor", kFloat, "1.5", 1.01, 100, func(c *Config) any { return &c.Health.LeakGrowthFactor }, "growth over the baseline that, still rising, is a leak"},
		{"health", "leak_min_slope_kb", kInt, "256", 1, 1 << 20, func(c *Config) any { return &c.Health.LeakMinSlopeKB }, "KiB per hour of steady growth that is a leak"},
		{"health", "leak_min_fit", kFloat, "0.8", 0, 1, func(c *Config) any { return &c.Health.LeakMinFit }, "R squared the growth trend must reach"},
		{"health", "fd_leak_min", kInt, "8", 1, 100000, func(c *Config) any { return &c.Health.FDLeakMin }, "descriptors above baseline, still rising, that are a leak"},
		{"health", "disk_min_free_kb", kInt, "256", 0, 1 << 30, func(c *Config) any { return &c.Health.DiskMinFreeKB }, "free KiB each of the state and run filesystems needs"},
		{"health", "stack_warn_kb", kInt, "4096", 1, 1 << 20, func(c *Config) any { return &c.Health.StackWarnKB }, "total goroutine stack KiB that raises a warning"},
		{"health", "goroutine_warn", kInt, "1000", 1, 1 << 20, func(c *Config) any { return &c.Health.GoroutineWarn }, "goroutines that raise a warning"},
		{"health", "worker_goroutine_warn", kInt, "200", 1, 1 << 20, func(c *Config) any { return &c.Health.WorkerGoroutineWarn }, "goroutines of one worker that raise a warning"},
		{"health", "sip_errors_warn", kInt, "100", 1, 1 << 30, func(c *Config) any { return &c.Health.SIPErrorsWarn }, "SIP errors per hour that raise a warning"},
		{"health", "probe_failures_warn", kInt, "30", 1, 1 << 30, func(c *Config) any { return &c.Health.ProbeFailuresWarn }, "probe failures per hour that raise a warning"},
		{"health", "fetch_failures_warn", kInt, "3", 1, 1 << 30, func(c *Config) any { return &c.Health.FetchFailuresWarn }, "fetch failures per hour that raise a warning"},
		{"health", "watchdog", kBool, "1", 0, 0, func(c *Config) any { return &c.Health.Watchdog }, "re-arm procd's watchdog while healthy"},

		{"fetcher", "server", kList, "", 0, 0, func(c *Config) any { return &c.Fetcher.Servers }, "phonebook CSV URLs, tried in order"},
		{"fetcher", "interval", kInt, "3600", 300, 604800, func(c *Config) any { return &c.Fetcher.Interval }, "seconds between fetches"},
		{"fetcher", "timeout", kInt, "20", 1, 600, func(c *Config) any { return &c.Fetcher.Timeout }, "seconds to connect and to read"},
		{"fetcher", "max_kb", kInt, "1024", 1, 65536, func(c *Config) any { return &c.Fetcher.MaxKB }, "largest CSV accepted"},
		{"fetcher", "xml_path", kString, "arednstack/phonebook_generic_direct.xml", 0, 0, func(c *Config) any { return &c.Fetcher.XMLPath }, "published directory, under www_dir"},

		{"monitor", "target", kList, "", 0, 0, func(c *Config) any { return &c.Monitor.Targets }, "mesh hosts probed with SIP OPTIONS"},
		{"monitor", "interval", kInt, "60", 5, 86400, func(c *Config) any { return &c.Monitor.Interval }, "seconds between probe rounds"},
		{"monitor", "probe_timeout_ms", kInt, "2000", 10, 60000, func(c *Config) any { return &c.Monitor.ProbeTimeoutMS }, "milliseconds a probe may take"},
		{"monitor", "jitter_threshold_ms", kInt, "50", 1, 60000, func(c *Config) any { return &c.Monitor.JitterThresholdMS }, "jitter that raises an alert"},
		{"monitor", "probe_phones", kBool, "1", 0, 0, func(c *Config) any { return &c.Monitor.ProbePhones }, "probe registered phones too"},
	}
}

// FieldError is a setting whose value was rejected; the previous good value
// (or the default) stays in force.
type FieldError struct {
	Path  string // phonebook.<section>.<option>
	Value string
	Want  string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: invalid value %q: want %s", e.Path, e.Value, e.Want)
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

// set parses text into the field's place in c.
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
		if text == "" {
			return errors.New("a non-empty string")
		}
		*p = text
	case *[]string:
		if text == "" {
			*p = nil
		} else {
			*p = append(*p, text)
		}
	}
	return nil
}

// Load reads settings from a parsed package. A missing option takes its
// default; a bad one keeps its value in prev (the previous good
// configuration on reload, nil at start: the default) and is reported.
func Load(pkg *uci.Package, prev *Config) (Config, []error) {
	c := Defaults()
	var errs []error
	if pkg == nil {
		return c, nil
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
		if f.kind == kList {
			*(f.ptr(&c).(*[]string)) = nil
		} else if len(values) > 1 {
			values = values[len(values)-1:]
		}
		for _, v := range values {
			if err := f.set(&c, v); err != nil {
				path := fmt.Sprintf("%s.%s.%s", Package, f.section, f.option)
				errs = append(errs, &FieldError{Path: path, Value: v, Want: err.Error()})
				if prev != nil {
					copyField(f, &c, prev)
				}
			}
		}
	}
	return c, errs
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
