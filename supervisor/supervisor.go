// Package supervisor runs phonebookd's long-running workers: each with a
// heartbeat deadline of its own period, restarted with backoff after a
// panic, an error or a missed deadline, failed past max_restart_attempts
// (and for an essential worker, escalated to a process restart), retried
// without counting while blocked by an outside cause; a goroutine that
// does not return after cancellation is counted as abandoned. A worker's
// CPU share is that of the work it hands to a thread of its own
// (GoThread) or measures in stretches (BeginCPU); a worker's own
// goroutine runs on the scheduler's shared threads and is not measured
// apart from the process (see WorkerStatus.CPUPct).
package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/internal/loglimit"
	"github.com/aredn/phonebookd/procfs"
)

// Worker statuses.
const (
	StatusHealthy      = "healthy"
	StatusUnresponsive = "unresponsive"
	StatusRestarting   = "restarting"
	StatusFailed       = "failed"
	StatusStopped      = "stopped"
	// StatusBlocked: the worker cannot start for a cause a restart does
	// not fix (a listen address that cannot be bound); it is retried with
	// backoff and reported, never escalated to a process exit.
	StatusBlocked = "blocked"
)

// blockedError marks an error a worker returns when it cannot run for an
// outside cause (configuration, a busy port).
type blockedError struct{ err error }

func (e *blockedError) Error() string { return e.err.Error() }
func (e *blockedError) Unwrap() error { return e.err }

// Blocked wraps err to say that the worker cannot run until something
// outside it changes: the supervisor retries it (1 s doubling to 30 s)
// with status "blocked" and the reason, and neither counts it as a crash
// nor exits the process, since procd respawning it would not help.
func Blocked(err error) error { return &blockedError{err} }

// Spec declares a long-running worker.
type Spec struct {
	Name string
	// Period is how often the worker beats. Its deadline is
	// DeadlineFactor periods: each worker's own, never one global timeout.
	Period    time.Duration
	Essential bool
	Run       func(ctx context.Context, w *Worker) error
}

// DeadlineFactor: a worker is unresponsive after this many periods without
// a heartbeat.
const DeadlineFactor = 3

// Worker is the handle a running worker uses to beat and to start tracked
// goroutines.
type Worker struct {
	ws   *workerState
	inst *instance
}

// Name is the worker's name.
func (w *Worker) Name() string { return w.ws.spec.Name }

// Beat records a heartbeat.
func (w *Worker) Beat() {
	w.checkFault()
	w.inst.lastBeat.Store(w.ws.sup.clock.Now().UnixNano())
	w.inst.beaten.Store(true)
}

// Wait sleeps for d, beating every period meanwhile, so that a worker with
// a long loop stays within its deadline. It returns early with the
// context's error.
func (w *Worker) Wait(ctx context.Context, d time.Duration) error {
	return w.WaitOrWake(ctx, d, nil)
}

// WaitOrWake is Wait that also returns early when wake delivers.
func (w *Worker) WaitOrWake(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	w.Beat()
	clk := w.ws.sup.clock
	end := clk.Now().Add(d)
	for {
		left := end.Sub(clk.Now())
		if left <= 0 {
			return nil
		}
		step := min(left, w.ws.spec.Period)
		t := clk.NewTimer(step)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-wake:
			t.Stop()
			w.Beat()
			return nil
		case <-w.ws.poke:
			t.Stop()
			w.Beat()
		case <-t.C():
			w.Beat()
		}
	}
}

// Poked delivers when the worker is asked to beat now; a worker with a
// wait loop of its own selects on it.
func (w *Worker) Poked() <-chan struct{} { return w.ws.poke }

// Go starts a goroutine counted against this worker. A panic in it is
// recovered like one in the worker's Run: recorded as a crash, and the
// worker restarted with backoff (its instance cancelled), never the
// process ended.
func (w *Worker) Go(f func()) {
	w.ws.goroutines.Add(1)
	go func() {
		defer w.ws.goroutines.Add(-1)
		defer w.recoverGo()
		f()
	}()
}

