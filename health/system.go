package health

import (
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/procfs"
	"github.com/aredn/phonebookd/supervisor"
)

// Alert levels.
const (
	LevelWarning  = "warning"
	LevelCritical = "critical"
)

// Health statuses of the healthcheck document.
const (
	Healthy  = "healthy"
	Degraded = "degraded"
	Critical = "critical"
	Disabled = "disabled"
)

// Condition is something wrong: a registered code with its level, the
// score it costs, a message and the recommendation that follows from it.
type Condition struct {
	Code           string // the instance: "code" or "code:key"
	Level          string
	Penalty        int
	Message        string
	Recommendation string
	desc           *Descriptor // nil only for an "and N more" alert
}

// Descriptor is the registered condition this is an instance of (nil
// for an "and N more" alert).
func (c Condition) Descriptor() *Descriptor { return c.desc }

// Alert is a condition as reported: with when it started.
type Alert struct {
	Condition
	Since time.Time
}

// Snapshot is one evaluation. Requests only read it.
type Snapshot struct {
	// Seq numbers the evaluations from 1, in the order they began;
	// only a snapshot newer than the one published replaces it.
	Seq     uint64
	Time    time.Time
	Status  string
	Score   int
	Alerts  []Alert
	Workers []supervisor.WorkerStatus
	Crashes crash.Summary
	// The documents, built once per evaluation as Go values; each front
	// encodes them as it sends them (StatusDoc, CheckDoc, ThreadsDoc).
	Health  SoftwareHealth
	Check   Check
	Threads Threads
}

// Options configure the health system.
type Options struct {
	Clock      Clock
	Log        *slog.Logger
	Supervisor *supervisor.Supervisor
	Crashes    *crash.Store
	Rates      *Rates
	StateDir   string
	RunDir     string
	// WorkerExtra adds worker-specific figures to a worker's entry
	// (probe_success_rate, recoveries_performed).
	WorkerExtra func(worker string, all []supervisor.WorkerStatus) WorkerFigures
	// Phones counts the registered phones, for the history.
	Phones func() int
}

// System samples the process, evaluates its health and keeps the snapshot.
type System struct {
	opt     Options
	clock   Clock
	log     *slog.Logger
	started time.Time
	mem     *procfs.MemReader

	cfgMu sync.Mutex
	cfg   config.Health

	mu       sync.Mutex
	heapLeak *Leak
	rssLeak  *Leak
	fdLeak   *Leak
	since    map[string]time.Time
	// lastSeen and lastCond: when each condition was last raised, and
	// how, for those held or settling after their cause went.
	lastSeen map[string]time.Time
	lastCond map[string]Condition
	// due: when the next held or settling condition ends, so that the
	// owner evaluates then rather than at its next interval (zero: none).
	due      time.Time
	external map[string]Condition
	reach    map[string]reachState
	cpu      procfs.CPUWindow  // process CPU, sampled each second by SampleCPU
	stat     procfs.StatReader // reads it without allocating
	clkTck   float64

	history *History

	// evalMu makes evaluations one at a time: the owner (the safety
	// worker) is the only caller of Sample, and evalMu guards against a
	// second one all the same (procfs.MemReader's buffers are shared).
	evalMu sync.Mutex
	begun  atomic.Uint64 // evaluations begun: the last Seq handed out

	snap    atomic.Pointer[Snapshot]
	trigger chan struct{}
	evals   atomic.Int64 // evaluations run

	pubMu     sync.Mutex
	published chan struct{} // closed and replaced at each publication
	subs      []*Subscription
}

// reachState is what one source of real traffic (the fetcher, the
// monitor) saw of the mesh.
type reachState struct {
	lastOK, lastFail time.Time
	// failingSince: the first failure since the last success; fails:
	// how many since.
	failingSince time.Time
	fails        int
}

