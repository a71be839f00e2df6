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
	"strings"
	"sync"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/sip"
	"github.com/aredn/phonebookd/supervisor"
)

// Window is how many recent probes per target the figures cover.
const Window = 20

// Parallel bounds the probes in flight at once.
const Parallel = 16

// Prober sends one probe.
type Prober interface {
	// Probe sends OPTIONS to a configured target, host:port.
	Probe(ctx context.Context, target string) (time.Duration, error)
	// ProbeBinding sends OPTIONS to a registered phone as it registered
	// (its Contact URI, its transport, its flow).
	ProbeBinding(ctx context.Context, b sip.Binding) (time.Duration, error)
	// Bindings lists the live bindings.
	Bindings() []sip.Binding
	// Counts is how many phones are registered (and calls active): a
	// round with no phone does not ask for the bindings, whose list is
	// copied and sorted each time.
	Counts() (registered, active int)
}

type target struct {
	rtts    []time.Duration // successful round trips, newest last
	results []bool          // newest last
	lastOK  time.Time
	lastErr string
	phone   bool   // a registered phone, not a configured target
	user    string // the phone's number (user part of its address of record)
}

// phonesCode is the one condition for registered phones that do not
// answer: phones come and go, so each gets no alert or penalty of its own.
const phonesCode = "phones_unreachable"

// MaxListed bounds the numbers of silent phones "phonebook status" lists.
const MaxListed = 16

// namedInCondition is how many numbers the phones condition's text names.
const namedInCondition = 3

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
	// phonesKey identifies the phones condition last raised ("": none
	// raised): it is raised again only when it would read differently.
	phonesKey string
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

// job is one probe of a round: a configured target, or a phone's binding.
type job struct {
	key   string
	phone *sip.Binding
}

// phoneKey names a phone's binding among the targets: its number and
// contact (one number may have several phones).
func phoneKey(b sip.Binding) string { return "phone " + b.User + " " + b.Contact }

