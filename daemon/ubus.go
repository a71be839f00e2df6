//go:build !noubus

package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/ubus"
)

// ubusFront publishes the daemon on ubus (OpenWrt): phonebook,
// phonebook.health and phonebook.threads, the phonebook.health event, and
// procd's watchdog. Left out of builds tagged noubus.
type ubusFront struct {
	d   *Daemon
	bus *ubus.Bus
	// healthObj is set by run's goroutine and read by the publisher's.
	healthObj    atomic.Pointer[ubus.Object]
	lastWatchdog time.Time
	// procd is procd's service object as last looked up, on the
	// connection it was looked up on; only the main loop uses it.
	procd procdRef
}

// procdRef is procd's service object id on one ubus connection, with
// the watchdog call's arguments (the instance procd watches).
type procdRef struct {
	conn *ubus.Conn
	id   uint32
	args []ubus.Value
}

// newUbusFront returns the ubus front if main.ubus asks for it: 1, or auto
// on OpenWrt (ubusd's socket or /etc/openwrt_release is there) or when the
// socket was named on the command line.
func newUbusFront(d *Daemon) front {
	on := false
	switch d.cfg.Main.Ubus {
	case "1":
		on = true
	case "auto":
		on = d.opt.SocketGiven || exists(d.opt.Socket) || exists("/etc/openwrt_release")
	}
	if !on {
		return nil
	}
	return &ubusFront{d: d, bus: ubus.NewBus(d.opt.Socket, d.log)}
}

func (u *ubusFront) name() string { return "ubus " + u.d.opt.Socket }

func (u *ubusFront) run(ctx context.Context) {
	u.registerObjects(ctx)
	u.bus.Run(ctx)
}

// encoded answers a method with a document, encoded as blobmsg from its
// Go type when asked for.
func encoded[T any](doc func() T) func(context.Context, *ubus.Request) ([]byte, error) {
	return func(context.Context, *ubus.Request) ([]byte, error) {
		v := doc()
		return ubus.AppendStruct(nil, &v), nil
	}
}

func ubusErr(err error) error {
	if errors.Is(err, errInvalid) {
		return ubus.StatusInvalidArgument
	}
	return ubus.StatusUnknownError
}

// registerObjects publishes the objects: each method's policy sits beside
// its handler and also forms the signature `ubus -v list` shows.
func (u *ubusFront) registerObjects(ctx context.Context) {
	d := u.d
	healthObj := &ubus.Object{Path: "phonebook.health", Methods: []ubus.Method{
		{Name: "status", Encoded: encoded(d.statusDoc)},
		{Name: "check", Encoded: encoded(d.checkDoc)},
		{Name: "crashes", Params: []ubus.Param{{Name: "limit", Kind: ubus.Int32}, {Name: "offset", Kind: ubus.Int32}},
			Encoded: func(_ context.Context, req *ubus.Request) ([]byte, error) {
				doc, err := d.crashesDoc(int(req.Args["limit"].Int), int(req.Args["offset"].Int))
				if err != nil {
					return nil, ubusErr(err)
				}
				return ubus.AppendStruct(nil, &doc), nil
			}},
		{Name: "clear_crashes", Handler: func(ctx context.Context, _ *ubus.Request) ([]ubus.Value, error) {
			if err := d.clearCrashes(ctx); err != nil {
				return nil, ubusErr(err)
			}
			return []ubus.Value{ubus.Bool("cleared", true)}, nil
		}},
		{Name: "history", Params: []ubus.Param{{Name: "limit", Kind: ubus.Int32}, {Name: "offset", Kind: ubus.Int32}},
			Encoded: func(_ context.Context, req *ubus.Request) ([]byte, error) {
				doc, err := d.historyPage(int(req.Args["limit"].Int), int(req.Args["offset"].Int))
				if err != nil {
					return nil, ubusErr(err)
				}
				// Straight into bytes: a full ring costs about its own
				// size, not a Value per point and column.
				return ubus.AppendStruct(make([]byte, 0, 120*len(doc.Time)+1024), &doc), nil
			}},
		{Name: "metrics", Handler: func(context.Context, *ubus.Request) ([]ubus.Value, error) {
			return []ubus.Value{ubus.Str("text", string(d.metricsText()))}, nil
		}},
	}}
	threads := &ubus.Object{Path: "phonebook.threads", Methods: []ubus.Method{
		{Name: "list", Encoded: encoded(d.threadsDoc)},
		{Name: "restart", Params: []ubus.Param{{Name: "name", Kind: ubus.String, Required: true}},
			Handler: func(_ context.Context, req *ubus.Request) ([]ubus.Value, error) {
				name, _ := req.String("name")
				restarted, err := d.restartWorker(name, "ubus")
				if err != nil {
					return nil, ubusErr(err)
				}
				if !restarted { // a distinct answer: nothing was done
					return []ubus.Value{ubus.Str("already_restarting", name)}, nil
				}
				return []ubus.Value{ubus.Str("restarted", name)}, nil
			}},
	}}
	main := &ubus.Object{Path: "phonebook", Methods: []ubus.Method{
		{Name: "status", Encoded: encoded(d.status)},
		{Name: "reload", Handler: func(context.Context, *ubus.Request) ([]ubus.Value, error) {
			select {
			case d.reload <- struct{}{}:
			default:
			}
			return []ubus.Value{ubus.Bool("reloading", true)}, nil
		}},
	}}
	u.healthObj.Store(healthObj)
	objs := []*ubus.Object{main, healthObj, threads}
	objs = append(objs, d.faultObjects()...)
	for _, o := range objs {
		if err := u.bus.Register(ctx, o); err != nil {
			d.log.Warn("register object", "object", o.Path, "err", fmt.Sprint(err))
		}
	}
}