// NewSystem prepares the health system with settings cfg.
func NewSystem(opt Options, cfg config.Health) *System {
	if opt.Clock == nil {
		opt.Clock = SystemClock{}
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	h := &System{
		opt: opt, clock: opt.Clock, log: opt.Log, started: opt.Clock.Now(), mem: procfs.NewMemReader(),
		since: map[string]time.Time{}, lastSeen: map[string]time.Time{}, lastCond: map[string]Condition{}, external: map[string]Condition{}, reach: map[string]reachState{},
		trigger: make(chan struct{}, 1), clkTck: procfs.ClockTicks(), published: make(chan struct{}),
	}
	h.Configure(cfg)
	return h
}

// Configure applies (re)loaded settings; detectors restart when their
// settings change.
func (h *System) Configure(cfg config.Health) {
	h.cfgMu.Lock()
	old := h.cfg
	h.cfg = cfg
	h.cfgMu.Unlock()
	step, points := time.Duration(cfg.HistoryStep)*time.Second, cfg.HistoryPoints
	if step <= 0 || points <= 0 { // settings built in code, not from UCI
		step, points = time.Minute, 1440
	}
	if h.history == nil {
		h.history = NewHistory(step, points)
	} else {
		h.history.Resize(step, points)
	}
	// The memory limit (memory_limit_mb and the derived one) is the
	// runtime tuner's (runtimetune.Tuner.Configure, which the daemon calls
	// at start and on each reload): set here too, a reload to 0 would
	// wipe the derived limit.
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.heapLeak == nil || old.LeakWarmup != cfg.LeakWarmup || old.LeakWindow != cfg.LeakWindow ||
		old.LeakGrowthFactor != cfg.LeakGrowthFactor || old.LeakMinSlopeKB != cfg.LeakMinSlopeKB ||
		old.LeakMinFit != cfg.LeakMinFit || old.FDLeakMin != cfg.FDLeakMin {
		rule := LeakRule{
			Warmup: time.Duration(cfg.LeakWarmup) * time.Second, Window: time.Duration(cfg.LeakWindow) * time.Second,
			GrowthFactor: cfg.LeakGrowthFactor, MinSlope: float64(cfg.LeakMinSlopeKB) * 1024, MinFit: cfg.LeakMinFit,
		}
		h.heapLeak = NewLeak(rule, h.started)
		rssRule := rule
		rssRule.RelSlope = RSSRelSlope
		h.rssLeak = NewLeak(rssRule, h.started)
		fdRule := rule
		// Descriptors grow in steps: a leak is a sustained rise of at
		// least fd_leak_min over the baseline, not a slope in bytes.
		fdRule.MinSlope = float64(cfg.FDLeakMin) * 3600 / float64(max(cfg.LeakWindow, 1))
		h.fdLeak = NewLeak(fdRule, h.started)
	}
}

func (h *System) config() config.Health {
	h.cfgMu.Lock()
	defer h.cfgMu.Unlock()
	return h.cfg
}

// SetUnhealthy raises (or updates) an instance (key: a worker, a
// target; "" for the only one) of a registered condition owned by
// another part of the daemon (a rejected setting, a jittery mesh link,
// SIP at capacity) with its figures; its descriptor writes the words.
func (h *System) SetUnhealthy(d *Descriptor, key string, args Args) {
	h.setCondition(ConditionOf(d, key, args))
}

// SetHealthy ends an instance raised with SetUnhealthy.
func (h *System) SetHealthy(d *Descriptor, key string) { h.clearCondition(d.Instance(key)) }

func (h *System) setCondition(c Condition) {
	h.mu.Lock()
	if _, ok := h.external[c.Code]; !ok && len(h.external) >= maxExternal {
		h.mu.Unlock() // bounded: the families shown are capped anyway
		h.log.Warn("health condition dropped: too many raised at once", "code", c.Code)
		return
	}
	h.external[c.Code] = c
	h.mu.Unlock()
	h.Trigger()
}

func (h *System) clearCondition(code string) {
	h.mu.Lock()
	_, had := h.external[code]
	delete(h.external, code)
	h.mu.Unlock()
	if had {
		h.Trigger()
	}
}

// Reach records the outcome of real traffic (a fetch, a probe) to judge
// network reachability without sending any of its own.
func (h *System) Reach(source string, ok bool) {
	now := h.clock.Now()
	h.mu.Lock()
	r := h.reach[source]
	if ok {
		r.lastOK, r.failingSince, r.fails = now, time.Time{}, 0
	} else {
		if r.fails == 0 {
			r.failingSince = now
		}
		r.lastFail = now
		r.fails++
	}
	h.reach[source] = r
	h.mu.Unlock()
}

// Due is when a condition held or settling at the last evaluation ends
// (zero: none): the owner evaluates again then.
func (h *System) Due() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.due
}

