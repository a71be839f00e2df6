// Package reporter sends the agent health report (the specification's
// health_reporter) to a collector: a JSON document POSTed every interval
// and at once on a change of health status. Reports wait in a bounded RAM
// queue while the collector is unreachable (never on flash), are retried
// oldest first with exponential backoff and jitter, and one counts as sent
// only when the collector answered 2xx. The C daemon logged "sent" for a
// POST it never made; here the figures are what happened.
package reporter

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/httpc"
)

// Reasons a report was made.
const (
	ReasonInterval = "interval"
	ReasonStatus   = "status_change"
)

// Stats are the reporter's counters, for phonebook status and /metrics.
type Stats struct {
	Queued      int
	Sent        int64
	Failed      int64 // attempts that failed (a report may fail several times)
	Dropped     int64 // reports pushed out of a full queue
	LastSuccess time.Time
	LastError   string
}

// maxAnswer bounds what is read of a collector's answer body (then
// dropped): the connection is closed after it.
const maxAnswer = 64 << 10

// Reporter queues and sends reports.
type Reporter struct {
	// Build returns the report JSON for a reason, at the moment of the call.
	Build func(reason string) ([]byte, error)
	Log   *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between attempts while the
	// collector fails (defaults 1 s and 5 min; tests shorten them).
	MinBackoff, MaxBackoff time.Duration

	mu     sync.Mutex
	cfg    config.Reporter
	queue  [][]byte
	stats  Stats
	wake   chan struct{}
	status chan struct{}
}

// New returns a reporter with settings cfg.
func New(cfg config.Reporter, build func(string) ([]byte, error), log *slog.Logger) *Reporter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reporter{Build: build, Log: log, cfg: cfg, MinBackoff: time.Second, MaxBackoff: 5 * time.Minute, wake: make(chan struct{}, 1), status: make(chan struct{}, 1)}
}

// Configure applies new settings; a smaller queue drops the oldest
// reports (counted).
func (r *Reporter) Configure(cfg config.Reporter) {
	r.mu.Lock()
	r.cfg = cfg
	r.trim()
	r.mu.Unlock()
	kick(r.wake)
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// StatusChanged asks for a report at once.
func (r *Reporter) StatusChanged() { kick(r.status) }

// Stats returns the counters.
func (r *Reporter) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Queued = len(r.queue)
	return s
}

// trim enforces the queue bound; r.mu is held.
func (r *Reporter) trim() {
	limit := max(r.cfg.Queue, 1)
	if n := len(r.queue) - limit; n > 0 {
		r.stats.Dropped += int64(n)
		r.queue = append(r.queue[:0], r.queue[n:]...)
	}
}

func (r *Reporter) enqueue(reason string) {
	r.mu.Lock()
	on := r.cfg.URL != ""
	r.mu.Unlock()
	if !on {
		return
	}
	doc, err := r.Build(reason)
	if err != nil {
		r.Log.Warn("health report not built", "err", err)
		return
	}
	r.mu.Lock()
	r.queue = append(r.queue, doc)
	r.trim()
	r.mu.Unlock()
}

// Run makes and sends reports until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	r.mu.Lock()
	interval := time.Duration(max(r.cfg.Interval, 1)) * time.Second
	r.mu.Unlock()
	tick := time.NewTimer(interval)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	failures := 0
	waiting := false // a retry is scheduled: do not send before it fires
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.mu.Lock()
			interval = time.Duration(max(r.cfg.Interval, 1)) * time.Second
			r.mu.Unlock()
			tick.Reset(interval)
			r.enqueue(ReasonInterval)
		case <-r.status:
			r.enqueue(ReasonStatus)
		case <-r.wake:
		case <-retry.C:
			waiting = false
		}
		if waiting {
			continue
		}
		for ctx.Err() == nil {
			ok, empty := r.sendOldest(ctx)
			if empty {
				failures = 0
				break
			}
			if !ok {
				failures++
				retry.Reset(r.backoff(failures))
				waiting = true
				break
			}
			failures = 0
		}
	}
}

// backoff doubles from MinBackoff per failure up to MaxBackoff, with
// +-50 % jitter so that a mesh of nodes does not retry in step.
func (r *Reporter) backoff(failures int) time.Duration {
	d := r.MinBackoff << min(failures-1, 20)
	if d <= 0 || d > r.MaxBackoff {
		d = r.MaxBackoff
	}
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}

// sendOldest POSTs the oldest report; it stays queued unless the
// collector answered 2xx.
func (r *Reporter) sendOldest(ctx context.Context) (ok, empty bool) {
	r.mu.Lock()
	if len(r.queue) == 0 || r.cfg.URL == "" {
		r.mu.Unlock()
		return false, true
	}
	doc, cfg := r.queue[0], r.cfg
	r.mu.Unlock()
	// The final status line decides: interim 1xx answers are skipped,
	// and the body of the answer, whatever its size, is read up to
	// maxAnswer and dropped. A 2xx is an accepted report.
	resp, err := httpc.Do(ctx, httpc.Request{Method: "POST", URL: cfg.URL, ContentType: "application/json", Body: doc, DiscardBody: true},
		time.Duration(cfg.Timeout)*time.Second, maxAnswer)
	if err == nil && (resp.Status < 200 || resp.Status > 299) {
		err = fmt.Errorf("collector answered HTTP %d", resp.Status)
	}
	url := httpc.Redact(cfg.URL)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.stats.Failed++
		if r.stats.LastError == "" {
			r.Log.Warn("health report not delivered; kept in RAM for a retry", "url", url, "err", err)
		}
		r.stats.LastError = err.Error()
		return false, false
	}
	if len(r.queue) > 0 && len(doc) > 0 && &r.queue[0][0] == &doc[0] {
		r.queue = r.queue[1:]
	} else {
		// A full queue pushed it out during the POST, and it was
		// counted dropped; it arrived after all.
		r.stats.Dropped--
	}
	r.stats.Sent++
	r.stats.LastSuccess = time.Now()
	if r.stats.LastError != "" {
		r.Log.Info("health reports delivered again", "url", url)
	}
	r.stats.LastError = ""
	r.Log.Debug("health report sent", "url", url, "status", resp.Status)
	return true, false
}
