//go:build faults

package sip

// InjectStuck makes every SIP handler hang at its next message, in this
// instance of the worker and every later one: the fault the heartbeat's
// progress check must detect, and restarts cannot cure, so that the
// supervisor escalates. Built only with the "faults" tag.
func (s *Server) InjectStuck() {
	ch := make(chan struct{})
	s.stuck.Store(&ch)
}

// faultHook hangs the handler while a stuck fault is armed.
func (s *Server) faultHook() {
	if ch := s.stuck.Load(); ch != nil {
		<-*ch
	}
}
