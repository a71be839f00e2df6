//go:build faults

package health

import "fmt"

// Faults a test can inject into a worker; the worker meets it at its next
// heartbeat, in its own goroutine.
const (
	FaultPanic = "panic" // panic in the worker
	FaultHang  = "hang"  // stop beating and ignore cancellation
)

// Inject arms a fault in a worker.
func (s *Supervisor) Inject(worker, fault string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ws := range s.workers {
		if ws.spec.Name == worker {
			ws.fault.Store(&fault)
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
	}
}
