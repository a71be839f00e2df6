package dbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/aredn/phonebookd/internal/dbustest"
	"github.com/aredn/phonebookd/internal/poll"
)

// fakeAPI records calls; the documents are fixed strings.
type fakeAPI struct {
	mu       sync.Mutex
	cleared  int
	restarts []string
}

func (f *fakeAPI) Status() string { return `{"enabled":true}` }
func (f *fakeAPI) Check() string  { return `{"status":"healthy"}` }
func (f *fakeAPI) Crashes(limit, offset int) (string, error) {
	return fmt.Sprintf(`{"limit":%d,"offset":%d}`, limit, offset), nil
}
func (f *fakeAPI) counts() (cleared, restarts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cleared, len(f.restarts)
}
func (f *fakeAPI) ClearCrashes() error { f.mu.Lock(); f.cleared++; f.mu.Unlock(); return nil }
func (f *fakeAPI) History(limit, offset int) (string, error) {
	return fmt.Sprintf(`{"limit":%d,"offset":%d}`, limit, offset), nil
}
func (f *fakeAPI) Threads() string { return `{"threads":{}}` }
func (f *fakeAPI) Restart(name string) (bool, error) {
	if name != "fetcher" {
		return false, fmt.Errorf("%w: no worker %q", ErrInvalid, name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restarts = append(f.restarts, name)
	return len(f.restarts) == 1, nil // the first restarts, the others find it restarting
}

func startService(t *testing.T, bus *dbustest.Bus, api API) (*Service, context.CancelFunc) {
	s := &Service{Address: bus.Address, API: api}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	poll.Within(t, 10*time.Second, "the service published", func() bool { return s.Registrations() >= 1 })
	return s, cancel
}

func client(t *testing.T, bus *dbustest.Bus) *godbus.Conn {
	c, err := godbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const policy = "../contrib/dbus/org.aredn.Phonebook1.conf"

// TestEveryMethodPropertyAndSignal: a real dbus-daemon with the shipped
// policy; every method answers, the properties read and change with
// PropertiesChanged, and a change of status sends StatusChanged.
func TestEveryMethodPropertyAndSignal(t *testing.T) {
	bus := dbustest.Start(t, policy)
	api := &fakeAPI{}
	s, _ := startService(t, bus, api)
	s.Update(State{Status: "healthy", HealthScore: 100})
	c := client(t, bus)
	health, threads := c.Object(Name, HealthPath), c.Object(Name, ThreadsPath)

	var out string
	for _, m := range []struct {
		obj    godbus.BusObject
		method string
		args   []any
		want   string
	}{
		{health, HealthIface + ".Status", nil, `{"enabled":true}`},
		{health, HealthIface + ".Check", nil, `{"status":"healthy"}`},
		{health, HealthIface + ".Crashes", []any{int32(5), int32(2)}, `{"limit":5,"offset":2}`},
		{health, HealthIface + ".History", []any{int32(60), int32(120)}, `{"limit":60,"offset":120}`},
		{threads, ThreadsIface + ".List", nil, `{"threads":{}}`},
		{threads, ThreadsIface + ".Restart", []any{"fetcher"}, ResultRestarted},
		{threads, ThreadsIface + ".Restart", []any{"fetcher"}, ResultAlreadyRestarting},
	} {
		if err := m.obj.Call(m.method, 0, m.args...).Store(&out); err != nil || out != m.want {
			t.Errorf("%s: %q, %v; want %q", m.method, out, err, m.want)
		}
	}
	var ok bool
	if err := health.Call(HealthIface+".ClearCrashes", 0).Store(&ok); err != nil || !ok {
		t.Errorf("ClearCrashes: %v %v", ok, err)
	}
	if n, _ := api.counts(); n != 1 {
		t.Errorf("cleared %d times, want 1", n)
	}
	err := threads.Call(ThreadsIface+".Restart", 0, "nosuch").Err
	var de godbus.Error
	if !errors.As(err, &de) || de.Name != ErrInvalidArgs {
		t.Errorf("Restart(nosuch): %v, want %s", err, ErrInvalidArgs)
	}
	if err := health.Call(HealthIface+".Crashes", 0, int32(-1), int32(0)).Err; !errors.As(err, &de) || de.Name != ErrInvalidArgs {
		t.Errorf("Crashes(-1): %v", err)
	}

	// Properties and introspection.
	v, err := health.GetProperty(HealthIface + ".HealthScore")
	if err != nil || v.Value() != int32(100) {
		t.Fatalf("HealthScore %v, %v", v, err)
	}
	node, err := introspect.Call(health)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range node.Interfaces {
		if i.Name != HealthIface {
			continue
		}
		for _, m := range i.Methods {
			names = append(names, m.Name)
		}
		for _, p := range i.Properties {
			names = append(names, p.Name+":"+p.Type)
		}
		for _, sg := range i.Signals {
			names = append(names, sg.Name)
		}
	}
	got := strings.Join(names, " ")
	for _, want := range []string{"Status", "Check", "Crashes", "ClearCrashes", "History", "Status:s", "HealthScore:i", "LeakDetected:b", "StatusChanged"} {
		if !strings.Contains(" "+got+" ", " "+want+" ") {
			t.Errorf("introspection lacks %s: %s", want, got)
		}
	}

	// Signals: PropertiesChanged for what changed, StatusChanged on a transition.
	if err := c.AddMatchSignal(godbus.WithMatchObjectPath(HealthPath)); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan *godbus.Signal, 16)
	c.Signal(sigs)
	s.Update(State{Status: "degraded", HealthScore: 80, Alerts: 1})
	seen := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for !(seen["StatusChanged degraded"] && seen["PropertiesChanged HealthScore"]) {
		select {
		case sg := <-sigs:
			switch sg.Name {
			case HealthIface + ".StatusChanged":
				if sg.Body[0] == "healthy" && sg.Body[1] == "degraded" && sg.Body[2] == int32(80) {
					seen["StatusChanged degraded"] = true
				}
			case "org.freedesktop.DBus.Properties.PropertiesChanged":
				for k := range sg.Body[1].(map[string]godbus.Variant) {
					seen["PropertiesChanged "+k] = true
				}
			}
		case <-deadline:
			t.Fatalf("signals seen: %v", seen)
		}
	}
	if seen["PropertiesChanged LeakDetected"] {
		t.Error("PropertiesChanged for a property that did not change")
	}
}

// TestPolicyRefusesWritesToOthers: a caller that is neither root nor in
// the phonebook group reads, but is refused ClearCrashes and Restart by
// the bus policy (dbus-send from a shell, as uid 65534).
func TestPolicyRefusesWritesToOthers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test calls as another user: run it as root (CI does)")
	}
	bus := dbustest.Start(t, policy)
	api := &fakeAPI{}
	startService(t, bus, api)
	send := func(member string, args ...string) (string, error) {
		a := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "dbus-send", "--bus=" + bus.Address,
			"--print-reply", "--dest=" + Name}, member)
		a = append(a, args...)
		out, err := exec.Command("setpriv", a...).CombinedOutput()
		return string(out), err
	}
	if out, err := send(string(HealthPath), HealthIface+".Status"); err != nil || !strings.Contains(out, `{"enabled":true}`) {
		t.Fatalf("read as nobody: %v\n%s", err, out)
	}
	if out, err := send(string(HealthPath), HealthIface+".ClearCrashes"); err == nil || !strings.Contains(out, "AccessDenied") {
		t.Fatalf("ClearCrashes as nobody: %v\n%s", err, out)
	}
	if out, err := send(string(ThreadsPath), ThreadsIface+".Restart", "string:fetcher"); err == nil || !strings.Contains(out, "AccessDenied") {
		t.Fatalf("Restart as nobody: %v\n%s", err, out)
	}
	if c, r := api.counts(); c != 0 || r != 0 {
		t.Fatal("a refused call reached the daemon")
	}
	// root may.
	if out, err := exec.Command("dbus-send", "--bus="+bus.Address, "--print-reply", "--dest="+Name, string(HealthPath), HealthIface+".ClearCrashes").CombinedOutput(); err != nil {
		t.Fatalf("ClearCrashes as root: %v\n%s", err, out)
	}
}

