package health

import (
	"context"
	"fmt"
	"sync"
)

// Next asks the evaluation's owner for an evaluation and waits, bounded
// by ctx, for a snapshot begun after the call: what a request that has
// just changed something (clear_crashes, an injected condition) must
// see. With ctx done first it returns the latest snapshot (nil before
// the first) and the context's error.
func (h *System) Next(ctx context.Context) (*Snapshot, error) {
	target := h.begun.Load() + 1 // one in progress may have read the old state
	h.Trigger()
	for {
		h.pubMu.Lock()
		ch := h.published
		h.pubMu.Unlock()
		if s := h.snap.Load(); s != nil && s.Seq >= target {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return h.snap.Load(), fmt.Errorf("waiting for a health evaluation: %w", ctx.Err())
		case <-ch:
		}
	}
}

// Event is one publication as a subscriber sees it: the snapshot and the
// status this subscriber was last given ("" before the first), so that
// Old != Snap.Status is a change of status.
type Event struct {
	Old  string
	Snap *Snapshot
}

// Subscription delivers the published snapshots to one front (ubus,
// D-Bus, the badge and the reporter) in order of Seq. Its queue is
// bounded: a front that does not keep up loses the oldest events, never
// the newest, and never holds up an evaluation. The events it does get
// form a chain: each Old is the status of the event before it.
type Subscription struct {
	h     *System
	mu    sync.Mutex
	queue []Event
	max   int
	last  string // status of the last event queued
	ready chan struct{}
	lost  int64
}

// Subscribe starts a subscription holding at most n events (at least 1);
// the latest snapshot, if any, is its first event.
func (h *System) Subscribe(n int) *Subscription {
	s := &Subscription{h: h, max: max(n, 1), ready: make(chan struct{}, 1)}
	h.pubMu.Lock()
	if snap := h.snap.Load(); snap != nil {
		s.push(snap)
	}
	h.subs = append(h.subs, s)
	h.pubMu.Unlock()
	return s
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.h.pubMu.Lock()
	defer s.h.pubMu.Unlock()
	for i, x := range s.h.subs {
		if x == s {
			s.h.subs = append(s.h.subs[:i], s.h.subs[i+1:]...)
			return
		}
	}
}

// push queues a snapshot (h.pubMu held, so in order of Seq).
func (s *Subscription) push(snap *Snapshot) {
	s.mu.Lock()
	ev := Event{Old: s.last, Snap: snap}
	s.last = snap.Status
	if len(s.queue) >= s.max {
		// Newest wins: the oldest goes, the next one takes its Old so
		// that the chain of statuses stays whole.
		dropped := s.queue[0]
		s.queue = append(s.queue[:0], s.queue[1:]...)
		if len(s.queue) > 0 {
			s.queue[0].Old = dropped.Old
		} else {
			ev.Old = dropped.Old
		}
		s.lost++
	}
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Next returns the oldest event queued, waiting for one until ctx ends.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			ev := s.queue[0]
			s.queue[0] = Event{}
			s.queue = s.queue[1:]
			if len(s.queue) == 0 {
				s.queue = nil
			}
			s.mu.Unlock()
			return ev, nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-s.ready:
		}
	}
}

// Lost counts the events dropped because the subscriber was behind.
func (s *Subscription) Lost() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}
