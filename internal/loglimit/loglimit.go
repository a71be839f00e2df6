// Package loglimit keeps a flood from flooding syslog: each cause (a
// fixed name chosen by the caller, never text from the network) may log a
// few lines per interval; the rest are counted and reported as one
// "N more suppressed" line when the cause next logs. The router's syslog
// is a small RAM ring, and one noisy peer must not push everything else
// out of it.
package loglimit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// MaxCauses bounds the causes tracked; lines of further causes share one
// bucket, so the table cannot grow with traffic even if a caller errs.
const MaxCauses = 64

// Limiter rate-limits log lines per cause.
type Limiter struct {
	log      *slog.Logger
	burst    int
	interval time.Duration
	now      func() time.Time

	mu     sync.Mutex
	causes map[string]*bucket
}

type bucket struct {
	start      time.Time
	n          int
	suppressed int
}

// New allows burst lines per cause in each interval.
func New(log *slog.Logger, burst int, interval time.Duration, now func() time.Time) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{log: log, burst: burst, interval: interval, now: now, causes: map[string]*bucket{}}
}

// Log writes one line for cause unless its budget is spent; returns
// whether it was written. A written line carries "suppressed" with the
// count of lines dropped since the last one written.
func (l *Limiter) Log(level slog.Level, cause, msg string, args ...any) bool {
	if l == nil || !l.log.Enabled(context.Background(), level) {
		return false
	}
	now := l.now()
	l.mu.Lock()
	b := l.causes[cause]
	if b == nil {
		if len(l.causes) >= MaxCauses-1 { // one place kept for "other"
			cause = "other"
			b = l.causes[cause]
		}
		if b == nil {
			b = &bucket{start: now}
			l.causes[cause] = b
		}
	}
	if now.Sub(b.start) >= l.interval {
		b.start, b.n = now, 0
	}
	if b.n >= l.burst {
		b.suppressed++
		l.mu.Unlock()
		return false
	}
	b.n++
	suppressed := b.suppressed
	b.suppressed = 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, append(args, "cause", cause)...)
	return true
}

// Suppressed returns the lines dropped and not yet reported, per cause.
func (l *Limiter) Suppressed() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for c, b := range l.causes {
		if b.suppressed > 0 {
			out[c] = b.suppressed
		}
	}
	return out
}
