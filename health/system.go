package health

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/procfs"
	"github.com/aredn/phonebookd/supervisor"
	"github.com/aredn/phonebookd/ubus"
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
	Code           string
	Level          string
	Penalty        int
	Message        string
	Recommendation string
}

// Alert is a condition as reported: with when it started.
type Alert struct {
	Condition
	Since time.Time
}

// Snapshot is one evaluation. Requests only read it.
type Snapshot struct {
	Time    time.Time
	Status  string
	Score   int
	Alerts  []Alert
	Workers []supervisor.WorkerStatus
	Crashes crash.Summary
	// The documents, built once per evaluation, and their blobmsg
	// encodings (table bodies), encoded once.
	Health      SoftwareHealth
	Check       Check
	StatusBody  []byte
	CheckBody   []byte
	ThreadsBody []byte
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
	WorkerExtra func(worker string, all []supervisor.WorkerStatus) []ubus.Value
	// OnStatus is told of every change of status.
	OnStatus func(old, new string, snap *Snapshot)
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
	external map[string]Condition
	reach    map[string]reachState
	cpu      procfs.CPUWindow // process CPU, sampled each second by SampleCPU
	clkTck   float64

	snap    atomic.Pointer[Snapshot]
	trigger chan struct{}
	evals   atomic.Int64 // evaluations run
}

