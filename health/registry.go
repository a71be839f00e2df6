package health

import (
	"fmt"
	"sort"
	"strings"
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
	DependsOn []string
	// VisibleAfter: shown only once it has lasted this long, so that a
	// blip does not alarm anyone.
	VisibleAfter time.Duration
	// MaxShown instances are shown; the rest become one "and N more"
	// alert without penalty (0: DefaultMaxShown).
	MaxShown int
	When     string // documentation: when it is raised
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

// mesh lists the families that are echoes of an unreachable mesh.
var meshEchoes = []string{"network_unreachable"}

// descriptors is the registry: every condition the daemon raises.
var descriptors = []Descriptor{
	{Code: "worker_unresponsive", Level: LevelEssential, Penalty: 25, When: "no heartbeat for 3 periods of that worker",
		Text: sprintf("Worker %s is unresponsive: %s", ArgKey, ArgError), Recommend: sprintf("Worker %s missed its heartbeat deadline and is being restarted; if this recurs, check 'logread -e phonebookd' around the time.", ArgKey)},
	{Code: "worker_restarting", Level: LevelWarning, Penalty: 10, When: "waiting for a restart after a panic or error",
		Text: sprintf("Worker %s is restarting after: %s", ArgKey, ArgError), Recommend: sprintf("Worker %s restarts with backoff; if it keeps failing it will be marked failed.", ArgKey)},
	{Code: "worker_blocked", Level: LevelEssential, Penalty: 40, When: "cannot run for an outside cause (a listen address in use); retried with backoff, never an exit",
		Text: sprintf("Worker %s cannot run: %s", ArgKey, ArgError), Recommend: sprintf("Worker %s retries by itself with backoff; fix the cause (for a listen address: uci show phonebook.sip; a port in use: netstat -lnp) and it starts.", ArgKey)},
	{Code: "worker_failed", Level: LevelEssential, Penalty: 40, When: "more than `max_restart_attempts` restarts in `restart_window`",
		Text: sprintf("Worker %s has failed: %s", ArgKey, ArgError), Recommend: sprintf("Fix the cause, then restart worker %s: ubus call phonebook.threads restart '{\"name\":\"%[1]s\"}'.", ArgKey)},
	{Code: "worker_goroutines", Level: LevelWarning, Penalty: 5, When: "a worker runs `worker_goroutine_warn` goroutines",
		Text: sprintf("Worker %s runs %s goroutines (warning at %s)", ArgKey, ArgCount, ArgLimit), Recommend: sprintf("Worker %s keeps starting goroutines; restart it (phonebook.threads restart) and report it.", ArgKey)},
	{Code: "abandoned", Level: LevelWarning, Penalty: 10, When: "a cancelled worker goroutine never returned",
		Text: sprintf("Worker %s left %s goroutine(s) stuck after cancellation", ArgKey, ArgCount), Recommend: sprintf("Stuck goroutines hold memory until the daemon restarts: /etc/init.d/phonebook restart.")},
	{Code: "memory_leak_heap", Level: LevelWarning, Penalty: 20, When: "the live heap's trend rises (see Leak detection)",
		Text: sprintf("Possible memory leak: %s grew from %s MB to %s MB (%s)", ArgWhat, ArgFrom, ArgTo, ArgDetail), Recommend: leakRecommendation},
	{Code: "memory_leak_rss", Level: LevelWarning, Penalty: 20, When: "private resident memory's trend rises (see Leak detection)",
		Text: sprintf("Possible memory leak: %s grew from %s MB to %s MB (%s)", ArgWhat, ArgFrom, ArgTo, ArgDetail), Recommend: leakRecommendation},
	{Code: "fd_leak", Level: LevelWarning, Penalty: 15, When: "descriptors `fd_leak_min` above the baseline and rising",
		Text: sprintf("File descriptors leaking: %s open, %s above the baseline and rising", ArgTotal, ArgCount), Recommend: sprintf("Descriptors keep rising; restart the daemon before it reaches the limit and report the crash history.")},
	{Code: "fd_near_limit", Level: LevelCritical, Penalty: 30, When: "80 % of the descriptor limit in use",
		Text: sprintf("%s of %s file descriptors in use", ArgCount, ArgLimit), Recommend: sprintf("The daemon is near its descriptor limit and will fail to accept connections; restart it.")},
	{Code: "recent_crashes", Level: LevelWarning, Penalty: 10, When: "crashes in the last 24 h (10 per crash, at most 30)",
		Text: sprintf("%s crash(es) in the last 24 h, last: %s", ArgCount, ArgError), Recommend: sprintf("Read the crash records (ubus call phonebook.health crashes) and report them; clear them with clear_crashes once handled.")},
	{Code: "crash_history_corrupt", Level: LevelWarning, Penalty: 5, When: "the history on flash was unreadable or too large; kept aside",
		Text: sprintf("The crash history on flash was unreadable and was kept aside at %s", ArgPath), Recommend: sprintf("The old file is kept for inspection; clear_crashes starts a new history.")},
	{Code: "crash_history_invalid", Level: LevelWarning, Penalty: 5, When: "records with impossible times or counts were set aside at load",
		Text: sprintf("%s crash record(s) with impossible times or counts were set aside when the history was read", ArgCount), Recommend: sprintf("The clock may have been wrong when they were written; clear_crashes starts a new history.")},
	{Code: "state_dir_unwritable", Level: LevelWarning, Penalty: 15, When: "`state_dir` cannot be written (access W_OK, read-only overlay, or a failed write)",
		Text: sprintf("Crash records cannot be kept on flash: %s", ArgError), Recommend: sprintf("Check that %s exists, is writable by the daemon and that the overlay is not full or read-only (mount, df).", ArgPath)},
	{Code: "disk_unknown", Level: LevelWarning, Penalty: 5, When: "free space of the state or run filesystem cannot be read",
		Text: sprintf("Free space of the %s filesystem cannot be read: %s", ArgWhat, ArgError), Recommend: sprintf("Check that the directory exists and is readable.")},
	{Code: "disk_low", Level: LevelWarning, Penalty: 15, When: "free space below `disk_min_free_kb`",
		Text: sprintf("The %s filesystem (%s) has %s KB free, below %s KB", ArgWhat, ArgPath, ArgCount, ArgLimit), Recommend: sprintf("Free space on the filesystem holding %s.", ArgPath)},
	{Code: "network_unreachable", Level: LevelWarning, Penalty: 10, When: "fetches and probes only failed for 2 h",
		Text: sprintf("No phonebook server or mesh target answered in the last 2 hours"), Recommend: sprintf("Check the mesh link and the fetcher's servers (uci show phonebook.fetcher).")},
	{Code: "sip_errors", Level: LevelWarning, Penalty: 5, When: "SIP errors per hour at `sip_errors_warn`",
		Text: rateText, Recommend: rateRecommendation},
	{Code: "probe_failures", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, When: "probe failures per hour at `probe_failures_warn`",
		Text: rateText, Recommend: rateRecommendation},
	{Code: "fetch_failures", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, When: "fetch failures per hour at `fetch_failures_warn`",
		Text: rateText, Recommend: rateRecommendation},
	{Code: "directory_shrunk", Level: LevelWarning, Penalty: 5, When: "a fetched phonebook has less than half the entries of the directory; held back until a later fetch confirms it",
		Text: sprintf("A phonebook from %s with %s entries was held back; the directory keeps its %s", ArgPath, ArgCount, ArgTotal), Recommend: sprintf("If the phonebook at %s did shrink, confirm it with ubus call phonebook reload (or wait for the next fetch); otherwise check that server.", ArgPath)},
	{Code: "goroutines_high", Level: LevelWarning, Penalty: 5, When: "`goroutine_warn` goroutines",
		Text: sprintf("%s goroutines running (warning at %s)", ArgCount, ArgLimit), Recommend: sprintf("Goroutines keep piling up; restart the daemon and report it.")},
	{Code: "stack_high", Level: LevelWarning, Penalty: 5, When: "goroutine stacks at `stack_warn_kb`",
		Text: sprintf("Goroutine stacks use %s KB (warning at %s KB)", ArgCount, ArgLimit), Recommend: sprintf("Deep recursion or many goroutines; restart the daemon and report it.")},
	{Code: "config", Level: LevelWarning, Penalty: 5, When: "a setting rejected (the previous value kept)",
		Text: sprintf("Setting rejected, previous value kept: %s", ArgError), Recommend: sprintf("Correct the setting with uci set and uci commit phonebook.")},
	{Code: "overload", Level: LevelWarning, Penalty: 10, When: "SIP shed work in the last 2 s (503s, refused connections; `phonebook status` sip.shed)",
		Text: sprintf("SIP is shedding load (in the last %s: %s); see phonebook status sip.shed", ArgDetail, ArgError), Recommend: sprintf("A phone or host is flooding the node, or the limits in uci show phonebook.sip are too small for the phones here.")},
	{Code: "sip_capacity", Level: LevelWarning, Penalty: 10, When: "registrations at `sip.max_bindings`",
		Text: sprintf("Registrations at capacity (%s): new phones are refused with 503", ArgLimit), Recommend: sprintf("Raise phonebook.sip.max_bindings if the router has the memory, or move phones to another node.")},
	{Code: "sip_accept_errors", Level: LevelWarning, Penalty: 10, When: "SIP over TCP cannot accept connections (EMFILE); backing off",
		Text: sprintf("SIP over TCP cannot accept connections: %s", ArgError), Recommend: sprintf("The daemon is out of file descriptors or memory; lower phonebook.sip.tcp_max_connections or find what holds descriptors (phonebook.health status file_descriptors).")},
	{Code: "handler_panic", Level: LevelWarning, Penalty: 15, When: "a SIP message made a handler panic: dropped, counted (`phonebook status` sip.handler_panics), the handler serves on; cleared 5 minutes after the last",
		Text: sprintf("%s SIP message(s) made a handler panic and were dropped; last: %s", ArgCount, ArgError), Recommend: sprintf("The daemon survived a message it cannot handle; read the crash record (ubus call phonebook.health crashes) and report it with the sender from logread -e phonebookd.")},
	{Code: "probe_failed", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, When: "a configured mesh target did not answer its last OPTIONS",
		Text: sprintf("Mesh target %s not answering SIP OPTIONS (%s of the last %s probes lost): %s", ArgKey, ArgCount, ArgTotal, ArgError), Recommend: sprintf("Check the mesh path to %s (AREDN node status, link quality).", ArgKey)},
	{Code: "jitter", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, VisibleAfter: 2 * time.Minute, When: "jitter to a mesh target over `jitter_threshold_ms`",
		Text: sprintf("High mesh jitter detected to %s: %s ms (threshold %s ms)", ArgKey, ArgCount, ArgLimit), Recommend: sprintf("Voice to %s may break up; check the RF links on the path or lower the load on it.", ArgKey)},
	{Code: "phones_unreachable", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, MaxShown: 1, When: "registered phones do not answer OPTIONS (one condition for all)",
		Text: sprintf("%s of %s registered phones do not answer SIP OPTIONS: %s", ArgCount, ArgTotal, ArgDetail), Recommend: sprintf("Phones that registered and went silent (switched off, unplugged, a mesh link down) are called in vain until their registration expires; see phonebook status monitor.")},
	{Code: "metrics_listen", Level: LevelWarning, Penalty: 5, When: "the optional `metrics.listen` address cannot be bound; retried",
		Text: sprintf("The Prometheus listener cannot run: %s", ArgError), Recommend: sprintf("Check phonebook.metrics.listen (an IP:port nothing else uses); empty turns the listener off.")},
	{Code: "metrics_refused", Level: LevelWarning, Penalty: 5, When: "the metrics listener turned scrapes away (per-source cap, every slot busy, or cut off waiting for their request) in the last minute; `phonebook status` metrics",
		Text: sprintf("The metrics listener has turned %s scrape(s) away, the last from %s (%s)", ArgCount, ArgWhat, ArgDetail), Recommend: sprintf("A host holds connections to phonebook.metrics.listen without completing its requests, or scrapes too often; find it with phonebook status metrics and logread, or raise phonebook.metrics.max_connections.")},
	{Code: "reports_undelivered", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, VisibleAfter: 10 * time.Minute, When: "the collector at `reporter.url` has not accepted a report for 10 minutes; reports wait in RAM",
		Text: sprintf("Health reports are not delivered to %s (%s queued, %s dropped): %s", ArgPath, ArgCount, ArgTotal, ArgError), Recommend: sprintf("Check that the collector at %s is up and reachable over the mesh; the oldest reports are dropped past phonebook.reporter.queue.", ArgPath)},
	{Code: "daemon_down", Level: LevelCritical, Penalty: 100, When: "raised by /cgi-bin/healthcheck: the daemon cannot be asked",
		Text: sprintf("%s", ArgError), Recommend: sprintf("Start it: /etc/init.d/phonebook start; read why it stopped: logread -e phonebook; if procd gave up on it, ubus call service list '{\"name\":\"phonebook\"}' shows it.")},
}

// Texts shared by families of the same kind.
var (
	leakRecommendation = sprintf("Memory keeps growing; restart the daemon (/etc/init.d/phonebook restart) before the router runs short, and report the crash history.")
	rateText           = sprintf("%s %s in the last hour (warning at %s)", ArgCount, ArgWhat, ArgLimit)
	rateRecommendation = sprintf("Many %s: look at logread for their causes.", ArgWhat)
)

// Descriptors lists the registry.
func Descriptors() []Descriptor { return append([]Descriptor(nil), descriptors...) }

func descriptorOf(code string) (Descriptor, bool) {
	family, _, _ := strings.Cut(code, ":")
	for _, d := range descriptors {
		if d.Code == family {
			if d.MaxShown == 0 {
				d.MaxShown = DefaultMaxShown
			}
			return d, true
		}
	}
	return Descriptor{}, false
}

// evaluate turns the conditions present now into the alerts shown: the
// registry's penalty (the owner's level only where the level depends on
// the worker), the first since kept, blips hidden until VisibleAfter,
// echoes of a shown root cause hidden, each family cut to MaxShown with
// one "and N more" alert (h.mu held).
func (h *System) evaluate(now time.Time, conds []Condition) []Alert {
	present := make(map[string]bool, len(conds))
	type cand struct {
		c Condition
		d Descriptor
	}
	var visible []cand
	for _, c := range conds {
		present[c.Code] = true
		since, ok := h.since[c.Code]
		if !ok {
			since = now
			h.since[c.Code] = now
		}
		d, known := descriptorOf(c.Code)
		if known {
			if c.Code != "recent_crashes" { // its penalty grows with the count
				c.Penalty = d.Penalty
			}
			if d.Level != LevelEssential {
				c.Level = d.Level
			}
			if now.Sub(since) < d.VisibleAfter {
				continue
			}
		} else {
			d = Descriptor{Code: c.Code, MaxShown: DefaultMaxShown}
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
			hidden = hidden || shownFamily[dep]
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
	b.WriteString("| code | level | penalty | hidden while | shown after | shown at most | when |\n|---|---|---|---|---|---|---|\n")
	for _, d := range descriptors {
		dep, after, most := "", "", DefaultMaxShown
		if len(d.DependsOn) > 0 {
			dep = "`" + strings.Join(d.DependsOn, "`, `") + "`"
		}
		if d.VisibleAfter > 0 {
			after = d.VisibleAfter.String()
		}
		if d.MaxShown > 0 {
			most = d.MaxShown
		}
		fmt.Fprintf(&b, "| `%s` | %s | %d | %s | %s | %d | %s |\n", d.Code, d.Level, d.Penalty, dep, after, most, d.When)
	}
	return b.String()
}

// ConditionOf is the condition an owner raises: its code ("family" or
// "family:key") and arguments, its level, penalty and words from the
// family's descriptor. An unregistered code (a fault test's) keeps the
// code as its text.
func ConditionOf(code string, args Args) Condition {
	_, key, _ := strings.Cut(code, ":")
	a := Args{ArgKey: key}
	for k, v := range args {
		a[k] = v
	}
	c := Condition{Code: code, Level: LevelWarning, Message: code}
	d, ok := descriptorOf(code)
	if !ok {
		return c
	}
	if d.Level != LevelEssential {
		c.Level = d.Level
	}
	c.Penalty = d.Penalty
	if d.Text != nil {
		c.Message = d.Text(a)
	}
	if d.Recommend != nil {
		c.Recommendation = d.Recommend(a)
	}
	return c
}
