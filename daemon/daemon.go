// Package daemon wires phonebookd together: settings from UCI, the crash
// store, the supervised workers, the health system, the ubus objects, and
// the signals procd and the web UI send.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"github.com/aredn/phonebookd/internal/atomicfile"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/directory"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/metrics"
	"github.com/aredn/phonebookd/monitor"
	"github.com/aredn/phonebookd/procfs"
	"github.com/aredn/phonebookd/reporter"
	"github.com/aredn/phonebookd/sip"
	"github.com/aredn/phonebookd/supervisor"
	"github.com/aredn/phonebookd/systemd"
	"github.com/aredn/phonebookd/uci"
)

// Options are the daemon's command-line settings; everything else comes
// from UCI.
type Options struct {
	ConfDir string // /etc/config
	SaveDir string // /tmp/.uci
	Socket  string // ubusd's socket
	// SocketGiven: the socket was named on the command line, so ubus is
	// wanted even where main.ubus "auto" would not find it yet.
	SocketGiven bool
	// Ubus and DBus, when set ("auto", "1", "0"), override main.ubus and
	// main.dbus for this run (the -ubus and -dbus flags).
	Ubus, DBus string
	Log        *slog.Logger
	// Stderr is the original standard error, duplicated away from
	// descriptor 2 (which then receives the runtime's crash text).
	Stderr *os.File
	// Signals delivers SIGTERM, SIGINT, SIGHUP and SIGUSR1; main
	// subscribes first thing, so that a stop at any moment is clean. Nil:
	// the daemon subscribes itself.
	Signals <-chan os.Signal
	// Runtime fits the Go runtime to the router (runtimetune.Tuner):
	// given the health settings at start and on each reload, told when
	// every worker has started. Nil leaves the runtime as it is.
	Runtime interface {
		Configure(config.Health)
		Started()
	}
}

// Subscribe makes sure the daemon's signals are delivered to a channel and
// that the ones it has no use for cannot kill it (the C daemon died of
// signals the web UI sent).
func Subscribe() <-chan os.Signal {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	signal.Ignore(syscall.SIGPIPE, syscall.SIGUSR2, syscall.SIGALRM)
	return sigs
}

// FatalError ends the process with a non-zero exit after a crash record,
// so that procd (or systemd) restarts it.
type FatalError struct{ Record crash.Record }

func (e *FatalError) Error() string { return "fatal: " + e.Record.Reason }

// ShutdownTimeout bounds a clean stop; procd sends SIGKILL after 5 s.
const ShutdownTimeout = 1500 * time.Millisecond

// Daemon is one running phonebookd.
type Daemon struct {
	opt   Options
	log   *slog.Logger
	store uci.Store
	clock health.Clock

	mu       sync.Mutex
	cfg      config.Config
	cfgErrs  []string // rejected settings, for "phonebook status"
	cfgCodes []string // their health conditions' keys

	rates   *health.Rates
	crashes *crash.Store
	sup     *supervisor.Supervisor
	sys     *health.System
	fetcher *directory.Fetcher
	sip     *sip.Server
	monitor *monitor.Monitor
	safety  *safety

	// fronts publish the daemon on its buses (ubus, D-Bus).
	fronts     []front
	notifier   *systemd.Notifier
	metricsSrv *metrics.Server
	reporter   *reporter.Reporter
	// metricsKick restarts the metrics listener after a reload.
	metricsKick chan struct{}

	fatal  chan crash.Record
	reload chan struct{}
}

// A front publishes the daemon on one bus: ubus on OpenWrt, D-Bus on
// Debian; each is compiled in unless its build tag (noubus, nodbus)
// leaves it out, and chosen at start by main.ubus and main.dbus.
type front interface {
	name() string
	// run publishes and keeps publishing until ctx ends.
	run(ctx context.Context)
	// evaluated is told of each evaluation and the status this front
	// was told before it, from the front's own goroutine (publishers).
	evaluated(old string, snap *health.Snapshot)
	// tick runs every second on the main loop (procd's watchdog).
	tick(ctx context.Context, now time.Time)
}

