package sip

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/clock"
)

// CrashRecorder keeps crash records; the daemon passes its crash store
// (crash.Store), so that a recovered handler panic leaves the same
// evidence as a worker's.
type CrashRecorder interface {
	Add(rec crash.Record)
}

// SetCrashes sets where recovered handler panics are recorded; without
// it they are counted, logged and raised as a condition only. Call it
// before Run.
func (s *Server) SetCrashes(c CrashRecorder) {
	s.panics.mu.Lock()
	defer s.panics.mu.Unlock()
	s.panics.crashes = c
}

// PanicWindow is how long the "handler_panic" condition stays raised
// after the last recovered panic, and how panics are coalesced into
// crash records: the first of a window is written at once, the others
// of that window as one record with their count when it ends.
const PanicWindow = 5 * time.Minute

// maxPanicReason bounds the panic text kept in a record or condition.
const maxPanicReason = 200

// panicState coalesces recovered handler panics: a flood of messages that
// make the handler panic costs one crash record per window, not one
// flash write per message.
type panicState struct {
	count atomic.Int64 // every recovered panic ("handler_panics")

	mu      sync.Mutex
	clock   clock.Clock   // nil: the real clock
	window  time.Duration // 0: PanicWindow
	crashes CrashRecorder
	open    bool        // within a window: the condition is raised
	timer   clock.Timer // ends the window
	pending int         // panics of this window not yet recorded
	reason  string      // the last one's
	stack   string
}

// recoverPanic, deferred directly by a goroutine that handles outside
// input (a connection's framing, a lookup or timer working for a
// message), recovers a panic of that goroutine and treats it as
// handlerPanic does, so that the goroutine ends instead of the process.
func (s *Server) recoverPanic() {
	if v := recover(); v != nil {
		s.handlerPanic(v, debug.Stack())
	}
}

// handlerPanic counts a recovered panic of a goroutine serving outside
// input, raises "handler_panic", logs it (rate-limited) and records it
// as a crash, coalesced per window.
func (s *Server) handlerPanic(v any, stack []byte) {
	p := &s.panics
	n := p.count.Add(1)
	reason := fmt.Sprint(v)
	if len(reason) > maxPanicReason {
		reason = reason[:maxPanicReason] + "..."
	}
	reason = "panic handling a SIP message: " + reason
	s.logs.Log(slog.LevelError, "handler-panic", "sip: a message made the handler panic; dropped, serving on", "panic", reason)

	p.mu.Lock()
	defer p.mu.Unlock()
	// Raised under the lock, so that a window's end cannot clear it
	// after a later panic raised it.
	s.alerts.SetUnhealthy(health.HandlerPanic, "", health.Args{health.ArgCount: strconv.FormatInt(n, 10), health.ArgError: reason})
	clk, window := p.clockAndWindow()
	if p.open {
		p.pending++
		p.reason, p.stack = reason, crash.TrimStack(string(stack))
		return
	}
	p.open = true
	p.record(clk.Now(), reason, crash.TrimStack(string(stack)), 1)
	p.timer = clk.AfterFunc(window, func() { s.panicWindowEnd() })
}

// panicWindowEnd records the panics of the window that ended, as one
// record; a window without any clears the condition.
func (s *Server) panicWindowEnd() {
	p := &s.panics
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.open {
		return
	}
	clk, window := p.clockAndWindow()
	if p.pending > 0 {
		p.record(clk.Now(), p.reason, p.stack, p.pending)
		p.pending = 0
		p.timer = clk.AfterFunc(window, func() { s.panicWindowEnd() })
		return
	}
	p.open, p.timer = false, nil
	s.alerts.SetHealthy(health.HandlerPanic, "")
}

func (p *panicState) clockAndWindow() (clock.Clock, time.Duration) {
	clk, window := p.clock, p.window
	if clk == nil {
		clk = clock.Real{}
	}
	if window <= 0 {
		window = PanicWindow
	}
	return clk, window
}

// record writes one crash record (p.mu held).
func (p *panicState) record(now time.Time, reason, stack string, count int) {
	if p.crashes == nil {
		return
	}
	p.crashes.Add(crash.Record{Time: now, Kind: crash.KindHandlerPanic, Worker: "main", Reason: reason, Stack: stack, Count: count})
}
