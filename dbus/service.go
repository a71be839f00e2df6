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
	// MaxCalls calls are already received and not yet answered.
	ErrLimitsExceeded = "org.freedesktop.DBus.Error.LimitsExceeded"
	// DefaultMaxCalls is the calls received and not yet answered when
	// MaxCalls is 0: answers come from a cache, so a few suffice, and
	// each one in flight may hold a document of up to a few hundred KB.
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
	// MaxCalls bounds the method calls received and not yet answered
	// (0 is DefaultMaxCalls), and is the number of goroutines answering
	// them; past it a call gets ErrLimitsExceeded and is counted as shed
	// (calls.go). The shipped policy lets anyone call the read methods.
	MaxCalls int

	gate    *gate // the current connection's (under mu)
	calls   atomic.Uint64
	shed    atomic.Uint64
	invalid atomic.Uint64
	panics  atomic.Uint64

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

func (s *Service) connect(ctx context.Context, g *gate) (*godbus.Conn, error) {
	opts := []godbus.ConnOption{godbus.WithContext(ctx), godbus.WithIncomingInterceptor(g.intercept)}
	if s.Address == "" {
		return godbus.ConnectSystemBus(opts...)
	}
	return godbus.Connect(s.Address, opts...)
}

func (s *Service) publish(ctx context.Context) (*godbus.Conn, error) {
	g := newGate(s)
	conn, err := s.connect(ctx, g)
	if err != nil {
		return nil, err
	}
	g.start(conn)
	fail := func(err error) (*godbus.Conn, error) {
		conn.Close()
		return nil, err
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
		{Name: HealthIface, Methods: introspection(healthMethods), Properties: props.Introspection(HealthIface),
			Signals: []introspect.Signal{{Name: "StatusChanged", Args: []introspect.Arg{
				{Name: "old", Type: "s"}, {Name: "new", Type: "s"}, {Name: "health_score", Type: "i"}}}}},
	}}
	threadsNode := &introspect.Node{Name: string(ThreadsPath), Interfaces: []introspect.Interface{
		introspect.IntrospectData, {Name: ThreadsIface, Methods: introspection(threadsMethods)},
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
	s.conn, s.props, s.shown, s.gate = conn, props, st, g
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
