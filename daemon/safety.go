package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/httpc"
	"github.com/aredn/phonebookd/supervisor"
)

// safetyPeriod is the safety worker's heartbeat period.
const safetyPeriod = 10 * time.Second

// orphanAge: a temporary file older than this was left by an interrupted
// atomic write.
const orphanAge = time.Minute

// safety is the "safety" worker: it keeps the health evaluation's cadence
// (every health_check_interval and on events) and the hygiene (orphaned
// temporary files of interrupted writes removed).
type safety struct {
	d *Daemon
	// reports is the last reports_undelivered state raised ("" none),
	// so that an unchanged state does not trigger an evaluation.
	reports string
	// swept is when the orphaned temporary files were last looked for.
	swept time.Time
}

// orphanSweepEvery: how often the directories are listed for orphaned
// temporary files. They are left only by a write that the process's
// end interrupted, so the first evaluation after a start finds them; a
// listing of four directories at every evaluation (every minute, every
// second at health_check_interval 1) was a steady share of what the idle
// daemon allocated, for nothing.
const orphanSweepEvery = 10 * time.Minute

func (s *safety) run(ctx context.Context, w *supervisor.Worker) error {
	var next, last time.Time
	pending := false // an event asked for an evaluation not yet run
	clk := s.d.clock
	for {
		w.Beat()
		now := clk.Now()
		if !now.Before(next) {
			s.reportDelivery()
			s.alive(now)
			s.d.sys.Sample()
			s.hygiene(now)
			last, pending = now, false
			next = now.Add(time.Duration(s.d.config().Health.HealthCheckInterval) * time.Second)
		} else if due := s.d.sys.Due(); (pending || !due.IsZero() && !now.Before(due)) && now.Sub(last) >= minEventGap {
			// An event, or a held or settling condition ending.
			s.alive(now)
			s.d.sys.Sample()
			last, pending = now, false
		}
		wait := min(safetyPeriod, next.Sub(now))
		if pending {
			wait = min(wait, minEventGap-now.Sub(last))
		}
		if due := s.d.sys.Due(); !due.IsZero() {
			wait = min(wait, max(due.Sub(now), minEventGap-now.Sub(last), 0))
		}
		t := clk.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.d.sys.Triggered():
			// Events (a condition set or cleared, a worker changing
			// state) evaluate at most once per minEventGap: a flood of
			// them must not turn into a flood of evaluations.
			pending = true
		case <-w.Poked():
		case <-t.C():
		}
		t.Stop()
	}
}

// alive refreshes the run marker (RAM) and writes crash records whose
// coalescing window has passed (flash): file I/O kept out of the
// evaluation itself.
func (s *safety) alive(now time.Time) {
	if s.d.crashes != nil {
		s.d.crashes.Alive(now)
	}
}

// minEventGap is the least time between two evaluations asked for by
// events.
const minEventGap = time.Second

// reportDelivery raises reports_undelivered while the collector refuses
// or cannot be reached (the descriptor shows it after 10 minutes).
func (s *safety) reportDelivery() {
	url := httpc.Redact(s.d.config().Reporter.URL) // shown in the alert: no password
	st := s.d.reporter.Stats()
	if url == "" || st.LastError == "" {
		if s.reports != "" {
			s.d.sys.SetHealthy(health.ReportsUndelivered, "")
			s.reports = ""
		}
		return
	}
	args := health.Args{health.ArgPath: url, health.ArgCount: strconv.Itoa(st.Queued), health.ArgTotal: strconv.FormatInt(st.Dropped, 10), health.ArgError: st.LastError}
	if key := fmt.Sprint(args); key != s.reports {
		s.d.sys.SetUnhealthy(health.ReportsUndelivered, "", args)
		s.reports = key
	}
}

// hygiene sweeps expired bindings and stale calls, and removes temporary
// files that an interrupted atomic write left.
func (s *safety) hygiene(now time.Time) {
	if b, c := s.d.sip.Sweep(now); b+c > 0 {
		s.d.log.Info("swept", "expired_bindings", b, "stale_calls", c)
	}
	if !s.swept.IsZero() && now.Sub(s.swept) < orphanSweepEvery {
		return
	}
	s.swept = now
	cfg := s.d.config()
	dirs := []string{cfg.Main.StateDir, cfg.Main.RunDir, filepath.Dir(filepath.Join(cfg.Main.WWWDir, cfg.Fetcher.XMLPath)), s.d.opt.ConfDir}
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") || !strings.Contains(e.Name(), ".tmp-") {
				continue
			}
			info, err := e.Info()
			if err != nil || now.Sub(info.ModTime()) < orphanAge {
				continue
			}
			if os.Remove(filepath.Join(dir, e.Name())) == nil {
				s.d.log.Info("removed an orphaned temporary file", "path", filepath.Join(dir, e.Name()))
			}
		}
	}
}

// workerExtra adds the specification's worker-specific figures.
func (d *Daemon) workerExtra(worker string, all []supervisor.WorkerStatus) health.WorkerFigures {
	switch worker {
	case "safety":
		// Recoveries: automatic restarts of crashed or stuck workers.
		// Expired bindings (a phone switched off) and the operator's
		// restarts are not recoveries.
		var n int64
		for _, w := range all {
			n += int64(w.AutoRestarts)
		}
		return health.WorkerFigures{SafetyFigures: &health.SafetyFigures{RecoveriesPerformed: n}}
	case "monitor":
		// probe_success_rate is null before the first probe.
		return health.WorkerFigures{MonitorFigures: &health.MonitorFigures{ProbeSuccessRate: d.monitor.SuccessRate()}}
	case "fetcher":
		st := d.fetcher.Status()
		return health.WorkerFigures{FetcherFigures: &health.FetcherFigures{LastSuccess: st.LastSuccess, Entries: st.Entries}}
	}
	return health.WorkerFigures{}
}
