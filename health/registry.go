package health

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Descriptor is the static description of one family of conditions: an
// instance is "code" or "code:key" (a worker, a target). Owners raise
// instances with a message; the descriptor alone decides penalty, which
// conditions hide it, how long it must last to be shown and how many of
// its instances are shown, so that the table below is the whole rule
// (docs/HEALTH.md is generated from it).
type Descriptor struct {
	Code    string
	Level   string // LevelWarning, LevelCritical, or LevelEssential
	Penalty int    // per instance shown
	// DependsOn: while a condition of one of these families is shown,
	// this one is hidden: the root cause shows, not its echoes.
	DependsOn []*Descriptor
	// VisibleAfter: shown only once it has lasted this long, so that a
	// blip does not alarm anyone.
	VisibleAfter time.Duration
	// MaxShown instances are shown; the rest become one "and N more"
	// alert without penalty (0: DefaultMaxShown).
	MaxShown int
	// Hold keeps a condition raised from counters (shedding, a full
	// table) shown this long after it was last raised, so that a scrape
	// every 15-60 s sees it and its since does not reset at each burst.
	Hold time.Duration
	// Settle keeps a condition from a worker's state (blocked, failed,
	// unresponsive, restarting) raised, with its first since, until the
	// worker has run well this long: retries do not make it flap.
	Settle time.Duration
	When   string // documentation: when it is raised
	// Text writes the alert from the instance's arguments, Recommend
	// what the operator should do about it: the words are the
	// descriptor's, the figures the owner's.
	Text      func(Args) string
	Recommend func(Args) string
}

// Arg names an argument of a condition instance.
type Arg string

// Args are a condition instance's arguments: its key and the figures its
// text is written from.
type Args map[Arg]string

// The arguments the descriptors' texts use.
const (
	ArgKey    Arg = "key"    // the instance: a worker, a target (filled in by SetUnhealthy)
	ArgError  Arg = "error"  // what went wrong, as the owner saw it
	ArgCount  Arg = "count"  // how many
	ArgLimit  Arg = "limit"  // the setting it is compared with
	ArgTotal  Arg = "total"  // out of how many
	ArgWhat   Arg = "what"   // which quantity, filesystem or kind
	ArgPath   Arg = "path"   // a file or directory
	ArgFrom   Arg = "from"   // a figure before
	ArgTo     Arg = "to"     // and after
	ArgDetail Arg = "detail" // further figures
)

// sprintf writes a text from arguments: each %s takes the named argument.
func sprintf(format string, names ...Arg) func(Args) string {
	return func(a Args) string {
		vals := make([]any, len(names))
		for i, n := range names {
			vals[i] = a[n]
		}
		return fmt.Sprintf(format, vals...)
	}
}

// LevelEssential: critical for an essential worker, else a warning.
const LevelEssential = "critical if essential, else warning"

// DefaultMaxShown bounds the instances of a family shown at once.
const DefaultMaxShown = 5

// maxExternal bounds the conditions other parts of the daemon may hold
// raised at once; the family caps bound what is shown of them.
const maxExternal = 256

// workerSettle is how long a worker must run well before a condition
// of its state clears: longer than a retry of a blocked worker takes to
// fail again (a bind), short enough that a recovered worker is soon
// shown healthy.
const workerSettle = 15 * time.Second

// counterHold is how long a condition raised from counters stays shown
// after its last event.
const counterHold = time.Minute

