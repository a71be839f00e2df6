// Package clock is time as the daemon's workers see it: the current time
// and timers, passed in rather than taken from the time package, so that
// tests drive heartbeats, deadlines, backoffs and restarts by advancing a
// fake clock instead of sleeping.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	// NewTimer delivers the time on C once d has passed.
	NewTimer(d time.Duration) Timer
	// AfterFunc calls f once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending NewTimer or AfterFunc.
type Timer interface {
	// C delivers the firing time (nil for AfterFunc timers).
	C() <-chan time.Time
	// Stop cancels the timer; it reports whether it was pending.
	Stop() bool
}

// Real is the system clock.
type Real struct{}

// Now returns the current time.
func (Real) Now() time.Time { return time.Now() }

// NewTimer is time.NewTimer.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{t: time.NewTimer(d)} }

// AfterFunc is time.AfterFunc.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return realTimer{t: time.AfterFunc(d, f)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

// Fake is a clock that moves only when told to: Advance fires, in order,
// every timer that falls due (AfterFunc functions run in Advance's
// goroutine), and Timers tells a test when a goroutine has armed the
// timer it is about to wait on.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	f    *Fake
	at   time.Time
	c    chan time.Time
	fn   func()
	live bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	was := t.live
	t.live = false
	t.f.drop(t)
	return was
}

// NewFake starts a fake clock at t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer arms a timer that Advance fires.
func (f *Fake) NewTimer(d time.Duration) Timer {
	return f.add(&fakeTimer{c: make(chan time.Time, 1)}, d)
}

// AfterFunc arms a function that Advance calls.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	return f.add(&fakeTimer{fn: fn}, d)
}

func (f *Fake) add(t *fakeTimer, d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t.f, t.at, t.live = f, f.now.Add(d), true
	f.timers = append(f.timers, t)
	return t
}

// drop removes a timer from the pending list (f.mu held).
func (f *Fake) drop(t *fakeTimer) {
	for i, x := range f.timers {
		if x == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			return
		}
	}
}

// Advance moves the clock by d, firing the timers that fall due, each at
// its own time, earliest first.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	end := f.now.Add(d)
	for {
		sort.SliceStable(f.timers, func(i, j int) bool { return f.timers[i].at.Before(f.timers[j].at) })
		if len(f.timers) == 0 || f.timers[0].at.After(end) {
			break
		}
		t := f.timers[0]
		f.timers = f.timers[1:]
		t.live = false
		if t.at.After(f.now) {
			f.now = t.at
		}
		if t.fn != nil {
			f.mu.Unlock()
			t.fn()
			f.mu.Lock()
			continue
		}
		t.c <- f.now
	}
	f.now = end
	f.mu.Unlock()
}

// Timers is how many timers are pending.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// Earliest is when the first pending timer falls due; false when none is
// pending. A test waits on it to know a worker armed the timer it means
// (a new period), not an older one.
func (f *Fake) Earliest() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.timers) == 0 {
		return time.Time{}, false
	}
	at := f.timers[0].at
	for _, t := range f.timers[1:] {
		if t.at.Before(at) {
			at = t.at
		}
	}
	return at, true
}
