// Package health is phonebookd's software-health evaluation: it takes the
// supervisor's workers, the crash store's records and procfs's samples,
// detects leaks on trends, counts error rates, turns what is wrong into
// conditions through one registry, and produces the score and the
// specification's documents (software_health and healthcheck).
//
// Every figure comes from a measurement or a counter; what cannot be
// measured is reported as null with the reason in the code.
package health

import (
	"sync"

	"github.com/aredn/phonebookd/internal/clock"
)

// Clock tells the time and makes timers; tests pass a fake one
// (clock.Fake) that moves only when advanced.
type Clock = clock.Clock

// SystemClock is the real clock.
type SystemClock = clock.Real

// Error categories the workers report.
const (
	CategorySIP   = "sip"
	CategoryProbe = "probe"
	CategoryFetch = "fetch"
)

// Rates counts events per category in one-minute buckets over the last
// hour, giving "per hour" figures that slide rather than reset.
type Rates struct {
	clock Clock
	mu    sync.Mutex
	cats  map[string]*ring
}

const bucketsPerHour = 60

type ring struct {
	minute [bucketsPerHour]int64 // unix minute each bucket holds
	count  [bucketsPerHour]int
}

// NewRates returns an empty set of counters.
func NewRates(clock Clock) *Rates { return &Rates{clock: clock, cats: map[string]*ring{}} }

// Add counts n events of a category now.
func (r *Rates) Add(category string, n int) {
	if r == nil {
		return
	}
	m := r.clock.Now().Unix() / 60
	r.mu.Lock()
	defer r.mu.Unlock()
	rg := r.cats[category]
	if rg == nil {
		rg = &ring{}
		r.cats[category] = rg
	}
	i := m % bucketsPerHour
	if rg.minute[i] != m {
		rg.minute[i], rg.count[i] = m, 0
	}
	rg.count[i] += n
}

// PerHour is the number of events of a category in the last 60 minutes.
func (r *Rates) PerHour(category string) int {
	if r == nil {
		return 0
	}
	m := r.clock.Now().Unix() / 60
	r.mu.Lock()
	defer r.mu.Unlock()
	rg := r.cats[category]
	if rg == nil {
		return 0
	}
	n := 0
	for i := range rg.minute {
		if m-rg.minute[i] < bucketsPerHour {
			n += rg.count[i]
		}
	}
	return n
}