// evaluated notifies subscribers of phonebook.health and sends the ubus
// event phonebook.health on a change of status.
func (u *ubusFront) evaluated(old string, snap *health.Snapshot) {
	if old == snap.Status {
		return
	}
	data := []ubus.Value{ubus.Str("old", old), ubus.Str("new", snap.Status), ubus.I32("health_score", int32(snap.Score))}
	if obj := u.healthObj.Load(); obj != nil {
		if err := u.bus.Notify(obj, "status", data); err != nil && !errors.Is(err, ubus.ErrNotConnected) {
			u.d.log.Warn("notify", "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := u.bus.Send(ctx, "phonebook.health", data); err != nil && !errors.Is(err, ubus.ErrNotConnected) {
		u.d.log.Warn("send event", "err", err)
	}
}

// watchdogEvery is how often procd's watchdog is re-armed; the init
// script gives it 30 s.
const watchdogEvery = 5 * time.Second

func (u *ubusFront) tick(ctx context.Context, now time.Time) {
	if now.Sub(u.lastWatchdog) >= watchdogEvery {
		u.lastWatchdog = now
		u.watchdog(ctx)
	}
}

// watchdog re-arms procd's watchdog while the essential workers are
// alive (supervisor.EssentialAlive, the rule systemd's watchdog follows
// too), so that procd restarts a daemon that cannot recover itself.
func (u *ubusFront) watchdog(ctx context.Context) {
	d := u.d
	if !d.config().Health.Watchdog || !u.bus.Connected() {
		return
	}
	if !d.sup.EssentialAlive(d.clock.Now()) {
		return
	}
	c, err := u.bus.Conn()
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	// procd's object is looked up once per connection, not at each
	// re-arm (every 5 s, a lookup and its reply decoded each time); a
	// failed call (procd restarted: a new id) looks it up again at the
	// next, well inside procd's 30 s.
	if u.procd.conn != c {
		id, err := c.LookupID(cctx, "service")
		if err != nil {
			if !errors.Is(err, ubus.StatusNotFound) {
				d.log.Debug("procd watchdog", "err", err)
			}
			return
		}
		u.procd = procdRef{conn: c, id: id, args: []ubus.Value{ubus.Str("name", "phonebook"), ubus.Str("instance", "instance1")}}
	}
	if _, err := c.Invoke(cctx, u.procd.id, "watchdog", u.procd.args); err != nil {
		u.procd = procdRef{}
		if !errors.Is(err, ubus.StatusNotFound) {
			d.log.Debug("procd watchdog", "err", err)
		}
	}
}