type reachState struct {
	lastOK, lastFail time.Time
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
		since: map[string]time.Time{}, external: map[string]Condition{}, reach: map[string]reachState{},
		trigger: make(chan struct{}, 1), clkTck: procfs.ClockTicks(),
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
	if cfg.MemoryLimitMB > 0 {
		debug.SetMemoryLimit(int64(cfg.MemoryLimitMB) << 20)
	} else if old.MemoryLimitMB > 0 {
		debug.SetMemoryLimit(math.MaxInt64) // no limit
	}
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

// SetCondition raises (or updates) a condition owned by another part of
// the daemon: a rejected setting, a jittery mesh link, SIP at capacity.
func (h *System) SetCondition(c Condition) {
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

// ClearCondition ends a condition raised with SetCondition.
func (h *System) ClearCondition(code string) {
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
		r.lastOK = now
	} else {
		r.lastFail = now
	}
	h.reach[source] = r
	h.mu.Unlock()
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

// Snapshot returns the latest evaluation (nil before the first).
func (h *System) Snapshot() *Snapshot { return h.snap.Load() }

// RSSRelSlope is the resident-memory trend's floor, a fraction of its
// baseline per hour (see LeakRule.RelSlope).
const RSSRelSlope = 0.10

// reachWindow: results older than this do not count for reachability.
const reachWindow = 2 * time.Hour

// Sample runs one full cycle: measure, detect, evaluate, publish.
func (h *System) Sample() *Snapshot {
	h.evals.Add(1)
	now := h.clock.Now()
	cfg := h.config()
	snap := &Snapshot{Time: now}
	if h.opt.Supervisor != nil {
		snap.Workers = h.opt.Supervisor.Snapshot()
	}
	if h.opt.Crashes != nil {
		h.opt.Crashes.Alive(now)
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
		switch w.Status {
		case supervisor.StatusUnresponsive:
			add(workerCond("worker_unresponsive:"+w.Name, w, 25, "Worker %s is unresponsive: %s",
				"Worker %s missed its heartbeat deadline and is being restarted; if this recurs, check 'logread -e phonebookd' around the time."))
		case supervisor.StatusRestarting:
			add(Condition{Code: "worker_restarting:" + w.Name, Level: LevelWarning, Penalty: 10,
				Message:        fmt.Sprintf("Worker %s is restarting after: %s", w.Name, w.LastError),
				Recommendation: fmt.Sprintf("Worker %s restarts with backoff; if it keeps failing it will be marked failed.", w.Name)})
		case supervisor.StatusBlocked:
			add(workerCond("worker_blocked:"+w.Name, w, 40, "Worker %s cannot run: %s",
				"Worker %s retries by itself with backoff; fix the cause (for a listen address: uci show phonebook.sip; a port in use: netstat -lnp) and it starts."))
		case supervisor.StatusFailed:
			add(workerCond("worker_failed:"+w.Name, w, 40, "Worker %s has failed: %s",
				"Fix the cause, then restart worker %s: ubus call phonebook.threads restart '{\"name\":\"%[1]s\"}'."))
		}
		if w.Goroutines >= cfg.WorkerGoroutineWarn {
			add(Condition{Code: "worker_goroutines:" + w.Name, Level: LevelWarning, Penalty: 5,
				Message:        fmt.Sprintf("Worker %s runs %d goroutines (warning at %d)", w.Name, w.Goroutines, cfg.WorkerGoroutineWarn),
				Recommendation: fmt.Sprintf("Worker %s keeps starting goroutines; restart it (phonebook.threads restart) and report it.", w.Name)})
		}
		if w.Abandoned > 0 {
			add(Condition{Code: "abandoned:" + w.Name, Level: LevelWarning, Penalty: 10,
				Message:        fmt.Sprintf("Worker %s left %d goroutine(s) stuck after cancellation", w.Name, w.Abandoned),
				Recommendation: "Stuck goroutines hold memory until the daemon restarts: /etc/init.d/phonebook restart."})
		}
	}
	if cfg.MemoryLeakDetection {
		if c, ok := leakCond("memory_leak_heap", "live heap", h.heapLeak, float64(m.HeapLive)); ok {
			add(c)
		}
		if c, ok := leakCond("memory_leak_rss", "private resident memory", h.rssLeak, float64(m.RSSAnon)); ok {
			add(c)
		}
	}
	leaked := h.fdLeaked(fds, cfg)
	if leaked > 0 {
		add(Condition{Code: "fd_leak", Level: LevelWarning, Penalty: 15,
			Message:        fmt.Sprintf("File descriptors leaking: %d open, %d above the baseline and rising", fds.Open, leaked),
			Recommendation: "Descriptors keep rising; restart the daemon before it reaches the limit and report the crash history."})
	}
	if fds.Known && fds.Max > 0 && fds.Open*5 >= fds.Max*4 {
		add(Condition{Code: "fd_near_limit", Level: LevelCritical, Penalty: 30,
			Message:        fmt.Sprintf("%d of %d file descriptors in use", fds.Open, fds.Max),
			Recommendation: "The daemon is near its descriptor limit and will fail to accept connections; restart it."})
	}
	if n := snap.Crashes.CrashCount24h; n > 0 {
		last := snap.Crashes.LastCrash
		add(Condition{Code: "recent_crashes", Level: LevelWarning, Penalty: min(10*n, 30),
			Message:        fmt.Sprintf("%d crash(es) in the last 24 h, last: %s", n, last.Reason),
			Recommendation: "Read the crash records (ubus call phonebook.health crashes) and report them; clear them with clear_crashes once handled."})
	}
	if n := snap.Crashes.SetAside; n > 0 {
		add(Condition{Code: "crash_history_invalid", Level: LevelWarning, Penalty: 5,
			Message:        fmt.Sprintf("%d crash record(s) with impossible times or counts were set aside when the history was read", n),
			Recommendation: "The clock may have been wrong when they were written; clear_crashes starts a new history."})
	}
	if err := procfs.Writable(h.opt.StateDir); err != nil || snap.Crashes.WriteError != "" {
		why := snap.Crashes.WriteError
		if err != nil {
			why = err.Error()
		}
		add(Condition{Code: "state_dir_unwritable", Level: LevelWarning, Penalty: 15,
			Message:        "Crash records cannot be kept on flash: " + why,
			Recommendation: "Check that " + h.opt.StateDir + " exists, is writable by the daemon and that the overlay is not full or read-only (mount, df)."})
	}
	if snap.Crashes.CorruptHistory != "" {
		add(Condition{Code: "crash_history_corrupt", Level: LevelWarning, Penalty: 5,
			Message:        "The crash history on flash was unreadable and was kept aside at " + snap.Crashes.CorruptHistory,
			Recommendation: "The old file is kept for inspection; clear_crashes starts a new history."})
	}
	for i, d := range disks {
		name := []string{"flash state", "RAM run"}[i]
		switch {
		case !d.Known:
			add(Condition{Code: fmt.Sprintf("disk_unknown:%d", i), Level: LevelWarning, Penalty: 5,
				Message: fmt.Sprintf("Free space of the %s filesystem cannot be read: %s", name, d.Err), Recommendation: "Check that the directory exists and is readable."})
		case d.FreeBytes < uint64(cfg.DiskMinFreeKB)*1024:
			add(Condition{Code: fmt.Sprintf("disk_low:%d", i), Level: LevelWarning, Penalty: 15,
				Message:        fmt.Sprintf("The %s filesystem (%s) has %d KB free, below %d KB", name, d.Path, d.FreeBytes/1024, cfg.DiskMinFreeKB),
				Recommendation: fmt.Sprintf("Free space on the filesystem holding %s.", d.Path)})
		}
	}
	reachable := h.reachable(now)
	if reachable != nil && !*reachable {
		add(Condition{Code: "network_unreachable", Level: LevelWarning, Penalty: 10,
			Message:        "No phonebook server or mesh target answered in the last 2 hours",
			Recommendation: "Check the mesh link and the fetcher's servers (uci show phonebook.fetcher)."})
	}
	rates := []struct {
		code, cat, what string
		warn            int
	}{
		{"sip_errors", CategorySIP, "SIP errors", cfg.SIPErrorsWarn},
		{"probe_failures", CategoryProbe, "probe failures", cfg.ProbeFailuresWarn},
		{"fetch_failures", CategoryFetch, "phonebook fetch failures", cfg.FetchFailuresWarn},
	}
	for _, r := range rates {
		if n := h.opt.Rates.PerHour(r.cat); n >= r.warn {
			add(Condition{Code: r.code, Level: LevelWarning, Penalty: 5,
				Message:        fmt.Sprintf("%d %s in the last hour (warning at %d)", n, r.what, r.warn),
				Recommendation: fmt.Sprintf("Many %s: look at logread for their causes.", r.what)})
		}
	}
	if m.Goroutines >= cfg.GoroutineWarn {
		add(Condition{Code: "goroutines_high", Level: LevelWarning, Penalty: 5,
			Message: fmt.Sprintf("%d goroutines running (warning at %d)", m.Goroutines, cfg.GoroutineWarn), Recommendation: "Goroutines keep piling up; restart the daemon and report it."})
	}
	if m.Stacks >= uint64(cfg.StackWarnKB)*1024 {
		add(Condition{Code: "stack_high", Level: LevelWarning, Penalty: 5,
			Message: fmt.Sprintf("Goroutine stacks use %d KB (warning at %d KB)", m.Stacks/1024, cfg.StackWarnKB), Recommendation: "Deep recursion or many goroutines; restart the daemon and report it."})
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

func workerCond(code string, w supervisor.WorkerStatus, penalty int, msg, rec string) Condition {
	level := LevelWarning
	if w.Essential {
		level = LevelCritical
	}
	return Condition{Code: code, Level: level, Penalty: penalty,
		Message: fmt.Sprintf(msg, w.Name, w.LastError), Recommendation: fmt.Sprintf(rec, w.Name)}
}

func leakCond(code, what string, l *Leak, now float64) (Condition, bool) {
	if ok, _ := l.Detected(); !ok {
		return Condition{}, false
	}
	base, _ := l.Baseline()
	slope, fit := l.Slope()
	return Condition{Code: code, Level: LevelWarning, Penalty: 20,
		Message: fmt.Sprintf("Possible memory leak: %s grew from %.1f MB to %.1f MB (%+.0f KB/h, fit %.2f)",
			what, base/(1<<20), now/(1<<20), slope/1024, fit),
		Recommendation: "Memory keeps growing; restart the daemon (/etc/init.d/phonebook restart) before the router runs short, and report the crash history."}, true
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

// reachable: true with a recent success, false with only recent
// failures, nil without any recent result (h.mu held).
func (h *System) reachable(now time.Time) *bool {
	var any, ok bool
	for _, r := range h.reach {
		if now.Sub(r.lastOK) < reachWindow {
			ok = true
		}
		if now.Sub(r.lastOK) < reachWindow || now.Sub(r.lastFail) < reachWindow {
			any = true
		}
	}
	if !any {
		return nil
	}
	return &ok
}

// SampleCPU records the process's CPU time; the daemon calls it every
// second, so that process.cpu_pct always covers the last cpuWindow
// however often the documents are evaluated.
func (h *System) SampleCPU() {
	ticks, ok := procfs.ProcessTicks()
	if !ok {
		return
	}
	now := time.Now()
	h.mu.Lock()
	h.cpu.Add(now, ticks)
	h.mu.Unlock()
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
	snap.StatusBody = ubus.AppendValues(nil, ubus.ValuesOf(&snap.Health))
	snap.CheckBody = ubus.AppendValues(nil, ubus.ValuesOf(&snap.Check))
	threads := snap.Health.Threads
	if threads == nil { // monitoring disabled: the workers still run
		threads = h.threads(snap)
	}
	snap.ThreadsBody = ubus.AppendValues(nil, ubus.ValuesOf(&Threads{Threads: threads}))

	old := h.snap.Swap(snap)
	oldStatus := ""
	if old != nil {
		oldStatus = old.Status
	}
	if snap.Status != oldStatus {
		h.log.Info("health status changed", "from", oldStatus, "to", snap.Status, "score", snap.Score)
		if h.opt.OnStatus != nil {
			h.opt.OnStatus(oldStatus, snap.Status, snap)
		}
	}
}

// iso formats a time as the specification does.
func iso(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// StatusDoc is the software_health document as sent at now: the
// snapshot's encoding with uptime_seconds computed now, one allocation
// (the document).
func (h *System) StatusDoc(snap *Snapshot, now time.Time) []byte {
	b := append([]byte(nil), snap.StatusBody...)
	h.patchUptime(b, now)
	return b
}

// CheckDoc is the healthcheck document as sent at now: timestamp and
// uptime_seconds computed now.
func (h *System) CheckDoc(snap *Snapshot, now time.Time) []byte {
	b := append([]byte(nil), snap.CheckBody...)
	h.patchUptime(b, now)
	if off, n, ok := ubus.FieldPayload(b, "timestamp"); ok && n >= len(time.RFC3339)-5 {
		var ts [32]byte
		t := now.UTC().AppendFormat(ts[:0], "2006-01-02T15:04:05Z")
		if len(t) == n-1 { // same width: years 1000-9999
			copy(b[off:], t)
		}
	}
	return b
}

func (h *System) patchUptime(b []byte, now time.Time) {
	if off, n, ok := ubus.FieldPayload(b, "uptime_seconds"); ok && n == 8 {
		binary.BigEndian.PutUint64(b[off:], uint64(max(now.Sub(h.started)/time.Second, 0)))
	}
}

// SoftwareHealth is the software_health section of phonebook status as
// sent at now.
func (h *System) SoftwareHealth(snap *Snapshot, now time.Time) []ubus.Value {
	doc := snap.Health
	doc.UptimeSeconds = int64(max(now.Sub(h.started)/time.Second, 0))
	return ubus.ValuesOf(&doc)
}
