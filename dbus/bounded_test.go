package dbus

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/aredn/phonebookd/internal/dbustest"
	"github.com/aredn/phonebookd/internal/poll"
)

// blockingAPI answers Status only when released, so that a test holds
// calls in flight; Check panics.
type blockingAPI struct {
	fakeAPI
	entered chan struct{}
	release chan struct{}
}

func (b *blockingAPI) Status() string {
	b.entered <- struct{}{}
	<-b.release
	return `{"enabled":true}`
}

func (b *blockingAPI) Check() string { panic("a bug in a document") }

func errName(err error) string {
	var de godbus.Error
	if errors.As(err, &de) {
		return de.Name
	}
	return ""
}

// TestShedPastMaxCalls: with MaxCalls calls being answered, every further
// call is refused at once with LimitsExceeded and counted as shed; the
// calls in flight are answered, and once they are, calls are served
// again. (On the code before, nothing bounded the calls answered at once.)
func TestShedPastMaxCalls(t *testing.T) {
	bus := dbustest.Start(t, policy)
	api := &blockingAPI{entered: make(chan struct{}, 8), release: make(chan struct{})}
	s := &Service{Address: bus.Address, API: api, MaxCalls: 2}
	startRunning(t, s)
	c := client(t, bus)
	health := c.Object(Name, HealthPath)

	held := []*godbus.Call{
		health.Go(HealthIface+".Status", 0, nil),
		health.Go(HealthIface+".Status", 0, nil),
	}
	<-api.entered
	<-api.entered
	const extra = 10
	for i := range extra {
		if err := health.Call(HealthIface+".History", 0, int32(0), int32(0)).Err; errName(err) != ErrLimitsExceeded {
			t.Fatalf("call %d past the bound: %v, want %s", i, err, ErrLimitsExceeded)
		}
	}
	if st := s.Stats(); st.Shed != extra || st.InFlight != 2 || st.MaxCalls != 2 {
		t.Errorf("stats %+v, want %d shed, 2 in flight", st, extra)
	}
	close(api.release)
	for _, call := range held {
		<-call.Done
		var out string
		if err := call.Store(&out); err != nil || out != `{"enabled":true}` {
			t.Errorf("call in flight: %q, %v", out, err)
		}
	}
	poll.Until(t, "the calls in flight to end", func() bool { return s.Stats().InFlight == 0 })
	var out string
	if err := health.Call(HealthIface+".History", 0, int32(5), int32(0)).Store(&out); err != nil {
		t.Errorf("a call after the flood: %v", err)
	}
	if st := s.Stats(); st.Shed != extra {
		t.Errorf("shed %d after the flood ended, want %d", st.Shed, extra)
	}
}

// TestArgumentTypesChecked: arguments of another type than the
// introspection says are refused with InvalidArgs, not converted (on
// the code before, a uint32 limit or an object path for a worker's name
// was taken), and a panicking answer is an error, never the process's end.
func TestArgumentTypesChecked(t *testing.T) {
	bus := dbustest.Start(t, policy)
	api := &blockingAPI{}
	s := &Service{Address: bus.Address, API: api}
	startRunning(t, s)
	c := client(t, bus)
	health, threads := c.Object(Name, HealthPath), c.Object(Name, ThreadsPath)
	for _, m := range []struct {
		obj    godbus.BusObject
		method string
		args   []any
	}{
		{health, HealthIface + ".Crashes", []any{uint32(5), uint32(0)}},
		{health, HealthIface + ".Crashes", []any{int64(5), int64(0)}},
		{health, HealthIface + ".History", []any{uint32(4294967295), int32(0)}},
		{health, HealthIface + ".History", []any{int32(5)}},
		{health, HealthIface + ".History", []any{"5", "0"}},
		{threads, ThreadsIface + ".Restart", []any{godbus.ObjectPath("/fetcher")}},
		{threads, ThreadsIface + ".Restart", []any{godbus.MakeVariant("fetcher")}},
		{health, HealthIface + ".ClearCrashes", []any{true}},
	} {
		if err := m.obj.Call(m.method, 0, m.args...).Err; errName(err) != ErrInvalidArgs {
			t.Errorf("%s%v: %v, want %s", m.method, m.args, err, ErrInvalidArgs)
		}
	}
	if n, r := api.counts(); n != 0 || r != 0 {
		t.Errorf("a call with wrong arguments was acted on: %d clears, %d restarts", n, r)
	}
	if err := health.Call(HealthIface+".Check", 0).Err; errName(err) != "org.freedesktop.DBus.Error.Failed" {
		t.Errorf("a panicking answer: %v, want Failed", err)
	}
	var out string
	if err := threads.Call(ThreadsIface+".Restart", 0, "fetcher").Store(&out); err != nil || out != ResultRestarted {
		t.Errorf("Restart(fetcher) after the refusals: %q, %v", out, err)
	}
	// godbus itself refuses a wrong count and a string for an int32;
	// the other types, which it would convert, are the service's refusals.
	if st := s.Stats(); st.Panics != 1 || st.Invalid < 4 {
		t.Errorf("stats %+v: want 1 panic, at least 4 calls of a convertible wrong type counted invalid", st)
	}
}

