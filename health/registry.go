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
	{Code: "worker_unresponsive", Level: LevelEssential, Penalty: 25, When: "no heartbeat for 3 periods of that worker"},
	{Code: "worker_restarting", Level: LevelWarning, Penalty: 10, When: "waiting for a restart after a panic or error"},
	{Code: "worker_blocked", Level: LevelEssential, Penalty: 40, When: "cannot run for an outside cause (a listen address in use); retried with backoff, never an exit"},
	{Code: "worker_failed", Level: LevelEssential, Penalty: 40, When: "more than `max_restart_attempts` restarts in `restart_window`"},
	{Code: "worker_goroutines", Level: LevelWarning, Penalty: 5, When: "a worker runs `worker_goroutine_warn` goroutines"},
	{Code: "abandoned", Level: LevelWarning, Penalty: 10, When: "a cancelled worker goroutine never returned"},
	{Code: "memory_leak_heap", Level: LevelWarning, Penalty: 20, When: "the live heap's trend rises (see Leak detection)"},
	{Code: "memory_leak_rss", Level: LevelWarning, Penalty: 20, When: "private resident memory's trend rises (see Leak detection)"},
	{Code: "fd_leak", Level: LevelWarning, Penalty: 15, When: "descriptors `fd_leak_min` above the baseline and rising"},
	{Code: "fd_near_limit", Level: LevelCritical, Penalty: 30, When: "80 % of the descriptor limit in use"},
	{Code: "recent_crashes", Level: LevelWarning, Penalty: 10, When: "crashes in the last 24 h (10 per crash, at most 30)"},
	{Code: "crash_history_corrupt", Level: LevelWarning, Penalty: 5, When: "the history on flash was unreadable or too large; kept aside"},
	{Code: "crash_history_invalid", Level: LevelWarning, Penalty: 5, When: "records with impossible times or counts were set aside at load"},
	{Code: "state_dir_unwritable", Level: LevelWarning, Penalty: 15, When: "`state_dir` cannot be written (access W_OK, read-only overlay, or a failed write)"},
	{Code: "disk_unknown", Level: LevelWarning, Penalty: 5, When: "free space of the state or run filesystem cannot be read"},
	{Code: "disk_low", Level: LevelWarning, Penalty: 15, When: "free space below `disk_min_free_kb`"},
	{Code: "network_unreachable", Level: LevelWarning, Penalty: 10, When: "fetches and probes only failed for 2 h"},
	{Code: "sip_errors", Level: LevelWarning, Penalty: 5, When: "SIP errors per hour at `sip_errors_warn`"},
	{Code: "probe_failures", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, When: "probe failures per hour at `probe_failures_warn`"},
	{Code: "fetch_failures", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, When: "fetch failures per hour at `fetch_failures_warn`"},
	{Code: "goroutines_high", Level: LevelWarning, Penalty: 5, When: "`goroutine_warn` goroutines"},
	{Code: "stack_high", Level: LevelWarning, Penalty: 5, When: "goroutine stacks at `stack_warn_kb`"},
	{Code: "config", Level: LevelWarning, Penalty: 5, When: "a setting rejected (the previous value kept)"},
	{Code: "overload", Level: LevelWarning, Penalty: 10, When: "SIP shed work in the last 2 s (503s, refused connections; `phonebook status` sip.shed)"},
	{Code: "sip_capacity", Level: LevelWarning, Penalty: 10, When: "registrations at `sip.max_bindings`"},
	{Code: "sip_accept_errors", Level: LevelWarning, Penalty: 10, When: "SIP over TCP cannot accept connections (EMFILE); backing off"},
	{Code: "probe_failed", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, When: "a configured mesh target did not answer its last OPTIONS"},
	{Code: "jitter", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, VisibleAfter: 2 * time.Minute, When: "jitter to a mesh target over `jitter_threshold_ms`"},
	{Code: "phones_unreachable", Level: LevelWarning, Penalty: 5, DependsOn: meshEchoes, MaxShown: 1, When: "registered phones do not answer OPTIONS (one condition for all)"},
	{Code: "daemon_down", Level: LevelCritical, Penalty: 100, When: "raised by /cgi-bin/healthcheck: the daemon cannot be asked"},
}

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
