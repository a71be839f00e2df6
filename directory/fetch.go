package directory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/aredn/phonebookd/httpc"
	"github.com/aredn/phonebookd/internal/atomicfile"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/supervisor"
)

// CSVFile is the last good phonebook, kept on flash in the state directory.
const CSVFile = "phonebook.csv"

// RetryMin is the wait after a failed fetch (every server refused, timed
// out or answered badly); it doubles with each failure in a row up to
// fetcher.interval. A node that booted before the mesh was up gets its
// phonebook within a minute of the network, not an hour later.
const RetryMin = 30 * time.Second

// Alerts is health.Alerts: the one interface every owner of conditions
// is given.
type Alerts = health.Alerts

type noAlerts struct{}

func (noAlerts) SetUnhealthy(*health.Descriptor, string, health.Args) {}
func (noAlerts) SetHealthy(*health.Descriptor, string)                {}

// Fetcher keeps the directory: it loads the last good phonebook at start,
// fetches from the configured servers in order, and publishes the XML.
type Fetcher struct {
	log      *slog.Logger
	rates    *health.Rates
	reach    func(ok bool)
	alerts   Alerts
	wake     chan struct{}
	mu       sync.Mutex
	cfg      config.Fetcher
	main     config.Main
	entries  []Entry
	stats    Stats
	source   string
	lastTry  time.Time
	lastOK   time.Time
	lastErr  string
	writes   int
	cond     map[string]validators
	round    int   // fetch rounds started, to tell a confirming fetch from the first
	held     *held // a phonebook that shrank by more than half, awaiting confirmation
	failures int   // failed rounds in a row, for the retry backoff
}

type validators struct{ etag, modified string }

// held is a fetched phonebook kept back because it has less than half
// the entries of the directory: a cut-off body or a broken server must
// not empty the phones' directory. A fetch in a later round that is
// still that small confirms it.
type held struct {
	server  string // redacted URL
	entries int
	against int
	round   int
}

// errHeld: the server answered with a phonebook that is held back.
var errHeld = errors.New("phonebook held back")

// publishError is a failure to write the directory (not the server's).
type publishError struct{ err error }

func (e *publishError) Error() string { return "publish: " + e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }

// NewFetcher prepares a fetcher; reach reports each fetch's outcome to
// the health system's reachability check.
func NewFetcher(log *slog.Logger, rates *health.Rates, reach func(ok bool)) *Fetcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reach == nil {
		reach = func(bool) {}
	}
	return &Fetcher{log: log, rates: rates, reach: reach, alerts: noAlerts{}, wake: make(chan struct{}, 1), cond: map[string]validators{}}
}

// SetAlerts sets where the fetcher raises its conditions (a phonebook
// held back); call it before Run.
func (f *Fetcher) SetAlerts(a Alerts) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a == nil {
		a = noAlerts{}
	}
	f.alerts = a
}

// Configure applies settings.
func (f *Fetcher) Configure(c config.Fetcher, m config.Main) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg, f.main = c, m
}

// FetchNow wakes the worker for an immediate fetch ("phonebook reload",
// SIGUSR1).
func (f *Fetcher) FetchNow() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *Fetcher) xmlPath() string {
	if filepath.IsAbs(f.cfg.XMLPath) {
		return f.cfg.XMLPath
	}
	return filepath.Join(f.main.WWWDir, f.cfg.XMLPath)
}

// Run is the "fetcher" worker: a fetch every fetcher.interval, and after
// a failed one a retry with backoff (RetryDelay).
func (f *Fetcher) Run(ctx context.Context, w *supervisor.Worker) error {
	f.LoadLastGood()
	for {
		err := f.Fetch(ctx, w)
		f.mu.Lock()
		iv := time.Duration(f.cfg.Interval) * time.Second
		if err != nil && ctx.Err() == nil {
			f.failures++
			iv = RetryDelay(f.failures, iv)
		} else {
			f.failures = 0
		}
		f.mu.Unlock()
		if err := w.WaitOrWake(ctx, iv, f.wake); err != nil {
			return nil
		}
	}
}

// RetryDelay is the wait after the n-th failed fetch in a row: RetryMin,
// doubling, never more than the interval.
func RetryDelay(n int, interval time.Duration) time.Duration {
	d := RetryMin << min(max(n-1, 0), 20)
	if d > interval || d <= 0 {
		d = interval
	}
	return d
}

