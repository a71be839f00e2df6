package daemon

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/sip"
)

// loadRunState reads back what a previous run kept in run_dir (RAM): the
// binding table, so that phones registered before a crash, an upgrade or
// a SIGTERM are called without waiting for them to register again, and
// the day's history, so that its chart shows the crash. A file that
// cannot be read is set aside by its loader; the daemon starts without
// it. Nothing of this goes to state_dir (flash).
func (d *Daemon) loadRunState(cfg config.Config) {
	path := filepath.Join(cfg.Main.RunDir, sip.BindingsFile)
	n, dropped, err := d.sip.LoadBindings(path, time.Now())
	if err == nil && n+dropped > 0 {
		d.log.Info("bindings restored", "path", path, "bindings", n, "expired_or_dropped", dropped)
	}
	hpath := filepath.Join(cfg.Main.RunDir, health.HistoryFile)
	if n, err := d.sys.History().Load(hpath, d.clock.Now(), d.log); err == nil && n > 0 {
		d.log.Info("history restored", "path", hpath, "points", n)
	}
}

// keepRunState runs the writers of the run_dir state until ctx ends (the
// last write after the workers stopped).
func (d *Daemon) keepRunState(ctx context.Context, wg *sync.WaitGroup) {
	path := filepath.Join(d.config().Main.RunDir, sip.BindingsFile)
	wg.Go(func() { d.sip.KeepBindings(ctx, path, d.clock) })
	hpath := filepath.Join(d.config().Main.RunDir, health.HistoryFile)
	wg.Go(func() { d.sys.History().Keep(ctx, hpath, d.clock, d.log) })
}