// dueAt brings due forward to t (h.mu held).
func (h *System) dueAt(t time.Time) {
	if h.due.IsZero() || t.Before(h.due) {
		h.due = t
	}
}

// Trigger asks for an evaluation now (a crash, a worker state change).
func (h *System) Trigger() {
	select {
	case h.trigger <- struct{}{}:
	default:
	}
}

// Triggered delivers when an evaluation was asked for.
func (h *System) Triggered() <-chan struct{} { return h.trigger }

// Evaluations counts the evaluations run since start.
func (h *System) Evaluations() int64 { return h.evals.Load() }

// History is the in-RAM ring of the last day (phonebook.health history).
func (h *System) History() *History { return h.history }

// Snapshot returns the latest evaluation (nil before the first).
func (h *System) Snapshot() *Snapshot { return h.snap.Load() }

// RSSRelSlope is the resident-memory trend's floor, a fraction of its
// baseline per hour (see LeakRule.RelSlope).
const RSSRelSlope = 0.10

// reachWindow: results older than this do not count for reachability.
const reachWindow = 2 * time.Hour

// Sample runs one full cycle: measure, detect, evaluate, publish. Only
// the evaluation's owner calls it (the daemon's safety worker, a test);
// everyone else asks with Next and waits for the snapshot. Evaluations
// are serialised; none does I/O on a bus: status changes go out through
// subscriptions that each front drains in its own goroutine.
func (h *System) Sample() *Snapshot {
	h.evalMu.Lock()
	defer h.evalMu.Unlock()
	h.evals.Add(1)
	now := h.clock.Now()
	cfg := h.config()
	snap := &Snapshot{Seq: h.begun.Add(1), Time: now}
	if h.opt.Supervisor != nil {
		snap.Workers = h.opt.Supervisor.Snapshot()
	}
	if h.opt.Crashes != nil { // the owner refreshed the run marker (crash.Store.Alive) before
		snap.Crashes = h.opt.Crashes.Summary(now)
	}
	if !cfg.Enabled {
		snap.Status = Disabled
		h.publish(snap, cfg, procfs.MemSample{}, procfs.FDSample{}, nil, nil)
		return snap
	}
	m := h.mem.Read()
	fds := procfs.ReadFDs()
	disks := []procfs.DiskSample{procfs.ReadDisk(h.opt.StateDir), procfs.ReadDisk(h.opt.RunDir)}

	h.mu.Lock()
	h.due = time.Time{}
	var conds []Condition
	add := func(c Condition) { conds = append(conds, c) }
	if cfg.MemoryLeakDetection {
		if m.GCCycles > 0 {
			h.heapLeak.Add(now, float64(m.HeapLive))
		}
		if m.RSSKnown {
			// Private memory: file pages come and go with the kernel's
			// fault-around and reclaim, and are no leak.
			h.rssLeak.Add(now, float64(m.RSSAnon))
		}
		if fds.Known {
			h.fdLeak.Add(now, float64(fds.Open))
		}
	}
	for _, w := range snap.Workers {
		if w.Status == supervisor.StatusHealthy {
			h.settling(now, w, add)
		}
		switch w.Status {
		case supervisor.StatusUnresponsive:
			add(workerCond(WorkerUnresponsive, w))
		case supervisor.StatusRestarting:
			add(ConditionOf(WorkerRestarting, w.Name, Args{ArgError: w.LastError}))
		case supervisor.StatusBlocked:
			add(workerCond(WorkerBlocked, w))
		case supervisor.StatusFailed:
			add(workerCond(WorkerFailed, w))
		}
		if w.Goroutines >= cfg.WorkerGoroutineWarn {
			add(ConditionOf(WorkerGoroutines, w.Name, Args{ArgCount: itoa(w.Goroutines), ArgLimit: itoa(cfg.WorkerGoroutineWarn)}))
		}
		if w.Abandoned > 0 {
			add(ConditionOf(Abandoned, w.Name, Args{ArgCount: itoa(w.Abandoned)}))
		}
	}
	if cfg.MemoryLeakDetection {
		if c, ok := leakCond(MemoryLeakHeap, "live heap", h.heapLeak, float64(m.HeapLive)); ok {
			add(c)
		}
		if c, ok := leakCond(MemoryLeakRSS, "private resident memory", h.rssLeak, float64(m.RSSAnon)); ok {
			add(c)
		}
	}
	leaked := h.fdLeaked(fds, cfg)
	if leaked > 0 {
		add(ConditionOf(FDLeak, "", Args{ArgTotal: itoa(fds.Open), ArgCount: itoa(leaked)}))
	}
	if fds.Known && fds.Max > 0 && fds.Open*5 >= fds.Max*4 {
		add(ConditionOf(FDNearLimit, "", Args{ArgCount: itoa(fds.Open), ArgLimit: itoa(fds.Max)}))
	}
	if n := snap.Crashes.CrashCount24h; n > 0 {
		last := snap.Crashes.LastCrash
		c := ConditionOf(RecentCrashes, "", Args{ArgCount: itoa(n), ArgError: last.Reason})
		c.Penalty = min(10*n, 30) // grows with the count
		add(c)
	}
	if n := snap.Crashes.SetAside; n > 0 {
		add(ConditionOf(CrashHistoryInvalid, "", Args{ArgCount: itoa(n)}))
	}
	if err := procfs.Writable(h.opt.StateDir); err != nil || snap.Crashes.WriteError != "" {
		why := snap.Crashes.WriteError
		if err != nil {
			why = err.Error()
		}
		add(ConditionOf(StateDirUnwritable, "", Args{ArgError: why, ArgPath: h.opt.StateDir}))
	}
	if snap.Crashes.CorruptHistory != "" {
		add(ConditionOf(CrashHistoryCorrupt, "", Args{ArgPath: snap.Crashes.CorruptHistory}))
	}
	for i, d := range disks {
		name := []string{"flash state", "RAM run"}[i]
		switch {
		case !d.Known:
			add(ConditionOf(DiskUnknown, itoa(i), Args{ArgWhat: name, ArgError: d.Err}))
		case d.FreeBytes < uint64(cfg.DiskMinFreeKB)*1024:
			add(ConditionOf(DiskLow, itoa(i), Args{ArgWhat: name, ArgPath: d.Path, ArgCount: itoa(int(d.FreeBytes / 1024)), ArgLimit: itoa(cfg.DiskMinFreeKB)}))
		}
	}
	reachable := h.reachable(now)
	if reachable != nil && !*reachable {
		add(ConditionOf(NetworkUnreachable, "", Args{ArgDetail: unreachableWindow.String()}))
	}
	rates := []struct {
		cond      *Descriptor
		cat, what string
		warn      int
	}{
		{SIPErrors, CategorySIP, "SIP errors", cfg.SIPErrorsWarn},
		{ProbeFailures, CategoryProbe, "probe failures", cfg.ProbeFailuresWarn},
		{FetchFailures, CategoryFetch, "phonebook fetch failures", cfg.FetchFailuresWarn},
	}
	for _, r := range rates {
		if n := h.opt.Rates.PerHour(r.cat); n >= r.warn {
			add(ConditionOf(r.cond, "", Args{ArgCount: itoa(n), ArgWhat: r.what, ArgLimit: itoa(r.warn)}))
		}
	}
	if m.Goroutines >= cfg.GoroutineWarn {
		add(ConditionOf(GoroutinesHigh, "", Args{ArgCount: itoa(m.Goroutines), ArgLimit: itoa(cfg.GoroutineWarn)}))
	}
	if m.ThreadsKnown && cfg.OSThreadWarn > 0 && m.Threads >= cfg.OSThreadWarn {
		add(ConditionOf(OSThreadsHigh, "", Args{ArgCount: itoa(m.Threads), ArgLimit: itoa(cfg.OSThreadWarn)}))
	}
	if m.Stacks >= uint64(cfg.StackWarnKB)*1024 {
		add(ConditionOf(StackHigh, "", Args{ArgCount: itoa(int(m.Stacks / 1024)), ArgLimit: itoa(cfg.StackWarnKB)}))
	}
	for _, c := range h.external {
		add(c)
	}
	snap.Alerts = h.evaluate(now, conds)
	shown := make([]Condition, len(snap.Alerts))
	for i, a := range snap.Alerts {
		shown[i] = a.Condition
	}
	snap.Score, snap.Status = Score(shown)
	h.mu.Unlock()

	h.publish(snap, cfg, m, fds, disks, reachable)
	return snap
}