// LoadLastGood publishes the phonebook kept on flash, so phones get a
// directory after a reboot without network.
func (f *Fetcher) LoadLastGood() {
	f.mu.Lock()
	path := filepath.Join(f.main.StateDir, CSVFile)
	loaded := f.entries != nil
	f.mu.Unlock()
	if loaded {
		return // a restarted worker keeps what it has
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		f.log.Warn("last good phonebook unreadable", "path", path, "err", err)
		return
	}
	es, st, err := Parse(data)
	if err != nil || len(es) == 0 {
		f.log.Warn("last good phonebook unusable", "path", path, "err", err)
		return
	}
	f.mu.Lock()
	f.entries, f.stats, f.source = es, st, "flash:"+path
	f.mu.Unlock()
	if _, err := f.publish(es, nil); err != nil {
		f.log.Error("publish directory", "err", err)
	}
}

// Fetch tries each server in order until one delivers a usable phonebook.
// It fails when none did (nor delivered one that is held back), or when
// the directory could not be written.
func (f *Fetcher) Fetch(ctx context.Context, w *supervisor.Worker) error {
	f.mu.Lock()
	servers := append([]string(nil), f.cfg.Servers...)
	timeout := time.Duration(f.cfg.Timeout) * time.Second
	maxBytes := int64(f.cfg.MaxKB) * 1024
	f.lastTry = time.Now()
	f.round++
	f.mu.Unlock()
	if len(servers) == 0 {
		return nil
	}
	var errs []string
	answered, heldBack := false, false
	for _, srv := range servers {
		if w != nil {
			w.Beat()
		}
		err := f.fetchOne(ctx, srv, timeout, maxBytes)
		if err == nil {
			f.reach(true)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errHeld) {
			answered, heldBack = true, true
			continue // a later server may have the whole phonebook
		}
		f.rates.Add(health.CategoryFetch, 1)
		errs = append(errs, fmt.Sprintf("%s: %v", httpc.Redact(srv), err))
		f.log.Warn("phonebook fetch failed", "server", httpc.Redact(srv), "err", err)
		var pe *publishError
		if errors.As(err, &pe) {
			answered = true
			break // the next server's phonebook would not be written either
		}
	}
	f.reach(answered)
	f.mu.Lock()
	f.lastErr = ""
	if len(errs) > 0 {
		f.lastErr = fmt.Sprint(errs)
	}
	f.mu.Unlock()
	if heldBack || len(errs) == 0 {
		// A server answered: no quick retry, so that the next regular
		// fetch (or a reload) is the one that confirms.
		return nil
	}
	return errors.New(errs[len(errs)-1])
}

// endsCleanly reports whether a body whose length was not announced ends
// with a complete row: a server that closes the connection at the end
// of its data sends one, a transfer cut off mid-row does not.
func endsCleanly(body []byte) bool {
	return len(body) > 0 && body[len(body)-1] == '\n'
}

func (f *Fetcher) fetchOne(ctx context.Context, url string, timeout time.Duration, maxBytes int64) error {
	f.mu.Lock()
	v := f.cond[url]
	f.mu.Unlock()
	req := httpc.Request{Method: "GET", URL: url, Header: []string{"Accept: text/csv, text/plain, */*"}}
	if v.etag != "" {
		req.Header = append(req.Header, "If-None-Match: "+v.etag)
	}
	if v.modified != "" {
		req.Header = append(req.Header, "If-Modified-Since: "+v.modified)
	}
	resp, err := httpc.Do(ctx, req, timeout, maxBytes)
	if errors.Is(err, httpc.ErrTooLarge) {
		return fmt.Errorf("larger than %d KiB (max_kb)", maxBytes/1024)
	}
	if err != nil {
		return err
	}
	if resp.Status == 304 {
		// Validators are stored only for a published phonebook: the
		// directory is current. Write it again should it be missing.
		f.mu.Lock()
		es := f.entries
		f.mu.Unlock()
		if es != nil {
			if _, err := f.publish(es, nil); err != nil {
				return &publishError{err}
			}
		}
		f.mu.Lock()
		f.lastOK, f.lastErr = time.Now(), ""
		f.mu.Unlock()
		f.release()
		return nil
	}
	if resp.Status != 200 {
		return fmt.Errorf("HTTP status %d", resp.Status)
	}
	if !resp.Delimited && !endsCleanly(resp.Body) {
		return fmt.Errorf("body without a length ended mid-row after %d bytes (connection closed early?)", len(resp.Body))
	}
	es, st, err := Parse(resp.Body)
	if err != nil {
		return err
	}
	if len(es) == 0 {
		return fmt.Errorf("no usable entries (%d rows, %d bad)", st.Rows, st.Bad)
	}
	if st.Bad > 0 || st.Duplicates > 0 {
		f.log.Info("phonebook rows skipped", "server", httpc.Redact(url), "bad", st.Bad, "duplicates", st.Duplicates, "first", st.Reasons)
	}
	if f.holdBack(url, len(es)) {
		return errHeld
	}
	xmlDone, err := f.publish(es, resp.Body)
	f.mu.Lock()
	if xmlDone {
		// The phones see it: memory follows what was published.
		f.entries, f.stats, f.source = es, st, httpc.Redact(url)
	}
	if err == nil {
		// Only now: a validator stored before a failed write would
		// answer the next fetch with 304 and leave the directory stale.
		f.cond = map[string]validators{url: {etag: resp.ETag, modified: resp.Modified}}
		f.lastOK, f.lastErr = time.Now(), ""
	}
	f.mu.Unlock()
	if err != nil {
		return &publishError{err}
	}
	f.release()
	return nil
}