// goPanic is a panic recovered in a goroutine a worker started.
type goPanic struct {
	value any
	stack []byte
}

// recoverGo recovers a panic of a goroutine started with Go or GoThread:
// the crash is recorded now, and the instance cancelled; when its Run
// returns the worker is restarted as after a panic in Run.
func (w *Worker) recoverGo() {
	r := recover()
	if r == nil {
		return
	}
	p := &goPanic{value: r, stack: debug.Stack()}
	if !w.inst.goPanic.CompareAndSwap(nil, p) {
		return // the instance is already going down for an earlier one
	}
	s := w.ws.sup
	if s.opt.OnCrash != nil {
		s.opt.OnCrash(crash.Record{
			Time: s.clock.Now(), Kind: crash.KindWorkerPanic, Worker: w.ws.spec.Name,
			Reason: fmt.Sprintf("panic: %v", r), Stack: crash.TrimStack(string(p.stack)),
		})
	}
	s.log.Error("worker goroutine panicked; restarting the worker", "worker", w.ws.spec.Name, "panic", fmt.Sprint(r))
	w.inst.cancel()
}

// GoThread starts a goroutine of the worker's real work (a socket
// reader) on an OS thread of its own, whose CPU time counts in the
// worker's cpu_pct; the thread ends with the goroutine. Each such thread
// costs about 35 KB of private memory (its Go stacks: 16 KB g0 and
// 32 KB signal, mostly touched) and a kernel stack, for as long as the
// goroutine runs: keep it for work whose CPU matters.
func (w *Worker) GoThread(f func()) {
	w.ws.goroutines.Add(1)
	inst := w.inst
	inst.measured.Store(true)
	go func() {
		defer w.ws.goroutines.Add(-1)
		runtime.LockOSThread()
		tid := unix.Gettid()
		inst.cpuMu.Lock()
		inst.threads = append(inst.threads, tid)
		inst.cpuMu.Unlock()
		defer w.recoverGo() // runs after the thread's accounting below
		defer func() {
			final, _, _ := procfs.ThreadTicks(tid)
			inst.cpuMu.Lock()
			inst.exitedTicks += final
			for i, t := range inst.threads {
				if t == tid {
					inst.threads = append(inst.threads[:i], inst.threads[i+1:]...)
					break
				}
			}
			inst.cpuMu.Unlock()
		}()
		f()
	}()
}

// CPUSpan is one stretch of a worker's work measured on the thread that
// runs it (BeginCPU); End counts it in the worker's cpu_pct.
type CPUSpan struct {
	inst  *instance
	tid   int
	start int64
}

// BeginCPU starts measuring a stretch of the worker's work done by a
// goroutine that has no OS thread of its own (Go: a TCP connection's
// message), so that such work counts in the worker's cpu_pct as a
// GoThread's does. The goroutine is not pinned to its thread (a message
// whose answer waits on a slow peer would hold a thread, and Go keeps
// the threads it made): End counts the thread's CPU clock only when the
// stretch ended on the thread it began on. A stretch that moved counts
// nothing (it cannot be told apart); one that blocked and came back to
// the same thread counts what other goroutines ran there meanwhile, at
// most the stretch's own wall time.
func (w *Worker) BeginCPU() CPUSpan {
	if w == nil || w.inst == nil {
		return CPUSpan{}
	}
	if !w.inst.measured.Load() {
		w.inst.measured.Store(true)
	}
	start, ok := threadCPUNanos()
	if !ok {
		return CPUSpan{}
	}
	return CPUSpan{inst: w.inst, tid: unix.Gettid(), start: start}
}

// End counts the span's CPU time in the worker's cpu_pct.
func (c CPUSpan) End() {
	if c.inst == nil || unix.Gettid() != c.tid {
		return
	}
	if end, ok := threadCPUNanos(); ok && end > c.start {
		c.inst.spanNanos.Add(end - c.start)
	}
}

// threadCPUNanos is the calling thread's CPU time.
func threadCPUNanos() (int64, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, false
	}
	return ts.Nano(), true
}