// Run runs the daemon until ctx ends or a signal stops it. It returns nil
// after a clean shutdown, a *FatalError when the process must be
// restarted.
func Run(ctx context.Context, opt Options) error {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	d := &Daemon{
		opt: opt, log: opt.Log, store: uci.Store{ConfDir: opt.ConfDir, SaveDir: opt.SaveDir},
		clock: health.SystemClock{}, fatal: make(chan crash.Record, 1), reload: make(chan struct{}, 1), metricsKick: make(chan struct{}, 1),
	}
	cfg, errs := config.LoadStore(d.store, nil)
	for _, f := range []struct{ flag, value string }{{"-ubus", opt.Ubus}, {"-dbus", opt.DBus}} {
		if f.value == "" {
			continue
		}
		if err := config.CheckBus(f.value); err != nil {
			return fmt.Errorf("%s %q: want %w", f.flag, f.value, err)
		}
	}
	d.busFlags(&cfg.Main)
	d.cfg = cfg
	for _, err := range errs {
		d.log.Error("setting rejected; default kept", "err", err)
	}
	if opt.Runtime != nil {
		opt.Runtime.Configure(cfg.Health)
	}
	if err := d.setup(); err != nil {
		return err
	}
	d.reportConfigErrors(errs)
	return d.run(ctx)
}

// busFlags applies -ubus and -dbus over the UCI settings.
func (d *Daemon) busFlags(m *config.Main) {
	if d.opt.Ubus != "" {
		m.Ubus = d.opt.Ubus
	}
	if d.opt.DBus != "" {
		m.DBus = d.opt.DBus
	}
}

func (d *Daemon) config() config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func (d *Daemon) setup() error {
	cfg := d.cfg
	// An unprivileged daemon whose directories were not made for it
	// (the init script creates them owned by the phonebook user) stops
	// here with the reason, rather than run without crash records.
	for _, dir := range []struct {
		what, path, option string
		create             bool // RAM only: the flash directory is made on its first write
	}{
		{"run directory (RAM)", cfg.Main.RunDir, "run_dir", true},
		{"state directory (flash)", cfg.Main.StateDir, "state_dir", false},
	} {
		var err error
		if dir.create {
			err = os.MkdirAll(dir.path, 0o755)
		}
		if err == nil {
			err = procfs.Writable(dir.path)
		}
		if err != nil {
			return fmt.Errorf("%s %s is not writable by uid %d: %w (phonebook.main.%s; /etc/init.d/phonebook creates it for the phonebook user)", dir.what, dir.path, os.Getuid(), err, dir.option)
		}
	}
	d.rates = health.NewRates(d.clock)
	var err error
	d.crashes, err = crash.Open(crash.Options{
		StateDir: cfg.Main.StateDir, RunDir: cfg.Main.RunDir, Clock: d.clock, Log: d.log,
		HistoryDays: cfg.Health.CrashHistoryDays, HistoryMax: cfg.Health.CrashHistoryMax,
		Coalesce: time.Duration(cfg.Health.CrashCoalesce) * time.Second, Stderr: d.opt.Stderr,
		RAMOnly: !cfg.Health.CrashReporting,
	})
	if err != nil {
		return err
	}
	if err := d.crashes.Arm(os.Getpid()); err != nil {
		return err
	}
	d.sup = supervisor.New(supervisor.Options{
		Clock: d.clock, Log: d.log,
		MaxRestarts: cfg.Health.MaxRestartAttempts, Window: time.Duration(cfg.Health.RestartWindow) * time.Second,
		OnCrash: func(r crash.Record) {
			d.crashes.Add(r) // to flash only with crash_reporting 1
			d.log.Error("worker crashed", "worker", r.Worker, "reason", r.Reason)
		},
		OnChange: func() {
			if d.sys != nil {
				d.sys.Trigger()
			}
		},
		OnFatal: func(r crash.Record) {
			select {
			case d.fatal <- r:
			default:
			}
		},
		OnGoroutine: d.crashes.WorkerGoroutine,
	})
	d.sup.Configure(cfg.Health.MaxRestartAttempts, time.Duration(cfg.Health.RestartWindow)*time.Second, cfg.Health.ThreadMonitoring)
	d.safety = &safety{d: d}
	d.sys = health.NewSystem(health.Options{
		Clock: d.clock, Log: d.log, Supervisor: d.sup, Crashes: d.crashes, Rates: d.rates,
		StateDir: cfg.Main.StateDir, RunDir: cfg.Main.RunDir,
		WorkerExtra: d.workerExtra,
		Phones: func() int {
			if d.sip == nil {
				return 0
			}
			reg, _ := d.sip.Counts()
			return reg
		},
	}, cfg.Health)
	d.fetcher = directory.NewFetcher(d.log, d.rates, func(ok bool) { d.sys.Reach("fetcher", ok) })
	d.fetcher.SetAlerts(d.sys)
	d.fetcher.Configure(cfg.Fetcher, cfg.Main)
	d.sip = sip.New(cfg.SIP, d.log, d.rates, d.sys)
	d.sip.SetCrashes(d.crashes) // recovered handler panics leave a crash record
	d.loadRunState(cfg)
	d.monitor = monitor.New(cfg.Monitor, d.log, d.sip, d.rates, d.sys, func(ok bool) { d.sys.Reach("monitor", ok) })

	d.sup.Add(supervisor.Spec{Name: "main", Period: sip.Period, Essential: true, Run: d.sip.Run})
	d.sup.Add(supervisor.Spec{Name: "fetcher", Period: time.Minute, Run: d.fetcher.Run})
	d.sup.Add(supervisor.Spec{Name: "monitor", Period: 30 * time.Second, Run: d.monitor.Run})
	d.sup.Add(supervisor.Spec{Name: "safety", Period: safetyPeriod, Essential: true, Run: d.safety.run})
	for _, s := range d.faultWorkers() {
		d.sup.Add(s)
	}
	d.reporter = reporter.New(cfg.Reporter, d.report, d.log)
	d.metricsSrv = &metrics.Server{Log: d.log, Render: func(int64) []byte { return d.metricsText() }, Clock: d.clock, Alerts: d.sys}
	for _, f := range []front{newUbusFront(d), newDBusFront(d)} {
		if f != nil {
			d.fronts = append(d.fronts, f)
		}
	}
	d.notifier = systemd.FromEnv()
	return nil
}

