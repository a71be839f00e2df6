//go:build !nodbus

package daemon

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/aredn/phonebookd/dbus"
	"github.com/aredn/phonebookd/health"
)

// dbusFront publishes the daemon on D-Bus (Debian, Raspberry Pi OS) as
// org.aredn.Phonebook1. Left out of builds tagged nodbus (OpenWrt).
type dbusFront struct {
	d   *Daemon
	svc *dbus.Service
}

// systemBusSocket is where the system bus listens on Debian.
const systemBusSocket = "/run/dbus/system_bus_socket"

// newDBusFront returns the D-Bus front if main.dbus asks for it: 1, or
// auto where a system bus is there (or main.dbus_address names one).
func newDBusFront(d *Daemon) front {
	cfg := d.cfg.Main
	on := false
	switch cfg.DBus {
	case "1":
		on = true
	case "auto":
		on = cfg.DBusAddress != "" || os.Getenv("DBUS_SYSTEM_BUS_ADDRESS") != "" || exists(systemBusSocket)
	}
	if !on {
		return nil
	}
	f := &dbusFront{d: d}
	f.svc = &dbus.Service{Address: cfg.DBusAddress, API: dbusAPI{d}, Log: d.log, NameTaken: func(err error) {
		if err != nil {
			d.sys.SetUnhealthy(health.DBusNameTaken, "", health.Args{health.ArgError: err.Error()})
		} else {
			d.sys.SetHealthy(health.DBusNameTaken, "")
		}
	}}
	return f
}

func (f *dbusFront) name() string {
	if f.svc.Address == "" {
		return "D-Bus system bus"
	}
	return "D-Bus " + f.svc.Address
}

func (f *dbusFront) run(ctx context.Context) { f.svc.Run(ctx) }

func (f *dbusFront) tick(context.Context, time.Time) {}

// evaluated keeps the properties current with each evaluation.
func (f *dbusFront) evaluated(_ string, snap *health.Snapshot) {
	st := dbus.State{Status: snap.Status, HealthScore: -1, Alerts: int32(len(snap.Alerts)),
		CrashCount24h: int32(snap.Crashes.CrashCount24h), RestartCount: int32(snap.Crashes.RestartCount)}
	if snap.Check.HealthScore != nil {
		st.HealthScore = int32(*snap.Check.HealthScore)
	}
	if m := snap.Health.Memory; m != nil {
		st.LeakDetected = m.LeakDetected
	}
	f.svc.Update(st)
}

// dbusAPI answers the D-Bus methods with the JSON of the documents ubus
// sends, built by the same functions from the same snapshot.
type dbusAPI struct{ d *Daemon }

func (a dbusAPI) Status() string  { return jsonOf(a.d.statusDoc()) }
func (a dbusAPI) Check() string   { return jsonOf(a.d.checkDoc()) }
func (a dbusAPI) Threads() string { return jsonOf(a.d.threadsDoc()) }

func (a dbusAPI) Crashes(limit, offset int) (string, error) {
	doc, err := a.d.crashesDoc(limit, offset)
	if err != nil {
		return "", dbusErr(err)
	}
	return jsonOf(doc), nil
}

func (a dbusAPI) ClearCrashes() error { return a.d.clearCrashes(context.Background()) }

func (a dbusAPI) History(limit int) string {
	doc, _ := a.d.historyDoc(max(limit, 0))
	return jsonOf(doc)
}

func (a dbusAPI) Restart(name string) error { return dbusErr(a.d.restartWorker(name, "D-Bus")) }

func dbusErr(err error) error {
	if errors.Is(err, errInvalid) {
		return &invalidErr{err}
	}
	return err
}

// invalidErr carries a caller's mistake to the dbus package as its
// ErrInvalid (an InvalidArgs error on the bus).
type invalidErr struct{ err error }

func (e *invalidErr) Error() string { return e.err.Error() }
func (e *invalidErr) Is(target error) bool {
	return target == dbus.ErrInvalid
}