type instance struct {
	ctx      context.Context
	cancel   context.CancelFunc
	started  time.Time
	lastBeat atomic.Int64 // the start until the first beat (for the deadline)
	beaten   atomic.Bool  // a beat came since the start
	goid     atomic.Uint64
	// measured: some of the instance's work is measured (GoThread,
	// BeginCPU); until then its cpu_pct is null, not a zero.
	measured atomic.Bool
	done     chan struct{}
	manual   bool // restart requested by the operator
	hung     bool // cancelled for a missed deadline
	// goPanic: a goroutine the instance started panicked (recorded
	// already); the instance ends as if its Run had panicked.
	goPanic atomic.Pointer[goPanic]

	cpuMu       sync.Mutex
	threads     []int  // GoThread threads now running
	exitedTicks uint64 // CPU ticks of GoThread threads that ended
	cpu         procfs.CPUWindow
	// spanNanos is the CPU time of the stretches of work measured by
	// BeginCPU on goroutines without a thread of their own (a TCP
	// connection's messages).
	spanNanos atomic.Int64
}

type workerState struct {
	sup      *Supervisor
	spec     Spec
	status   string
	inst     *instance
	restarts int
	// autoRestarts: restarts after a failure (not the operator's).
	autoRestarts int
	recent       []time.Time
	lastErr      string
	abandoned    int // goroutines that never returned after cancellation
	stuck        int // of those, still not returned
	goroutines   atomic.Int32
	fault        atomic.Pointer[string]
	poke         chan struct{} // wakes a waiting worker (fault builds only send)
	timer        clock.Timer
	blocked      int // consecutive blocked starts
}

// Options configure a supervisor.
type Options struct {
	Clock clock.Clock
	Log   *slog.Logger
	// MaxRestarts inside Window before a worker is failed.
	MaxRestarts int
	Window      time.Duration
	// BackoffBase is the first restart delay, doubling up to BackoffMax.
	BackoffBase, BackoffMax time.Duration
	// AbandonLimit: more stuck goroutines than this is escalated.
	AbandonLimit int
	// OnCrash receives a worker panic as a crash record.
	OnCrash func(crash.Record)
	// OnChange is told of every status change.
	OnChange func()
	// OnFatal is told that the process must end (an essential worker
	// failed, or too many goroutines are stuck); the daemon records it
	// and exits non-zero so that procd restarts it.
	OnFatal func(crash.Record)
	// OnGoroutine tells which goroutine runs a worker, to attribute a
	// crash that kills the process.
	OnGoroutine func(worker string, goid uint64)
}

// Supervisor runs workers, watches their heartbeats and restarts them.
type Supervisor struct {
	opt        Options
	clock      clock.Clock
	log        *slog.Logger
	mu         sync.Mutex
	workers    []*workerState
	ctx        context.Context
	monitoring bool
	wg         sync.WaitGroup
	clkTck     float64 // clock ticks per second from the kernel (0: unknown)
	// stat reads the threads' CPU ticks every second without
	// allocating (s.mu held).
	stat procfs.StatReader
	// restartLog bounds the log lines of the operator's restart calls:
	// a caller looping on restart must not fill the syslog ring.
	restartLog *loglimit.Limiter
}

// Restart requests log at most restartLogBurst lines per
// restartLogInterval; the rest are counted in the next line written.
const (
	restartLogBurst    = 5
	restartLogInterval = time.Minute
)

