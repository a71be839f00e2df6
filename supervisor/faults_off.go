//go:build !faults

package supervisor

// checkFault does nothing: fault injection exists only in builds with the
// "faults" tag, which the tests use and routers never get.
func (w *Worker) checkFault() {}