// The registry: every condition the daemon raises, as a handle its
// owner passes to SetUnhealthy and SetHealthy; a code that is not here
// cannot be raised (the compiler checks it). The order is the table's in
// docs/HEALTH.md.
var (
	// WorkerUnresponsive, condition `worker_unresponsive`: no heartbeat for 3 periods of that worker.
	WorkerUnresponsive = Register(&Descriptor{Code: "worker_unresponsive", Settle: workerSettle, Level: LevelEssential, Penalty: 25, When: "no heartbeat for 3 periods of that worker",
		Text: sprintf("Worker %s is unresponsive: %s", ArgKey, ArgError), Recommend: sprintf("Worker %s missed its heartbeat deadline and is being restarted; if this recurs, check 'logread -e phonebookd' around the time.", ArgKey)})
	// WorkerRestarting, condition `worker_restarting`: waiting for a restart after a panic or error.
	WorkerRestarting = Register(&Descriptor{Code: "worker_restarting", Settle: workerSettle, Level: LevelWarning, Penalty: 10, When: "waiting for a restart after a panic or error",
		Text: sprintf("Worker %s is restarting after: %s", ArgKey, ArgError), Recommend: sprintf("Worker %s restarts with backoff; if it keeps failing it will be marked failed.", ArgKey)})
	// WorkerBlocked, condition `worker_blocked`: cannot run for an outside cause (a listen address in use); retried with backoff, never an exit.
	WorkerBlocked = Register(&Descriptor{Code: "worker_blocked", Settle: workerSettle, Level: LevelEssential, Penalty: 40, When: "cannot run for an outside cause (a listen address in use); retried with backoff, never an exit",
		Text: sprintf("Worker %s cannot run: %s", ArgKey, ArgError), Recommend: sprintf("Worker %s retries by itself with backoff; fix the cause (for a listen address: uci show phonebook.sip; a port in use: netstat -lnp) and it starts.", ArgKey)})
	// WorkerFailed, condition `worker_failed`: more than max_restart_attempts restarts in restart_window.
	WorkerFailed = Register(&Descriptor{Code: "worker_failed", Settle: workerSettle, Level: LevelEssential, Penalty: 40, When: "more than `max_restart_attempts` restarts in `restart_window`",
		Text: sprintf("Worker %s has failed: %s", ArgKey, ArgError), Recommend: sprintf("Fix the cause, then restart worker %s: ubus call phonebook.threads restart '{\"name\":\"%[1]s\"}'.", ArgKey)})
	// WorkerGoroutines, condition `worker_goroutines`: a worker runs worker_goroutine_warn goroutines.
	WorkerGoroutines = Register(&Descriptor{Code: "worker_goroutines", Level: LevelWarning, Penalty: 5, When: "a worker runs `worker_goroutine_warn` goroutines",
		Text: sprintf("Worker %s runs %s goroutines (warning at %s)", ArgKey, ArgCount, ArgLimit), Recommend: sprintf("Worker %s keeps starting goroutines; restart it (phonebook.threads restart) and report it.", ArgKey)})
	// Abandoned, condition `abandoned`: a cancelled worker goroutine never returned.
	Abandoned = Register(&Descriptor{Code: "abandoned", Level: LevelWarning, Penalty: 10, When: "a cancelled worker goroutine never returned",
		Text: sprintf("Worker %s left %s goroutine(s) stuck after cancellation", ArgKey, ArgCount), Recommend: sprintf("Stuck goroutines hold memory until the daemon restarts: /etc/init.d/phonebook restart.")})
	// MemoryLeakHeap, condition `memory_leak_heap`: the live heap's trend rises (see Leak detection).
	MemoryLeakHeap = Register(&Descriptor{Code: "memory_leak_heap", Level: LevelWarning, Penalty: 20, When: "the live heap's trend rises (see Leak detection)",
		Text: sprintf("Possible memory leak: %s grew from %s MB to %s MB (%s)", ArgWhat, ArgFrom, ArgTo, ArgDetail), Recommend: leakRecommendation})
	// MemoryLeakRSS, condition `memory_leak_rss`: private resident memory's trend rises (see Leak detection).
	MemoryLeakRSS = Register(&Descriptor{Code: "memory_leak_rss", Level: LevelWarning, Penalty: 20, When: "private resident memory's trend rises (see Leak detection)",
		Text: sprintf("Possible memory leak: %s grew from %s MB to %s MB (%s)", ArgWhat, ArgFrom, ArgTo, ArgDetail), Recommend: leakRecommendation})
	// FDLeak, condition `fd_leak`: descriptors fd_leak_min above the baseline and rising.
	FDLeak = Register(&Descriptor{Code: "fd_leak", Level: LevelWarning, Penalty: 15, When: "descriptors `fd_leak_min` above the baseline and rising",
		Text: sprintf("File descriptors leaking: %s open, %s above the baseline and rising", ArgTotal, ArgCount), Recommend: sprintf("Descriptors keep rising; restart the daemon before it reaches the limit and report the crash history.")})
	// FDNearLimit, condition `fd_near_limit`: 80 % of the descriptor limit in use.
	FDNearLimit = Register(&Descriptor{Code: "fd_near_limit", Level: LevelCritical, Penalty: 30, When: "80 % of the descriptor limit in use",
		Text: sprintf("%s of %s file descriptors in use", ArgCount, ArgLimit), Recommend: sprintf("The daemon is near its descriptor limit and will fail to accept connections; restart it.")})
	// RecentCrashes, condition `recent_crashes`: crashes in the last 24 h (10 per crash, at most 30).
	RecentCrashes = Register(&Descriptor{Code: "recent_crashes", Level: LevelWarning, Penalty: 10, When: "crashes in the last 24 h (10 per crash, at most 30)",
		Text: sprintf("%s crash(es) in the last 24 h, last: %s", ArgCount, ArgError), Recommend: sprintf("Read the crash records (ubus call phonebook.health crashes) and report them; clear them with clear_crashes once handled.")})
	// CrashHistoryCorrupt, condition `crash_history_corrupt`: the history on flash was unreadable or too large; kept aside.
	CrashHistoryCorrupt = Register(&Descriptor{Code: "crash_history_corrupt", Level: LevelWarning, Penalty: 5, When: "the history on flash was unreadable or too large; kept aside",
		Text: sprintf("The crash history on flash was unreadable and was kept aside at %s", ArgPath), Recommend: sprintf("The old file is kept for inspection; clear_crashes starts a new history.")})
	// CrashHistoryInvalid, condition `crash_history_invalid`: records with impossible times or counts were set aside at load.
	CrashHistoryInvalid = Register(&Descriptor{Code: "crash_history_invalid", Level: LevelWarning, Penalty: 5, When: "records with impossible times or counts were set aside at load",
		Text: sprintf("%s crash record(s) with impossible times or counts were set aside when the history was read", ArgCount), Recommend: sprintf("The clock may have been wrong when they were written; clear_crashes starts a new history.")})
	// StateDirUnwritable, condition `state_dir_unwritable`: state_dir cannot be written (access W_OK, read-only overlay, or a failed write).
	StateDirUnwritable = Register(&Descriptor{Code: "state_dir_unwritable", Level: LevelWarning, Penalty: 15, When: "`state_dir` cannot be written (access W_OK, read-only overlay, or a failed write)",
		Text: sprintf("Crash records cannot be kept on flash: %s", ArgError), Recommend: sprintf("Check that %s exists, is writable by the daemon and that the overlay is not full or read-only (mount, df).", ArgPath)})
	// DiskUnknown, condition `disk_unknown`: free space of the state or run filesystem cannot be read.
	DiskUnknown = Register(&Descriptor{Code: "disk_unknown", Level: LevelWarning, Penalty: 5, When: "free space of the state or run filesystem cannot be read",
		Text: sprintf("Free space of the %s filesystem cannot be read: %s", ArgWhat, ArgError), Recommend: sprintf("Check that the directory exists and is readable.")})
	// DiskLow, condition `disk_low`: free space below disk_min_free_kb.
	DiskLow = Register(&Descriptor{Code: "disk_low", Level: LevelWarning, Penalty: 15, When: "free space below `disk_min_free_kb`",
		Text: sprintf("The %s filesystem (%s) has %s KB free, below %s KB", ArgWhat, ArgPath, ArgCount, ArgLimit), Recommend: sprintf("Free space on the filesystem holding %s.", ArgPath)})
	// NetworkUnreachable, condition `network_unreachable`: every source of mesh traffic (the fetcher's servers, the probed targets) failed repeatedly over 10 minutes and none answered.
	NetworkUnreachable = Register(&Descriptor{Code: "network_unreachable", Level: LevelWarning, Penalty: 10, When: "every source of mesh traffic (the fetcher's servers, the probed targets) failed repeatedly over 10 minutes and none answered",
		Text: sprintf("No phonebook server or mesh target answered for %s", ArgDetail), Recommend: sprintf("Check the mesh link and the fetcher's servers (uci show phonebook.fetcher).")})
	// SIPErrors, condition `sip_errors`: SIP errors per hour at sip_errors_warn.
	SIPErrors = Register(&Descriptor{Code: "sip_errors", Level: LevelWarning, Penalty: 5, When: "SIP errors per hour at `sip_errors_warn`",
		Text: rateText, Recommend: rateRecommendation})
	// ProbeFailures, condition `probe_failures`: probe failures per hour at probe_failures_warn.
	ProbeFailures = Register(&Descriptor{Code: "probe_failures", Level: LevelWarning, Penalty: 5, DependsOn: []*Descriptor{NetworkUnreachable}, When: "probe failures per hour at `probe_failures_warn`",
		Text: rateText, Recommend: rateRecommendation})
	// FetchFailures, condition `fetch_failures`: fetch failures per hour at fetch_failures_warn.
	FetchFailures = Register(&Descriptor{Code: "fetch_failures", Level: LevelWarning, Penalty: 5, DependsOn: []*Descriptor{NetworkUnreachable}, When: "fetch failures per hour at `fetch_failures_warn`",
		Text: rateText, Recommend: rateRecommendation})
	// DirectoryShrunk, condition `directory_shrunk`: a fetched phonebook has less than half the entries of the directory; held back until a later fetch confirms it.
	DirectoryShrunk = Register(&Descriptor{Code: "directory_shrunk", Level: LevelWarning, Penalty: 5, When: "a fetched phonebook has less than half the entries of the directory; held back until a later fetch confirms it",
		Text: sprintf("A phonebook from %s with %s entries was held back; the directory keeps its %s", ArgPath, ArgCount, ArgTotal), Recommend: sprintf("If the phonebook at %s did shrink, confirm it with ubus call phonebook reload (or wait for the next fetch); otherwise check that server.", ArgPath)})
	// GoroutinesHigh, condition `goroutines_high`: goroutine_warn goroutines.
	GoroutinesHigh = Register(&Descriptor{Code: "goroutines_high", Level: LevelWarning, Penalty: 5, When: "`goroutine_warn` goroutines",
		Text: sprintf("%s goroutines running (warning at %s)", ArgCount, ArgLimit), Recommend: sprintf("Goroutines keep piling up; restart the daemon and report it.")})
	// StackHigh, condition `stack_high`: goroutine stacks at stack_warn_kb.
	StackHigh = Register(&Descriptor{Code: "stack_high", Level: LevelWarning, Penalty: 5, When: "goroutine stacks at `stack_warn_kb`",
		Text: sprintf("Goroutine stacks use %s KB (warning at %s KB)", ArgCount, ArgLimit), Recommend: sprintf("Deep recursion or many goroutines; restart the daemon and report it.")})
	// OSThreadsHigh, condition `os_threads_high`: os_thread_warn OS threads.
	OSThreadsHigh = Register(&Descriptor{Code: "os_threads_high", Level: LevelWarning, Penalty: 5, When: "`os_thread_warn` OS threads in the process (`process.os_threads`)",
		Text:      sprintf("%s OS threads (warning at %s); each holds about 35 KB of memory and a kernel stack, and the Go runtime keeps the threads it made", ArgCount, ArgLimit),
		Recommend: sprintf("Threads are made for blocking system calls and kept until the daemon restarts; restart it if memory is short, and report it.")})
	// Config, condition `config`: a setting rejected (the previous value kept).
	Config = Register(&Descriptor{Code: "config", Level: LevelWarning, Penalty: 5, When: "a setting rejected (the previous value kept)",
		Text: sprintf("Setting rejected, previous value kept: %s", ArgError), Recommend: sprintf("Correct the setting with uci set and uci commit phonebook.")})
	// Overload, condition `overload`: SIP shed work (503s, refused connections; phonebook status sip.shed).
	Overload = Register(&Descriptor{Code: "overload", Hold: counterHold, Level: LevelWarning, Penalty: 10, When: "SIP shed work (503s, refused connections, datagrams dropped at a full receive queue, TCP peers given up for not reading their answers; `phonebook status` sip.shed), seen at its 2 s check; held after the last",
		Text: sprintf("SIP is shedding load (in the last %s: %s); see phonebook status sip.shed", ArgDetail, ArgError), Recommend: sprintf("A phone or host is flooding the node, or the limits in uci show phonebook.sip are too small for the phones here.")})
	// SIPTableFull, condition `sip_table_full`: a SIP table (transactions, calls) is at its bound, keyed by the table.
	SIPTableFull = Register(&Descriptor{Code: "sip_table_full", Hold: counterHold, Level: LevelWarning, Penalty: 10, When: "a SIP table (`transactions`, `calls`) is at its bound: new INVITEs get 503",
		Text: sprintf("SIP %s table full (%s): new calls are refused with 503", ArgKey, ArgLimit), Recommend: sprintf("See phonebook status sip.shed for the cause; raise phonebook.sip.max_%s if the router has the memory, or find the host holding it.", ArgKey)})
	// SIPCapacity, condition `sip_capacity`: registrations at sip.max_bindings.
	SIPCapacity = Register(&Descriptor{Code: "sip_capacity", Hold: counterHold, Level: LevelWarning, Penalty: 10, When: "registrations at `sip.max_bindings`",
		Text: sprintf("Registrations at capacity (%s): new phones are refused with 503", ArgLimit), Recommend: sprintf("Raise phonebook.sip.max_bindings if the router has the memory, or move phones to another node.")})
	// SIPAcceptErrors, condition `sip_accept_errors`: SIP over TCP cannot accept connections (EMFILE); backing off.
	SIPAcceptErrors = Register(&Descriptor{Code: "sip_accept_errors", Hold: counterHold, Level: LevelWarning, Penalty: 10, When: "SIP over TCP cannot accept connections (EMFILE); backing off",
		Text: sprintf("SIP over TCP cannot accept connections: %s", ArgError), Recommend: sprintf("The daemon is out of file descriptors or memory; lower phonebook.sip.tcp_max_connections or find what holds descriptors (phonebook.health status file_descriptors).")})
	// HandlerPanic, condition `handler_panic`: a SIP message made a handler panic: dropped, counted (phonebook status sip.handler_panics), the handler serves on; cleared 5 minutes after the last.
	HandlerPanic = Register(&Descriptor{Code: "handler_panic", Level: LevelWarning, Penalty: 15, When: "a SIP message made a handler panic: dropped, counted (`phonebook status` sip.handler_panics), the handler serves on; cleared 5 minutes after the last",
		Text: sprintf("%s SIP message(s) made a handler panic and were dropped; last: %s", ArgCount, ArgError), Recommend: sprintf("The daemon survived a message it cannot handle; read the crash record (ubus call phonebook.health crashes) and report it with the sender from logread -e phonebookd.")})
	// ProbeFailed, condition `probe_failed`: a configured mesh target did not answer its last OPTIONS.
	ProbeFailed = Register(&Descriptor{Code: "probe_failed", Level: LevelWarning, Penalty: 5, DependsOn: []*Descriptor{NetworkUnreachable}, When: "a configured mesh target did not answer its last OPTIONS",
		Text: sprintf("Mesh target %s not answering SIP OPTIONS (%s of the last %s probes lost): %s", ArgKey, ArgCount, ArgTotal, ArgError), Recommend: sprintf("Check the mesh path to %s (AREDN node status, link quality).", ArgKey)})
	// Jitter, condition `jitter`: jitter to a mesh target over jitter_threshold_ms.
	Jitter = Register(&Descriptor{Code: "jitter", Level: LevelWarning, Penalty: 5, DependsOn: []*Descriptor{NetworkUnreachable}, VisibleAfter: 2 * time.Minute, When: "jitter to a mesh target over `jitter_threshold_ms`",
		Text: sprintf("High mesh jitter detected to %s: %s ms (threshold %s ms)", ArgKey, ArgCount, ArgLimit), Recommend: sprintf("Voice to %s may break up; check the RF links on the path or lower the load on it.", ArgKey)})
	// PhonesUnreachable, condition `phones_unreachable`: registered phones do not answer OPTIONS (one condition for all).
	PhonesUnreachable = Register(&Descriptor{Code: "phones_unreachable", Level: LevelWarning, Penalty: 5, DependsOn: []*Descriptor{NetworkUnreachable}, MaxShown: 1, When: "registered phones do not answer OPTIONS (one condition for all)",
		Text: sprintf("%s of %s registered phones do not answer SIP OPTIONS: %s", ArgCount, ArgTotal, ArgDetail), Recommend: sprintf("Phones that registered and went silent (switched off, unplugged, a mesh link down) are called in vain until their registration expires; see phonebook status monitor.")})
	// MetricsListen, condition `metrics_listen`: the optional metrics.listen address cannot be bound; retried.
	MetricsListen = Register(&Descriptor{Code: "metrics_listen", Level: LevelWarning, Penalty: 5, When: "the optional `metrics.listen` address cannot be bound; retried",
		Text: sprintf("The Prometheus listener cannot run: %s", ArgError), Recommend: sprintf("Check phonebook.metrics.listen (an IP:port nothing else uses); empty turns the listener off.")})
	// DBusNameTaken, condition `dbus_name_taken`: org.aredn.Phonebook1 is owned by another process, so the daemon is not published on D-Bus; retried with backoff.
	DBusNameTaken = Register(&Descriptor{Code: "dbus_name_taken", Level: LevelWarning, Penalty: 20, When: "`org.aredn.Phonebook1` is owned by another process, so the daemon is not published on D-Bus; retried with backoff",
		Text: sprintf("Not published on D-Bus: %s", ArgError), Recommend: sprintf("Stop the other process that owns org.aredn.Phonebook1 (busctl status org.aredn.Phonebook1 names it; often a second phonebookd); the daemon takes the name by itself once it is free.")})
	// DBusShed, condition `dbus_shed`: D-Bus method calls were refused past main.dbus_max_calls; held after the last.
	DBusShed = Register(&Descriptor{Code: "dbus_shed", Hold: counterHold, Level: LevelWarning, Penalty: 5, When: "D-Bus method calls were refused with LimitsExceeded past `main.dbus_max_calls` calls at once (`phonebook status` dbus.shed); held after the last",
		Text: sprintf("D-Bus calls refused: %s in all, past %s at once; see phonebook status dbus", ArgCount, ArgLimit), Recommend: sprintf("A client floods org.aredn.Phonebook1 (busctl monitor org.aredn.Phonebook1 shows who); raise phonebook.main.dbus_max_calls only if legitimate readers are refused.")})
	// MetricsRefused, condition `metrics_refused`: the metrics listener turned scrapes away in the last minute.
	MetricsRefused = Register(&Descriptor{Code: "metrics_refused", Level: LevelWarning, Penalty: 5, When: "the metrics listener turned scrapes away (per-source cap, every slot busy, or cut off waiting for their request) in the last minute; `phonebook status` metrics",
		Text: sprintf("The metrics listener has turned %s scrape(s) away, the last from %s (%s)", ArgCount, ArgWhat, ArgDetail), Recommend: sprintf("A host holds connections to phonebook.metrics.listen without completing its requests, or scrapes too often; find it with phonebook status metrics and logread, or raise phonebook.metrics.max_connections.")})
	// SIPListen, condition `sip_listen`: a changed sip.listen cannot be bound; the old address keeps serving.
	SIPListen = Register(&Descriptor{Code: "sip_listen", Level: LevelWarning, Penalty: 10, When: "a changed `sip.listen` cannot be bound; the old address keeps serving, retried",
		Text: sprintf("SIP cannot listen on %s (%s); still serving on %s", ArgPath, ArgError, ArgDetail), Recommend: sprintf("Phones set to %s are not answered; free the address (netstat -lnp) or correct phonebook.sip.listen, then uci commit phonebook.", ArgPath)})
	// InterfacesUnreadable, condition `interfaces_unreadable`: this host's interface addresses cannot be read.
	InterfacesUnreadable = Register(&Descriptor{Code: "interfaces_unreadable", Level: LevelWarning, Penalty: 5, When: "this host's interface addresses cannot be read (netlink refused); own addresses are recognised by a bind test instead",
		Text: sprintf("This host's interface addresses cannot be read: %s", ArgError), Recommend: sprintf("Allow netlink sockets to the daemon (systemd: RestrictAddressFamilies= with AF_NETLINK); until then calls to this node's own address are recognised more slowly.")})
	// ReportsUndelivered, condition `reports_undelivered`: the collector at reporter.url has not accepted a report for 10 minutes; reports wait in RAM.
	ReportsUndelivered = Register(&Descriptor{Code: "reports_undelivered", Level: LevelWarning, Penalty: 5, DependsOn: []*Descriptor{NetworkUnreachable}, VisibleAfter: 10 * time.Minute, When: "the collector at `reporter.url` has not accepted a report for 10 minutes; reports wait in RAM",
		Text: sprintf("Health reports are not delivered to %s (%s queued, %s dropped): %s", ArgPath, ArgCount, ArgTotal, ArgError), Recommend: sprintf("Check that the collector at %s is up and reachable over the mesh; the oldest reports are dropped past phonebook.reporter.queue.", ArgPath)})
	// DaemonDown, condition `daemon_down`: raised by /cgi-bin/healthcheck: the daemon cannot be asked.
	DaemonDown = Register(&Descriptor{Code: "daemon_down", Level: LevelCritical, Penalty: 100, When: "raised by /cgi-bin/healthcheck: the daemon cannot be asked",
		Text: sprintf("%s", ArgError), Recommend: sprintf("Start it: /etc/init.d/phonebook start; read why it stopped: logread -e phonebook; if procd gave up on it, ubus call service list '{\"name\":\"phonebook\"}' shows it.")})
)

