// Package dbus publishes the health system on D-Bus as org.aredn.Phonebook1,
// for Debian and Raspberry Pi OS hosts where the bus is D-Bus rather than
// ubus. Its objects mirror the ubus ones (phonebook.health,
// phonebook.threads): the same documents, from the same snapshot, as
// JSON strings, plus typed properties and a StatusChanged signal. Who may
// call the write methods is the bus policy's decision
// (files/usr/share/dbus-1/system.d/org.aredn.Phonebook1.conf).
package dbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	godbus "github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"github.com/godbus/dbus/v5/prop"
)

// Names on the bus.
const (
	Name         = "org.aredn.Phonebook1"
	HealthPath   = godbus.ObjectPath("/org/aredn/Phonebook1/Health")
	ThreadsPath  = godbus.ObjectPath("/org/aredn/Phonebook1/Threads")
	HealthIface  = "org.aredn.Phonebook1.Health"
	ThreadsIface = "org.aredn.Phonebook1.Threads"
	// ErrInvalidArgs is the error name of a bad argument (an unknown
	// worker, a negative limit, an argument of the wrong type).
	ErrInvalidArgs = "org.freedesktop.DBus.Error.InvalidArgs"
	// ErrLimitsExceeded is the error name of a call shed because
	// MaxCalls calls are already being answered.
	ErrLimitsExceeded = "org.freedesktop.DBus.Error.LimitsExceeded"
	// DefaultMaxCalls is the calls answered at once when MaxCalls is 0:
	// answers come from a cache, so a few suffice, and each one in
	// flight may hold a document of up to a few hundred KB.
	DefaultMaxCalls = 4
)

// Restart results, the answer of Threads.Restart.
const (
	// ResultRestarted: the worker was restarted by this call.
	ResultRestarted = "restarted"
	// ResultAlreadyRestarting: a restart was already under way (the
	// last one still finishing, or the worker waiting in its backoff);
	// this call did nothing.
	ResultAlreadyRestarting = "already_restarting"
)

// ErrInvalid marks an API error caused by the caller's arguments.
var ErrInvalid = errors.New("invalid argument")

// API answers the methods: the daemon's documents as JSON text, the same
// as "ubus call" prints them.
type API interface {
	Status() string
	Check() string
	Crashes(limit, offset int) (string, error)
	ClearCrashes() error
	// History is one page of the history: at most limit points (bounded
	// by the daemon; 0 is its largest page) ending offset points before
	// the newest.
	History(limit, offset int) (string, error)
	Threads() string
	// Restart restarts a worker; restarted is false when a restart was
	// already under way and nothing was done.
	Restart(name string) (restarted bool, err error)
}

// State is what the typed properties of the Health object show.
type State struct {
	Status        string
	HealthScore   int32 // -1: monitoring disabled, there is no score
	Alerts        int32
	CrashCount24h int32
	RestartCount  int32
	LeakDetected  bool
}

// Service keeps the objects published, reconnecting when the bus goes
// away (a dbus-daemon restart) and re-applying the last state.
type Service struct {
	// Address is a D-Bus address; "" is the system bus.
	Address string
	API     API
	Log     *slog.Logger
	// NameTaken, when set, is told each time the name is found owned by
	// another process (err says which), and with nil once it is
	// acquired: the daemon makes it a health condition, since it is not
	// published meanwhile. Called from Run's goroutine.
	NameTaken func(err error)
	// MaxCalls bounds the method calls answered at once (0 is
	// DefaultMaxCalls); past it a call gets ErrLimitsExceeded and is
	// counted as shed. The bus delivers each call on a goroutine of its
	// own, and the shipped policy lets anyone call the read methods.
	MaxCalls int

	inFlight atomic.Int64
	calls    atomic.Uint64
	shed     atomic.Uint64
	invalid  atomic.Uint64
	panics   atomic.Uint64

	mu    sync.Mutex
	conn  *godbus.Conn
	props *prop.Properties
	state State // the latest evaluation's
	shown State // what the properties show on the current connection
	kick  chan struct{}
	// Registrations counts successful publications (1 plus reconnects).
	registrations int
}

// Registrations counts how often the name was acquired: 1 plus the
// reconnects after a bus restart.
func (s *Service) Registrations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registrations
}

