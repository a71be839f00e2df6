// Package monitor is the "monitor" worker: it probes the configured mesh
// targets and the registered phones with SIP OPTIONS (no raw sockets),
// keeps round-trip time, jitter and loss per target, reports
// probe_success_rate, counts failures for the health system and raises
// alerts for a silent target or a jittery link.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/sip"
	"github.com/aredn/phonebookd/supervisor"
	"github.com/aredn/phonebookd/ubus"
)

// Window is how many recent probes per target the figures cover.
const Window = 20

// Parallel bounds the probes in flight at once.
const Parallel = 16

// Prober sends one probe.
type Prober interface {
	Probe(ctx context.Context, target string) (time.Duration, error)
	Bindings() []sip.Binding
}

type target struct {
	rtts    []time.Duration // successful round trips, newest last
	results []bool          // newest last
	lastOK  time.Time
	lastErr string
	phone   bool // a registered phone's address, not a configured target
}

// phonesCode is the one condition for registered phones that do not
// answer: phones come and go, so each gets no alert or penalty of its own.
const phonesCode = "phones_unreachable"

// Monitor probes and keeps the figures.
type Monitor struct {
	log    *slog.Logger
	prober Prober
	rates  *health.Rates
	alerts sip.Alerts
	reach  func(ok bool)

	mu      sync.Mutex
	cfg     config.Monitor
	targets map[string]*target
	// phonesDown is the count of the phones condition last raised (0:
	// none raised).
	phonesDown int
}

// New prepares the monitor.
func New(cfg config.Monitor, log *slog.Logger, p Prober, rates *health.Rates, alerts sip.Alerts, reach func(bool)) *Monitor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Monitor{log: log, prober: p, rates: rates, alerts: alerts, reach: reach, cfg: cfg, targets: map[string]*target{}}
}

// Configure applies reloaded settings.
func (m *Monitor) Configure(cfg config.Monitor) {
	m.mu.Lock()
	m.cfg = cfg
	m.mu.Unlock()
}

// Run is the worker.
func (m *Monitor) Run(ctx context.Context, w *supervisor.Worker) error {
	for {
		m.Round(ctx, w)
		m.mu.Lock()
		iv := time.Duration(m.cfg.Interval) * time.Second
		m.mu.Unlock()
		if err := w.Wait(ctx, iv); err != nil {
			return nil
		}
	}
}

// Round probes every target once.
func (m *Monitor) Round(ctx context.Context, w *supervisor.Worker) {
	m.mu.Lock()
	cfg := m.cfg
	m.mu.Unlock()
	names := append([]string(nil), cfg.Targets...)
	phones := map[string]bool{}
	if cfg.ProbePhones {
		for _, b := range m.prober.Bindings() {
			if !phones[b.Addr] {
				phones[b.Addr] = true
				names = append(names, b.Addr)
			}
		}
	}
	// Targets that left the probe set (a phone unregistered or moved to
	// another port, a target removed from UCI) are forgotten, with their
	// conditions: the monitor's memory and alerts follow the set.
	m.prune(names, phones)
	timeout := time.Duration(cfg.ProbeTimeoutMS) * time.Millisecond
	var mu sync.Mutex
	anyOK, any, stopped := false, false, false
	var wg sync.WaitGroup
	sem := make(chan struct{}, Parallel)
	for _, name := range names {
		if w != nil {
			w.Beat()
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			rtt, err := m.prober.Probe(pctx, name)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if ctx.Err() != nil || errors.Is(err, sip.ErrNotRunning) {
				stopped = true // nothing was sent: not a result about the mesh
				return
			}
			any = true
			anyOK = anyOK || err == nil
			m.record(name, rtt, err, cfg, phones[name])
		}()
	}
	wg.Wait()
	if stopped {
		return
	}
	m.phonesCondition()
	if any && m.reach != nil {
		m.reach(anyOK)
	}
}

// prune drops targets not in names and clears their conditions.
func (m *Monitor) prune(names []string, phones map[string]bool) {
	keep := make(map[string]bool, len(names))
	for _, n := range names {
		keep[n] = true
	}
	var gone []string
	m.mu.Lock()
	for n, t := range m.targets {
		if !keep[n] || t.phone != phones[n] {
			delete(m.targets, n)
			if !t.phone {
				gone = append(gone, n)
			}
		}
	}
	m.mu.Unlock()
	for _, n := range gone {
		m.alerts.SetHealthy(health.ProbeFailed, n)
		m.alerts.SetHealthy(health.Jitter, n)
	}
	m.phonesCondition()
}

