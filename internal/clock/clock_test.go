package clock

import (
	"testing"
	"time"
)

func TestFakeFiresInOrder(t *testing.T) {
	f := NewFake(time.Unix(1000, 0))
	var order []string
	f.AfterFunc(3*time.Second, func() { order = append(order, "c") })
	a := f.NewTimer(time.Second)
	f.AfterFunc(2*time.Second, func() { order = append(order, "b") })
	stopped := f.AfterFunc(2500*time.Millisecond, func() { order = append(order, "never") })
	if !stopped.Stop() || stopped.Stop() {
		t.Error("Stop: pending once, then not")
	}
	f.Advance(1500 * time.Millisecond)
	select {
	case at := <-a.C():
		if !at.Equal(time.Unix(1001, 0)) {
			t.Errorf("timer fired at %v", at)
		}
	default:
		t.Fatal("due timer not fired")
	}
	if len(order) != 0 || f.Timers() != 2 {
		t.Fatalf("fired early: %v, %d pending", order, f.Timers())
	}
	f.Advance(2 * time.Second)
	if len(order) != 2 || order[0] != "b" || order[1] != "c" || !f.Now().Equal(time.Unix(1003, 500000000)) {
		t.Errorf("order %v, now %v", order, f.Now())
	}
}