// Score is the formula of docs/HEALTH.md: 100 minus every condition's
// penalty, at least 0; critical with any critical condition or a score
// under 50, degraded with any other condition, else healthy.
func Score(conds []Condition) (int, string) {
	score, status := 100, Healthy
	for _, c := range conds {
		score -= c.Penalty
		if c.Level == LevelCritical {
			status = Critical
		} else if status == Healthy {
			status = Degraded
		}
	}
	score = max(score, 0)
	if score < 50 {
		status = Critical
	}
	return score, status
}

// workerCond is a worker's condition: critical for an essential worker.
func workerCond(d *Descriptor, w supervisor.WorkerStatus) Condition {
	c := ConditionOf(d, w.Name, Args{ArgError: w.LastError})
	if w.Essential {
		c.Level = LevelCritical
	}
	return c
}

func itoa(n int) string { return strconv.Itoa(n) }

func leakCond(d *Descriptor, what string, l *Leak, now float64) (Condition, bool) {
	if ok, _ := l.Detected(); !ok {
		return Condition{}, false
	}
	base, _ := l.Baseline()
	slope, fit := l.Slope()
	return ConditionOf(d, "", Args{ArgWhat: what, ArgFrom: fmt.Sprintf("%.1f", base/(1<<20)), ArgTo: fmt.Sprintf("%.1f", now/(1<<20)),
		ArgDetail: fmt.Sprintf("%+.0f KB/h, fit %.2f", slope/1024, fit)}), true
}