// New returns a supervisor; Start runs its workers.
func New(opt Options) *Supervisor {
	if opt.Clock == nil {
		opt.Clock = clock.Real{}
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.BackoffBase <= 0 {
		opt.BackoffBase = time.Second
	}
	if opt.BackoffMax <= 0 {
		opt.BackoffMax = 30 * time.Second
	}
	if opt.AbandonLimit <= 0 {
		opt.AbandonLimit = 3
	}
	s := &Supervisor{opt: opt, clock: opt.Clock, log: opt.Log, monitoring: true, clkTck: procfs.ClockTicks()}
	s.restartLog = loglimit.New(opt.Log, restartLogBurst, restartLogInterval, opt.Clock.Now)
	return s
}

// Configure applies reloaded settings.
func (s *Supervisor) Configure(maxRestarts int, window time.Duration, monitoring bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opt.MaxRestarts, s.opt.Window, s.monitoring = maxRestarts, window, monitoring
}

// Add declares a worker; call before Start.
func (s *Supervisor) Add(spec Spec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.workers = append(s.workers, &workerState{sup: s, spec: spec, status: StatusStopped, poke: make(chan struct{}, 1)})
}

// Start launches every worker under ctx.
func (s *Supervisor) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx = ctx
	for _, ws := range s.workers {
		s.launch(ws)
	}
}

func (s *Supervisor) changed() {
	if s.opt.OnChange != nil {
		s.opt.OnChange()
	}
}

// launch starts a new instance of a worker (s.mu held).
func (s *Supervisor) launch(ws *workerState) {
	if s.ctx.Err() != nil {
		return
	}
	ictx, cancel := context.WithCancel(s.ctx)
	inst := &instance{ctx: ictx, cancel: cancel, started: s.clock.Now(), done: make(chan struct{})}
	inst.lastBeat.Store(inst.started.UnixNano())
	ws.inst, ws.status = inst, StatusHealthy
	h := &Worker{ws: ws, inst: inst}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// The worker's own goroutine is not locked to a thread of its
		// own: that cost a thread per worker (13 threads idle, 10
		// without), each about 35 KB of private memory and a kernel
		// stack, for goroutines that mostly wait. What they do runs on
		// the scheduler's threads and counts in process.cpu_pct.
		inst.goid.Store(goroutineID())
		if s.opt.OnGoroutine != nil {
			s.opt.OnGoroutine(ws.spec.Name, inst.goid.Load())
		}
		err, pv, stack := protect(ictx, ws.spec.Run, h)
		close(inst.done)
		s.exited(ws, inst, err, pv, stack)
	}()
}

func isBlocked(err error) bool {
	var b *blockedError
	return errors.As(err, &b)
}

func protect(ctx context.Context, run func(context.Context, *Worker) error, w *Worker) (err error, panicValue any, stack []byte) {
	defer func() {
		if r := recover(); r != nil {
			panicValue, stack = r, debug.Stack()
			if panicValue == nil {
				panicValue = "nil"
			}
		}
	}()
	return run(ctx, w), nil, nil
}

func goroutineID() uint64 {
	var b [64]byte
	n := runtime.Stack(b[:], false)
	f := bytes.Fields(b[:n])
	if len(f) < 2 {
		return 0
	}
	id, _ := strconv.ParseUint(string(f[1]), 10, 64)
	return id
}

