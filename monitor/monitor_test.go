package monitor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/sip"
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

func (s *script) Bindings() []sip.Binding { return nil }

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

func (c *churn) Bindings() []sip.Binding {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sip.Binding(nil), c.bindings...)
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
