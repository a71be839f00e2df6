package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/metrics"
	"github.com/aredn/phonebookd/supervisor"
)

// The documents every bus answers with, from one snapshot, as Go values:
// the ubus front encodes them as blobmsg (ubus.AppendStruct), D-Bus and
// the reporter as JSON (encoding/json). A reader finds each answer here
// once, whatever carries it.

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

func (d *Daemon) statusDoc() health.SoftwareHealth { return d.sys.StatusDoc(d.snapshot(), d.now()) }
func (d *Daemon) checkDoc() health.Check           { return d.sys.CheckDoc(d.snapshot(), d.now()) }
func (d *Daemon) threadsDoc() health.Threads       { return d.sys.ThreadsDoc(d.snapshot()) }

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
	svc := d.services()
	in := metrics.Input{Snap: d.snapshot(), Services: &svc, Now: d.now()}
	if d.metricsSrv != nil {
		st := d.metricsSrv.Stats()
		in.Refused = st.Refused()
		if d.config().Metrics.Listen != "" {
			in.Listener = &st
		}
	}
	return metrics.Render(in)
}

// services are the status document's service sections (sip, directory,
// monitor): all that the metrics read of it.
func (d *Daemon) services() metrics.Services {
	return metrics.Services{SIP: d.sip.Status(), Directory: d.fetcher.Status(), Monitor: d.monitor.Status()}
}

// StatusDocument is the showphonebook document ("phonebook status"): the
// services, the reporter and the metrics listener, settings problems and
// the software_health section.
type StatusDocument struct {
	metrics.Services
	Reporter       ReporterStatus        `json:"reporter"`
	Metrics        MetricsStatus         `json:"metrics"`
	DBus           DBusStatus            `json:"dbus"`
	ConfigErrors   []string              `json:"config_errors"`
	SoftwareHealth health.SoftwareHealth `json:"software_health"`
	HealthStatus   string                `json:"health_status"`
}

// DBusStatus is the D-Bus front's table in "phonebook status": its
// calls and the calls it shed; only "enabled" where there is no front.
type DBusStatus struct {
	Enabled bool `json:"enabled"`
	*DBusCalls
}

// DBusCalls are the D-Bus front's counters (dbus.Stats).
type DBusCalls struct {
	MaxCalls int32 `json:"max_calls"`
	InFlight int32 `json:"in_flight"`
	Calls    int64 `json:"calls"`
	Shed     int64 `json:"shed"`
	Invalid  int64 `json:"invalid"`
	Panics   int64 `json:"panics"`
}

// ReporterStatus is the collector reporter's table in "phonebook status".
type ReporterStatus struct {
	Enabled     bool        `json:"enabled"`
	Queued      int32       `json:"queued"`
	Sent        int64       `json:"sent"`
	Failed      int64       `json:"failed"`
	Dropped     int64       `json:"dropped"`
	LastSuccess health.Time `json:"last_success"` // null: none yet
	LastError   string      `json:"last_error,omitempty"`
}

// status is the showphonebook document.
func (d *Daemon) status() StatusDocument {
	snap := d.snapshot()
	d.mu.Lock()
	errs := append([]string{}, d.cfgErrs...)
	d.mu.Unlock()
	rs := d.reporter.Stats()
	return StatusDocument{Services: d.services(),
		Reporter: ReporterStatus{Enabled: d.config().Reporter.URL != "", Queued: int32(rs.Queued), Sent: rs.Sent, Failed: rs.Failed,
			Dropped: rs.Dropped, LastSuccess: health.Time{Time: rs.LastSuccess}, LastError: rs.LastError},
		Metrics: d.metricsStatus(), DBus: d.dbusStatus(), ConfigErrors: errs, SoftwareHealth: d.sys.StatusDoc(snap, d.now()), HealthStatus: snap.Status}
}

// Report is the agent health report for the collector (docs/REPORTER.md):
// the specification's section 5.1 sip_status and its software_health.
type Report struct {
	Node           string                `json:"node"`
	Timestamp      health.Time           `json:"timestamp"`
	Reason         string                `json:"reason"`
	SIPStatus      ReportSIP             `json:"sip_status"`
	HealthStatus   string                `json:"health_status"`
	HealthScore    *float64              `json:"health_score"` // null: monitoring disabled
	SoftwareHealth health.SoftwareHealth `json:"software_health"`
}

// ReportSIP is the report's sip_status.
type ReportSIP struct {
	RegisteredUsers int32 `json:"registered_users"`
	ActiveCalls     int32 `json:"active_calls"`
	UptimeSeconds   int64 `json:"uptime_seconds"`
}

// report is the agent health report, as the JSON the collector takes.
func (d *Daemon) report(reason string) ([]byte, error) {
	snap, now := d.snapshot(), d.now()
	node := d.config().Reporter.Node
	if node == "" {
		var err error
		if node, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("report: host name: %w", err)
		}
	}
	sh := d.sys.StatusDoc(snap, now)
	reg, active := d.sip.Counts()
	doc := Report{Node: node, Timestamp: health.Time{Time: now}, Reason: reason,
		SIPStatus:    ReportSIP{RegisteredUsers: int32(reg), ActiveCalls: int32(active), UptimeSeconds: sh.UptimeSeconds},
		HealthStatus: snap.Status, HealthScore: snap.Check.HealthScore, SoftwareHealth: sh}
	b, err := jsonText(doc)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return b, nil
}

// jsonText is a document as one line of JSON, as D-Bus, the reporter and
// the CGI send it (texts as they are: no HTML escapes).
func jsonText(doc any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// jsonOf is jsonText as a string, with an error document where the
// encoding failed (a bug: every figure is finite).
func jsonOf(doc any) string {
	b, err := jsonText(doc)
	if err != nil {
		return fmt.Sprintf(`{"error":%q}`, err.Error())
	}
	return string(b)
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