// holdBack decides whether a fetched phonebook of n entries is held
// back: it has less than half the entries of the directory, and no
// earlier round already saw one that small.
func (f *Fetcher) holdBack(url string, n int) bool {
	f.mu.Lock()
	against := len(f.entries)
	if against == 0 || n*2 >= against {
		f.mu.Unlock()
		return false
	}
	if f.held != nil && f.held.round < f.round {
		f.mu.Unlock()
		f.log.Warn("a smaller phonebook confirmed by a second fetch; publishing it", "server", httpc.Redact(url), "entries", n, "was", against)
		return false
	}
	first := f.held == nil
	if first {
		f.held = &held{server: httpc.Redact(url), entries: n, against: against, round: f.round}
	}
	h, alerts := *f.held, f.alerts
	f.mu.Unlock()
	if first {
		f.log.Warn("phonebook held back: less than half the entries of the directory; the next fetch confirms it", "server", h.server, "entries", n, "directory", against)
		alerts.SetUnhealthy(health.DirectoryShrunk, "", health.Args{health.ArgPath: h.server, health.ArgCount: fmt.Sprint(h.entries), health.ArgTotal: fmt.Sprint(h.against)})
	}
	return true
}

// release ends a hold: a phonebook was published or found current.
func (f *Fetcher) release() {
	f.mu.Lock()
	had, alerts := f.held != nil, f.alerts
	f.held = nil
	f.mu.Unlock()
	if had {
		alerts.SetHealthy(health.DirectoryShrunk, "")
	}
}

// publish writes the XML and (when given) the CSV, each only if changed;
// xmlDone tells whether the XML now holds es.
func (f *Fetcher) publish(es []Entry, csv []byte) (xmlDone bool, err error) {
	f.mu.Lock()
	xmlPath, csvPath := f.xmlPath(), filepath.Join(f.main.StateDir, CSVFile)
	f.mu.Unlock()
	if err := f.writeIfChanged(xmlPath, YealinkXML(es)); err != nil {
		return false, err
	}
	if csv != nil {
		return true, f.writeIfChanged(csvPath, csv)
	}
	return true, nil
}

func (f *Fetcher) writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("publish %s: %w", path, err)
	}
	if err := atomicfile.Write(path, data, 0o644); err != nil {
		return err
	}
	f.mu.Lock()
	f.writes++
	f.mu.Unlock()
	return nil
}

// Writes counts files this fetcher wrote (each a changed directory).
func (f *Fetcher) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// Status is the directory section of "phonebook status": read as fields
// by the metrics, the page and the fetcher's thread entry, encoded by each
// front through its json tags.
type Status struct {
	Entries      int32       `json:"entries"`
	BadRows      int32       `json:"bad_rows"`
	Duplicates   int32       `json:"duplicates"`
	XMLPath      string      `json:"xml_path"`
	LastFetch    health.Time `json:"last_fetch"`   // null: no fetch yet
	LastSuccess  health.Time `json:"last_success"` // null: no success yet
	Servers      int32       `json:"servers"`
	FilesWritten int32       `json:"files_written"`
	Source       *string     `json:"source"`     // null: nothing fetched
	LastError    *string     `json:"last_error"` // null: the last fetch worked
	// HeldEntries: a phonebook held back, its entries, until a second
	// fetch confirms it (null: none held).
	HeldEntries *int32 `json:"held_entries"`
}

// Status is the directory section of "phonebook status".
func (f *Fetcher) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := Status{Entries: int32(len(f.entries)), BadRows: int32(f.stats.Bad), Duplicates: int32(f.stats.Duplicates),
		XMLPath: f.xmlPath(), LastFetch: health.Time{Time: f.lastTry}, LastSuccess: health.Time{Time: f.lastOK},
		Servers: int32(len(f.cfg.Servers)), FilesWritten: int32(f.writes)}
	if f.source != "" {
		src := f.source // a copy: the status is read after f.mu is released
		st.Source = &src
	}
	if f.lastErr != "" {
		e := f.lastErr
		st.LastError = &e
	}
	if f.held != nil {
		n := int32(f.held.entries)
		st.HeldEntries = &n
	}
	return st
}

// String renders the status as one line of JSON (logs, tests).
func (st Status) String() string {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Sprintf(`{"error":%q}`, err.Error())
	}
	return string(b)
}
