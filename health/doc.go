package health

import (
	"encoding/json"
	"math"
	"os"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/crash"
	"github.com/aredn/phonebookd/internal/jsonread"
	"github.com/aredn/phonebookd/procfs"
	"github.com/aredn/phonebookd/runtimetune"
	"github.com/aredn/phonebookd/supervisor"
)

// The documents are Go types: built once per evaluation and encoded by
// each front as it sends them (blobmsg by the ubus front, through the
// json tags; encoding/json for D-Bus, the reporter and the CGI, read back
// by internal/jsonread), so that a member has one name, one type and one
// place, and this package knows no wire format. docs/schema holds their JSON Schemas.

// Time is an instant in a document: the specification's ISO 8601 (UTC,
// whole seconds), null when not known.
type Time struct{ time.Time }

// MarshalText is the ISO form, for encoders that take text (the ubus
// front's blobmsg string); they write null where IsZero.
func (t Time) MarshalText() ([]byte, error) { return []byte(iso(t.Time)), nil }

// MarshalJSON writes the ISO form, or null.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(iso(t.Time))
}

// UnmarshalJSON reads the ISO form, or null.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := jsonread.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339, s)
	t.Time = v
	return err
}

// SoftwareHealth is the specification's software_health document
// (phonebook.health status). With health monitoring disabled it stops
// after Enabled.
type SoftwareHealth struct {
	UptimeSeconds     int64              `json:"uptime_seconds"`
	RestartCount      int32              `json:"restart_count"`
	RestartCountTotal int64              `json:"restart_count_total"`
	LastCrash         Time               `json:"last_crash"`
	LastCrashDetail   *CrashRecord       `json:"last_crash_detail"`
	CrashCount24h     int32              `json:"crash_count_24h"`
	Enabled           bool               `json:"enabled"`
	Threads           map[string]*Thread `json:"threads,omitempty"`
	Memory            *Memory            `json:"memory,omitempty"`
	FileDescriptors   *FileDescriptors   `json:"file_descriptors,omitempty"`
	ErrorRates        *ErrorRates        `json:"error_rates,omitempty"`
	Process           *Process           `json:"process,omitempty"`
	Storage           *Storage           `json:"storage,omitempty"`
}

// Thread is one worker in the documents.
type Thread struct {
	Status                 string   `json:"status"`
	CPUPct                 *float64 `json:"cpu_pct"` // null: not measurable (see docs/HEALTH.md)
	LastHeartbeat          Time     `json:"last_heartbeat"`
	Started                Time     `json:"started"`
	RestartCount           int32    `json:"restart_count"`
	Goroutines             int32    `json:"goroutines"`
	HeartbeatPeriodSeconds int32    `json:"heartbeat_period_seconds"`
	DeadlineSeconds        int32    `json:"deadline_seconds"`
	Essential              bool     `json:"essential"`
	AbandonedGoroutines    int32    `json:"abandoned_goroutines"`
	LastError              *string  `json:"last_error"`
	// WorkerFigures are the worker's own figures, after the common ones
	// (a worker without any has none of these members).
	WorkerFigures
}

// WorkerFigures are the specification's worker-specific members of a
// thread entry: each group is present only for its worker (nil: the
// members are left out), embedded so that its members sit in the entry.
type WorkerFigures struct {
	*SafetyFigures
	*MonitorFigures
	*FetcherFigures
}

// SafetyFigures are the safety worker's own members.
type SafetyFigures struct {
	// RecoveriesPerformed: automatic restarts of crashed or stuck workers.
	RecoveriesPerformed int64 `json:"recoveries_performed"`
}

// MonitorFigures are the monitor's own members.
type MonitorFigures struct {
	ProbeSuccessRate *float64 `json:"probe_success_rate"` // null: no probe yet
}

// FetcherFigures are the fetcher's own members.
type FetcherFigures struct {
	LastSuccess Time  `json:"last_success"`
	Entries     int32 `json:"entries"`
}

// CrashRecord is one crash in the documents.
type CrashRecord struct {
	Time          Time     `json:"time"`
	Kind          string   `json:"kind"`
	Reason        string   `json:"reason"`
	Worker        *string  `json:"worker"`
	UptimeSeconds *float64 `json:"uptime_seconds"` // null: not known
	Count         int32    `json:"count"`
	Stack         *string  `json:"stack,omitempty"`
}