// TestSurvivesBusRestart: the bus goes away and comes back; the service
// re-registers its name and answers again, with the state it had.
func TestSurvivesBusRestart(t *testing.T) {
	bus := dbustest.Start(t, policy)
	s, _ := startService(t, bus, &fakeAPI{})
	s.Update(State{Status: "critical", HealthScore: 20})
	bus.Stop()
	s.Update(State{Status: "degraded", HealthScore: 70}) // while the bus is down
	bus.Start()
	poll.Within(t, 30*time.Second, "re-registration after the bus restart", func() bool { return s.Registrations() >= 2 })
	c := client(t, bus)
	var out string
	if err := c.Object(Name, HealthPath).Call(HealthIface+".Status", 0).Store(&out); err != nil || out != `{"enabled":true}` {
		t.Fatalf("after restart: %q %v", out, err)
	}
	v, err := c.Object(Name, HealthPath).GetProperty(HealthIface + ".Status")
	if err != nil || v.Value() != "degraded" {
		t.Fatalf("Status property after restart %v %v, want the state set while the bus was down", v, err)
	}
}

// TestNameSquatterIsReported: with org.aredn.Phonebook1 owned by another
// process, the service says so through NameTaken (before: it retried
// silently, unpublished, while health said 100), keeps retrying, and
// reports nil once it has the name.
func TestNameSquatterIsReported(t *testing.T) {
	bus := dbustest.Start(t, policy)
	squatter := client(t, bus)
	if reply, err := squatter.RequestName(Name, godbus.NameFlagDoNotQueue); err != nil || reply != godbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("squatter: %v %v", reply, err)
	}
	var mu sync.Mutex
	var taken []error
	s := &Service{Address: bus.Address, API: &fakeAPI{}, NameTaken: func(err error) {
		mu.Lock()
		taken = append(taken, err)
		mu.Unlock()
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	last := func() (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(taken) == 0 {
			return 0, nil
		}
		return len(taken), taken[len(taken)-1]
	}
	poll.Within(t, 10*time.Second, "the squatter reported", func() bool { n, err := last(); return n > 0 && err != nil })
	if _, err := last(); !strings.Contains(err.Error(), "already owned by another process") || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("report %v", err)
	}
	if s.Registrations() != 0 {
		t.Fatal("registered while the name is taken")
	}
	if _, err := squatter.ReleaseName(Name); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, 30*time.Second, "the name acquired", func() bool { n, err := last(); return n > 0 && err == nil && s.Registrations() == 1 })
}