// TestIntrospectionNamesArguments: every argument of every method has
// its name in the introspection (godbus named them arg_0, arg_1), and
// the signature a method checks is the one it shows.
func TestIntrospectionNamesArguments(t *testing.T) {
	bus := dbustest.Start(t, policy)
	s := &Service{Address: bus.Address, API: &fakeAPI{}}
	startRunning(t, s)
	c := client(t, bus)
	want := map[string]string{
		"Status": "out s status", "Check": "out s check", "Crashes": "in i limit, in i offset, out s crashes",
		"ClearCrashes": "out b cleared", "History": "in i limit, in i offset, out s history",
		"List": "out s threads", "Restart": "in s name, out s result",
	}
	seen := 0
	for _, path := range []godbus.ObjectPath{HealthPath, ThreadsPath} {
		node, err := introspect.Call(c.Object(Name, path))
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range node.Interfaces {
			if i.Name != HealthIface && i.Name != ThreadsIface {
				continue
			}
			for _, m := range i.Methods {
				var args []string
				for _, a := range m.Args {
					if a.Name == "" || strings.HasPrefix(a.Name, "arg_") {
						t.Errorf("%s.%s: an argument without a name: %+v", i.Name, m.Name, a)
					}
					args = append(args, a.Direction+" "+a.Type+" "+a.Name)
				}
				if got := strings.Join(args, ", "); got != want[m.Name] {
					t.Errorf("%s.%s: %q, want %q", i.Name, m.Name, got, want[m.Name])
				}
				seen++
			}
		}
	}
	if seen != len(want) {
		t.Errorf("%d methods introspected, want %d", seen, len(want))
	}
}

// startRunning runs s until the test ends, once it is published.
func startRunning(t *testing.T, s *Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	poll.Within(t, 10*time.Second, "the service published", func() bool { return s.Registrations() >= 1 })
}

// TestPipelinedCallsShedWhileHeld: 500 calls sent at once on one
// connection while every worker is held are all refused with
// LimitsExceeded, the process's goroutines come back to their number
// before (no goroutine is left per call), and the held calls are
// answered once released.
func TestPipelinedCallsShedWhileHeld(t *testing.T) {
	bus := dbustest.Start(t, policy)
	api := &blockingAPI{entered: make(chan struct{}, 8), release: make(chan struct{})}
	s := &Service{Address: bus.Address, API: api, MaxCalls: 2}
	startRunning(t, s)
	c := client(t, bus)
	health := c.Object(Name, HealthPath)
	// Both workers held: the goroutines counted now include them.
	held := []*godbus.Call{health.Go(HealthIface+".Status", 0, nil), health.Go(HealthIface+".Status", 0, nil)}
	<-api.entered
	<-api.entered
	before := runtime.NumGoroutine()

	const n = 500
	done := make(chan *godbus.Call, n)
	for range n {
		health.Go(HealthIface+".Check", 0, done)
	}
	shed, peak := 0, 0
	for range n {
		call := <-done
		if g := runtime.NumGoroutine(); g > peak {
			peak = g
		}
		if errName(call.Err) == ErrLimitsExceeded {
			shed++
		}
	}
	// The client's side of the calls is in this process too: godbus
	// keeps a goroutine per call waiting for its answer, which ends soon
	// after. What must not stay is one per call on the service's side.
	poll.Until(t, "the goroutines back to those before the calls", func() bool { return runtime.NumGoroutine() <= before })
	if shed != n {
		t.Errorf("%d of %d calls shed with both workers held, want all", shed, n)
	}
	close(api.release)
	for _, call := range held {
		<-call.Done
		if call.Err != nil {
			t.Errorf("held call: %v", call.Err)
		}
	}
	t.Logf("goroutines %d before, peak %d while %d calls were answered", before, peak, n)
}