func (d *Daemon) reportConfigErrors(errs []error) {
	d.mu.Lock()
	old := d.cfgCodes
	d.cfgCodes, d.cfgErrs = nil, nil
	for _, err := range errs {
		d.cfgErrs = append(d.cfgErrs, err.Error())
	}
	d.mu.Unlock()
	for _, key := range old {
		d.sys.SetHealthy(health.Config, key)
	}
	for _, err := range errs {
		key := err.Error()
		var fe *config.FieldError
		if errors.As(err, &fe) {
			key = fe.Path
		}
		d.sys.SetUnhealthy(health.Config, key, health.Args{health.ArgError: err.Error()})
		d.mu.Lock()
		d.cfgCodes = append(d.cfgCodes, key)
		d.mu.Unlock()
	}
}

func (d *Daemon) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := d.opt.Signals
	if sigs == nil {
		sigs = Subscribe()
	}

	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	busCtx, stopBus := context.WithCancel(context.Background())
	var side sync.WaitGroup // the fronts, their publishers, the reporter, the metrics listener
	// Subscribed before the workers start: the safety worker's first
	// evaluation reaches every front.
	d.publishers(busCtx, &side)
	d.sup.Start(workCtx)
	buses := make([]string, 0, len(d.fronts))
	for _, f := range d.fronts {
		buses = append(buses, f.name())
		side.Go(func() { f.run(busCtx) })
	}
	side.Go(func() { d.reporter.Run(busCtx) })
	side.Go(func() { d.serveMetrics(busCtx) })
	d.keepRunState(busCtx, &side)
	d.log.Info("phonebookd started", "pid", os.Getpid(), "conf", d.opt.ConfDir, "buses", strings.Join(buses, ", "))
	wdEvery, err := systemd.WatchdogInterval()
	if err != nil {
		d.log.Warn("systemd watchdog", "err", err)
	}
	d.notify("READY=1\nSTATUS=workers started")
	if d.opt.Runtime != nil {
		d.opt.Runtime.Started()
	}

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var wdTick <-chan time.Time // systemd's watchdog, at half of WatchdogSec=
	if wdEvery > 0 {
		t := time.NewTicker(wdEvery / 2)
		defer t.Stop()
		wdTick = t.C
	}
	var result error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case s := <-sigs:
			switch s {
			case syscall.SIGHUP:
				d.Reload()
			case syscall.SIGUSR1:
				d.fetcher.FetchNow()
			default:
				d.log.Info("stopping", "signal", s.String())
				break loop
			}
		case <-d.reload:
			d.Reload()
		case rec := <-d.fatal:
			d.log.Error("escalating to a process restart", "reason", rec.Reason)
			d.crashes.Add(rec)
			result = &FatalError{Record: rec}
			break loop
		case now := <-tick.C:
			d.sup.Check()
			d.sys.SampleCPU()
			for _, f := range d.fronts {
				f.tick(ctx, now)
			}
		case <-wdTick:
			// The same rule as procd's watchdog.
			if d.config().Health.Watchdog && d.sup.EssentialAlive(d.clock.Now()) {
				d.notify("WATCHDOG=1")
			}
		}
	}
	d.notify("STOPPING=1")
	// Clean stop within ShutdownTimeout: workers cancelled, objects
	// withdrawn, run marker removed.
	stopWork()
	wctx, wcancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	if !d.sup.Wait(wctx) {
		d.log.Warn("workers did not stop in time; exiting anyway")
	}
	wcancel()
	stopBus()
	sideDone := make(chan struct{})
	go func() { side.Wait(); close(sideDone) }()
	select {
	case <-sideDone:
	case <-time.After(500 * time.Millisecond):
	}
	d.crashes.Shutdown()
	d.log.Info("phonebookd stopped")
	return result
}