// fdLeaked is the rise over the baseline while the descriptor trend
// detects a leak, else 0 (h.mu held).
func (h *System) fdLeaked(fds procfs.FDSample, cfg config.Health) int {
	if !fds.Known || !cfg.MemoryLeakDetection {
		return 0
	}
	ok, _ := h.fdLeak.Detected()
	base, based := h.fdLeak.Baseline()
	if !ok || !based || fds.Open-int(base) < cfg.FDLeakMin {
		return 0
	}
	return fds.Open - int(base)
}

// unreachableWindow: the mesh is unreachable once every source has
// failed, more than once, over this long without a success.
const unreachableWindow = 10 * time.Minute

// reachable: true with a recent success; false when every source with a
// recent result has been silent over unreachableWindow (failed more than
// once, the first failure that long ago); nil otherwise: no recent
// result, or failures too few or too new to be evidence (h.mu held).
func (h *System) reachable(now time.Time) *bool {
	var recent, silent int
	for _, r := range h.reach {
		if now.Sub(r.lastOK) < reachWindow {
			return ptr(true)
		}
		if now.Sub(r.lastFail) >= reachWindow {
			continue
		}
		recent++
		if r.fails >= 2 && now.Sub(r.failingSince) >= unreachableWindow {
			silent++
		}
	}
	if recent == 0 || silent < recent {
		return nil
	}
	return ptr(false)
}