func (s *Supervisor) exited(ws *workerState, inst *instance, err error, pv any, stack []byte) {
	now := s.clock.Now()
	if pv != nil && s.opt.OnCrash != nil {
		s.opt.OnCrash(crash.Record{
			Time: now, Kind: crash.KindWorkerPanic, Worker: ws.spec.Name,
			Reason: fmt.Sprintf("panic: %v", pv), Stack: crash.TrimStack(string(stack)),
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if inst.hung {
		// It returned after all; it no longer counts as stuck.
		ws.stuck = max(ws.stuck-1, 0)
	}
	if ws.inst != inst {
		return // a newer instance already runs
	}
	switch {
	case s.ctx.Err() != nil:
		ws.status = StatusStopped
	case inst.manual:
		ws.restarts++
		s.launch(ws)
	case pv != nil:
		ws.blocked = 0
		ws.lastErr = fmt.Sprintf("panic: %v", pv)
		s.restartLater(ws, now, StatusRestarting)
	case inst.goPanic.Load() != nil && !inst.hung:
		// A goroutine it started panicked (recorded then): the same
		// restart as a panic in Run.
		ws.blocked = 0
		ws.lastErr = fmt.Sprintf("panic: %v", inst.goPanic.Load().value)
		s.restartLater(ws, now, StatusRestarting)
	case isBlocked(err):
		ws.lastErr = err.Error()
		ws.status = StatusBlocked
		delay := min(time.Second<<min(ws.blocked, 5), 30*time.Second)
		ws.blocked++
		s.log.Error("worker blocked; retrying", "worker", ws.spec.Name, "in", delay, "reason", ws.lastErr)
		ws.timer = s.clock.AfterFunc(delay, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if ws.status == StatusBlocked && ws.inst == inst {
				s.launch(ws)
				s.changed()
			}
		})
	case err != nil && !errors.Is(err, context.Canceled):
		ws.blocked = 0
		ws.lastErr = err.Error()
		s.restartLater(ws, now, StatusRestarting)
	case inst.hung:
		// restart already scheduled by the deadline check
		return
	default:
		ws.status = StatusStopped
	}
	s.changed()
}

// restartLater counts a restart in the window and schedules it with
// exponential backoff, the worker showing status waiting meanwhile, or
// fails the worker past MaxRestarts (s.mu held).
func (s *Supervisor) restartLater(ws *workerState, now time.Time, waiting string) {
	kept := ws.recent[:0]
	for _, t := range ws.recent {
		if now.Sub(t) < s.opt.Window {
			kept = append(kept, t)
		}
	}
	ws.recent = append(kept, now)
	ws.restarts++
	ws.autoRestarts++
	if len(ws.recent) > s.opt.MaxRestarts {
		ws.status = StatusFailed
		s.log.Error("worker failed", "worker", ws.spec.Name, "restarts", len(ws.recent), "window", s.opt.Window, "last_error", ws.lastErr)
		if ws.spec.Essential && s.opt.OnFatal != nil {
			rec := crash.Record{Time: now, Kind: crash.KindWorkerFailed, Worker: ws.spec.Name,
				Reason: fmt.Sprintf("worker %s failed: %d restarts within %s; last error: %s", ws.spec.Name, len(ws.recent), s.opt.Window, ws.lastErr)}
			go s.opt.OnFatal(rec)
		}
		return
	}
	ws.status = waiting
	delay := s.opt.BackoffBase << (len(ws.recent) - 1)
	if delay > s.opt.BackoffMax || delay <= 0 {
		delay = s.opt.BackoffMax
	}
	s.log.Warn("worker restarting", "worker", ws.spec.Name, "in", delay, "last_error", ws.lastErr)
	ws.timer = s.clock.AfterFunc(delay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if ws.status == StatusRestarting || ws.status == StatusUnresponsive {
			s.launch(ws)
			s.changed()
		}
	})
}

// Check enforces heartbeat deadlines; the daemon calls it every second.
// A worker past its deadline is marked unresponsive, its context cancelled
// and a new instance scheduled; a goroutine that does not return is
// counted as abandoned and, past a bound, escalated.
func (s *Supervisor) Check() {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ws := range s.workers {
		if inst := ws.inst; inst != nil && (ws.status == StatusHealthy || ws.status == StatusUnresponsive) {
			s.sampleCPU(inst)
		}
	}
	if !s.monitoring {
		return
	}
	for _, ws := range s.workers {
		inst := ws.inst
		if inst == nil || ws.status != StatusHealthy {
			continue
		}
		deadline := DeadlineFactor * ws.spec.Period
		late := now.Sub(time.Unix(0, inst.lastBeat.Load()))
		if late <= deadline {
			continue
		}
		ws.lastErr = fmt.Sprintf("no heartbeat for %s (deadline %s)", late.Round(time.Second), deadline)
		s.log.Error("worker unresponsive", "worker", ws.spec.Name, "late", late, "deadline", deadline)
		inst.hung = true
		inst.cancel()
		s.changed()
		go s.watchAbandon(ws, inst, deadline)
		s.restartLater(ws, now, StatusUnresponsive)
	}
}

// watchAbandon counts a cancelled instance that does not return within a
// deadline as abandoned: a goroutine cannot be killed.
func (s *Supervisor) watchAbandon(ws *workerState, inst *instance, grace time.Duration) {
	t := s.clock.NewTimer(grace)
	defer t.Stop()
	select {
	case <-inst.done:
		return
	case <-t.C():
	}
	s.mu.Lock()
	select {
	case <-inst.done:
		s.mu.Unlock()
		return
	default:
	}
	ws.abandoned++
	ws.stuck++
	stuck := 0
	for _, w := range s.workers {
		stuck += w.stuck
	}
	s.log.Error("worker goroutine abandoned", "worker", ws.spec.Name, "stuck", stuck)
	fatal := stuck > s.opt.AbandonLimit && s.opt.OnFatal != nil
	s.mu.Unlock()
	s.changed()
	if fatal {
		s.opt.OnFatal(crash.Record{Time: s.clock.Now(), Kind: crash.KindAbandoned, Worker: ws.spec.Name,
			Reason: fmt.Sprintf("%d worker goroutines stuck after cancellation (limit %d)", stuck, s.opt.AbandonLimit)})
	}
}

// ErrUnknownWorker is returned by Restart for a name no worker has.
var ErrUnknownWorker = errors.New("no such worker")

// ErrAlreadyRestarting is returned by Restart when a restart of that
// worker is already under way: the operator's last one has not finished
// (the instance is still returning), or the worker waits in its backoff
// after a panic, an error or a missed deadline. Nothing more is done, so
// that callers can answer "already restarting" rather than "restarted":
// a flood of restart calls restarts the worker only as often as it can
// really restart.
var ErrAlreadyRestarting = errors.New("already restarting")

// Restart cancels a worker's instance and starts a new one at once (the
// operator's "phonebook.threads restart"). A failed, stopped or blocked
// worker gets a fresh restart window and is started now. It returns nil
// only when it did start a restart, ErrAlreadyRestarting when one was
// already under way.
func (s *Supervisor) Restart(name string) error { return s.RestartBy(name, "") }

// RestartBy is Restart on behalf of a caller named by via (ubus, D-Bus),
// logging what was done at most restartLogBurst lines a minute.
func (s *Supervisor) RestartBy(name, via string) error {
	err := s.restart(name)
	switch {
	case err == nil:
		s.restartLog.Log(slog.LevelInfo, "restart", "worker restart requested", "worker", name, "via", via)
	case errors.Is(err, ErrAlreadyRestarting):
		s.restartLog.Log(slog.LevelInfo, "restart", "worker restart requested; already restarting", "worker", name, "via", via)
	}
	return err
}

func (s *Supervisor) restart(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ws := range s.workers {
		if ws.spec.Name != name {
			continue
		}
		switch {
		case ws.inst != nil && ws.inst.manual:
			return fmt.Errorf("restart %q: %w", name, ErrAlreadyRestarting)
		case ws.status == StatusRestarting || ws.status == StatusUnresponsive:
			// its backoff timer relaunches it
			return fmt.Errorf("restart %q: %w", name, ErrAlreadyRestarting)
		}
		if ws.timer != nil {
			ws.timer.Stop()
		}
		ws.recent = nil
		if ws.inst != nil && ws.status == StatusHealthy {
			ws.inst.manual = true
			ws.inst.cancel()
			return nil
		}
		ws.restarts++
		s.launch(ws)
		s.changed()
		return nil
	}
	return fmt.Errorf("restart %q: %w", name, ErrUnknownWorker)
}

// Wait blocks until every worker instance has returned or ctx ends; it
// reports whether all returned.
func (s *Supervisor) Wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return false
	}
	// Nothing is relaunched once the context has ended: pending restart
	// timers go too.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx != nil && s.ctx.Err() != nil {
		for _, ws := range s.workers {
			if ws.timer != nil {
				ws.timer.Stop()
			}
		}
	}
	return true
}

