//go:build !faults

package sip

// faultHook does nothing: fault injection exists only in builds with the
// "faults" tag.
func (s *Server) faultHook() {}
