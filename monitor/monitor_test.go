package monitor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/sip"
	"github.com/aredn/phonebookd/supervisor"
)

type script struct {
	mu   sync.Mutex
	rtts map[string][]time.Duration // 0: no answer
}

func (s *script) Probe(_ context.Context, target string) (time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.rtts[target]
	if len(q) == 0 {
		return 0, errors.New("no script")
	}
	r := q[0]
	s.rtts[target] = q[1:]
	if r == 0 {
		return 0, errors.New("timeout")
	}
	return r, nil
}

func (s *script) ProbeBinding(ctx context.Context, b sip.Binding) (time.Duration, error) {
	return s.Probe(ctx, b.Addr)
}

func (s *script) Bindings() []sip.Binding { return nil }

func (s *script) Counts() (int, int) { return 0, 0 }

type alerts struct {
	mu  sync.Mutex
	set map[string]health.Condition
}

func (a *alerts) SetUnhealthy(cond *health.Descriptor, key string, args health.Args) {
	a.mu.Lock()
	a.set[cond.Instance(key)] = health.ConditionOf(cond, key, args)
	a.mu.Unlock()
}
func (a *alerts) SetHealthy(cond *health.Descriptor, key string) {
	a.mu.Lock()
	delete(a.set, cond.Instance(key))
	a.mu.Unlock()
}
func (a *alerts) has(code string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.set[code]
	return ok
}

func TestSilentTargetAndJitter(t *testing.T) {
	ms := time.Millisecond
	sc := &script{rtts: map[string][]time.Duration{
		"node-k:5060": {10 * ms, 12 * ms, 0, 0, 11 * ms},
		"node-j:5060": {10 * ms, 150 * ms, 10 * ms, 160 * ms, 12 * ms},
	}}
	al := &alerts{set: map[string]health.Condition{}}
	rates := health.NewRates(health.SystemClock{})
	cfg := config.Defaults().Monitor
	cfg.Targets, cfg.ProbePhones, cfg.JitterThresholdMS = []string{"node-k:5060", "node-j:5060"}, false, 50
	m := New(cfg, nil, sc, rates, al, nil)
	ctx := context.Background()
	m.Round(ctx, nil)
	m.Round(ctx, nil)
	if r := m.SuccessRate(); r == nil || *r != 100 {
		t.Fatalf("rate %v", r)
	}
	if !al.has("jitter:node-j:5060") || !strings.Contains(al.set["jitter:node-j:5060"].Message, "High mesh jitter detected to node-j:5060") {
		t.Errorf("no jitter alert: %v", al.set)
	}
	m.Round(ctx, nil) // node-k stops answering
	m.Round(ctx, nil)
	if r := m.SuccessRate(); r == nil || *r != 75 {
		t.Errorf("rate after two lost probes: %v", *r)
	}
	if !al.has("probe_failed:node-k:5060") || rates.PerHour(health.CategoryProbe) != 2 {
		t.Errorf("silent target: alerts %v, failures %d", al.set, rates.PerHour(health.CategoryProbe))
	}
	m.Round(ctx, nil) // it answers again
	if al.has("probe_failed:node-k:5060") {
		t.Error("alert not cleared when the target answered again")
	}
}

type churn struct {
	mu       sync.Mutex
	bindings []sip.Binding
}

func (c *churn) Probe(context.Context, string) (time.Duration, error) {
	return 0, errors.New("timeout") // dead contacts
}

func (c *churn) ProbeBinding(context.Context, sip.Binding) (time.Duration, error) {
	return 0, errors.New("timeout")
}

func (c *churn) Bindings() []sip.Binding {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sip.Binding(nil), c.bindings...)
}

func (c *churn) Counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.bindings), 0
}