// Memory is the memory section; null where a figure cannot be read.
type Memory struct {
	RSSMB              *float64 `json:"rss_mb"`
	PeakRSSMB          *float64 `json:"peak_rss_mb"`
	RSSAnonMB          *float64 `json:"rss_anon_mb"`
	RSSFileMB          *float64 `json:"rss_file_mb"`
	HeapMB             *float64 `json:"heap_mb"` // null before the first collection
	HeapObjectsMB      float64  `json:"heap_objects_mb"`
	GCCycles           int64    `json:"gc_cycles"`
	LeakDetected       bool     `json:"leak_detected"`
	HeapTrendKBPerHour float64  `json:"heap_trend_kb_per_hour"`
	HeapTrendFit       float64  `json:"heap_trend_fit"`
	RSSTrendKBPerHour  float64  `json:"rss_trend_kb_per_hour"`
	BaselineHeapMB     *float64 `json:"baseline_heap_mb"` // null while warming up
	GoTotalMB          float64  `json:"go_total_mb"`
	StackKB            float64  `json:"stack_kb"`
	Goroutines         int32    `json:"goroutines"`
	// MemoryLimitMB is the Go memory limit in force (GOMEMLIMIT, UCI or
	// derived from the RAM); null when there is none.
	MemoryLimitMB *int32 `json:"memory_limit_mb"`
	// MemoryLimitSource says where it came from: env, uci, derived or
	// none (runtimetune.Source).
	MemoryLimitSource string `json:"memory_limit_source"`
	// GCPercent is GOGC in force (gc_percent, or the environment's);
	// -1 when collection is off (GOGC=off).
	GCPercent int32 `json:"gc_percent"`
}

// FileDescriptors is the descriptors section.
type FileDescriptors struct {
	Open     *int32 `json:"open"` // null without /proc/self/fd
	Max      int32  `json:"max"`
	Leaked   int32  `json:"leaked"`
	Socket   *int32 `json:"socket,omitempty"`
	File     *int32 `json:"file,omitempty"`
	Pipe     *int32 `json:"pipe,omitempty"`
	Other    *int32 `json:"other,omitempty"`
	Baseline *int32 `json:"baseline"`
}

// ErrorRates are the per-hour counts of the last 60 minutes.
type ErrorRates struct {
	SIPErrorsPerHour     int32 `json:"sip_errors_per_hour"`
	ProbeFailuresPerHour int32 `json:"probe_failures_per_hour"`
	FetchFailuresPerHour int32 `json:"fetch_failures_per_hour"`
}

// Process is the process section.
type Process struct {
	PID    int32    `json:"pid"`
	CPUPct *float64 `json:"cpu_pct"`
	// OSThreads is the process's OS threads (Threads of
	// /proc/self/status); null where it cannot be read. Bounded by
	// os_thread_warn (condition os_threads_high).
	OSThreads *int32 `json:"os_threads"`
}

// Storage is the flash section.
type Storage struct {
	FlashWrites int64  `json:"flash_writes"`
	StateFreeKB *int64 `json:"state_free_kb"`
	RunFreeKB   *int64 `json:"run_free_kb"`
}

// Check is the specification's healthcheck document
// (phonebook.health check, /cgi-bin/healthcheck).
type Check struct {
	Status          string   `json:"status"`
	Timestamp       Time     `json:"timestamp"`
	UptimeSeconds   *int64   `json:"uptime_seconds"` // null: the daemon is not running
	HealthScore     *float64 `json:"health_score"`   // null: monitoring disabled
	Checks          *Checks  `json:"checks"`
	Alerts          []Notice `json:"alerts"`
	Recommendations []string `json:"recommendations"`
}

// Checks are the specification's checks; null where not known.
type Checks struct {
	ThreadsResponsive *bool `json:"threads_responsive"`
	MemoryStable      *bool `json:"memory_stable"`
	NoRecentCrashes   *bool `json:"no_recent_crashes"`
	DiskSpaceOK       *bool `json:"disk_space_ok"`
	NetworkReachable  *bool `json:"network_reachable"`
}

// Notice is one alert in the healthcheck document.
type Notice struct {
	Level   string `json:"level"`
	Message string `json:"message"`
	Since   Time   `json:"since"`
	Code    string `json:"code"`
}

// Threads is the phonebook.threads list document.
type Threads struct {
	Threads map[string]*Thread `json:"threads"`
}

// Crashes is the phonebook.health crashes document.
type Crashes struct {
	Crashes           []CrashRecord `json:"crashes"`
	Total             int32         `json:"total"`
	Offset            int32         `json:"offset"`
	RestartCount      int32         `json:"restart_count"`
	RestartCountTotal int64         `json:"restart_count_total"`
	// UncleanExitsTotal: lifetime ends other than a clean stop; a clean
	// restart raises restart_count_total only.
	UncleanExitsTotal int64 `json:"unclean_exits_total"`
	FlashWrites       int64 `json:"flash_writes"`
}

