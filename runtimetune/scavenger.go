package runtimetune

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/aredn/phonebookd/internal/clock"
)

// Scavenger keeps the daemon's private memory near its live heap and its
// code pages near what it runs. Each Period it reads the heap and the
// allocation rate (bytes a second over the period) and applies its
// rules:
//
//   - Burst: at least MinFree bytes of free heap are resident and the
//     allocation rate has fallen (under half of the period before, or
//     quiet): Free. During a steady load it leaves the pages alone, the
//     load would only fault them back in.
//   - Idle: the daemon is quiet (under QuietRate) and at least
//     IdleGarbage bytes were allocated since the last collection, or at
//     least IdleFree bytes of free heap are resident (the runtime's own
//     collection, forced every 2 minutes, keeps the pages it freed),
//     or the heap's spans in use grew by at least IdleGrowth since the
//     last Free (new spans: their pages made resident as objects are
//     written in them): Free.
//     Without this rule nothing but the runtime's own collection (every
//     2 minutes, or at its minimum goal, 4 MB x GOGC/100, which the
//     idle daemon's ~20 KB/s at ee39f7c reached first) collects at
//     idle, and the pages it grew through stay resident. With it, RssAnon
//     stays within about IdleGarbage plus a period's allocations of the
//     live heap; the cost is a collection of a sub-megabyte heap every
//     few periods.
//   - Both count only the free heap above what the last Free left
//     resident (the runtime keeps some: pages cached per P, runtime
//     pages in a larger physical page with live objects): Free would
//     leave it again, and the quiet daemon would collect every period.
//     Likewise the spans in use count from what the last Free left (live
//     objects hold their spans).
//   - Start-up: once start-up is done (Started), PageOut (unless
//     code_pageout is 0), then Free (StartupCollections times).
//   - Code: PageOut again once the daemon is quiet after a load (a
//     period at or over QuietRate), at most every PageOutEvery (the
//     start-up page-out aside: the phones registering after a start are
//     such a load). See CodePager.PageOut for what a page-out costs; it
//     is not repeated at idle: the idle daemon's own code would fault
//     back in each time, read again from flash.
//
// Free is debug.FreeOSMemory on the runtime: a collection, then every
// free page returned to the kernel.
type Scavenger struct {
	Period      time.Duration // scavenge_interval; Set changes it while running
	MinFree     uint64        // burst rule: free heap worth returning (above what the last Free left)
	QuietRate   uint64        // bytes a second under which the daemon is quiet
	IdleGarbage uint64        // idle rule: heap allocated since the last collection worth collecting
	IdleFree    uint64        // idle rule: free heap resident worth giving back (above what the last Free left)
	// IdleGrowth is the idle rule's growth of the heap's spans in use
	// since the last Free worth collecting; 0 turns that part off.
	IdleGrowth uint64
	// PageOutEvery is the least time between two page-outs after loads
	// (the start-up one excepted).
	PageOutEvery time.Duration
	Clock        clock.Clock
	Read         func() Sample // ReadRuntime
	Free         func()        // debug.FreeOSMemory
	// PageOut drops the executable's resident pages (PageOutCode); nil
	// leaves them.
	PageOut func() (int, error)
	Log     *slog.Logger

	mu         sync.Mutex
	wake       chan struct{}
	pageOutOff bool      // code_pageout 0
	started    bool      // Started was called
	pending    bool      // a page-out is asked for (start-up, code_pageout turned on)
	owed       bool      // a load fell since the last page-out
	collected  bool      // the start-up collections were run
	loadPaged  bool      // a page-out after a load was done
	lastLoad   time.Time // when the last page-out after a load was
}

// NewScavenger is a scavenger on the runtime with the defaults.
func NewScavenger(log *slog.Logger) *Scavenger {
	return &Scavenger{Period: DefaultPeriod, MinFree: DefaultMinFree, QuietRate: DefaultQuietRate,
		IdleGarbage: DefaultIdleGarbage, IdleFree: DefaultIdleFree, IdleGrowth: DefaultIdleGrowth, PageOutEvery: DefaultPageOutEvery, Clock: clock.Real{},
		Read: ReadRuntime, Free: debug.FreeOSMemory, PageOut: NewCodePager().PageOut, Log: log}
}

// wakeC is the channel that wakes Run for a new setting or a page-out
// (s.mu held).
func (s *Scavenger) wakeC() chan struct{} {
	if s.wake == nil {
		s.wake = make(chan struct{}, 1)
	}
	return s.wake
}

func (s *Scavenger) kick() {
	s.mu.Lock()
	c := s.wakeC()
	s.mu.Unlock()
	select {
	case c <- struct{}{}:
	default:
	}
}

// Set changes the period and turns the code page-out on or off (on a
// reload); turned on after start-up, the code is paged out at once.
func (s *Scavenger) Set(period time.Duration, pageOut bool) {
	s.mu.Lock()
	changed := period != s.Period || pageOut == s.pageOutOff
	if pageOut && s.pageOutOff && s.started {
		s.pending = true
	}
	s.Period, s.pageOutOff = period, !pageOut
	s.mu.Unlock()
	if changed {
		s.kick()
	}
}

// Started says start-up is done: the code is paged out at once. Only
// the first call counts: start-up is done once.
func (s *Scavenger) Started() {
	s.mu.Lock()
	first := !s.started
	s.started, s.pending = true, s.pending || first
	s.mu.Unlock()
	if first {
		s.kick()
	}
}

func (s *Scavenger) period() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Period <= 0 {
		return DefaultPeriod
	}
	return s.Period
}

// Rule names what a period's figures call for.
type Rule int