// Run publishes the objects and keeps them published until ctx ends.
func (s *Service) Run(ctx context.Context) {
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	s.mu.Lock()
	if s.kick == nil {
		s.kick = make(chan struct{}, 1)
	}
	s.mu.Unlock()
	backoff := 500 * time.Millisecond
	logged := false
	for ctx.Err() == nil {
		conn, err := s.publish(ctx)
		if err != nil {
			if !logged { // once per outage, not once per attempt
				s.Log.Warn("D-Bus not available; retrying", "err", err)
				logged = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		s.Log.Info("published on D-Bus", "name", Name)
		logged = false
		since := time.Now()
	connected:
		for {
			select {
			case <-ctx.Done():
				conn.Close()
				break connected
			case <-conn.Context().Done():
				s.Log.Warn("D-Bus connection lost; reconnecting")
				break connected
			case <-s.kick:
				s.show()
			}
		}
		s.mu.Lock()
		s.conn, s.props = nil, nil
		s.mu.Unlock()
		if time.Since(since) > time.Minute { // a bus that stayed: come back at once
			backoff = 500 * time.Millisecond
			continue
		}
		// A bus that drops us as soon as we are on it: back off, so that
		// it cannot make a loop of connections and log lines.
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func (s *Service) connect(ctx context.Context) (*godbus.Conn, error) {
	if s.Address == "" {
		return godbus.ConnectSystemBus(godbus.WithContext(ctx))
	}
	return godbus.Connect(s.Address, godbus.WithContext(ctx))
}

func (s *Service) publish(ctx context.Context) (*godbus.Conn, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*godbus.Conn, error) {
		conn.Close()
		return nil, err
	}
	h, th := &healthMethods{s}, &threadsMethods{s}
	if err := conn.Export(h, HealthPath, HealthIface); err != nil {
		return fail(err)
	}
	if err := conn.Export(th, ThreadsPath, ThreadsIface); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	props, err := prop.Export(conn, HealthPath, prop.Map{HealthIface: propMap(st)})
	if err != nil {
		return fail(err)
	}
	healthNode := &introspect.Node{Name: string(HealthPath), Interfaces: []introspect.Interface{
		introspect.IntrospectData, prop.IntrospectData,
		{Name: HealthIface, Methods: healthIntrospection, Properties: props.Introspection(HealthIface),
			Signals: []introspect.Signal{{Name: "StatusChanged", Args: []introspect.Arg{
				{Name: "old", Type: "s"}, {Name: "new", Type: "s"}, {Name: "health_score", Type: "i"}}}}},
	}}
	threadsNode := &introspect.Node{Name: string(ThreadsPath), Interfaces: []introspect.Interface{
		introspect.IntrospectData, {Name: ThreadsIface, Methods: threadsIntrospection},
	}}
	if err := conn.Export(introspect.NewIntrospectable(healthNode), HealthPath, "org.freedesktop.DBus.Introspectable"); err != nil {
		return fail(err)
	}
	if err := conn.Export(introspect.NewIntrospectable(threadsNode), ThreadsPath, "org.freedesktop.DBus.Introspectable"); err != nil {
		return fail(err)
	}
	reply, err := conn.RequestName(Name, godbus.NameFlagDoNotQueue)
	if err != nil {
		return fail(fmt.Errorf("request name %s: %w", Name, err))
	}
	if reply != godbus.RequestNameReplyPrimaryOwner {
		err := fmt.Errorf("request name %s: already owned by %s", Name, nameOwner(conn))
		if s.NameTaken != nil {
			s.NameTaken(err)
		}
		return fail(err)
	}
	if s.NameTaken != nil {
		s.NameTaken(nil)
	}
	s.mu.Lock()
	s.conn, s.props, s.shown = conn, props, st
	s.registrations++
	s.mu.Unlock()
	s.signal() // an evaluation may have come while publishing
	return conn, nil
}

// nameOwner describes the connection that owns Name: its unique name and
// process ID where the bus tells them.
func nameOwner(conn *godbus.Conn) string {
	bus := conn.BusObject()
	var owner string
	if err := bus.Call("org.freedesktop.DBus.GetNameOwner", 0, Name).Store(&owner); err != nil {
		return "another process"
	}
	var pid uint32
	if err := bus.Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, owner).Store(&pid); err != nil {
		return "another process (" + owner + ")"
	}
	return fmt.Sprintf("another process (%s, pid %d)", owner, pid)
}

func propMap(st State) map[string]*prop.Prop {
	p := func(v any) *prop.Prop { return &prop.Prop{Value: v, Emit: prop.EmitTrue} }
	return map[string]*prop.Prop{
		"Status": p(st.Status), "HealthScore": p(st.HealthScore), "Alerts": p(st.Alerts),
		"CrashCount24h": p(st.CrashCount24h), "RestartCount": p(st.RestartCount), "LeakDetected": p(st.LeakDetected),
	}
}

// Update takes a new evaluation. It only records it: the properties and
// signals go out from Run's goroutine, so that a slow or hung bus never
// holds up the health evaluation that calls this.
func (s *Service) Update(st State) {
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
	s.signal()
}

func (s *Service) signal() {
	s.mu.Lock()
	kick := s.kick
	s.mu.Unlock()
	if kick == nil {
		return // not running yet: published with this state at the start
	}
	select {
	case kick <- struct{}{}:
	default:
	}
}

// show brings the properties up to the latest state: each property that
// changed is set (PropertiesChanged), and a change of status also sends
// StatusChanged.
func (s *Service) show() {
	s.mu.Lock()
	old, st := s.shown, s.state
	s.shown = st
	conn, props := s.conn, s.props
	s.mu.Unlock()
	if props == nil {
		return
	}
	set := func(name string, changed bool, v any) {
		if changed {
			if err := setProp(props, name, v); err != nil {
				s.Log.Debug("D-Bus property", "name", name, "err", err)
			}
		}
	}
	set("Status", old.Status != st.Status, st.Status)
	set("HealthScore", old.HealthScore != st.HealthScore, st.HealthScore)
	set("Alerts", old.Alerts != st.Alerts, st.Alerts)
	set("CrashCount24h", old.CrashCount24h != st.CrashCount24h, st.CrashCount24h)
	set("RestartCount", old.RestartCount != st.RestartCount, st.RestartCount)
	set("LeakDetected", old.LeakDetected != st.LeakDetected, st.LeakDetected)
	if old.Status != st.Status {
		if err := conn.Emit(HealthPath, HealthIface+".StatusChanged", old.Status, st.Status, st.HealthScore); err != nil {
			s.Log.Debug("emit StatusChanged", "err", err)
		}
	}
}

// setProp sets a property and sends PropertiesChanged. The prop package
// panics when that signal cannot be written (the bus just went away);
// that is the bus's failure, not the daemon's, so it becomes an error and
// Run reconnects.
func setProp(props *prop.Properties, name string, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("set %s: %v", name, r)
		}
	}()
	props.SetMust(HealthIface, name, v)
	return nil
}

