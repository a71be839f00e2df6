package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/metrics"
	"github.com/aredn/phonebookd/supervisor"
	"github.com/aredn/phonebookd/ubus"
)

// The documents every bus answers with, from one snapshot: ubus sends
// the blobmsg bodies as they are, D-Bus and the reporter their JSON. A
// reader finds each answer here once, whatever carries it.

// evalWait bounds how long a request waits for an evaluation it asked
// the safety worker for (events are evaluated at most once per
// minEventGap).
const evalWait = 3 * time.Second

// snapshot returns the latest health evaluation. Before the first one it
// asks the safety worker, the evaluation's only owner, and waits for it,
// bounded; only if that worker produced nothing in time (it cannot run)
// is one evaluation made here, serialised with the owner's like any
// other.
func (d *Daemon) snapshot() *health.Snapshot {
	if s := d.sys.Snapshot(); s != nil {
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), evalWait)
	defer cancel()
	s, err := d.sys.Next(ctx)
	if s != nil {
		return s
	}
	d.log.Warn("no health evaluation from the safety worker; evaluating here", "err", err)
	return d.sys.Sample()
}

// evaluatedAfter asks for an evaluation after a change a request made and
// waits for it, bounded by ctx and evalWait; it returns the newest
// snapshot there is.
func (d *Daemon) evaluatedAfter(ctx context.Context) *health.Snapshot {
	ctx, cancel := context.WithTimeout(ctx, evalWait)
	defer cancel()
	if s, err := d.sys.Next(ctx); s != nil {
		if err != nil {
			d.log.Warn("health evaluation late; answering with the latest", "err", err)
		}
		return s
	}
	return d.snapshot()
}

// now is when a document is sent: its timestamp and uptime are computed
// then, not when the snapshot was taken.
func (d *Daemon) now() time.Time { return d.clock.Now() }

// errInvalid: the caller's arguments were wrong.
var errInvalid = errors.New("invalid argument")

func (d *Daemon) statusBody() []byte  { return d.sys.StatusDoc(d.snapshot(), d.now()) }
func (d *Daemon) checkBody() []byte   { return d.sys.CheckDoc(d.snapshot(), d.now()) }
func (d *Daemon) threadsBody() []byte { return d.snapshot().ThreadsBody }

func (d *Daemon) crashesDoc(limit, offset int) (health.Crashes, error) {
	if limit < 0 || offset < 0 {
		return health.Crashes{}, fmt.Errorf("%w: limit and offset must not be negative", errInvalid)
	}
	return health.CrashesDoc(d.snapshot().Crashes, offset, limit), nil
}

func (d *Daemon) clearCrashes(ctx context.Context) error {
	if err := d.crashes.Clear(d.clock.Now()); err != nil {
		d.log.Error("clear crashes", "err", err)
		return err
	}
	d.evaluatedAfter(ctx) // the reply comes once the documents show it
	return nil
}

// restartWorker asks the supervisor to restart a worker for a caller
// (via: ubus, D-Bus). restarted is false when a restart was already under
// way and nothing more was done, so that the caller is not told
// "restarted" for a restart that did not happen; the supervisor
// rate-limits the log lines.
func (d *Daemon) restartWorker(name, via string) (restarted bool, err error) {
	switch err := d.sup.RestartBy(name, via); {
	case err == nil:
		return true, nil
	case errors.Is(err, supervisor.ErrAlreadyRestarting):
		return false, nil
	case errors.Is(err, supervisor.ErrUnknownWorker):
		return false, fmt.Errorf("%w: %w", errInvalid, err)
	default:
		return false, err
	}
}

func (d *Daemon) historyDoc(limit int) (health.HistoryDoc, error) { return d.historyPage(limit, 0) }

// historyPage is one page of the history: at most limit points
// (health.MaxHistoryPage; 0 is that many) ending offset points before
// the newest, so that an answer stays far inside ubus's message limit
// however large history_points is.
func (d *Daemon) historyPage(limit, offset int) (health.HistoryDoc, error) {
	if limit < 0 || offset < 0 {
		return health.HistoryDoc{}, fmt.Errorf("%w: limit and offset must not be negative", errInvalid)
	}
	return d.sys.History().Page(d.snapshot().Crashes.Records, limit, offset), nil
}

// metricsText is the Prometheus exposition of the latest evaluation.
func (d *Daemon) metricsText() []byte {
	in := metrics.Input{Snap: d.snapshot(), Status: d.services(), Now: d.now()}
	if d.metricsSrv != nil {
		st := d.metricsSrv.Stats()
		in.Refused = st.Refused()
		if d.config().Metrics.Listen != "" {
			in.Listener = &st
		}
	}
	return metrics.Render(in)
}

