package crash

import (
	"testing"
	"time"
)

// TestCleanRestartsAreNotUncleanExits: clean stops (SIGTERM: Shutdown)
// count as restarts, never as unclean exits; an end without a clean
// shutdown (SIGKILL here) and a fatal escalation do, on flash, through a
// clear_crashes and a reboot (before: there was no unclean-exit count,
// and the crash-loop rule read restarts, which every SIGTERM raised).
func TestCleanRestartsAreNotUncleanExits(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	run := func(boot string, clean bool) *Store {
		s := newStore(t, clock, dir, 0, boot)
		if err := s.Arm(1); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
		s.Alive(clock.Now())
		if clean {
			s.Shutdown()
		}
		return s
	}
	for range 3 {
		run("boot-a", true)
	}
	s := run("boot-a", true)
	if sum := s.Summary(clock.Now()); sum.UncleanExits != 0 || sum.RestartCount != 3 {
		t.Fatalf("after 3 clean restarts: unclean %d, restarts %d", sum.UncleanExits, sum.RestartCount)
	}
	run("boot-a", false)     // killed: the marker stays
	s = run("boot-a", false) // this start records the previous unclean end
	s.Add(Record{Time: clock.Now(), Kind: KindWorkerFailed, Worker: "main", Reason: "worker main failed"})
	s.Add(Record{Time: clock.Now(), Kind: KindWorkerPanic, Worker: "fetcher", Reason: "panic: x"}) // recovered: not an exit
	if sum := s.Summary(clock.Now()); sum.UncleanExits != 2 {
		t.Fatalf("unclean exits %d, want 2 (one SIGKILL, one fatal escalation)", sum.UncleanExits)
	}
	s.Shutdown() // the fatal escalation's exit is clean in form
	if err := s.Clear(clock.Now()); err != nil {
		t.Fatal(err)
	}
	s = run("boot-b", true) // a reboot: the RAM state is gone, the flash kept
	if sum := s.Summary(clock.Now()); sum.UncleanExits != 2 || len(sum.Records) != 0 {
		t.Errorf("after clear_crashes and a reboot: unclean %d, records %d", sum.UncleanExits, len(sum.Records))
	}
}