// Round probes every target once. The phones probed are the binding
// table of now: a phone that unregistered or expired is no longer probed
// nor counted from this round on.
func (m *Monitor) Round(ctx context.Context, w *supervisor.Worker) {
	m.mu.Lock()
	cfg := m.cfg
	m.mu.Unlock()
	jobs := make([]job, 0, len(cfg.Targets))
	var seen map[string]bool // made with the first job: an idle round allocates nothing
	if len(cfg.Targets) > 0 {
		seen = map[string]bool{}
	}
	for _, t := range cfg.Targets {
		if !seen[t] {
			seen[t] = true
			jobs = append(jobs, job{key: t})
		}
	}
	if reg, _ := m.prober.Counts(); cfg.ProbePhones && reg > 0 {
		for _, b := range m.prober.Bindings() {
			k := phoneKey(b)
			if seen == nil {
				seen = map[string]bool{}
			}
			if !seen[k] {
				seen[k] = true
				jobs = append(jobs, job{key: k, phone: &b})
			}
		}
	}
	// Targets that left the probe set (a phone unregistered or moved to
	// another port, a target removed from UCI) are forgotten, with their
	// conditions: the monitor's memory and alerts follow the set.
	m.prune(jobs)
	if len(jobs) == 0 {
		return // nothing to probe: prune settled the phones condition
	}
	timeout := time.Duration(cfg.ProbeTimeoutMS) * time.Millisecond
	var mu sync.Mutex
	anyOK, any, stopped := false, false, false
	var wg sync.WaitGroup
	sem := make(chan struct{}, Parallel)
	for _, j := range jobs {
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
			var rtt time.Duration
			var err error
			if j.phone != nil {
				rtt, err = m.prober.ProbeBinding(pctx, *j.phone)
			} else {
				rtt, err = m.prober.Probe(pctx, j.key)
			}
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if ctx.Err() != nil || errors.Is(err, sip.ErrNotRunning) {
				stopped = true // nothing was sent: not a result about the mesh
				return
			}
			// A silent phone says nothing about the mesh (it was switched
			// off): only configured targets, or a phone that answered,
			// tell whether the network is reachable.
			if j.phone == nil || err == nil {
				any = true
				anyOK = anyOK || err == nil
			}
			m.record(j, rtt, err, cfg)
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

// prune drops targets not among jobs and clears their conditions.
func (m *Monitor) prune(jobs []job) {
	m.mu.Lock()
	none := len(jobs) == 0 && len(m.targets) == 0 && m.phonesKey == ""
	m.mu.Unlock()
	if none { // nothing probed, nothing kept, nothing raised: nothing to do
		return
	}
	keep := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		keep[j.key] = true
	}
	var gone []string
	m.mu.Lock()
	for n, t := range m.targets {
		if !keep[n] {
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

// silentPhones returns the phones whose last probe failed, how many
// were probed, and the numbers of the silent ones, sorted and without
// repeats (m.mu held).
func (m *Monitor) silentPhones() (down, all int, numbers []string) {
	seen := map[string]bool{}
	for _, t := range m.targets {
		if !t.phone || len(t.results) == 0 {
			continue
		}
		all++
		if !t.results[len(t.results)-1] {
			down++
			if !seen[t.user] {
				seen[t.user] = true
				numbers = append(numbers, t.user)
			}
		}
	}
	sort.Strings(numbers)
	return down, all, numbers
}

// phonesCondition raises (or clears) the one condition for phones whose
// last probe failed, only when it would read differently.
func (m *Monitor) phonesCondition() {
	m.mu.Lock()
	down, all, numbers := m.silentPhones()
	args := health.Args{health.ArgCount: strconv.Itoa(down), health.ArgTotal: strconv.Itoa(all), health.ArgDetail: nameSome(numbers, namedInCondition)}
	key := ""
	if down > 0 {
		key = fmt.Sprint(args)
	}
	changed := key != m.phonesKey
	m.phonesKey = key
	m.mu.Unlock()
	switch {
	case !changed:
	case down == 0:
		m.alerts.SetHealthy(health.PhonesUnreachable, "")
	default:
		m.alerts.SetUnhealthy(health.PhonesUnreachable, "", args)
	}
}

// nameSome names up to n of numbers: "301, 302, 303 and 4 more".
func nameSome(numbers []string, n int) string {
	if len(numbers) <= n {
		return strings.Join(numbers, ", ")
	}
	return strings.Join(numbers[:n], ", ") + " and " + strconv.Itoa(len(numbers)-n) + " more"
}

func (m *Monitor) record(j job, rtt time.Duration, err error, cfg config.Monitor) {
	name, phone := j.key, j.phone != nil
	m.mu.Lock()
	t := m.targets[name]
	if t == nil {
		t = &target{phone: phone}
		if phone {
			t.user = j.phone.User
		}
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

	// Phones are summarised in one condition, which follows the binding
	// table each round; their failures are not added to the hour's probe
	// failure rate, which would keep a departed phone's penalty for an
	// hour after it left.
	if phone {
		return
	}
	if err != nil {
		m.rates.Add(health.CategoryProbe, 1)
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

// Status is the monitor section of "phonebook status": read as fields by
// the metrics and the page, encoded by each front through its json tags.
type Status struct {
	Targets []TargetStatus `json:"targets"`
	Phones  PhonesStatus   `json:"phones"`
}

// TargetStatus is one configured target's figures.
type TargetStatus struct {
	Target    string   `json:"target"`
	RTTMS     *float64 `json:"rtt_ms"`    // null: no answer yet
	JitterMS  *float64 `json:"jitter_ms"` // null: fewer than two answers
	LossPct   float64  `json:"loss_pct"`
	Probes    int32    `json:"probes"`
	LastError string   `json:"last_error,omitempty"`
}

// PhonesStatus counts the registered phones probed, with the numbers of
// those that did not answer their last probe (sorted, at most MaxListed).
type PhonesStatus struct {
	Probed                   int32    `json:"probed"`
	NotAnswering             int32    `json:"not_answering"`
	NotAnsweringNumbersTotal int32    `json:"not_answering_numbers_total"`
	NotAnsweringNumbers      []string `json:"not_answering_numbers"`
}

// Status is the monitor section of "phonebook status": the configured
// targets' figures, and the phones as counts with the numbers of those
// that did not answer their last probe (sorted, at most MaxListed).
func (m *Monitor) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.targets))
	phones := 0
	for n, t := range m.targets {
		if t.phone {
			phones++
			continue
		}
		names = append(names, n)
	}
	phonesDown, _, numbers := m.silentPhones()
	sort.Strings(names)
	st := Status{Targets: make([]TargetStatus, 0, len(names))}
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
		st.Targets = append(st.Targets, TargetStatus{Target: n, RTTMS: last, JitterMS: jitterOf(t.rtts), LossPct: loss,
			Probes: int32(len(t.results)), LastError: t.lastErr})
	}
	st.Phones = PhonesStatus{Probed: int32(phones), NotAnswering: int32(phonesDown), NotAnsweringNumbersTotal: int32(len(numbers)),
		NotAnsweringNumbers: append([]string{}, numbers[:min(len(numbers), MaxListed)]...)}
	return st
}

// Targets is how many targets the monitor keeps figures for.
func (m *Monitor) Targets() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.targets)
}