// Reload re-reads UCI and applies it without a restart; a rejected value
// keeps the previous good one.
func (d *Daemon) Reload() {
	prev := d.config()
	cfg, errs := config.LoadStore(d.store, &prev)
	d.busFlags(&cfg.Main)
	// Paths and the buses need a restart; keep them.
	if cfg.Main != prev.Main {
		d.log.Warn("paths changed; they apply at the next restart")
		cfg.Main = prev.Main
	}
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	for _, err := range errs {
		d.log.Error("setting rejected; previous value kept", "err", err)
	}
	d.sup.Configure(cfg.Health.MaxRestartAttempts, time.Duration(cfg.Health.RestartWindow)*time.Second, cfg.Health.ThreadMonitoring)
	d.sys.Configure(cfg.Health)
	if d.opt.Runtime != nil {
		d.opt.Runtime.Configure(cfg.Health)
	}
	d.crashes.SetReporting(cfg.Health.CrashReporting)
	d.fetcher.Configure(cfg.Fetcher, cfg.Main)
	d.sip.Configure(cfg.SIP)
	d.monitor.Configure(cfg.Monitor)
	d.reporter.Configure(cfg.Reporter)
	if cfg.Metrics != prev.Metrics {
		d.kickMetrics()
	}
	d.reportConfigErrors(errs)
	d.fetcher.FetchNow()
	d.sys.Trigger()
	d.log.Info("configuration reloaded", "errors", len(errs))
}

// statusChanged rewrites the app badge (RAM only), sends a collector
// report at once and tells systemd the new status.
func (d *Daemon) statusChanged(old, new string, snap *health.Snapshot) {
	d.writeBadge(new)
	d.reporter.StatusChanged()
	if new == health.Disabled {
		d.notify("STATUS=health monitoring disabled")
	} else {
		d.notify(fmt.Sprintf("STATUS=health %s, score %d", new, snap.Score))
	}
}

// publishQueue bounds the evaluations waiting for one front; past it
// the oldest are dropped (newest wins).
const publishQueue = 4

// publishers subscribes each front, and the status handler (badge,
// collector report, systemd), to the evaluations, each drained in a
// goroutine of its own until ctx ends: a slow or hung bus delays its own
// front, never an evaluation nor another front.
func (d *Daemon) publishers(ctx context.Context, wg *sync.WaitGroup) {
	drain := func(each func(health.Event)) {
		sub := d.sys.Subscribe(publishQueue)
		wg.Go(func() {
			defer sub.Close()
			for {
				ev, err := sub.Next(ctx)
				if err != nil {
					return
				}
				each(ev)
			}
		})
	}
	for _, f := range d.fronts {
		drain(func(ev health.Event) { f.evaluated(ev.Old, ev.Snap) })
	}
	drain(func(ev health.Event) {
		if ev.Old != ev.Snap.Status {
			d.statusChanged(ev.Old, ev.Snap.Status, ev.Snap)
		}
	})
}

// notify sends a state to systemd when it started the daemon.
func (d *Daemon) notify(state string) {
	if err := d.notifier.Send(state); err != nil {
		d.log.Debug("systemd notify", "err", err)
	}
}

// writeBadge shows the status in the AREDN app launcher: /tmp/apps/... is
// RAM; written only on a change of status.
func (d *Daemon) writeBadge(status string) {
	dir := d.config().Main.AppsDir
	colors := map[string]string{health.Healthy: "green", health.Degraded: "orange", health.Critical: "red", health.Disabled: "grey"}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		d.log.Debug("badge", "err", err)
		return
	}
	text := strings.ToUpper(status[:1]) + status[1:]
	if err := atomicfile.Write(filepath.Join(dir, "badge"), []byte(text), 0o644); err != nil {
		d.log.Debug("badge", "err", err)
	}
	atomicfile.Write(filepath.Join(dir, "badge-color"), []byte(colors[status]), 0o644)
}
