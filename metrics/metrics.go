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
	"github.com/aredn/phonebookd/directory"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/monitor"
	"github.com/aredn/phonebookd/sip"
	"github.com/aredn/phonebookd/supervisor"
)

// ContentType is the exposition format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Input is what one rendering reads.
type Input struct {
	Snap *health.Snapshot
	// Services are the service sections of the daemon's "phonebook
	// status" document (sip, directory, monitor); nil leaves those
	// families out.
	Services *Services
	Now      time.Time
	// Refused counts scrapes the listener turned away at its bounds.
	Refused int64
	// Listener is the listener's counters; nil when it is off (the
	// node's own /metrics through ubus).
	Listener *Stats
}

// Services are the service sections of "phonebook status", as the
// services report them: read here field by field, so that a member
// renamed is a compile error rather than a metric silently gone. The
// daemon's document embeds it; the page decodes it.
type Services struct {
	SIP       sip.Status       `json:"sip"`
	Directory directory.Status `json:"directory"`
	Monitor   monitor.Status   `json:"monitor"`
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
	if p := h.Process; p != nil && p.OSThreads != nil {
		w.one("phonebook_process_os_threads", "gauge", "OS threads of the process (the Go runtime keeps the threads it made).", float64(*p.OSThreads))
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
		if f := t.MonitorFigures; f != nil && f.ProbeSuccessRate != nil {
			w.one("phonebook_probe_success_ratio", "gauge", "Share of recent probes answered (targets and phones).", *f.ProbeSuccessRate/100)
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
	if in.Services != nil {
		service(w, in.Services, in.Now)
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

func service(w *writer, st *Services, now time.Time) {
	sp := &st.SIP
	for _, f := range []struct {
		name, typ, help string
		v               float64
	}{
		{"phonebook_sip_registered_users", "gauge", "Users with at least one binding.", float64(sp.RegisteredUsers)},
		{"phonebook_sip_bindings", "gauge", "Registered contacts.", float64(sp.Bindings)},
		{"phonebook_sip_max_bindings", "gauge", "Bound on registered users (sip.max_bindings).", float64(sp.MaxBindings)},
		{"phonebook_sip_active_calls", "gauge", "Calls in progress through the proxy.", float64(sp.ActiveCalls)},
		{"phonebook_sip_transactions", "gauge", "Proxied INVITE transactions open.", float64(sp.Transactions)},
		{"phonebook_sip_tcp_connections", "gauge", "SIP over TCP connections open.", float64(sp.TCPConnections)},
		{"phonebook_directory_entries", "gauge", "Entries in the published phone directory.", float64(st.Directory.Entries)},
		{"phonebook_sip_registrations_total", "counter", "REGISTER requests accepted.", float64(sp.RegistrationsTotal)},
		{"phonebook_sip_malformed_total", "counter", "Malformed SIP messages answered 400 or dropped.", float64(sp.MalformedTotal)},
		{"phonebook_sip_calls_total", "counter", "Calls set up through the proxy.", float64(sp.CallsTotal)},
		{"phonebook_sip_tcp_accept_errors_total", "counter", "Failed TCP accepts (descriptor exhaustion and the like).", float64(sp.TCPAcceptErrors)},
		{"phonebook_sip_tcp_dial_errors_total", "counter", "Failed TCP connections to phones (connect refused, or not served).", float64(sp.TCPDialErrors)},
		{"phonebook_sip_tcp_poll_errors_total", "counter", "TCP connections closed because their events could not be armed again.", float64(sp.TCPPollErrors)},
		{"phonebook_sip_forged_responses_total", "counter", "Responses dropped because their branch MAC did not verify.", float64(sp.ForgedResponses)},
		{"phonebook_sip_calls_expired_unacked_total", "counter", "Calls freed because their 200 was never ACKed within 64*T1.", float64(sp.CallsExpiredUnacked)},
	} {
		w.one(f.name, f.typ, f.help, f.v)
	}
	w.family("phonebook_sip_shed_total", "counter", "Requests or connections shed at a bound, by cause.")
	for _, c := range sp.Shed.Causes() {
		w.sample("phonebook_sip_shed_total", float64(c.Count), "cause", c.Cause)
	}
	for _, f := range []struct {
		at         health.Time
		name, help string
	}{
		{st.Directory.LastSuccess, "phonebook_directory_last_success_age_seconds", "Seconds since the directory was last fetched successfully."},
		{st.Directory.LastFetch, "phonebook_directory_last_fetch_age_seconds", "Seconds since the last fetch attempt."},
	} {
		if !f.at.IsZero() { // else never: no age
			// Whole seconds, as the document says the time.
			w.one(f.name, "gauge", f.help, max(now.Sub(f.at.Truncate(time.Second)).Seconds(), 0))
		}
	}
	mon := &st.Monitor
	w.one("phonebook_probe_phones", "gauge", "Registered phones probed.", float64(mon.Phones.Probed))
	w.one("phonebook_probe_phones_not_answering", "gauge", "Probed phones whose last probe went unanswered.", float64(mon.Phones.NotAnswering))
	for _, f := range []struct {
		name, help string
		v          func(t *monitor.TargetStatus) *float64
		scale      float64
	}{
		{"phonebook_probe_rtt_seconds", "Last probe round trip to a configured target.", func(t *monitor.TargetStatus) *float64 { return t.RTTMS }, 1e-3},
		{"phonebook_probe_jitter_seconds", "Probe jitter to a configured target.", func(t *monitor.TargetStatus) *float64 { return t.JitterMS }, 1e-3},
		{"phonebook_probe_loss_ratio", "Share of recent probes to a configured target that went unanswered.", func(t *monitor.TargetStatus) *float64 { return &t.LossPct }, 1e-2},
	} {
		first := true
		for i := range mon.Targets {
			t := &mon.Targets[i]
			if v := f.v(t); v != nil { // null: not measured yet
				if first {
					w.family(f.name, "gauge", f.help)
					first = false
				}
				w.sample(f.name, *v*f.scale, "target", t.Target)
			}
		}
	}
}
