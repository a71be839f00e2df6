// Package metrics renders phonebookd's health and service figures in the
// Prometheus text exposition format (version 0.0.4), for the AREDN node's
// own /metrics (through "ubus call phonebook.health metrics") and for the
// daemon's optional listener on Debian. It is an adapter: every figure is
// read from one health snapshot and the daemon's status document, never
// computed here. No label takes values from the network (no per-phone
// label): workers, condition families and shed causes are fixed sets,
// probe targets are the configured list.
package metrics

import (
	"bytes"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/supervisor"
	"github.com/aredn/phonebookd/ubus"
)

// ContentType is the exposition format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Input is what one rendering reads.
type Input struct {
	Snap *health.Snapshot
	// Status is the daemon's "phonebook status" document (sip,
	// directory, monitor tables); nil leaves those families out.
	Status []ubus.Value
	Now    time.Time
	// Refused counts scrapes the listener turned away at its bounds.
	Refused int64
	// Listener is the listener's counters; nil when it is off (the
	// node's own /metrics through ubus).
	Listener *Stats
}

// writer emits families: HELP and TYPE once, then samples.
type writer struct {
	b    bytes.Buffer
	last string
}

func (w *writer) family(name, typ, help string) {
	if w.last == name {
		return
	}
	w.last = name
	w.b.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
}

// sample writes one line; labels alternate name and value.
func (w *writer) sample(name string, v float64, labels ...string) {
	w.b.WriteString(name)
	if len(labels) > 0 {
		w.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.b.WriteByte(',')
			}
			w.b.WriteString(labels[i] + `="` + escape(labels[i+1]) + `"`)
		}
		w.b.WriteByte('}')
	}
	w.b.WriteByte(' ')
	switch {
	case math.IsNaN(v):
		w.b.WriteString("NaN")
	case math.IsInf(v, 1):
		w.b.WriteString("+Inf")
	case math.IsInf(v, -1):
		w.b.WriteString("-Inf")
	default:
		w.b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	}
	w.b.WriteByte('\n')
}

// one writes a family with a single sample.
func (w *writer) one(name, typ, help string, v float64, labels ...string) {
	w.family(name, typ, help)
	w.sample(name, v, labels...)
}