// TestPhonesChurnBounded: phones with dead contacts that change port each
// round, then unregister, leave no targets and no alerts behind, and
// never get more than the one phones condition (the old monitor kept
// every address forever, each with an alert and a penalty: the node was
// critical at zero users).
func TestPhonesChurnBounded(t *testing.T) {
	c := &churn{}
	al := &alerts{set: map[string]health.Condition{}}
	cfg := config.Defaults().Monitor
	cfg.ProbePhones, cfg.Targets = true, nil
	m := New(cfg, nil, c, health.NewRates(health.SystemClock{}), al, nil)
	for round := 0; round < 12; round++ {
		c.mu.Lock()
		c.bindings = c.bindings[:0]
		for i := 0; i < 250; i++ {
			c.bindings = append(c.bindings, sip.Binding{User: fmt.Sprint(1000 + i), Addr: fmt.Sprintf("127.0.0.1:%d", 10000+round*250+i)})
		}
		c.mu.Unlock()
		m.Round(context.Background(), nil)
		if n := m.Targets(); n != 250 {
			t.Fatalf("round %d: %d targets kept, want the 250 current phones", round, n)
		}
		if len(al.set) != 1 || !al.has(phonesCode) || !strings.Contains(al.set[phonesCode].Message, "250 of 250") {
			t.Fatalf("round %d: alerts %d: %v", round, len(al.set), al.set[phonesCode].Message)
		}
	}
	c.mu.Lock()
	c.bindings = nil // they unregister
	c.mu.Unlock()
	m.Round(context.Background(), nil)
	if m.Targets() != 0 || len(al.set) != 0 {
		t.Errorf("after the phones left: %d targets, alerts %v", m.Targets(), al.set)
	}
}

// field finds a named member of a table.
// realServer runs a SIP server on a loopback port.
func realServer(t *testing.T) (*sip.Server, *net.UDPAddr) {
	cfg := config.Defaults().SIP
	cfg.Listen = "127.0.0.1:0"
	s := sip.New(cfg, nil, health.NewRates(health.SystemClock{}), &alerts{set: map[string]health.Condition{}})
	sup := supervisor.New(supervisor.Options{MaxRestarts: 1, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "main", Period: sip.Period, Run: s.Run})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); sup.Wait(context.Background()) })
	sup.Start(ctx)
	a, err := net.ResolveUDPAddr("udp4", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return s, a
}