// The scavenger's rules.
const (
	Keep  Rule = iota // nothing to do
	Burst             // the load fell with free heap resident
	Idle              // quiet, with garbage since the last collection
)

// Decide is the scavenger's memory rule for a period whose allocation
// rate (bytes a second) is rate after prevRate, with the heap cur. left
// is the heap as the last Free left it (each figure lowered where the
// heap has fallen below it since). Its HeapFree is the free heap the runtime did not give
// back (pages cached per P, or runtime pages sharing a physical page with
// live objects where the physical page is larger): the rules count only
// the free heap above it, since freeing again would leave it too, and a
// quiet daemon would collect every period for ever. Its HeapInUse is the
// spans live objects held: the idle rule counts the growth above it.
func (s *Scavenger) Decide(prevRate, rate uint64, cur Sample, left Sample) Rule {
	quiet := rate < s.QuietRate
	free := cur.HeapFree - min(left.HeapFree, cur.HeapFree)
	grown := cur.HeapInUse - min(left.HeapInUse, cur.HeapInUse)
	switch {
	case free >= s.MinFree && (rate*2 <= prevRate || quiet):
		return Burst
	case quiet && (cur.Garbage() >= s.IdleGarbage || free >= s.IdleFree || s.IdleGrowth > 0 && grown >= s.IdleGrowth):
		return Idle
	}
	return Keep
}

// pageOutDue says whether the code is paged out now (s.mu held): when
// asked for (start-up), or when a load fell and the daemon is quiet,
// PageOutEvery after the last page-out after a load (the start-up one
// does not count: the phones registering after a start are such a load).
func (s *Scavenger) pageOutDue(now time.Time, quiet bool) bool {
	if s.PageOut == nil || s.pageOutOff || !s.started {
		return false
	}
	return s.pending || s.owed && quiet && (!s.loadPaged || now.Sub(s.lastLoad) >= s.PageOutEvery)
}

func (s *Scavenger) pageOut(now time.Time) {
	s.mu.Lock()
	if !s.pending {
		s.loadPaged, s.lastLoad = true, now
	}
	s.pending, s.owed = false, false
	s.mu.Unlock()
	n, err := s.PageOut()
	if s.Log == nil {
		return
	}
	if err != nil {
		s.Log.Debug("code pages left resident", "err", err)
	} else {
		s.Log.Debug("code paged out", "advised_kb", n>>10)
	}
}

// Run scavenges until ctx ends; it returns how often it freed memory.
func (s *Scavenger) Run(ctx context.Context) int {
	prev, prevAt := s.Read(), s.Clock.Now()
	var prevRate uint64
	// left is the heap as the last Free left it (Decide): its free heap
	// resident and its spans in use, each lowered as the heap falls
	// below it. Before any Free the spans in use count from Run's start.
	left := Sample{HeapInUse: prev.HeapInUse}
	freed := 0
	s.mu.Lock()
	wake := s.wakeC()
	s.mu.Unlock()
	for {
		t := s.Clock.NewTimer(s.period())
		select {
		case <-ctx.Done():
			t.Stop()
			return freed
		case <-wake:
			// A new setting or a page-out asked for: handle it and
			// start the period again.
			t.Stop()
			now := s.Clock.Now()
			s.mu.Lock()
			due := s.pending && s.pageOutDue(now, true)
			// The start-up collections run once start-up is done,
			// whether or not the code is paged out (code_pageout 0).
			startup := s.started && !s.collected
			s.collected = s.collected || startup
			s.mu.Unlock()
			if due {
				s.pageOut(now)
			}
			if startup {
				// Start-up's garbage goes with its code. The runtime's
				// first collections also set up its own structures
				// (the mark-bit arenas of the current, next and previous
				// cycles: metadata/other grows by 0.6-0.9 MB over the
				// first three collections, and the arenas are cleared
				// whole, so made resident, when first reused at the
				// fourth and fifth), so five are run now: that memory is
				// in the idle baseline rather than a rise after it. They
				// run after the page-out: the collector's code is part
				// of the idle daemon's (a collection at least every 2
				// minutes, the runtime's own rule), faulted back now
				// rather than as a rise at the first idle collection.
				for range StartupCollections {
					s.Free()
				}
				freed++
				prev, prevAt = s.Read(), now
				left = prev
			}
			continue
		case <-t.C():
		}
		now := s.Clock.Now()
		cur := s.Read()
		secs := max(now.Sub(prevAt).Seconds(), 1e-3)
		rate := uint64(float64(cur.Allocs-prev.Allocs) / secs)
		quiet := rate < s.QuietRate
		left.HeapFree, left.HeapInUse = min(left.HeapFree, cur.HeapFree), min(left.HeapInUse, cur.HeapInUse)
		switch rule := s.Decide(prevRate, rate, cur, left); rule {
		case Burst, Idle:
			s.Free()
			freed++
			if s.Log != nil {
				s.Log.Debug("returned free heap to the kernel", "rule", rule.String(), "free_kb", cur.HeapFree>>10,
					"garbage_kb", cur.Garbage()>>10, "in_use_kb", cur.HeapInUse>>10, "alloc_kb_per_s", rate>>10)
			}
			cur = s.Read() // the collection moved the figures
			left = cur
		}
		s.mu.Lock()
		if prevRate >= s.QuietRate && quiet {
			s.owed = true // a load fell
		}
		due := s.pageOutDue(now, quiet)
		s.mu.Unlock()
		if due {
			s.pageOut(now)
		}
		prev, prevAt, prevRate = cur, now, rate
	}
}

// String names the rule in the log.
func (r Rule) String() string {
	switch r {
	case Burst:
		return "burst"
	case Idle:
		return "idle"
	}
	return "keep"
}
