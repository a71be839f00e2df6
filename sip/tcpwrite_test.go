package sip

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/aredn/phonebookd/internal/clock"
)

// TestTCPWriteTimeoutRaisedWhileQueued: sip.tcp_write_timeout raised by
// a reload while a queue waits (2 s to 60 s here). The flush at the old
// deadline keeps the queue (it is within the new timeout) and the
// connection is parked until the new deadline. Before, the deadline the
// poller parks it by (stallAt) stayed the old one, already passed, so
// the poller handed the connection back to a reader at once, again and
// again, spinning a core until the new timeout passed.
func TestTCPWriteTimeoutRaisedWhileQueued(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_800_000_000, 0))
	_, tc, stalls := queuedPair(t, fake)
	var to atomic.Int64
	to.Store(int64(2 * time.Second))
	tc.writeTO = func() time.Duration { return time.Duration(to.Load()) }
	to.Store(int64(60 * time.Second)) // the reload
	fake.Advance(2 * time.Second)     // the old deadline
	pending, stallAt, ok := tc.flush()
	if !ok || !pending || stalls.Load() != 0 {
		t.Fatalf("within the raised timeout: ok %v, pending %v, %d stalls; want kept", ok, pending, stalls.Load())
	}
	if want := tc.born.Add(60 * time.Second); !stallAt.Equal(want) {
		t.Errorf("flush: given up at born+%v unless it moves, want born+60s", stallAt.Sub(tc.born))
	}
	// What the poller parks it by (turn parks it at stallAt).
	if d := tc.parkDeadline(stallAt); !d.After(fake.Now()) {
		t.Errorf("parked until born+%v, now is born+%v: handed back to a reader at once (a spin)", d.Sub(tc.born), fake.Now().Sub(tc.born))
	}
}