// WorkerStatus is one worker's state for the documents.
type WorkerStatus struct {
	Name          string
	Status        string
	Essential     bool
	Period        time.Duration
	Started       time.Time
	LastHeartbeat time.Time
	Restarts      int
	LastError     string
	Abandoned     int
	Goroutines    int
	// CPUPct is the share of one CPU the worker's measured work used
	// over the last procfs.CPUSpan: its GoThread threads and its
	// BeginCPU stretches. Nil when it cannot be measured: no /proc, not
	// running, fewer than two samples yet, or no work of the worker is
	// measured. A worker's own goroutine shares the scheduler's threads
	// with every other goroutine and Linux counts CPU per thread, not per
	// goroutine: its CPU is in process.cpu_pct only, never guessed here.
	CPUPct *float64
	// AutoRestarts counts restarts after a panic, error or missed
	// deadline: recoveries, unlike the operator's restarts.
	AutoRestarts int
}

// Snapshot reports every worker. Its CPU figure is over a fixed window
// (sampleCPU), so how often Snapshot is called does not change it.
func (s *Supervisor) Snapshot() []WorkerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]WorkerStatus, 0, len(s.workers))
	for _, ws := range s.workers {
		st := WorkerStatus{
			Name: ws.spec.Name, Status: ws.status, Essential: ws.spec.Essential, Period: ws.spec.Period,
			Restarts: ws.restarts, AutoRestarts: ws.autoRestarts, LastError: ws.lastErr, Abandoned: ws.abandoned,
			Goroutines: int(ws.goroutines.Load()),
		}
		if inst := ws.inst; inst != nil {
			st.Started = inst.started
			if inst.beaten.Load() { // no heartbeat yet: none to report
				st.LastHeartbeat = time.Unix(0, inst.lastBeat.Load())
			}
			if ws.status == StatusHealthy || ws.status == StatusUnresponsive {
				st.Goroutines++ // the worker's own goroutine
				inst.cpuMu.Lock()
				st.CPUPct = inst.cpu.Pct(s.clkTck)
				inst.cpuMu.Unlock()
			}
		}
		out = append(out, st)
	}
	return out
}

