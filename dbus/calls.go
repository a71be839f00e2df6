package dbus

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync/atomic"

	godbus "github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// How the method calls are answered, and why not by godbus's Export:
// godbus reads the bus on one goroutine and starts a goroutine for each
// call, however many arrive, and that goroutine then waits its turn to
// write the reply. A client pipelining calls (the system bus lets each
// connection have 128 waiting for a reply) so made thousands of
// goroutines, each holding its own encoded document. Here the reading
// goroutine hands each call to one of our interfaces to a fixed set of
// MaxCalls workers through a queue of MaxCalls; a call that finds
// MaxCalls others received and not yet answered is refused there with
// LimitsExceeded. A worker checks the arguments' signature (godbus would
// convert a uint32 to an int32, an object path to a string), answers,
// and writes the reply itself before it takes the next call: no call of
// ours costs a goroutine of its own.

// method is one method of the Health or Threads interface: its
// arguments (named, for the introspection; the "in" ones are the
// signature a call must have) and its answer.
type method struct {
	name   string
	args   []introspect.Arg
	answer func(s *Service, body []any) (any, error)
}

// sig is the signature of the method's input arguments.
func (m *method) sig() string {
	var b strings.Builder
	for _, a := range m.args {
		if a.Direction == "in" {
			b.WriteString(a.Type)
		}
	}
	return b.String()
}

func argIn(name, typ string) introspect.Arg {
	return introspect.Arg{Name: name, Type: typ, Direction: "in"}
}

func argOut(name, typ string) introspect.Arg {
	return introspect.Arg{Name: name, Type: typ, Direction: "out"}
}

// limits reads the limit and offset arguments of a paged method.
func limits(body []any) (limit, offset int, err error) {
	l, o := body[0].(int32), body[1].(int32) // the signature was checked: "ii"
	if l < 0 || o < 0 {
		return 0, 0, fmt.Errorf("%w: limit and offset must not be negative", ErrInvalid)
	}
	return int(l), int(o), nil
}

// The methods of the two interfaces, in the introspection's order.
var (
	healthMethods = []method{
		{"Status", []introspect.Arg{argOut("status", "s")},
			func(s *Service, _ []any) (any, error) { return s.API.Status(), nil }},
		{"Check", []introspect.Arg{argOut("check", "s")},
			func(s *Service, _ []any) (any, error) { return s.API.Check(), nil }},
		// Crashes is phonebook.health crashes {limit, offset}; 0 is no limit.
		{"Crashes", []introspect.Arg{argIn("limit", "i"), argIn("offset", "i"), argOut("crashes", "s")},
			func(s *Service, body []any) (any, error) {
				limit, offset, err := limits(body)
				if err != nil {
					return nil, err
				}
				return s.API.Crashes(limit, offset)
			}},
		// ClearCrashes is a write: the policy allows it to root and the
		// phonebook group only.
		{"ClearCrashes", []introspect.Arg{argOut("cleared", "b")},
			func(s *Service, _ []any) (any, error) {
				if err := s.API.ClearCrashes(); err != nil {
					return nil, err
				}
				return true, nil
			}},
		// History is one bounded page: at most limit points (0 is the
		// largest page) ending offset points before the newest.
		{"History", []introspect.Arg{argIn("limit", "i"), argIn("offset", "i"), argOut("history", "s")},
			func(s *Service, body []any) (any, error) {
				limit, offset, err := limits(body)
				if err != nil {
					return nil, err
				}
				return s.API.History(limit, offset)
			}},
	}
	threadsMethods = []method{
		{"List", []introspect.Arg{argOut("threads", "s")},
			func(s *Service, _ []any) (any, error) { return s.API.Threads(), nil }},
		// Restart is a write: ResultRestarted, or ResultAlreadyRestarting
		// when a restart was already under way.
		{"Restart", []introspect.Arg{argIn("name", "s"), argOut("result", "s")},
			func(s *Service, body []any) (any, error) {
				restarted, err := s.API.Restart(body[0].(string))
				switch {
				case err != nil:
					return nil, err
				case restarted:
					return ResultRestarted, nil
				default:
					return ResultAlreadyRestarting, nil
				}
			}},
	}
)

