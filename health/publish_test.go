package health

import (
	"context"
	"sync"
	"testing"
	"time"
)

// owner runs the evaluation loop the daemon's safety worker runs: an
// evaluation at every trigger, until ctx ends.
func owner(ctx context.Context, h *System) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.Triggered():
			h.Sample()
		}
	}
}

// TestConcurrentTriggersOneOwner: many goroutines ask for evaluations at
// once (and, for good measure, some evaluate themselves, as clear_crashes,
// snapshot() and the faults object once did). Under -race nothing races
// (before: procfs.MemReader's buffers); every caller gets a snapshot
// begun after its call; what is published goes strictly forward in Seq
// (before: an older snapshot replaced a newer one in 31 of 600).
func TestConcurrentTriggersOneOwner(t *testing.T) {
	clock := newFakeClock()
	h := newSystem(t, clock, testConfig())
	sub := h.Subscribe(1000)
	ctx, cancel := context.WithCancel(context.Background())
	var own sync.WaitGroup
	own.Go(func() { owner(ctx, h) })

	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Go(func() {
			for i := 0; i < 10; i++ {
				before := h.begun.Load()
				wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
				s, err := h.Next(wctx)
				wcancel()
				if err != nil || s == nil || s.Seq <= before {
					t.Errorf("Next: %v, snapshot %v after %d", err, s, before)
					return
				}
			}
		})
	}
	for g := 0; g < 4; g++ {
		wg.Go(func() {
			for i := 0; i < 10; i++ {
				h.Sample()
			}
		})
	}
	wg.Wait()
	cancel()
	own.Wait()

	published := h.Snapshot()
	var last uint64
	var lastStatus string
	n := 0
	for {
		ectx, ecancel := context.WithTimeout(context.Background(), 0)
		ev, err := sub.Next(ectx)
		ecancel()
		if err != nil {
			break
		}
		n++
		if ev.Snap.Seq <= last {
			t.Fatalf("published %d after %d", ev.Snap.Seq, last)
		}
		if ev.Old != lastStatus {
			t.Fatalf("event %d: old %q, but the status before was %q", ev.Snap.Seq, ev.Old, lastStatus)
		}
		last, lastStatus = ev.Snap.Seq, ev.Snap.Status
	}
	if n < 41 || last != published.Seq || sub.Lost() != 0 {
		t.Errorf("%d events, last %d, published %d, lost %d", n, last, published.Seq, sub.Lost())
	}
}

// TestSlowSubscriberDoesNotStall: a subscriber that never reads (a hung
// bus) holds up no evaluation; its queue stays at its bound, keeps the
// newest, and the statuses it will read still form a chain.
func TestSlowSubscriberDoesNotStall(t *testing.T) {
	clock := newFakeClock()
	h := newSystem(t, clock, testConfig())
	sub := h.Subscribe(3)
	for i := 0; i < 50; i++ {
		if i == 20 {
			h.SetUnhealthy(DaemonDown, "", Args{ArgError: "x"}) // critical
		}
		h.Sample()
	}
	if h.Evaluations() != 50 || sub.Lost() != 47 {
		t.Fatalf("%d evaluations, %d lost", h.Evaluations(), sub.Lost())
	}
	var seqs []uint64
	old := ""
	for range 3 {
		ev, err := sub.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ev.Old != old && len(seqs) > 0 {
			t.Errorf("chain broken at %d: old %q, before %q", ev.Snap.Seq, ev.Old, old)
		}
		if len(seqs) == 0 && (ev.Old != "" || ev.Snap.Status != Critical) {
			t.Errorf("first event read: %q -> %q; want the change from nothing to critical kept", ev.Old, ev.Snap.Status)
		}
		seqs = append(seqs, ev.Snap.Seq)
		old = ev.Snap.Status
	}
	if seqs[0] != 48 || seqs[2] != 50 {
		t.Errorf("kept %v, want the newest 48..50", seqs)
	}
}