// workerFamilies are the conditions of a worker's state.
var workerFamilies = []*Descriptor{WorkerUnresponsive, WorkerRestarting, WorkerBlocked, WorkerFailed}

// settling keeps a healthy worker's state conditions raised, as last
// seen, until it has run for the descriptor's Settle: a worker retried
// after being blocked is healthy for a moment at every retry (h.mu held).
func (h *System) settling(now time.Time, w supervisor.WorkerStatus, add func(Condition)) {
	for _, d := range workerFamilies {
		c, ok := h.lastCond[d.Instance(w.Name)]
		if ok && now.Sub(w.Started) < d.Settle {
			add(c)
			h.dueAt(w.Started.Add(d.Settle))
		}
	}
}

// SampleCPU records the process's CPU time; the daemon calls it every
// second, so that process.cpu_pct always covers the last cpuWindow
// however often the documents are evaluated.
func (h *System) SampleCPU() {
	h.mu.Lock()
	defer h.mu.Unlock()
	ticks, ok := h.stat.Process()
	if !ok {
		return
	}
	h.cpu.Add(time.Now(), ticks)
}

// processCPU is the process's share of one CPU over the last cpuWindow;
// nil before two samples or without /proc.
func (h *System) processCPU() *float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cpu.Pct(h.clkTck)
}

func (h *System) publish(snap *Snapshot, cfg config.Health, m procfs.MemSample, fds procfs.FDSample, disks []procfs.DiskSample, reachable *bool) {
	snap.Health = h.softwareHealth(snap, cfg, m, fds, disks)
	snap.Check = h.check(snap, cfg, reachable)
	threads := snap.Health.Threads
	if threads == nil { // monitoring disabled: the workers still run
		threads = h.threads(snap)
	}
	snap.Threads = Threads{Threads: threads}

	phones := 0
	if h.opt.Phones != nil {
		phones = h.opt.Phones()
	}
	h.history.record(snap, phones)

	h.pubMu.Lock()
	old := h.snap.Load()
	if old != nil && old.Seq >= snap.Seq { // cannot happen under evalMu; never go back
		h.pubMu.Unlock()
		return
	}
	h.snap.Store(snap)
	for _, s := range h.subs {
		s.push(snap)
	}
	close(h.published)
	h.published = make(chan struct{})
	h.pubMu.Unlock()
	if old == nil || snap.Status != old.Status {
		oldStatus := ""
		if old != nil {
			oldStatus = old.Status
		}
		h.log.Info("health status changed", "from", oldStatus, "to", snap.Status, "score", snap.Score)
	}
}

// iso formats a time as the specification does.
func iso(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// StatusDoc is the software_health document as sent at now: the
// snapshot's document with uptime_seconds computed now. The threads it
// shares with the snapshot are read-only.
func (h *System) StatusDoc(snap *Snapshot, now time.Time) SoftwareHealth {
	doc := snap.Health
	doc.UptimeSeconds = h.uptime(now)
	return doc
}

// CheckDoc is the healthcheck document as sent at now: timestamp and
// uptime_seconds computed now.
func (h *System) CheckDoc(snap *Snapshot, now time.Time) Check {
	doc := snap.Check
	doc.Timestamp = Time{now.Truncate(time.Second)}
	if doc.UptimeSeconds != nil {
		doc.UptimeSeconds = ptr(h.uptime(now))
	}
	return doc
}

// ThreadsDoc is the phonebook.threads list document.
func (h *System) ThreadsDoc(snap *Snapshot) Threads { return snap.Threads }

// uptime is the whole seconds since the system started, at now.
func (h *System) uptime(now time.Time) int64 {
	return int64(max(now.Sub(h.started)/time.Second, 0))
}