// phonesCondition raises (or clears) the one condition for phones whose
// last probe failed, only when their count changes.
func (m *Monitor) phonesCondition() {
	m.mu.Lock()
	down, all := 0, 0
	for _, t := range m.targets {
		if !t.phone || len(t.results) == 0 {
			continue
		}
		all++
		if !t.results[len(t.results)-1] {
			down++
		}
	}
	changed := down != m.phonesDown
	m.phonesDown = down
	m.mu.Unlock()
	switch {
	case !changed:
	case down == 0:
		m.alerts.SetHealthy(health.PhonesUnreachable, "")
	default:
		m.alerts.SetUnhealthy(health.PhonesUnreachable, "", health.Args{health.ArgCount: strconv.Itoa(down), health.ArgTotal: strconv.Itoa(all)})
	}
}

func (m *Monitor) record(name string, rtt time.Duration, err error, cfg config.Monitor, phone bool) {
	m.mu.Lock()
	t := m.targets[name]
	if t == nil {
		t = &target{phone: phone}
		m.targets[name] = t
	}
	t.results = append(t.results, err == nil)
	if len(t.results) > Window {
		t.results = t.results[1:]
	}
	if err == nil {
		t.rtts = append(t.rtts, rtt)
		if len(t.rtts) > Window {
			t.rtts = t.rtts[1:]
		}
		t.lastOK, t.lastErr = time.Now(), ""
	} else {
		t.lastErr = err.Error()
	}
	jitter := jitterOf(t.rtts)
	lost := 0
	for _, ok := range t.results {
		if !ok {
			lost++
		}
	}
	m.mu.Unlock()

	if err != nil {
		m.rates.Add(health.CategoryProbe, 1)
	}
	if phone { // phones are summarised in one condition
		return
	}
	if err != nil {
		m.alerts.SetUnhealthy(health.ProbeFailed, name, health.Args{health.ArgCount: strconv.Itoa(lost), health.ArgTotal: strconv.Itoa(len(t.results)), health.ArgError: err.Error()})
	} else {
		m.alerts.SetHealthy(health.ProbeFailed, name)
	}
	if jitter != nil && *jitter > float64(cfg.JitterThresholdMS) {
		m.alerts.SetUnhealthy(health.Jitter, name, health.Args{health.ArgCount: fmt.Sprintf("%.0f", *jitter), health.ArgLimit: strconv.Itoa(cfg.JitterThresholdMS)})
	} else {
		m.alerts.SetHealthy(health.Jitter, name)
	}
}

// jitterOf is the mean absolute difference of consecutive round trips
// (RFC 3550's interarrival idea), in ms; nil with fewer than two.
func jitterOf(rtts []time.Duration) *float64 {
	if len(rtts) < 2 {
		return nil
	}
	var sum float64
	for i := 1; i < len(rtts); i++ {
		sum += math.Abs(float64(rtts[i]-rtts[i-1])) / float64(time.Millisecond)
	}
	j := sum / float64(len(rtts)-1)
	return &j
}

// SuccessRate is the percentage of answered probes over every target's
// window; nil before any probe.
func (m *Monitor) SuccessRate() *float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sent, ok int
	for _, t := range m.targets {
		for _, r := range t.results {
			sent++
			if r {
				ok++
			}
		}
	}
	if sent == 0 {
		return nil
	}
	p := 100 * float64(ok) / float64(sent)
	return &p
}

func optMS(name string, p *float64) ubus.Value {
	if p == nil {
		return ubus.Null(name)
	}
	return ubus.Dbl(name, *p)
}

// Status is the monitor section of "phonebook status".
func (m *Monitor) Status() ubus.Value {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.targets))
	phones, phonesDown := 0, 0
	for n, t := range m.targets {
		if t.phone { // a bounded document: phones as counts, not a list
			phones++
			if len(t.results) > 0 && !t.results[len(t.results)-1] {
				phonesDown++
			}
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	list := ubus.Arr("targets")
	for _, n := range names {
		t := m.targets[n]
		var last *float64
		if len(t.rtts) > 0 {
			v := float64(t.rtts[len(t.rtts)-1]) / float64(time.Millisecond)
			last = &v
		}
		lost := 0
		for _, ok := range t.results {
			if !ok {
				lost++
			}
		}
		loss := 100 * float64(lost) / float64(max(len(t.results), 1))
		e := ubus.Tbl("", ubus.Str("target", n), optMS("rtt_ms", last), optMS("jitter_ms", jitterOf(t.rtts)),
			ubus.Dbl("loss_pct", loss), ubus.I32("probes", int32(len(t.results))))
		if t.lastErr != "" {
			e.List = append(e.List, ubus.Str("last_error", t.lastErr))
		}
		list.List = append(list.List, e)
	}
	return ubus.Tbl("monitor", list, ubus.Tbl("phones", ubus.I32("probed", int32(phones)), ubus.I32("not_answering", int32(phonesDown))))
}

// Targets is how many targets the monitor keeps figures for.
func (m *Monitor) Targets() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.targets)
}
