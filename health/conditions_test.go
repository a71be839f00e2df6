package health

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/internal/poll"
	"github.com/aredn/phonebookd/supervisor"
)

// TestBlockedWorkerOneStatusChange: the SIP port held by another process
// for 60 s. The supervisor retries main with backoff, and at each retry
// main is healthy for a moment (binding); an evaluation that lands then
// must not clear worker_blocked. Over the 60 s: one status (critical),
// one since, threads_responsive false throughout; once main binds, the
// condition clears after the settle time, not before (before: critical
// -> healthy -> critical at every retry, since reset each time).
func TestBlockedWorkerOneStatusChange(t *testing.T) {
	clock := newFakeClock()
	sup := supervisor.New(supervisor.Options{Clock: clock, MaxRestarts: 3, Window: time.Hour})
	gate := make(chan struct{})
	var fixed atomic.Bool
	sup.Add(supervisor.Spec{Name: "main", Period: time.Second, Essential: true, Run: func(ctx context.Context, w *supervisor.Worker) error {
		if fixed.Load() {
			return w.Wait(ctx, time.Hour)
		}
		select { // binding
		case <-gate:
		case <-ctx.Done():
			return nil
		}
		return supervisor.Blocked(errors.New("listen udp 127.0.0.1:5060: bind: address already in use"))
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); sup.Wait(context.Background()) }()
	sup.Start(ctx)
	gate <- struct{}{}
	poll.Until(t, "main blocked", func() bool { return status(sup, "main").Status == supervisor.StatusBlocked })
	dir := t.TempDir()
	h := NewSystem(Options{Clock: clock, Rates: NewRates(clock), Supervisor: sup, StateDir: dir, RunDir: dir}, testConfig())

	var statuses []string
	var sinces []time.Time
	retries := 0
	sample := func() {
		s := h.Sample()
		if len(statuses) == 0 || statuses[len(statuses)-1] != s.Status {
			statuses = append(statuses, s.Status)
		}
		if a := alert(s, "worker_blocked:main"); a != nil && (len(sinces) == 0 || !sinces[len(sinces)-1].Equal(a.Since)) {
			sinces = append(sinces, a.Since)
		}
		if s.Check.Checks == nil || *s.Check.Checks.ThreadsResponsive {
			t.Errorf("threads_responsive true at %s with main %s", s.Time.Format(time.TimeOnly), status(sup, "main").Status)
		}
	}
	sample()
	for i := 0; i < 60; i++ {
		clock.Advance(time.Second)
		if status(sup, "main").Status == supervisor.StatusHealthy { // a retry, binding
			retries++
			sample()
			gate <- struct{}{}
			poll.Until(t, "main blocked again", func() bool { return status(sup, "main").Status == supervisor.StatusBlocked })
		}
		sample()
	}
	if retries < 4 || len(statuses) != 1 || statuses[0] != Critical || len(sinces) != 1 {
		t.Fatalf("%d retries in 60 s: statuses %v, since %v", retries, statuses, sinces)
	}

	// The port is freed: main runs from its next retry, and the
	// condition clears only once it has run for the settle time.
	fixed.Store(true)
	var started time.Time
	for i := 0; i < 60 && started.IsZero(); i++ {
		clock.Advance(time.Second)
		if w := status(sup, "main"); w.Status == supervisor.StatusHealthy {
			started = w.Started
		}
	}
	if started.IsZero() {
		t.Fatal("main not retried")
	}
	clock.Advance(workerSettle - 2*time.Second)
	if s := h.Sample(); alert(s, "worker_blocked:main") == nil || !alert(s, "worker_blocked:main").Since.Equal(sinces[0]) {
		t.Errorf("cleared before main ran for the settle time: %+v", s.Alerts)
	}
	if due := h.Due(); !due.Equal(started.Add(workerSettle)) {
		t.Errorf("due %v, want the end of the settle time %v", due, started.Add(workerSettle))
	}
	clock.Advance(2 * time.Second)
	if s := h.Sample(); alert(s, "worker_blocked") != nil || s.Status != Healthy {
		t.Errorf("after running %s: %s %+v", workerSettle, s.Status, s.Alerts)
	}
}

// TestOverloadHeld: shedding stops; overload is still shown 20 s after
// the last shed, with its first since, and gone once the hold has passed
// (before: about 4 s, so a 15-60 s scrape missed it).
func TestOverloadHeld(t *testing.T) {
	clock := newFakeClock()
	h := newSystem(t, clock, testConfig())
	t0 := clock.Now()
	h.SetUnhealthy(Overload, "", Args{ArgDetail: "2s", ArgError: "registrations 40"})
	h.Sample()
	clock.Advance(2 * time.Second)
	h.SetHealthy(Overload, "") // sip: nothing shed in the last 2 s
	clock.Advance(20 * time.Second)
	s := h.Sample()
	if a := alert(s, "overload"); a == nil || !a.Since.Equal(t0) || s.Status != Degraded {
		t.Fatalf("20 s after the last shed: %s %+v", s.Status, s.Alerts)
	}
	if due := h.Due(); !due.Equal(t0.Add(counterHold)) { // the owner evaluates when the hold ends
		t.Errorf("due %v, want %v", due, t0.Add(counterHold))
	}
	clock.Advance(counterHold)
	if s := h.Sample(); alert(s, "overload") != nil || s.Status != Healthy {
		t.Errorf("after the hold: %s %+v", s.Status, s.Alerts)
	}
}

// TestNetworkUnreachableNeedsEvidence: one refused fetch with nothing
// succeeding is no evidence (before: network_unreachable at once); every
// source failing repeatedly over the window is; one success clears it.
func TestNetworkUnreachableNeedsEvidence(t *testing.T) {
	clock := newFakeClock()
	h := newSystem(t, clock, testConfig())
	h.Reach("fetcher", false)
	s := h.Sample()
	if alert(s, "network_unreachable") != nil || s.Check.Checks.NetworkReachable != nil {
		t.Fatalf("one failure: %+v, reachable %v", s.Alerts, s.Check.Checks.NetworkReachable)
	}
	for i := 0; i < 22; i++ { // the monitor's probes fail for 11 minutes
		clock.Advance(30 * time.Second)
		h.Reach("monitor", false)
		if i == 10 {
			h.Reach("fetcher", false) // a retry of the fetch
		}
		s = h.Sample()
		if i < 19 && alert(s, "network_unreachable") != nil {
			t.Fatalf("raised after %s of failures", time.Duration(i+1)*30*time.Second)
		}
	}
	if alert(s, "network_unreachable") == nil || *s.Check.Checks.NetworkReachable {
		t.Fatalf("every source silent for 11 min: %+v", s.Alerts)
	}
	h.Reach("monitor", true)
	if s := h.Sample(); alert(s, "network_unreachable") != nil || !*s.Check.Checks.NetworkReachable {
		t.Errorf("after a probe answered: %+v", s.Alerts)
	}
}
