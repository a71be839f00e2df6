package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/supervisor"
	"github.com/aredn/phonebookd/ubus"
)

// snapshot returns the latest health evaluation, evaluating once if none
// exists yet.
func (d *Daemon) snapshot() *health.Snapshot {
	if s := d.sys.Snapshot(); s != nil {
		return s
	}
	return d.sys.Sample()
}

func encoded(body func(*health.Snapshot) []byte, d *Daemon) func(context.Context, *ubus.Request) ([]byte, error) {
	return func(context.Context, *ubus.Request) ([]byte, error) { return body(d.snapshot()), nil }
}

// now is when a document is sent: its timestamp and uptime are computed
// then, not when the snapshot was taken.
func (d *Daemon) now() time.Time { return d.clock.Now() }

// registerObjects publishes the daemon on ubus: each method's policy sits
// beside its handler and also forms the signature `ubus -v list` shows.
func (d *Daemon) registerObjects(ctx context.Context) {
	d.healthObj = &ubus.Object{Path: "phonebook.health", Methods: []ubus.Method{
		{Name: "status", Encoded: encoded(func(s *health.Snapshot) []byte { return d.sys.StatusDoc(s, d.now()) }, d)},
		{Name: "check", Encoded: encoded(func(s *health.Snapshot) []byte { return d.sys.CheckDoc(s, d.now()) }, d)},
		{Name: "crashes", Params: []ubus.Param{{Name: "limit", Kind: ubus.Int32}, {Name: "offset", Kind: ubus.Int32}},
			Handler: func(_ context.Context, req *ubus.Request) ([]ubus.Value, error) {
				limit, offset := int(req.Args["limit"].Int), int(req.Args["offset"].Int)
				if limit < 0 || offset < 0 {
					return nil, ubus.StatusInvalidArgument
				}
				doc := health.CrashesDoc(d.snapshot().Crashes, offset, limit)
				return ubus.ValuesOf(&doc), nil
			}},
		{Name: "clear_crashes", Handler: func(context.Context, *ubus.Request) ([]ubus.Value, error) {
			if err := d.crashes.Clear(d.clock.Now()); err != nil {
				d.log.Error("clear crashes", "err", err)
				return nil, ubus.StatusUnknownError
			}
			d.sys.Sample()
			return []ubus.Value{ubus.Bool("cleared", true)}, nil
		}},
	}}
	threads := &ubus.Object{Path: "phonebook.threads", Methods: []ubus.Method{
		{Name: "list", Encoded: encoded(func(s *health.Snapshot) []byte { return s.ThreadsBody }, d)},
		{Name: "restart", Params: []ubus.Param{{Name: "name", Kind: ubus.String, Required: true}},
			Handler: func(_ context.Context, req *ubus.Request) ([]ubus.Value, error) {
				name, _ := req.String("name")
				if err := d.sup.Restart(name); err != nil {
					if errors.Is(err, supervisor.ErrUnknownWorker) {
						return nil, ubus.StatusInvalidArgument
					}
					return nil, err
				}
				d.log.Info("worker restart requested over ubus", "worker", name)
				return []ubus.Value{ubus.Str("restarted", name)}, nil
			}},
	}}
	main := &ubus.Object{Path: "phonebook", Methods: []ubus.Method{
		{Name: "status", Handler: func(context.Context, *ubus.Request) ([]ubus.Value, error) {
			return d.status(), nil
		}},
		{Name: "reload", Handler: func(context.Context, *ubus.Request) ([]ubus.Value, error) {
			select {
			case d.reload <- struct{}{}:
			default:
			}
			return []ubus.Value{ubus.Bool("reloading", true)}, nil
		}},
	}}
	objs := []*ubus.Object{main, d.healthObj, threads}
	objs = append(objs, d.faultObjects()...)
	for _, o := range objs {
		if err := d.bus.Register(ctx, o); err != nil {
			d.log.Warn("register object", "object", o.Path, "err", fmt.Sprint(err))
		}
	}
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
	return []ubus.Value{
		d.sip.Status(),
		d.fetcher.Status(),
		d.monitor.Status(),
		errs,
		ubus.Tbl("software_health", d.sys.SoftwareHealth(snap, d.now())...),
		ubus.Str("health_status", snap.Status),
	}
}