func ptr[T any](v T) *T { return &v }

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

func crashRecord(r crash.Record, withStack bool) *CrashRecord {
	c := &CrashRecord{Time: Time{r.Time}, Kind: r.Kind, Reason: r.Reason, UptimeSeconds: r.Uptime, Count: int32(max(r.Count, 1))}
	if r.Worker != "" {
		c.Worker = ptr(r.Worker)
	}
	if withStack && r.Stack != "" {
		c.Stack = ptr(r.Stack)
	}
	return c
}

// MaxCrashesPage bounds the records of one crashes reply: each carries
// at most a 2 KB stack, so a page stays well under 64 KB.
const MaxCrashesPage = 20

// CrashesDoc is the crashes document: records newest first, from offset,
// at most limit (0: MaxCrashesPage) of them, with the total.
func CrashesDoc(c crash.Summary, offset, limit int) Crashes {
	if limit <= 0 || limit > MaxCrashesPage {
		limit = MaxCrashesPage
	}
	offset = max(offset, 0)
	doc := Crashes{Crashes: []CrashRecord{}, Total: int32(len(c.Records)), Offset: int32(offset),
		RestartCount: int32(c.RestartCount), RestartCountTotal: c.TotalRestarts, UncleanExitsTotal: c.UncleanExits, FlashWrites: c.FlashWrites}
	for i := len(c.Records) - 1 - offset; i >= 0 && len(doc.Crashes) < limit; i-- { // newest first
		doc.Crashes = append(doc.Crashes, *crashRecord(c.Records[i], true))
	}
	return doc
}

func (h *System) threads(snap *Snapshot) map[string]*Thread {
	out := make(map[string]*Thread, len(snap.Workers))
	for _, w := range snap.Workers {
		t := &Thread{Status: w.Status, CPUPct: w.CPUPct, LastHeartbeat: Time{w.LastHeartbeat}, Started: Time{w.Started},
			RestartCount: int32(w.Restarts), Goroutines: int32(w.Goroutines), HeartbeatPeriodSeconds: int32(w.Period / time.Second),
			DeadlineSeconds: int32(supervisor.DeadlineFactor * w.Period / time.Second), Essential: w.Essential,
			AbandonedGoroutines: int32(w.Abandoned)}
		if w.LastError != "" {
			t.LastError = ptr(w.LastError)
		}
		if h.opt.WorkerExtra != nil {
			t.WorkerFigures = h.opt.WorkerExtra(w.Name, snap.Workers)
		}
		out[w.Name] = t
	}
	return out
}