func escape(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Render returns the exposition text. Figures that cannot be measured
// (null in the health documents) are left out, not written as 0.
func Render(in Input) []byte {
	w := &writer{}
	s := in.Snap
	if s == nil {
		return nil
	}
	h := &s.Health

	w.family("phonebook_health_status", "gauge", "Health status: 1 for the current one of healthy, degraded, critical, disabled.")
	for _, st := range []string{health.Healthy, health.Degraded, health.Critical, health.Disabled} {
		w.sample("phonebook_health_status", b2f(s.Status == st), "status", st)
	}
	if s.Status != health.Disabled {
		w.one("phonebook_health_score", "gauge", "Health score, 0 (worst) to 100.", float64(s.Score))
	}
	families := map[string]int{}
	for _, a := range s.Alerts {
		fam, _, _ := strings.Cut(a.Code, ":")
		families[fam]++
	}
	w.family("phonebook_health_condition_alerts", "gauge", "Alerts shown per condition family (0: the condition is absent).")
	for _, d := range health.Descriptors() {
		w.sample("phonebook_health_condition_alerts", float64(families[d.Code]), "condition", d.Code, "level", d.Level)
	}
	w.one("phonebook_health_evaluation_timestamp_seconds", "gauge", "When the health figures were measured (Unix time).", float64(s.Time.UnixNano())/1e9)

	if p := h.Process; p != nil && p.CPUPct != nil {
		w.one("phonebook_process_cpu_ratio", "gauge", "CPU used by the process over the last 10 s, as a fraction of one core.", *p.CPUPct/100)
	}
	if m := h.Memory; m != nil {
		mb := func(name, help string, v *float64) {
			if v != nil {
				w.one(name, "gauge", help, math.Round(*v*(1<<20)))
			}
		}
		mb("phonebook_process_resident_memory_bytes", "Resident memory (RSS).", m.RSSMB)
		mb("phonebook_process_private_memory_bytes", "Private resident memory (RssAnon): what the process costs the router.", m.RSSAnonMB)
		mb("phonebook_process_heap_bytes", "Live Go heap after the last collection.", m.HeapMB)
		w.one("phonebook_process_goroutines", "gauge", "Goroutines.", float64(m.Goroutines))
		w.one("phonebook_memory_leak_detected", "gauge", "1 while a memory leak is detected.", b2f(m.LeakDetected))
	}
	if f := h.FileDescriptors; f != nil {
		if f.Open != nil {
			w.one("phonebook_process_open_fds", "gauge", "Open file descriptors.", float64(*f.Open))
		}
		w.one("phonebook_process_max_fds", "gauge", "File descriptor limit.", float64(f.Max))
		w.one("phonebook_process_leaked_fds", "gauge", "Descriptors above the baseline counted as leaked.", float64(f.Leaked))
	}

	workers := append(s.Workers[:0:0], s.Workers...)
	sort.Slice(workers, func(i, j int) bool { return workers[i].Name < workers[j].Name })
	w.family("phonebook_worker_healthy", "gauge", "1 while the worker is healthy.")
	for _, wk := range workers {
		w.sample("phonebook_worker_healthy", b2f(wk.Status == supervisor.StatusHealthy), "worker", wk.Name)
	}
	w.family("phonebook_worker_restarts_total", "counter", "Restarts of the worker since the process started.")
	for _, wk := range workers {
		w.sample("phonebook_worker_restarts_total", float64(wk.Restarts), "worker", wk.Name)
	}
	w.family("phonebook_worker_heartbeat_age_seconds", "gauge", "Seconds since the worker's last heartbeat.")
	for _, wk := range workers {
		if !wk.LastHeartbeat.IsZero() {
			w.sample("phonebook_worker_heartbeat_age_seconds", max(in.Now.Sub(wk.LastHeartbeat).Seconds(), 0), "worker", wk.Name)
		}
	}

	if t := h.Threads["monitor"]; t != nil {
		if v, ok := number(t.Extra, "probe_success_rate"); ok {
			w.one("phonebook_probe_success_ratio", "gauge", "Share of recent probes answered (targets and phones).", v/100)
		}
	}

	c := s.Crashes
	w.one("phonebook_process_restarts", "gauge", "Process restarts in this boot.", float64(c.RestartCount))
	w.one("phonebook_process_restarts_lifetime_total", "counter", "Process restarts over the node's lifetime (kept on flash).", float64(c.TotalRestarts))
	w.one("phonebook_process_unclean_exits_total", "counter", "Ends of the process other than a clean stop (crashes, fatal escalations, SIGKILL) over the node's lifetime (kept on flash); clean restarts do not count.", float64(c.UncleanExits))
	w.one("phonebook_crashes_24h", "gauge", "Crash events in the last 24 hours.", float64(c.CrashCount24h))
	w.one("phonebook_process_unclean_exits_recorded", "gauge",
		"Unclean process exits in the crash history (flash, and RAM until coalesced): crashes that ended the process, merged counts included; a clean stop never counts, a restart keeps it, pruning old records lowers it.",
		float64(uncleanExits(c.Records)))
	w.one("phonebook_flash_writes_total", "counter", "Successful writes to flash since the process started.", float64(c.FlashWrites))
	if e := h.ErrorRates; e != nil {
		w.family("phonebook_errors_per_hour", "gauge", "Errors counted in the last 60 minutes, by source.")
		w.sample("phonebook_errors_per_hour", float64(e.SIPErrorsPerHour), "source", "sip")
		w.sample("phonebook_errors_per_hour", float64(e.ProbeFailuresPerHour), "source", "probe")
		w.sample("phonebook_errors_per_hour", float64(e.FetchFailuresPerHour), "source", "fetch")
	}
	if in.Status != nil {
		service(w, in.Status, in.Now)
	}
	w.one("phonebook_metrics_scrapes_refused_total", "counter", "Scrapes turned away at the listener's bounds (max_connections, max_connections_per_source) or cut off waiting for their request to give another source a slot.", float64(in.Refused))
	if l := in.Listener; l != nil {
		w.family("phonebook_metrics_connections_shed_total", "counter", "Connections to the metrics listener turned away or cut off, by cause.")
		w.sample("phonebook_metrics_connections_shed_total", float64(l.PerSource), "cause", "per_source")
		w.sample("phonebook_metrics_connections_shed_total", float64(l.Busy), "cause", "busy")
		w.sample("phonebook_metrics_connections_shed_total", float64(l.Evicted), "cause", "evicted")
		w.sample("phonebook_metrics_connections_shed_total", float64(l.TimedOut), "cause", "request_timeout")
	}
	return w.b.Bytes()
}

// uncleanExits counts the recorded crashes that ended the process: every
// kind but a worker panic, which the supervisor recovered with the
// process still running. A clean stop (SIGTERM) leaves no record. The
// history is bounded (crash_history_days, crash_history_max), so the
// figure is not a counter: PhonebookCrashLoop reads only its rises.
func uncleanExits(records []crash.Record) int {
	n := 0
	for _, r := range records {
		if r.Kind != crash.KindWorkerPanic {
			n += max(r.Count, 1)
		}
	}
	return n
}

// number reads a numeric member at path in a status document.
func number(vs []ubus.Value, path ...string) (float64, bool) {
	for i, name := range path {
		v, ok := ubus.Get(vs, name)
		if !ok {
			return 0, false
		}
		if i < len(path)-1 {
			vs = v.List
			continue
		}
		switch {
		case v.IsInt():
			return float64(v.Int), true
		case v.Kind == ubus.Double:
			return v.Float, true
		}
	}
	return 0, false
}

func service(w *writer, st []ubus.Value, now time.Time) {
	// Figures read from the status document: the family, its type and
	// the member's path.
	for _, f := range []struct {
		name, typ, help string
		path            []string
	}{
		{"phonebook_sip_registered_users", "gauge", "Users with at least one binding.", []string{"sip", "registered_users"}},
		{"phonebook_sip_bindings", "gauge", "Registered contacts.", []string{"sip", "bindings"}},
		{"phonebook_sip_max_bindings", "gauge", "Bound on registered users (sip.max_bindings).", []string{"sip", "max_bindings"}},
		{"phonebook_sip_active_calls", "gauge", "Calls in progress through the proxy.", []string{"sip", "active_calls"}},
		{"phonebook_sip_transactions", "gauge", "Proxied INVITE transactions open.", []string{"sip", "transactions"}},
		{"phonebook_sip_tcp_connections", "gauge", "SIP over TCP connections open.", []string{"sip", "tcp_connections"}},
		{"phonebook_directory_entries", "gauge", "Entries in the published phone directory.", []string{"directory", "entries"}},
		{"phonebook_sip_registrations_total", "counter", "REGISTER requests accepted.", []string{"sip", "registrations_total"}},
		{"phonebook_sip_malformed_total", "counter", "Malformed SIP messages answered 400 or dropped.", []string{"sip", "malformed_total"}},
		{"phonebook_sip_calls_total", "counter", "Calls set up through the proxy.", []string{"sip", "calls_total"}},
		{"phonebook_sip_tcp_accept_errors_total", "counter", "Failed TCP accepts (descriptor exhaustion and the like).", []string{"sip", "tcp_accept_errors"}},
		{"phonebook_sip_forged_responses_total", "counter", "Responses dropped because their branch MAC did not verify.", []string{"sip", "forged_responses"}},
		{"phonebook_sip_calls_expired_unacked_total", "counter", "Calls freed because their 200 was never ACKed within 64*T1.", []string{"sip", "calls_expired_unacked"}},
	} {
		if v, ok := number(st, f.path...); ok {
			w.one(f.name, f.typ, f.help, v)
		}
	}
	if sip, ok := ubus.Get(st, "sip"); ok {
		if shed, ok := ubus.Get(sip.List, "shed"); ok {
			w.family("phonebook_sip_shed_total", "counter", "Requests or connections shed at a bound, by cause.")
			for _, v := range shed.List {
				w.sample("phonebook_sip_shed_total", float64(v.Int), "cause", v.Name)
			}
		}
	}
	if dir, ok := ubus.Get(st, "directory"); ok {
		for _, f := range []struct{ member, name, help string }{
			{"last_success", "phonebook_directory_last_success_age_seconds", "Seconds since the directory was last fetched successfully."},
			{"last_fetch", "phonebook_directory_last_fetch_age_seconds", "Seconds since the last fetch attempt."},
		} {
			if v, ok := ubus.Get(dir.List, f.member); ok && v.Kind == ubus.String {
				if t, err := time.Parse(time.RFC3339, v.Str); err == nil {
					w.one(f.name, "gauge", f.help, max(now.Sub(t).Seconds(), 0))
				}
			}
		}
	}
	mon, ok := ubus.Get(st, "monitor")
	if !ok {
		return
	}
	if v, ok := number(mon.List, "phones", "probed"); ok {
		w.one("phonebook_probe_phones", "gauge", "Registered phones probed.", v)
	}
	if v, ok := number(mon.List, "phones", "not_answering"); ok {
		w.one("phonebook_probe_phones_not_answering", "gauge", "Probed phones whose last probe went unanswered.", v)
	}
	targets, _ := ubus.Get(mon.List, "targets")
	for _, f := range []struct {
		member, name, help string
		scale              float64
	}{
		{"rtt_ms", "phonebook_probe_rtt_seconds", "Last probe round trip to a configured target.", 1e-3},
		{"jitter_ms", "phonebook_probe_jitter_seconds", "Probe jitter to a configured target.", 1e-3},
		{"loss_pct", "phonebook_probe_loss_ratio", "Share of recent probes to a configured target that went unanswered.", 1e-2},
	} {
		first := true
		for _, t := range targets.List {
			name, _ := ubus.Get(t.List, "target")
			if v, ok := number(t.List, f.member); ok {
				if first {
					w.family(f.name, "gauge", f.help)
					first = false
				}
				w.sample(f.name, v*f.scale, "target", name.Str)
			}
		}
	}
}