// services are the status document's service tables (sip, directory,
// monitor): all that the metrics read of it.
func (d *Daemon) services() []ubus.Value {
	return []ubus.Value{d.sip.Status(), d.fetcher.Status(), d.monitor.Status()}
}

// status is the showphonebook document: directory, settings problems and
// the software_health section.
func (d *Daemon) status() []ubus.Value {
	snap := d.snapshot()
	d.mu.Lock()
	errs := ubus.Arr("config_errors")
	for _, e := range d.cfgErrs {
		errs.List = append(errs.List, ubus.Str("", e))
	}
	d.mu.Unlock()
	rs := d.reporter.Stats()
	rep := ubus.Tbl("reporter", ubus.Bool("enabled", d.config().Reporter.URL != ""), ubus.I32("queued", int32(rs.Queued)),
		ubus.I64("sent", rs.Sent), ubus.I64("failed", rs.Failed), ubus.I64("dropped", rs.Dropped), health.Time{Time: rs.LastSuccess}.UbusValue("last_success"))
	if rs.LastError != "" {
		rep.List = append(rep.List, ubus.Str("last_error", rs.LastError))
	}
	return append(d.services(), rep, d.metricsStatus(), d.dbusStatus(), errs,
		ubus.Tbl("software_health", d.sys.SoftwareHealth(snap, d.now())...),
		ubus.Str("health_status", snap.Status))
}

// report is the agent health report for the collector (docs/REPORTER.md):
// the specification's section 5.1 sip_status and its software_health.
func (d *Daemon) report(reason string) ([]byte, error) {
	snap, now := d.snapshot(), d.now()
	node := d.config().Reporter.Node
	if node == "" {
		var err error
		if node, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("report: host name: %w", err)
		}
	}
	sh := d.sys.SoftwareHealth(snap, now)
	uptime, _ := ubus.Get(sh, "uptime_seconds")
	reg, active := d.sip.Counts()
	score := ubus.Null("health_score")
	if s := snap.Check.HealthScore; s != nil {
		score = ubus.Dbl("health_score", *s)
	}
	doc := []ubus.Value{
		ubus.Str("node", node),
		ubus.Str("timestamp", now.UTC().Format(time.RFC3339)),
		ubus.Str("reason", reason),
		ubus.Tbl("sip_status", ubus.I32("registered_users", int32(reg)), ubus.I32("active_calls", int32(active)), ubus.I64("uptime_seconds", uptime.Int)),
		ubus.Str("health_status", snap.Status),
		score,
		ubus.Tbl("software_health", sh...),
	}
	return []byte(ubus.FormatJSON(doc, false, -1)), nil
}

// jsonOf renders a blobmsg table body as the JSON "ubus call" prints.
func jsonOf(body []byte) string {
	vs, err := ubus.DecodeValues(body)
	if err != nil { // our own encoding: cannot happen short of a bug
		return fmt.Sprintf(`{"error":%q}`, err.Error())
	}
	return ubus.FormatJSON(vs, false, -1)
}

// serveMetrics runs the optional Prometheus listener (metrics.listen) and
// restarts it when the setting changes. An address that cannot be bound
// is a health condition, retried every 10 s, never an exit.
func (d *Daemon) serveMetrics(ctx context.Context) {
	for ctx.Err() == nil {
		cfg := d.config().Metrics
		if cfg.Listen == "" {
			d.sys.SetHealthy(health.MetricsListen, "")
			select {
			case <-ctx.Done():
			case <-d.metricsKick:
			}
			continue
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
		if err != nil {
			d.sys.SetUnhealthy(health.MetricsListen, "", health.Args{health.ArgError: err.Error()})
			select {
			case <-ctx.Done():
			case <-d.metricsKick:
			case <-time.After(10 * time.Second):
			}
			continue
		}
		d.sys.SetHealthy(health.MetricsListen, "")
		d.log.Info("serving Prometheus metrics", "listen", ln.Addr().String())
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- d.metricsSrv.Serve(lctx, ln, metricsLimits(cfg)) }()
		stopped := false
		select {
		case <-d.metricsKick:
		case <-ctx.Done():
		case err := <-done:
			// Accept failed in a way backing off did not cure: a
			// condition, and a pause before the next try, not a loop.
			d.sys.SetUnhealthy(health.MetricsListen, "", health.Args{health.ArgError: err.Error()})
			done <- nil
			stopped = true
		}
		cancel()
		<-done
		if stopped {
			select {
			case <-ctx.Done():
			case <-d.metricsKick:
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// kickMetrics restarts the listener with the current settings.
func (d *Daemon) kickMetrics() {
	select {
	case d.metricsKick <- struct{}{}:
	default:
	}
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }
