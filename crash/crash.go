// Package crash keeps phonebookd's crash records: a bounded history on
// flash, written atomically once per event (merged during a crash loop),
// never in steady state; the RAM state that counts restarts within a boot;
// and the evidence a previous run left (the Go runtime's crash output, a
// run marker without a clean shutdown) turned into records at start.
package crash

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/aredn/phonebookd/internal/atomicfile"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/internal/jsonread"
	"github.com/aredn/phonebookd/internal/jsonwrite"
	"github.com/aredn/phonebookd/procfs"
)

// Crash record kinds.
const (
	KindWorkerPanic  = "worker_panic"  // a worker panicked; recovered and restarted
	KindHandlerPanic = "handler_panic" // a message made a SIP handler panic; recovered, the message dropped, serving on
	KindWorkerFailed = "worker_failed" // an essential worker failed; the process exited
	KindAbandoned    = "abandoned"     // too many stuck goroutines; the process exited
	KindFatalError   = "fatal_error"   // the runtime's "fatal error: ..."
	KindSignal       = "signal"        // a fatal signal (nil dereference, SIGSEGV, SIGABRT)
	KindPanic        = "panic"         // an unrecovered panic outside a worker's protection
	KindUncleanExit  = "unclean_exit"  // gone without a word: SIGKILL, OOM killer
)

// Record is one crash event.
type Record struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Reason string    `json:"reason"`
	Worker string    `json:"worker,omitempty"`
	// Uptime of the process before the event, in seconds (null when not
	// known, e.g. a crash output without a run marker).
	Uptime *float64 `json:"uptime_seconds"`
	Stack  string   `json:"stack,omitempty"`
	// Count > 1: this many events of the same kind, reason and worker
	// were merged into this record during a crash loop.
	Count int `json:"count"`
}

// history is the flash file: bounded records and the lifetime restarts.
type history struct {
	Version       int   `json:"version"`
	TotalRestarts int64 `json:"total_restarts"`
	// UncleanExits counts the process's ends that were not a clean stop
	// (a crash, a fatal escalation, SIGKILL): what a crash-loop rule
	// reads. A clean restart (SIGTERM, a reload of the package) counts
	// in TotalRestarts only.
	UncleanExits int64    `json:"unclean_exits"`
	Records      []Record `json:"records"`
}

// runState is kept in RAM (run_dir): it survives a daemon restart, not a
// reboot.
type runState struct {
	BootID         string    `json:"boot_id"`
	Starts         int       `json:"starts"`
	LastFlashWrite time.Time `json:"last_flash_write"`
	Pending        []Record  `json:"pending"`
	PendingStarts  int64     `json:"pending_restarts"`
	PendingUnclean int64     `json:"pending_unclean_exits"`
}

// endsProcess tells the kinds of record that mean the process ended
// uncleanly (a worker panic is recovered; the process goes on).
func endsProcess(kind string) bool {
	switch kind {
	case KindWorkerFailed, KindAbandoned, KindFatalError, KindSignal, KindPanic, KindUncleanExit:
		return true
	}
	return false
}

// marker is the run marker a clean shutdown removes.
type marker struct {
	PID     int               `json:"pid"`
	Started time.Time         `json:"started"`
	Alive   time.Time         `json:"alive"`
	BootID  string            `json:"boot_id"`
	Workers map[string]uint64 `json:"workers"` // worker -> goroutine id
}

// Files, relative to the state (flash) and run (RAM) directories.
const (
	historyFile  = "crashes.json"
	markerFile   = "running"
	crashOutFile = "crash.out"
	// parsingFile is the previous run's crash output, renamed before it
	// is read: if reading it kills this run too (out of memory), the next
	// start finds it here and does not try again.
	parsingFile = "crash.out.parsing"
	stateFile   = "health-state.json"
)

// Bounds on what is read back at start.
const (
	// crashOutHead is how much of a crash output is read: the reason and
	// the crashing goroutine's stack are at its head (a SIGQUIT dump of
	// every goroutine can be tens of MB).
	crashOutHead = 64 << 10
	// maxHistoryBytes: a history larger than this cannot have been
	// written by the daemon (crash_history_max 1000 records with 2 KB
	// stacks); it is set aside unread.
	maxHistoryBytes = 4 << 20
	// maxPending bounds the records merged in RAM between flash writes.
	maxPending = 64
)

// Options configure a crash store.
type Options struct {
	StateDir, RunDir string
	Clock            clock.Clock
	Log              *slog.Logger
	HistoryDays      int
	HistoryMax       int
	Coalesce         time.Duration
	// BootID overrides /proc/sys/kernel/random/boot_id (tests).
	BootID string
	// RAMOnly keeps every record in RAM (crash_reporting 0: nothing
	// goes to flash).
	RAMOnly bool
	// Stderr, when set, is the process's original standard error (syslog
	// under procd), already duplicated away from descriptor 2. Arm then
	// points descriptor 2 at the crash file, because the runtime prints a
	// fatal error's first line ("fatal error: concurrent map writes")
	// before its crash-output copy starts; the copy goes to Stderr.
	Stderr *os.File
}

// Store keeps crash records: a bounded history on flash written
// atomically, one write per event (merged during a crash loop), never in
// steady state; and the RAM state that counts restarts within this boot.
type Store struct {
	opt         Options
	mu          sync.Mutex
	hist        history
	run         runState
	mark        marker
	flashWrites atomic.Int64
	corrupt     string // where a corrupt history was kept aside
	setAside    int    // records with impossible times or counts, dropped at load
	writeErr    string // the last failed flash write ("" after a success)
	reporting   bool
	crashOut    *os.File
	started     time.Time
}

// Open reads the history and the RAM state, and turns what the
// previous run left (crash output, or a run marker without a clean
// shutdown) into records. Call Arm to start catching crashes of this run.
func Open(opt Options) (*Store, error) {
	if opt.Clock == nil {
		opt.Clock = clock.Real{}
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.BootID == "" {
		opt.BootID = procfs.BootID()
	}
	if err := os.MkdirAll(opt.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("crash store: %w", err)
	}
	s := &Store{opt: opt, started: opt.Clock.Now(), reporting: !opt.RAMOnly}
	s.loadHistory()
	s.loadRunState()

	now := s.started
	if s.run.BootID != opt.BootID {
		s.run = runState{BootID: opt.BootID, LastFlashWrite: s.run.LastFlashWrite, Pending: s.run.Pending}
	}
	s.run.Starts++
	if s.run.Starts > 1 {
		s.run.PendingStarts++ // a restart within this boot
	}
	if rec, ok := s.previousRun(now); ok {
		s.add(rec, now)
	} else {
		s.saveRunState()
	}
	return s, nil
}

func (s *Store) historyPath() string { return filepath.Join(s.opt.StateDir, historyFile) }

func (s *Store) loadHistory() {
	var b []byte
	st, err := os.Stat(s.historyPath())
	if errors.Is(err, fs.ErrNotExist) {
		s.hist = history{Version: 1}
		return
	}
	if err == nil && st.Size() > maxHistoryBytes {
		err = fmt.Errorf("%d bytes, more than the %d a history can reach", st.Size(), maxHistoryBytes)
	}
	if err == nil {
		b, err = os.ReadFile(s.historyPath())
	}
	if err == nil {
		err = jsonread.Unmarshal(b, &s.hist)
		if err == nil && s.hist.Version != 1 {
			err = fmt.Errorf("unknown version %d", s.hist.Version)
		}
	}
	if err != nil {
		aside := fmt.Sprintf("%s.corrupt-%d", s.historyPath(), s.opt.Clock.Now().Unix())
		if rerr := os.Rename(s.historyPath(), aside); rerr != nil {
			aside = fmt.Sprintf("(could not move it aside: %v)", rerr)
		}
		s.corrupt = aside
		s.opt.Log.Error("crash history unreadable; kept aside", "path", s.historyPath(), "aside", aside, "err", err)
		s.hist = history{Version: 1}
		return
	}
	// Records with impossible times (before 2000, or more than a day
	// ahead of the clock) or counts are set aside and reported, so that
	// a record dated 9999 does not count in "last 24 h" forever; the
	// history is cut to its limits.
	now := s.opt.Clock.Now()
	kept := s.hist.Records[:0]
	for _, r := range s.hist.Records {
		if r.Time.Year() < 2000 || r.Time.After(now.Add(24*time.Hour)) || r.Count < 0 || r.Count > 1e6 {
			s.setAside++
			continue
		}
		r.Reason, r.Stack = trimReason(r.Reason), TrimStack(r.Stack)
		kept = append(kept, r)
	}
	s.hist.Records = s.prune(kept, now)
	if s.hist.UncleanExits < 0 {
		s.hist.UncleanExits = 0
	}
	if s.hist.TotalRestarts < 0 {
		s.hist.TotalRestarts = 0
		s.setAside++
	}
	if s.setAside > 0 {
		s.opt.Log.Warn("crash history: records with impossible times or counts set aside", "count", s.setAside)
	}
}

func (s *Store) loadRunState() {
	b, err := os.ReadFile(filepath.Join(s.opt.RunDir, stateFile))
	if err != nil {
		return
	}
	if err := jsonread.Unmarshal(b, &s.run); err != nil {
		s.opt.Log.Warn("run state unreadable; starting afresh", "err", err)
		s.run = runState{}
	}
}

func (s *Store) saveRunState() {
	b, _ := json.Marshal(s.run)
	if err := atomicfile.Write(filepath.Join(s.opt.RunDir, stateFile), b, 0o644); err != nil {
		s.opt.Log.Warn("save run state", "err", err)
	}
}

// previousRun turns the leftovers of a run that did not shut down cleanly
// into a record.
func (s *Store) previousRun(now time.Time) (Record, bool) {
	mpath := filepath.Join(s.opt.RunDir, markerFile)
	mb, merr := os.ReadFile(mpath)
	if len(mb) > 64<<10 {
		mb = nil // not a marker this daemon wrote
	}
	parsing := filepath.Join(s.opt.RunDir, parsingFile)
	if _, err := os.Stat(parsing); err == nil {
		// A previous start died reading it: never again.
		s.opt.Log.Error("crash output left by a start that died reading it; discarded", "path", parsing)
		os.Remove(parsing)
	}
	outTime := time.Time{}
	if st, err := os.Stat(filepath.Join(s.opt.RunDir, crashOutFile)); err == nil && st.Size() > 0 {
		outTime = st.ModTime()
	}
	var out []byte
	if os.Rename(filepath.Join(s.opt.RunDir, crashOutFile), parsing) == nil {
		out = readHead(parsing, crashOutHead)
		defer os.Remove(parsing)
	}
	var prev marker
	hasMarker := merr == nil && jsonread.Unmarshal(mb, &prev) == nil
	if merr == nil && !hasMarker {
		hasMarker = true // unreadable but present: still an unclean end
	}
	if !hasMarker && len(strings.TrimSpace(string(out))) == 0 {
		return Record{}, false
	}
	rec := Record{Time: now}
	if !outTime.IsZero() && len(out) > 0 {
		rec.Time = outTime
	} else if !prev.Alive.IsZero() {
		rec.Time = prev.Alive
	}
	if !prev.Started.IsZero() {
		up := rec.Time.Sub(prev.Started).Seconds()
		rec.Uptime = &up
	}
	if text := strings.TrimSpace(string(out)); looksLikeCrash(text) {
		rec.Kind, rec.Reason, rec.Worker = ParseOutput(text, prev.Workers)
		// Copies, so that the output read is not kept alive by them.
		rec.Reason, rec.Worker = strings.Clone(trimReason(rec.Reason)), strings.Clone(rec.Worker)
		rec.Stack = strings.Clone(TrimStack(text))
		return rec, true
	}
	rec.Kind = KindUncleanExit
	rec.Reason = "process ended without a clean shutdown and without crash output (SIGKILL, OOM killer or watchdog)"
	if prev.BootID != "" && prev.BootID != s.opt.BootID {
		return Record{}, false // a reboot: /tmp was wiped, cannot be a marker of this boot
	}
	return rec, true
}

// Arm starts catching this run's crashes: the run marker, and the Go
// runtime's crash output (panics, fatal errors, fatal signals) copied to a
// file in RAM.
func (s *Store) Arm(pid int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(s.opt.RunDir, crashOutFile), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("crash output: %w", err)
	}
	copyTo := f
	if s.opt.Stderr != nil {
		if err := unix.Dup3(int(f.Fd()), 2, 0); err != nil {
			f.Close()
			return fmt.Errorf("crash output on stderr: %w", err)
		}
		copyTo = s.opt.Stderr
	}
	if err := debug.SetCrashOutput(copyTo, debug.CrashOptions{}); err != nil {
		f.Close()
		return fmt.Errorf("crash output: %w", err)
	}
	s.crashOut = f
	now := s.opt.Clock.Now()
	s.mark = marker{PID: pid, Started: s.started, Alive: now, BootID: s.opt.BootID, Workers: map[string]uint64{}}
	return s.writeMarker()
}

func (s *Store) writeMarker() error {
	return atomicfile.Write(filepath.Join(s.opt.RunDir, markerFile), s.mark.appendJSON(nil), 0o644)
}

// appendJSON appends the marker as encoding/json writes it (the keys of
// workers sorted), without encoding/json: it is written at each
// evaluation, and reflection's code would come back into memory each
// time after the start-up page-out (issue 19).
func (m *marker) appendJSON(b []byte) []byte {
	b = strconv.AppendInt(append(b, `{"pid":`...), int64(m.PID), 10)
	b = appendTime(append(b, `,"started":`...), m.Started)
	b = appendTime(append(b, `,"alive":`...), m.Alive)
	b = jsonwrite.AppendString(append(b, `,"boot_id":`...), m.BootID)
	b = append(b, `,"workers":`...)
	if m.Workers == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '{')
		for i, name := range slices.Sorted(maps.Keys(m.Workers)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonwrite.AppendString(b, name)
			b = strconv.AppendUint(append(b, ':'), m.Workers[name], 10)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendTime appends t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds, quoted).
func appendTime(b []byte, t time.Time) []byte {
	return append(t.AppendFormat(append(b, '"'), time.RFC3339Nano), '"')
}

// WorkerGoroutine remembers which goroutine runs a worker (in RAM), so
// that a crash killing the process can be attributed.
func (s *Store) WorkerGoroutine(worker string, goid uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mark.Workers == nil {
		return
	}
	s.mark.Workers[worker] = goid
	s.writeMarker()
}

// Alive refreshes the marker's time (RAM), the best guess of when a run
// that is later SIGKILLed ended; and flushes merged records whose
// coalescing window has passed.
func (s *Store) Alive(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mark.Workers != nil {
		s.mark.Alive = now
		s.writeMarker()
	}
	if len(s.run.Pending) > 0 && now.Sub(s.run.LastFlashWrite) >= s.opt.Coalesce {
		s.flush(now)
	}
}

// Add records a crash event of this run (a worker panic, or the reason the
// process is about to exit).
func (s *Store) Add(rec Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec.Uptime == nil && !rec.Time.Before(s.started) {
		// Only an event of this run has an uptime; else it is unknown.
		up := rec.Time.Sub(s.started).Seconds()
		rec.Uptime = &up
	}
	s.add(rec, rec.Time)
}

// add writes the record to flash at once, or, inside the coalescing
// window of the last write, keeps it in RAM merged with its like.
func (s *Store) add(rec Record, now time.Time) {
	if rec.Count == 0 {
		rec.Count = 1
	}
	if endsProcess(rec.Kind) {
		s.run.PendingUnclean += int64(rec.Count)
	}
	merged := false
	for i := range s.run.Pending {
		p := &s.run.Pending[i]
		if p.Kind == rec.Kind && p.Reason == rec.Reason && p.Worker == rec.Worker {
			p.Count += rec.Count
			p.Time = rec.Time
			merged = true
			break
		}
	}
	if !merged {
		if len(s.run.Pending) >= maxPending { // the oldest merged record goes
			s.run.Pending = append(s.run.Pending[:0], s.run.Pending[1:]...)
		}
		s.run.Pending = append(s.run.Pending, rec)
	}
	if now.Sub(s.run.LastFlashWrite) >= s.opt.Coalesce {
		s.flush(now)
		return
	}
	s.saveRunState()
}

// flush writes pending records (and restarts counted since) to flash in
// one atomic write.
func (s *Store) flush(now time.Time) {
	if !s.reporting { // crash_reporting 0: records stay in RAM
		s.saveRunState()
		return
	}
	h := s.hist
	h.Records = append(append([]Record(nil), h.Records...), s.run.Pending...)
	h.TotalRestarts += s.run.PendingStarts
	h.UncleanExits += s.run.PendingUnclean
	h.Records = s.prune(h.Records, now)
	if err := s.writeHistory(h); err != nil {
		s.opt.Log.Error("crash history not written; records kept in RAM", "err", err)
		s.saveRunState()
		return
	}
	s.hist = h
	s.run.Pending, s.run.PendingStarts, s.run.PendingUnclean = nil, 0, 0
	s.run.LastFlashWrite = now
	s.saveRunState()
}

func (s *Store) writeHistory(h history) error {
	if err := os.MkdirAll(s.opt.StateDir, 0o755); err != nil {
		s.writeErr = err.Error()
		return fmt.Errorf("crash history: %w", err)
	}
	b, err := json.MarshalIndent(h, "", "\t")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.historyPath(), append(b, '\n'), 0o644); err != nil {
		s.writeErr = err.Error()
		return err
	}
	s.writeErr = ""
	s.flashWrites.Add(1) // only writes that happened count
	return nil
}

// SetReporting turns flash records on or off (crash_reporting).
func (s *Store) SetReporting(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reporting = on
}

// readHead reads at most n bytes from the start of a file.
func readHead(path string, n int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return b
}

// trimReason keeps a reason to one short line.
func trimReason(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 256 {
		s = s[:256] + "..."
	}
	return s
}

func (s *Store) prune(recs []Record, now time.Time) []Record {
	cutoff := now.Add(-time.Duration(s.opt.HistoryDays) * 24 * time.Hour)
	kept := recs[:0:0]
	for _, r := range recs {
		if r.Time.After(cutoff) {
			kept = append(kept, r)
		}
	}
	if n := len(kept) - s.opt.HistoryMax; n > 0 && s.opt.HistoryMax > 0 {
		kept = kept[n:]
	}
	return kept
}

// Shutdown ends this run cleanly: the crash output is released and the
// run marker removed. Records merged in RAM stay there until their window
// ends (a clean stop does not cost a flash write).
func (s *Store) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	debug.SetCrashOutput(nil, debug.CrashOptions{})
	if s.crashOut != nil {
		s.crashOut.Close()
		os.Remove(s.crashOut.Name())
	}
	os.Remove(filepath.Join(s.opt.RunDir, markerFile))
	s.mark.Workers = nil
}

// Clear empties the history (one flash write), as clear_crashes.
func (s *Store) Clear(now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The lifetime counters survive a clear: only the records go.
	h := history{Version: 1, TotalRestarts: s.hist.TotalRestarts + s.run.PendingStarts,
		UncleanExits: s.hist.UncleanExits + s.run.PendingUnclean}
	if !s.reporting {
		s.hist = h
		s.run.Pending, s.run.PendingStarts, s.run.PendingUnclean = nil, 0, 0
		s.saveRunState()
		return nil
	}
	if err := s.writeHistory(h); err != nil {
		return err
	}
	s.hist = h
	s.run.Pending, s.run.PendingStarts, s.run.PendingUnclean = nil, 0, 0
	s.run.LastFlashWrite = now
	s.saveRunState()
	s.corrupt = ""
	return nil
}

// Summary is what the documents report of crashes.
type Summary struct {
	RestartCount  int   // starts in this boot, minus the first
	TotalRestarts int64 // lifetime, flash plus not yet written
	// UncleanExits: lifetime ends of the process other than a clean
	// stop, flash plus not yet written; never raised by a clean restart.
	UncleanExits   int64
	CrashCount24h  int     // events (merged counts included) in 24 h
	LastCrash      *Record // nil when none
	Records        []Record
	FlashWrites    int64
	CorruptHistory string // where an unreadable history was kept aside
	SetAside       int    // records dropped at load for impossible times or counts
	WriteError     string // the last failed flash write, "" after a success
}

// Summary reports restart and crash figures from the history and RAM.
func (s *Store) Summary(now time.Time) Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := append(append([]Record(nil), s.hist.Records...), s.run.Pending...)
	sum := Summary{
		RestartCount: max(s.run.Starts-1, 0), TotalRestarts: s.hist.TotalRestarts + s.run.PendingStarts,
		UncleanExits: s.hist.UncleanExits + s.run.PendingUnclean,
		Records:      all, FlashWrites: s.flashWrites.Load(), CorruptHistory: s.corrupt,
		SetAside: s.setAside, WriteError: s.writeErr,
	}
	for i := range all {
		r := all[i]
		if age := now.Sub(r.Time); age < 24*time.Hour && age > -24*time.Hour {
			sum.CrashCount24h += max(r.Count, 1)
		}
		if sum.LastCrash == nil || !r.Time.Before(sum.LastCrash.Time) {
			sum.LastCrash = &all[i]
		}
	}
	return sum
}

// FlashWrites counts history writes by this process.
func (s *Store) FlashWrites() int64 { return s.flashWrites.Load() }

// ParseOutput classifies the Go runtime's crash output: kind, the
// runtime's first line as reason, and the worker whose goroutine (or whose
// goroutine's creator) crashed, where known.
func ParseOutput(text string, workers map[string]uint64) (kind, reason, worker string) {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	reason = strings.TrimSpace(lines[0])
	switch {
	case strings.HasPrefix(reason, "fatal error:"):
		kind = KindFatalError
	case strings.HasPrefix(reason, "panic:"):
		kind = KindPanic
		if len(lines) > 1 && strings.HasPrefix(strings.TrimSpace(lines[1]), "[signal ") {
			kind = KindSignal
		}
	case strings.HasPrefix(reason, "SIG"), strings.HasPrefix(reason, "unexpected fault address"):
		kind = KindSignal
	default:
		kind = KindFatalError
	}
	// The first goroutine printed is the one that crashed; it or the
	// goroutine that created it may be a worker's.
	ids := map[uint64]string{}
	for w, id := range workers {
		ids[id] = w
	}
	var block []string
	for i, l := range lines {
		if strings.HasPrefix(l, "goroutine ") {
			block = lines[i:]
			break
		}
	}
	if len(block) == 0 {
		return kind, reason, ""
	}
	if f := strings.Fields(block[0]); len(f) >= 2 {
		if id, err := strconv.ParseUint(f[1], 10, 64); err == nil && ids[id] != "" {
			return kind, reason, ids[id]
		}
	}
	for _, l := range block[1:] {
		if strings.TrimSpace(l) == "" {
			break
		}
		if i := strings.LastIndex(l, " in goroutine "); strings.HasPrefix(l, "created by ") && i >= 0 {
			id, _ := strconv.ParseUint(strings.TrimSpace(l[i+len(" in goroutine "):]), 10, 64)
			return kind, reason, ids[id]
		}
	}
	return kind, reason, ""
}

// looksLikeCrash tells the Go runtime's crash text from anything else that
// reached descriptor 2 (which then is no evidence of a crash).
func looksLikeCrash(text string) bool {
	first, _, _ := strings.Cut(text, "\n")
	for _, p := range []string{"panic:", "fatal error:", "SIG", "unexpected fault address"} {
		if strings.HasPrefix(first, p) {
			return true
		}
	}
	return strings.Contains(text, "\ngoroutine ") && strings.Contains(text, " [running]:")
}

// TrimStack keeps a crash text short enough for flash and a ubus reply.
func TrimStack(s string) string {
	const max = 2048
	if len(s) > max {
		return s[:max] + "\n..."
	}
	return s
}