// introspection lists methods with their named arguments (godbus's
// own introspection named them arg_0, arg_1).
func introspection(ms []method) []introspect.Method {
	out := make([]introspect.Method, len(ms))
	for i, m := range ms {
		out[i] = introspect.Method{Name: m.name, Args: m.args}
	}
	return out
}

// lookup finds the method a call is for: on one of our interfaces, or
// with no interface named, on one of our paths. ours is false for any
// other call (Introspect, Properties, Peer), which godbus answers.
func lookup(msg *godbus.Message) (m *method, ours bool) {
	iface, _ := msg.Headers[godbus.FieldInterface].Value().(string)
	path, _ := msg.Headers[godbus.FieldPath].Value().(godbus.ObjectPath)
	member, _ := msg.Headers[godbus.FieldMember].Value().(string)
	var table []method
	switch {
	case iface == HealthIface || iface == "" && path == HealthPath:
		table = healthMethods
	case iface == ThreadsIface || iface == "" && path == ThreadsPath:
		table = threadsMethods
	default:
		return nil, false
	}
	for i := range table {
		if table[i].name == member {
			return &table[i], true
		}
	}
	if iface == "" {
		return nil, false // perhaps Introspect or Get without an interface
	}
	return nil, true // unknown on our interface: answered UnknownMethod
}

// call is a method call handed to the workers.
type call struct {
	msg *godbus.Message
	m   *method // nil: unknown method
}

// gate answers the calls of one connection with MaxCalls workers.
type gate struct {
	s        *Service
	max      int
	conn     atomic.Pointer[godbus.Conn]
	queue    chan call
	inFlight atomic.Int64 // received and not yet answered
}

func newGate(s *Service) *gate {
	n := s.maxCalls()
	return &gate{s: s, max: n, queue: make(chan call, n)}
}

// start runs the workers until the connection ends.
func (g *gate) start(conn *godbus.Conn) {
	g.conn.Store(conn)
	for range g.max {
		go g.work(conn.Context())
	}
}

// ignored is a message type godbus's reader dispatches to nothing: a call
// taken by the gate is left with it.
const ignored godbus.Type = 0

// intercept runs on godbus's reading goroutine for every message
// received, before it is dispatched. It takes the calls of our
// interfaces: each is queued for a worker, or refused past MaxCalls.
func (g *gate) intercept(msg *godbus.Message) {
	if msg.Type != godbus.TypeMethodCall {
		return
	}
	m, ours := lookup(msg)
	conn := g.conn.Load()
	if !ours || conn == nil {
		return
	}
	c := call{msg: new(godbus.Message), m: m}
	*c.msg = *msg
	msg.Type = ignored
	g.s.calls.Add(1)
	if g.inFlight.Add(1) > int64(g.max) {
		g.inFlight.Add(-1)
		g.s.shed.Add(1)
		// Written from the reading goroutine: while the bus takes the
		// refusal, no more calls are read.
		reply(conn, c.msg, nil, godbus.NewError(ErrLimitsExceeded, []any{fmt.Sprintf("more than %d calls at once; try again", g.max)}))
		return
	}
	g.queue <- c // never blocks: at most max are in flight
}

// work answers queued calls until ctx ends; then it gives back the
// places of the calls left in the queue (their connection is gone).
func (g *gate) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case <-g.queue:
					g.inFlight.Add(-1)
				default:
					return
				}
			}
		case c := <-g.queue:
			g.answer(c)
		}
	}
}