// Texts shared by families of the same kind.
var (
	leakRecommendation = sprintf("Memory keeps growing; restart the daemon (/etc/init.d/phonebook restart) before the router runs short, and report the crash history.")
	rateText           = sprintf("%s %s in the last hour (warning at %s)", ArgCount, ArgWhat, ArgLimit)
	rateRecommendation = sprintf("Many %s: look at logread for their causes.", ArgWhat)
)

// registry holds the descriptors registered, in order. It is filled
// while the package variables are initialised (Register), and only read
// after.
var registry = struct {
	mu     sync.Mutex
	all    []*Descriptor
	byCode map[string]*Descriptor
}{byCode: map[string]*Descriptor{}}

// Register adds a condition to the registry and returns its handle, the
// only way to raise it: var Overload = health.Register(&Descriptor{...}).
// A code registered twice, empty, or with a ':' (which separates an
// instance's key) panics at start: a programming error.
func Register(d *Descriptor) *Descriptor {
	if d.Code == "" || strings.ContainsAny(d.Code, ": ") {
		panic(fmt.Sprintf("health.Register: invalid condition code %q", d.Code))
	}
	if d.Text == nil {
		panic(fmt.Sprintf("health.Register: condition %q has no Text", d.Code))
	}
	if d.MaxShown == 0 {
		d.MaxShown = DefaultMaxShown
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if _, dup := registry.byCode[d.Code]; dup {
		panic(fmt.Sprintf("health.Register: condition %q registered twice", d.Code))
	}
	registry.byCode[d.Code] = d
	registry.all = append(registry.all, d)
	return d
}

// Descriptors lists the registry in order of registration.
func Descriptors() []*Descriptor {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	return append([]*Descriptor(nil), registry.all...)
}

// Instance is the code of one instance of the condition: the code, or
// "code:key" for a worker's, a target's.
func (d *Descriptor) Instance(key string) string {
	if key == "" {
		return d.Code
	}
	return d.Code + ":" + key
}

// evaluate turns the conditions present now into the alerts shown: the
// registry's penalty (the owner's level only where the level depends on
// the worker), the first since kept, blips hidden until VisibleAfter,
// echoes of a shown root cause hidden, each family cut to MaxShown with
// one "and N more" alert (h.mu held).
func (h *System) evaluate(now time.Time, conds []Condition) []Alert {
	for _, c := range conds {
		h.lastSeen[c.Code] = now
		h.lastCond[c.Code] = c
	}
	for code, c := range h.lastCond {
		d := c.desc
		switch {
		case now.Sub(h.lastSeen[code]) == 0:
		case now.Sub(h.lastSeen[code]) < d.Hold:
			conds = append(conds, c) // held: still shown after its last event
			h.dueAt(h.lastSeen[code].Add(d.Hold))
		default:
			delete(h.lastCond, code)
			delete(h.lastSeen, code)
		}
	}
	present := make(map[string]bool, len(conds))
	type cand struct {
		c Condition
		d *Descriptor
	}
	var visible []cand
	for _, c := range conds {
		present[c.Code] = true
		since, ok := h.since[c.Code]
		if !ok {
			since = now
			h.since[c.Code] = now
		}
		d := c.desc
		if d != RecentCrashes { // its penalty grows with the count
			c.Penalty = d.Penalty
		}
		if d.Level != LevelEssential {
			c.Level = d.Level
		}
		if now.Sub(since) < d.VisibleAfter {
			continue
		}
		visible = append(visible, cand{c, d})
	}
	for code := range h.since {
		if !present[code] {
			delete(h.since, code)
		}
	}
	shownFamily := map[string]bool{}
	for _, v := range visible {
		shownFamily[v.d.Code] = true
	}
	sort.Slice(visible, func(i, j int) bool { return visible[i].c.Code < visible[j].c.Code })
	var alerts []Alert
	count := map[string]int{}
	type more struct {
		n     int
		level string
		first time.Time
	}
	extra := map[string]*more{}
	var order []string
	for _, v := range visible {
		hidden := false
		for _, dep := range v.d.DependsOn {
			hidden = hidden || shownFamily[dep.Code]
		}
		if hidden {
			continue
		}
		since := h.since[v.c.Code]
		if count[v.d.Code] >= v.d.MaxShown {
			m := extra[v.d.Code]
			if m == nil {
				m = &more{level: LevelWarning, first: since}
				extra[v.d.Code] = m
				order = append(order, v.d.Code)
			}
			m.n++
			if v.c.Level == LevelCritical {
				m.level = LevelCritical
			}
			if since.Before(m.first) {
				m.first = since
			}
			continue
		}
		count[v.d.Code]++
		alerts = append(alerts, Alert{Condition: v.c, Since: since})
	}
	for _, f := range order {
		m := extra[f]
		alerts = append(alerts, Alert{Since: m.first, Condition: Condition{Code: f + ":more", Level: m.level,
			Message: fmt.Sprintf("and %d more %s condition(s)", m.n, f)}})
	}
	return alerts
}

// ConditionTable renders the registry as docs/HEALTH.md's table.
func ConditionTable() string {
	var b strings.Builder
	b.WriteString("| code | level | penalty | hidden while | shown after | held after the last event | clears after running well | shown at most | when |\n|---|---|---|---|---|---|---|---|---|\n")
	dur := func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return d.String()
	}
	for _, d := range Descriptors() {
		dep, after, most := "", "", DefaultMaxShown
		var deps []string
		for _, x := range d.DependsOn {
			deps = append(deps, x.Code)
		}
		if len(deps) > 0 {
			dep = "`" + strings.Join(deps, "`, `") + "`"
		}
		if d.VisibleAfter > 0 {
			after = d.VisibleAfter.String()
		}
		if d.MaxShown > 0 {
			most = d.MaxShown
		}
		fmt.Fprintf(&b, "| `%s` | %s | %d | %s | %s | %s | %s | %d | %s |\n", d.Code, d.Level, d.Penalty, dep, after, dur(d.Hold), dur(d.Settle), most, d.When)
	}
	return b.String()
}

// Alerts is what an owner of conditions (sip, directory, the metrics
// listener) is given to raise and end them: the System, or a test's
// recorder.
type Alerts interface {
	SetUnhealthy(cond *Descriptor, key string, args Args)
	SetHealthy(cond *Descriptor, key string)
}

// ConditionOf is an instance of a registered condition: its code
// (d.Instance(key)), level, penalty and words from the descriptor, the
// figures from args. LevelEssential descriptors start as warnings; the
// evaluation makes an essential worker's critical.
func ConditionOf(d *Descriptor, key string, args Args) Condition {
	a := Args{ArgKey: key}
	for k, v := range args {
		a[k] = v
	}
	c := Condition{Code: d.Instance(key), Level: LevelWarning, desc: d}
	if d.Level != LevelEssential {
		c.Level = d.Level
	}
	c.Penalty = d.Penalty
	c.Message = d.Text(a) // Register made sure there is one
	if d.Recommend != nil {
		c.Recommendation = d.Recommend(a)
	}
	return c
}