func (h *System) softwareHealth(snap *Snapshot, cfg config.Health, m procfs.MemSample, fds procfs.FDSample, disks []procfs.DiskSample) SoftwareHealth {
	c := snap.Crashes
	doc := SoftwareHealth{UptimeSeconds: int64(snap.Time.Sub(h.started) / time.Second), RestartCount: int32(c.RestartCount),
		RestartCountTotal: c.TotalRestarts, CrashCount24h: int32(c.CrashCount24h), Enabled: cfg.Enabled}
	// The specification's last_crash is the time; the record is beside it.
	if c.LastCrash != nil {
		doc.LastCrash, doc.LastCrashDetail = Time{c.LastCrash.Time}, crashRecord(*c.LastCrash, false)
	}
	if !cfg.Enabled {
		return doc
	}
	doc.Threads = h.threads(snap)

	h.mu.Lock()
	heapLeak, _ := h.heapLeak.Detected()
	rssLeak, _ := h.rssLeak.Detected()
	heapSlope, heapFit := h.heapLeak.Slope()
	rssSlope, _ := h.rssLeak.Slope()
	base, based := h.heapLeak.Baseline()
	fdBase, fdBased := h.fdLeak.Baseline()
	leaked := h.fdLeaked(fds, cfg)
	h.mu.Unlock()

	mem := &Memory{HeapObjectsMB: mb(m.HeapObjs), GCCycles: int64(m.GCCycles), LeakDetected: heapLeak || rssLeak,
		HeapTrendKBPerHour: heapSlope / 1024, HeapTrendFit: heapFit, RSSTrendKBPerHour: rssSlope / 1024,
		GoTotalMB: mb(m.GoTotal), StackKB: float64(m.Stacks) / 1024, Goroutines: int32(m.Goroutines)}
	if m.RSSKnown { // else no /proc/self/status on this platform
		mem.RSSMB, mem.PeakRSSMB, mem.RSSAnonMB, mem.RSSFileMB = ptr(mb(m.RSS)), ptr(mb(m.PeakRSS)), ptr(mb(m.RSSAnon)), ptr(mb(m.RSSFile))
	}
	if m.GCCycles > 0 { // else no collection yet: the live heap is not known
		mem.HeapMB = ptr(mb(m.HeapLive))
	}
	if based { // else still warming up
		mem.BaselineHeapMB = ptr(base / (1 << 20))
	}
	rt := runtimetune.ReadInForce(cfg, os.Getenv)
	if rt.Limit != math.MaxInt64 { // else no limit: null
		mem.MemoryLimitMB = ptr(int32(min(rt.Limit>>20, math.MaxInt32)))
	}
	mem.MemoryLimitSource, mem.GCPercent = string(rt.Source), int32(max(min(rt.GCPercent, math.MaxInt32), -1))
	doc.Memory = mem

	fd := &FileDescriptors{Max: int32(fds.Max), Leaked: int32(leaked)}
	if fds.Known { // else no /proc/self/fd
		fd.Open, fd.Socket, fd.File, fd.Pipe, fd.Other = ptr(int32(fds.Open)), ptr(int32(fds.Socket)), ptr(int32(fds.File)), ptr(int32(fds.Pipe)), ptr(int32(fds.Other))
	}
	if fdBased {
		fd.Baseline = ptr(int32(fdBase))
	}
	doc.FileDescriptors = fd
	doc.ErrorRates = &ErrorRates{SIPErrorsPerHour: int32(h.opt.Rates.PerHour(CategorySIP)),
		ProbeFailuresPerHour: int32(h.opt.Rates.PerHour(CategoryProbe)), FetchFailuresPerHour: int32(h.opt.Rates.PerHour(CategoryFetch))}
	doc.Process = &Process{PID: int32(os.Getpid()), CPUPct: h.processCPU()}
	if m.ThreadsKnown {
		doc.Process.OSThreads = ptr(int32(m.Threads))
	}
	st := &Storage{FlashWrites: c.FlashWrites}
	for i, d := range disks { // the flash state, then the RAM run filesystem
		if !d.Known {
			continue
		}
		if kb := ptr(int64(d.FreeBytes / 1024)); i == 0 {
			st.StateFreeKB = kb
		} else {
			st.RunFreeKB = kb
		}
	}
	doc.Storage = st
	return doc
}

func (h *System) check(snap *Snapshot, cfg config.Health, reachable *bool) Check {
	doc := Check{Status: snap.Status, Timestamp: Time{snap.Time}, UptimeSeconds: ptr(int64(snap.Time.Sub(h.started) / time.Second)),
		Alerts: []Notice{}, Recommendations: []string{}}
	if !cfg.Enabled {
		return doc
	}
	has := func(conds ...*Descriptor) bool {
		for _, a := range snap.Alerts {
			for _, d := range conds {
				if a.desc == d {
					return true
				}
			}
		}
		return false
	}
	doc.HealthScore = ptr(float64(snap.Score))
	doc.Checks = &Checks{
		// Also false while a worker's state condition settles: the
		// check agrees with the alerts and the status.
		ThreadsResponsive: ptr(threadsResponsive(snap.Workers) && !has(workerFamilies...)),
		MemoryStable:      ptr(!has(MemoryLeakHeap, MemoryLeakRSS)),
		NoRecentCrashes:   ptr(snap.Crashes.CrashCount24h == 0),
		DiskSpaceOK:       ptr(!has(DiskUnknown, DiskLow)),
		NetworkReachable:  reachable, // null: no fetch or probe result yet
	}
	seen := map[string]bool{}
	for _, a := range snap.Alerts {
		doc.Alerts = append(doc.Alerts, Notice{Level: a.Level, Message: a.Message, Since: Time{a.Since}, Code: a.Code})
		if a.Recommendation != "" && !seen[a.Recommendation] {
			seen[a.Recommendation] = true
			doc.Recommendations = append(doc.Recommendations, a.Recommendation)
		}
	}
	return doc
}

// threadsResponsive: no worker is unresponsive, failed or restarting, and
// every essential worker is running (a blocked one is not).
func threadsResponsive(workers []supervisor.WorkerStatus) bool {
	for _, w := range workers {
		switch w.Status {
		case supervisor.StatusUnresponsive, supervisor.StatusFailed, supervisor.StatusRestarting:
			return false
		case supervisor.StatusHealthy:
		default:
			if w.Essential {
				return false
			}
		}
	}
	return true
}