// udpPhone is a phone's socket: it registers user at server and, with
// code > 0, answers every OPTIONS with code (baresip answers 404 to an
// OPTIONS it does not know the user of); with code 0 it never answers.
func udpPhone(t *testing.T, server *net.UDPAddr, user string, code int) func(expires int) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	me := c.LocalAddr().String()
	answers := make(chan string, 4)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg := string(buf[:n])
			if strings.HasPrefix(msg, "SIP/2.0 ") {
				select {
				case answers <- msg:
				default:
				}
				continue
			}
			if code == 0 || !strings.HasPrefix(msg, "OPTIONS ") {
				continue
			}
			var b strings.Builder
			fmt.Fprintf(&b, "SIP/2.0 %d Answer\r\n", code)
			for _, line := range strings.Split(msg, "\r\n")[1:] {
				name, _, _ := strings.Cut(line, ":")
				switch strings.ToLower(name) {
				case "via", "from", "to", "call-id", "cseq":
					b.WriteString(line + "\r\n")
				}
			}
			b.WriteString("Content-Length: 0\r\n\r\n")
			c.WriteToUDP([]byte(b.String()), from)
		}
	}()
	cseq := 0
	register := func(expires int) {
		t.Helper()
		cseq++
		msg := fmt.Sprintf("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d;rport\r\nFrom: <sip:%s@127.0.0.1>;tag=t%s\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: reg-%s\r\nCSeq: %d REGISTER\r\nContact: <sip:%s@%s>\r\nExpires: %d\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			me, user, cseq, user, user, user, user, cseq, user, me, expires)
		c.WriteToUDP([]byte(msg), server)
		select {
		case a := <-answers:
			if !strings.HasPrefix(a, "SIP/2.0 200") {
				t.Fatalf("register %s: %q", user, a)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("register %s: no answer", user)
		}
	}
	register(600)
	return register
}

// TestPhonesProbedAsTheyAnswer: with a real server and real phone
// sockets, phones answering 404 or 200 are alive and the silent ones are
// listed by number in the status and named in the one condition; when
// they unregister they stop counting at the next round. Silent phones do
// not declare the mesh unreachable.
func TestPhonesProbedAsTheyAnswer(t *testing.T) {
	s, addr := realServer(t)
	udpPhone(t, addr, "401", 404)
	udpPhone(t, addr, "402", 200)
	leave403 := udpPhone(t, addr, "403", 0)
	leave406 := udpPhone(t, addr, "406", 0)
	al := &alerts{set: map[string]health.Condition{}}
	cfg := config.Defaults().Monitor
	cfg.ProbePhones, cfg.Targets, cfg.ProbeTimeoutMS = true, nil, 700
	var reach []bool
	rates := health.NewRates(health.SystemClock{})
	m := New(cfg, nil, s, rates, al, func(ok bool) { reach = append(reach, ok) })
	m.Round(context.Background(), nil)

	st := m.Status()
	if got := st.Phones.NotAnswering; got != 2 || st.Phones.Probed != 4 {
		t.Errorf("phones %+v", st.Phones)
	}
	if got := st.Phones.NotAnsweringNumbers; fmt.Sprint(got) != "[403 406]" {
		t.Errorf("not answering %v, want [403 406]", got)
	}
	if msg := al.set[phonesCode].Message; msg != "2 of 4 registered phones do not answer SIP OPTIONS: 403, 406" {
		t.Errorf("condition %q", msg)
	}
	if fmt.Sprint(reach) != "[true]" || rates.PerHour(health.CategoryProbe) != 0 {
		t.Errorf("reach %v, probe failures %d: live phones answered", reach, rates.PerHour(health.CategoryProbe))
	}

	leave403(0)
	m.Round(context.Background(), nil)
	if got := m.Status().Phones.NotAnsweringNumbers; fmt.Sprint(got) != "[406]" {
		t.Errorf("after 403 left: %v", got)
	}
	if msg := al.set[phonesCode].Message; msg != "1 of 3 registered phones do not answer SIP OPTIONS: 406" {
		t.Errorf("after 403 left: %q", msg)
	}
	leave406(0)
	m.Round(context.Background(), nil)
	if al.has(phonesCode) || m.Status().Phones.NotAnswering != 0 {
		t.Errorf("after the silent phones left: %v", al.set)
	}
}

// TestSilentPhonesListBounded: the status lists at most MaxListed numbers,
// sorted, with the true count beside them; the condition names three.
func TestSilentPhonesListBounded(t *testing.T) {
	c := &churn{}
	for i := 0; i < 40; i++ {
		c.bindings = append(c.bindings, sip.Binding{User: fmt.Sprint(500 + i), Contact: fmt.Sprintf("sip:%d@127.0.0.1:%d", 500+i, 20000+i), Addr: fmt.Sprintf("127.0.0.1:%d", 20000+i)})
	}
	al := &alerts{set: map[string]health.Condition{}}
	cfg := config.Defaults().Monitor
	cfg.ProbePhones, cfg.Targets = true, nil
	var reach []bool
	m := New(cfg, nil, c, health.NewRates(health.SystemClock{}), al, func(ok bool) { reach = append(reach, ok) })
	m.Round(context.Background(), nil)
	st := m.Status()
	got := st.Phones.NotAnsweringNumbers
	if len(got) != MaxListed || got[0] != "500" || got[15] != "515" || st.Phones.NotAnsweringNumbersTotal != 40 {
		t.Errorf("listed %v, total %d", got, st.Phones.NotAnsweringNumbersTotal)
	}
	if msg := al.set[phonesCode].Message; msg != "40 of 40 registered phones do not answer SIP OPTIONS: 500, 501, 502 and 37 more" {
		t.Errorf("condition %q", msg)
	}
	if len(reach) != 0 {
		t.Errorf("silent phones judged the mesh: %v", reach)
	}
}

// noPhones is a registrar with no phone registered that counts how
// often its binding table is listed (sip copies and sorts it each time).
type noPhones struct {
	script
	listed int
}

func (n *noPhones) Bindings() []sip.Binding { n.listed++; return nil }

// TestIdleRoundIsFree: with no target configured and no phone
// registered (the shipped configuration on a node without phones), a
// round every minute neither lists the binding table nor allocates: the
// idle daemon's monitor round built maps, listed and sorted an empty
// table and formatted the phones condition's key each time.
func TestIdleRoundIsFree(t *testing.T) {
	p := &noPhones{}
	al := &alerts{set: map[string]health.Condition{}}
	cfg := config.Defaults().Monitor
	cfg.Targets, cfg.ProbePhones = nil, true
	m := New(cfg, nil, p, health.NewRates(health.SystemClock{}), al, nil)
	ctx := context.Background()
	m.Round(ctx, nil)
	if n := testing.AllocsPerRun(20, func() { m.Round(ctx, nil) }); n != 0 {
		t.Errorf("an idle round allocates %.1f times, want 0", n)
	}
	if p.listed != 0 {
		t.Errorf("the binding table listed %d times with no phone registered", p.listed)
	}
	if m.SuccessRate() != nil || m.Targets() != 0 || len(al.set) != 0 {
		t.Errorf("an idle round left figures or alerts: rate %v, targets %d, alerts %v", m.SuccessRate(), m.Targets(), al.set)
	}
}
