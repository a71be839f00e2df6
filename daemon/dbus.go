//go:build !nodbus

package daemon

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/aredn/phonebookd/dbus"
	"github.com/aredn/phonebookd/health"
)

// dbusFront publishes the daemon on D-Bus (Debian, Raspberry Pi OS) as
// org.aredn.Phonebook1. Left out of builds tagged nodbus (OpenWrt).
type dbusFront struct {
	d   *Daemon
	svc *dbus.Service
	// lastShed is the shed count seen at the last tick (main loop only).
	lastShed uint64
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
	f.svc = &dbus.Service{Address: cfg.DBusAddress, API: &dbusAPI{d: d}, Log: d.log, MaxCalls: cfg.DBusMaxCalls, NameTaken: func(err error) {
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

// tick raises dbus_shed when calls were refused since the last tick;
// the condition is held a while after the last (health.DBusShed).
func (f *dbusFront) tick(context.Context, time.Time) {
	st := f.svc.Stats()
	if st.Shed == f.lastShed {
		f.d.sys.SetHealthy(health.DBusShed, "")
		return
	}
	f.d.sys.SetUnhealthy(health.DBusShed, "", health.Args{
		health.ArgCount: strconv.FormatUint(st.Shed, 10), health.ArgLimit: strconv.Itoa(st.MaxCalls)})
	f.lastShed = st.Shed
}

// dbusStatus is the status document's dbus table: the calls answered
// and those refused.
func (d *Daemon) dbusStatus() DBusStatus {
	for _, fr := range d.fronts {
		if f, ok := fr.(*dbusFront); ok {
			st := f.svc.Stats()
			return DBusStatus{Enabled: true, DBusCalls: &DBusCalls{MaxCalls: int32(st.MaxCalls), InFlight: int32(st.InFlight),
				Calls: int64(st.Calls), Shed: int64(st.Shed), Invalid: int64(st.Invalid), Panics: int64(st.Panics)}}
		}
	}
	return DBusStatus{}
}

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
// sends, built by the same functions from the same snapshot. Each answer
// is encoded once per snapshot (answerCache): a flood of calls between
// two evaluations is answered with the same string, not a new document
// each (150 connections x 128 Status calls took the RSS from 9 to 206 MB
// when each call encoded its own).
type dbusAPI struct {
	d     *Daemon
	cache answerCache
}

// maxCachedAnswers bounds the answers kept for one snapshot: the fixed
// documents and a few pages of crashes and history. A page past it is
// encoded for its call alone (the calls in flight are bounded).
const maxCachedAnswers = 8

// answerCache keeps the encoded answers of one snapshot, keyed by
// method and arguments; a newer snapshot empties it. Its lock also makes
// the callers of a missing answer wait for one encoding rather than each
// encode it. An answer's timestamp is that of its first call after the
// evaluation, at most one evaluation interval old.
type answerCache struct {
	mu      sync.Mutex
	seq     uint64
	answers map[answerKey]string
}

type answerKey struct {
	method        string
	limit, offset int
}

// get returns the answer for k from the snapshot numbered seq, encoding
// it with build when it is not cached. An error is not cached.
func (c *answerCache) get(seq uint64, k answerKey, build func() (string, error)) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.answers == nil || seq != c.seq {
		c.seq, c.answers = seq, make(map[answerKey]string, maxCachedAnswers)
	}
	if a, ok := c.answers[k]; ok {
		return a, nil
	}
	a, err := build()
	if err != nil {
		return "", err
	}
	if len(c.answers) < maxCachedAnswers {
		c.answers[k] = a
	}
	return a, nil
}

func (a *dbusAPI) cached(k answerKey, build func() (string, error)) (string, error) {
	return a.cache.get(a.d.snapshot().Seq, k, build)
}

func (a *dbusAPI) fixed(method string, doc func() any) string {
	s, _ := a.cached(answerKey{method: method}, func() (string, error) { return jsonOf(doc()), nil })
	return s
}

func (a *dbusAPI) Status() string  { return a.fixed("status", func() any { return a.d.statusDoc() }) }
func (a *dbusAPI) Check() string   { return a.fixed("check", func() any { return a.d.checkDoc() }) }
func (a *dbusAPI) Threads() string { return a.fixed("threads", func() any { return a.d.threadsDoc() }) }

func (a *dbusAPI) Crashes(limit, offset int) (string, error) {
	return a.cached(answerKey{"crashes", limit, offset}, func() (string, error) {
		doc, err := a.d.crashesDoc(limit, offset)
		if err != nil {
			return "", dbusErr(err)
		}
		return jsonOf(doc), nil
	})
}

func (a *dbusAPI) ClearCrashes() error { return a.d.clearCrashes(context.Background()) }

// History is one page of at most health.MaxHistoryPage points, like the
// ubus method's.
func (a *dbusAPI) History(limit, offset int) (string, error) {
	return a.cached(answerKey{"history", limit, offset}, func() (string, error) {
		doc, err := a.d.historyPage(limit, offset)
		if err != nil {
			return "", dbusErr(err)
		}
		return jsonOf(doc), nil
	})
}

func (a *dbusAPI) Restart(name string) (bool, error) {
	restarted, err := a.d.restartWorker(name, "D-Bus")
	return restarted, dbusErr(err)
}

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