// answer answers one call and writes the reply: an argument of another
// type than the method's is InvalidArgs, a panic of the answer is
// recovered, counted and answered Failed; a call from the bus never ends
// the process.
func (g *gate) answer(c call) {
	defer g.inFlight.Add(-1)
	conn := g.conn.Load()
	var out any
	var derr *godbus.Error
	switch got := bodySignature(c.msg); {
	case c.m == nil:
		member, _ := c.msg.Headers[godbus.FieldMember].Value().(string)
		e := godbus.MakeUnknownMethodError(member)
		derr = &e
	case got != c.m.sig():
		g.s.invalid.Add(1)
		derr = godbus.NewError(ErrInvalidArgs, []any{fmt.Sprintf("%s takes (%s), not (%s)", c.m.name, c.m.sig(), got)})
	default:
		out, derr = g.s.run(c.m, c.msg.Body)
	}
	reply(conn, c.msg, out, derr)
}

// run runs a method's answer, recovering a panic.
func (s *Service) run(m *method, body []any) (out any, derr *godbus.Error) {
	defer func() {
		if r := recover(); r != nil {
			s.panics.Add(1)
			s.Log.Error("D-Bus method panicked; answered with an error", "method", m.name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			out, derr = nil, godbus.MakeFailedError(errors.New("internal error"))
		}
	}()
	v, err := m.answer(s, body)
	if err != nil {
		return nil, dbusErr(err)
	}
	return v, nil
}

// reply writes the answer to a call (nothing when the caller asked for
// none): a method return with out, or the error derr.
func reply(conn *godbus.Conn, to *godbus.Message, out any, derr *godbus.Error) {
	if to.Flags&godbus.FlagNoReplyExpected != 0 {
		return
	}
	r := &godbus.Message{Type: godbus.TypeMethodReply, Headers: map[godbus.HeaderField]godbus.Variant{
		godbus.FieldReplySerial: godbus.MakeVariant(to.Serial()),
	}}
	if v, ok := to.Headers[godbus.FieldSender]; ok {
		r.Headers[godbus.FieldDestination] = v
	}
	if derr != nil {
		r.Type = godbus.TypeError
		r.Headers[godbus.FieldErrorName] = godbus.MakeVariant(derr.Name)
		r.Body = derr.Body
	} else {
		r.Body = []any{out}
	}
	if len(r.Body) > 0 {
		r.Headers[godbus.FieldSignature] = godbus.MakeVariant(godbus.SignatureOf(r.Body...))
	}
	conn.Send(r, nil) // synchronous for a reply; a closed connection drops it
}

// Stats are the counters of the method calls, for phonebook status and
// the dbus_shed condition.
type Stats struct {
	// MaxCalls is the bound of calls received and not yet answered.
	MaxCalls int
	// InFlight is those calls now.
	InFlight int
	// Calls counts the calls received for our interfaces (shed ones
	// included).
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
	st := Stats{MaxCalls: s.maxCalls(), Calls: s.calls.Load(), Shed: s.shed.Load(), Invalid: s.invalid.Load(), Panics: s.panics.Load()}
	s.mu.Lock()
	if s.gate != nil {
		st.InFlight = int(s.gate.inFlight.Load())
	}
	s.mu.Unlock()
	return st
}

func (s *Service) maxCalls() int {
	if s.MaxCalls <= 0 {
		return DefaultMaxCalls
	}
	return s.MaxCalls
}

// bodySignature is the signature of a call's arguments as sent.
func bodySignature(msg *godbus.Message) string {
	if v, ok := msg.Headers[godbus.FieldSignature]; ok {
		if sig, ok := v.Value().(godbus.Signature); ok {
			return sig.String()
		}
	}
	return godbus.SignatureOf(msg.Body...).String()
}

func dbusErr(err error) *godbus.Error {
	if errors.Is(err, ErrInvalid) {
		return godbus.NewError(ErrInvalidArgs, []any{err.Error()})
	}
	return godbus.MakeFailedError(err)
}