// Stats are the counters of the method calls, for phonebook status and
// the dbus_shed condition.
type Stats struct {
	// MaxCalls is the bound of calls answered at once.
	MaxCalls int
	// InFlight is the calls being answered now.
	InFlight int
	// Calls counts the calls answered (shed ones included).
	Calls uint64
	// Shed counts the calls refused with ErrLimitsExceeded.
	Shed uint64
	// Invalid counts the calls refused for their arguments' types.
	Invalid uint64
	// Panics counts the calls whose answer panicked (answered with an
	// error; the daemon goes on).
	Panics uint64
}

// Stats returns the call counters.
func (s *Service) Stats() Stats {
	return Stats{MaxCalls: s.maxCalls(), InFlight: int(s.inFlight.Load()), Calls: s.calls.Load(),
		Shed: s.shed.Load(), Invalid: s.invalid.Load(), Panics: s.panics.Load()}
}

func (s *Service) maxCalls() int {
	if s.MaxCalls <= 0 {
		return DefaultMaxCalls
	}
	return s.MaxCalls
}

// serve answers one method call: shed past MaxCalls calls in flight,
// refused with InvalidArgs unless its body has exactly the signature sig
// (godbus would convert an argument of another type, a uint32 to an
// int32, an object path to a string), and a panic of the answer
// recovered and counted: a call from the bus never ends the process.
func serve[T any](s *Service, msg godbus.Message, sig string, answer func() (T, error)) (out T, derr *godbus.Error) {
	s.calls.Add(1)
	if s.inFlight.Add(1) > int64(s.maxCalls()) {
		s.inFlight.Add(-1)
		s.shed.Add(1)
		return out, godbus.NewError(ErrLimitsExceeded, []any{fmt.Sprintf("more than %d calls at once; try again", s.maxCalls())})
	}
	defer s.inFlight.Add(-1)
	if got := bodySignature(msg); got != sig {
		s.invalid.Add(1)
		return out, godbus.NewError(ErrInvalidArgs, []any{fmt.Sprintf("arguments %q, want %q", got, sig)})
	}
	defer func() {
		if r := recover(); r != nil {
			s.panics.Add(1)
			s.Log.Error("D-Bus method panicked; answered with an error", "member", member(msg), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			derr = godbus.MakeFailedError(fmt.Errorf("internal error"))
		}
	}()
	v, err := answer()
	if err != nil {
		return out, dbusErr(err)
	}
	return v, nil
}

// bodySignature is the signature of a call's arguments as sent.
func bodySignature(msg godbus.Message) string {
	if v, ok := msg.Headers[godbus.FieldSignature]; ok {
		if sig, ok := v.Value().(godbus.Signature); ok {
			return sig.String()
		}
	}
	return godbus.SignatureOf(msg.Body...).String()
}

func member(msg godbus.Message) string {
	if v, ok := msg.Headers[godbus.FieldMember]; ok {
		if m, ok := v.Value().(string); ok {
			return m
		}
	}
	return ""
}

func dbusErr(err error) *godbus.Error {
	if errors.Is(err, ErrInvalid) {
		return godbus.NewError(ErrInvalidArgs, []any{err.Error()})
	}
	return godbus.MakeFailedError(err)
}

func argIn(name, typ string) introspect.Arg {
	return introspect.Arg{Name: name, Type: typ, Direction: "in"}
}
func argOut(name, typ string) introspect.Arg {
	return introspect.Arg{Name: name, Type: typ, Direction: "out"}
}

// The introspection of the methods, written out so that every argument
// has its name (godbus would call them arg_0, arg_1). Each signature is
// the one its method checks.
var (
	healthIntrospection = []introspect.Method{
		{Name: "Status", Args: []introspect.Arg{argOut("status", "s")}},
		{Name: "Check", Args: []introspect.Arg{argOut("check", "s")}},
		{Name: "Crashes", Args: []introspect.Arg{argIn("limit", "i"), argIn("offset", "i"), argOut("crashes", "s")}},
		{Name: "ClearCrashes", Args: []introspect.Arg{argOut("cleared", "b")}},
		{Name: "History", Args: []introspect.Arg{argIn("limit", "i"), argIn("offset", "i"), argOut("history", "s")}},
	}
	threadsIntrospection = []introspect.Method{
		{Name: "List", Args: []introspect.Arg{argOut("threads", "s")}},
		{Name: "Restart", Args: []introspect.Arg{argIn("name", "s"), argOut("result", "s")}},
	}
)

// healthMethods are the Health interface's methods. Each takes the
// message itself first (godbus fills it in), so that serve can check
// the arguments' signature before their values are used.
type healthMethods struct{ s *Service }

// Status is phonebook.health status.
func (h *healthMethods) Status(msg godbus.Message) (string, *godbus.Error) {
	return serve(h.s, msg, "", func() (string, error) { return h.s.API.Status(), nil })
}

// Check is phonebook.health check.
func (h *healthMethods) Check(msg godbus.Message) (string, *godbus.Error) {
	return serve(h.s, msg, "", func() (string, error) { return h.s.API.Check(), nil })
}

// Crashes is phonebook.health crashes {limit, offset}; 0 is no limit.
func (h *healthMethods) Crashes(msg godbus.Message, limit, offset int32) (string, *godbus.Error) {
	return serve(h.s, msg, "ii", func() (string, error) {
		if limit < 0 || offset < 0 {
			return "", fmt.Errorf("%w: limit and offset must not be negative", ErrInvalid)
		}
		return h.s.API.Crashes(int(limit), int(offset))
	})
}

// ClearCrashes is phonebook.health clear_crashes (write: the policy
// allows it to root and the phonebook group only).
func (h *healthMethods) ClearCrashes(msg godbus.Message) (bool, *godbus.Error) {
	return serve(h.s, msg, "", func() (bool, error) {
		if err := h.s.API.ClearCrashes(); err != nil {
			return false, err
		}
		return true, nil
	})
}

// History is phonebook.health history {limit, offset}: one bounded page
// of at most limit points (0 is the largest page) ending offset points
// before the newest.
func (h *healthMethods) History(msg godbus.Message, limit, offset int32) (string, *godbus.Error) {
	return serve(h.s, msg, "ii", func() (string, error) {
		if limit < 0 || offset < 0 {
			return "", fmt.Errorf("%w: limit and offset must not be negative", ErrInvalid)
		}
		return h.s.API.History(int(limit), int(offset))
	})
}

// threadsMethods are the Threads interface's methods.
type threadsMethods struct{ s *Service }

// List is phonebook.threads list.
func (t *threadsMethods) List(msg godbus.Message) (string, *godbus.Error) {
	return serve(t.s, msg, "", func() (string, error) { return t.s.API.Threads(), nil })
}

// Restart is phonebook.threads restart {name} (write): ResultRestarted,
// or ResultAlreadyRestarting when a restart was already under way.
func (t *threadsMethods) Restart(msg godbus.Message, name string) (string, *godbus.Error) {
	return serve(t.s, msg, "s", func() (string, error) {
		restarted, err := t.s.API.Restart(name)
		switch {
		case err != nil:
			return "", err
		case restarted:
			return ResultRestarted, nil
		default:
			return ResultAlreadyRestarting, nil
		}
	})
}