// sampleCPU adds the instance's cumulative measured CPU ticks to its
// ring (s.mu held); nothing for an instance none of whose work is
// measured.
func (s *Supervisor) sampleCPU(inst *instance) {
	if s.clkTck == 0 || !inst.measured.Load() {
		return
	}
	inst.cpuMu.Lock()
	defer inst.cpuMu.Unlock()
	total := inst.exitedTicks
	total += uint64(float64(inst.spanNanos.Load()) * s.clkTck / 1e9)
	for _, t := range inst.threads {
		v, _, ok := s.stat.Thread(t)
		if !ok {
			return // not a whole figure: no sample rather than a low one
		}
		total += v
	}
	inst.cpu.Add(time.Now(), total)
}

// EssentialAlive is the watchdog rule, the same for procd and systemd:
// every essential worker is healthy and has beaten within two periods. A
// blocked worker (retrying in process, such as a listen address that
// cannot be bound) counts as alive, because a restart would not fix it;
// a restarted instance that has not beaten yet does not.
func EssentialAlive(workers []WorkerStatus, now time.Time) bool {
	for _, w := range workers {
		if w.Essential && !alive(w.Status, w.LastHeartbeat, w.Period, now) {
			return false
		}
	}
	return true
}

// alive is EssentialAlive's rule for one essential worker.
func alive(status string, lastBeat time.Time, period time.Duration, now time.Time) bool {
	switch {
	case status == StatusBlocked:
		return true
	case status != StatusHealthy:
		return false
	}
	return !lastBeat.IsZero() && now.Sub(lastBeat) <= 2*period
}

// EssentialAlive is the package's EssentialAlive on the workers as they
// are now, without building a snapshot: procd's watchdog asks every 5 s.
func (s *Supervisor) EssentialAlive(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ws := range s.workers {
		if !ws.spec.Essential {
			continue
		}
		var last time.Time
		if ws.inst != nil && ws.inst.beaten.Load() {
			last = time.Unix(0, ws.inst.lastBeat.Load())
		}
		if !alive(ws.status, last, ws.spec.Period, now) {
			return false
		}
	}
	return true
}
