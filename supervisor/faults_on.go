//go:build faults

package supervisor

import (
	"fmt"
	"time"
)

// Faults a test can inject into a worker; the worker meets it at its next
// heartbeat, in its own goroutine.
const (
	FaultPanic = "panic" // panic in the worker
	FaultHang  = "hang"  // stop beating and ignore cancellation
	// FaultFatalMap: concurrent map writes in goroutines the worker
	// started; the runtime's unrecoverable "fatal error".
	FaultFatalMap = "fatal_map"
	// FaultNilDeref: a nil pointer dereference in a bare goroutine the
	// worker started (not with Go, which recovers), where nothing
	// recovers it (SIGSEGV).
	FaultNilDeref = "nil_deref"
)

// Inject arms a fault in a worker.
func (s *Supervisor) Inject(worker, fault string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ws := range s.workers {
		if ws.spec.Name == worker {
			ws.fault.Store(&fault)
			// Meet it soon rather than at the next period, but after the
			// caller's reply is out (a crashing fault ends the process).
			time.AfterFunc(300*time.Millisecond, func() {
				select {
				case ws.poke <- struct{}{}:
				default:
				}
			})
			return nil
		}
	}
	return fmt.Errorf("inject %q: %w", worker, ErrUnknownWorker)
}

func (w *Worker) checkFault() {
	f := w.ws.fault.Swap(nil)
	if f == nil {
		return
	}
	switch *f {
	case FaultPanic:
		panic(fmt.Sprintf("injected fault in worker %s", w.ws.spec.Name))
	case FaultHang:
		select {} // a hung worker: no heartbeat, deaf to its context
	case FaultFatalMap:
		m := map[int]int{}
		for i := 0; i < 4; i++ {
			w.Go(func() {
				for j := 0; ; j++ {
					m[j&63] = j
				}
			})
		}
	case FaultNilDeref:
		// A bare goroutine, deliberately outside Go's recovery: the
		// process-crash path (SIGSEGV in the crash output) is what this
		// fault tests.
		go func() {
			var p *struct{ n int }
			p.n++
		}()
	}
}
