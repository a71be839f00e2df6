package directory

import (
	"bytes"
	"context"
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
	"github.com/aredn/phonebookd/ubus"
)

// CSVFile is the last good phonebook, kept on flash in the state directory.
const CSVFile = "phonebook.csv"

// Fetcher keeps the directory: it loads the last good phonebook at start,
// fetches from the configured servers in order, and publishes the XML.
type Fetcher struct {
	log     *slog.Logger
	rates   *health.Rates
	reach   func(ok bool)
	wake    chan struct{}
	mu      sync.Mutex
	cfg     config.Fetcher
	main    config.Main
	entries []Entry
	stats   Stats
	source  string
	lastTry time.Time
	lastOK  time.Time
	lastErr string
	writes  int
	cond    map[string]validators
}

type validators struct{ etag, modified string }

// NewFetcher prepares a fetcher; reach reports each fetch's outcome to
// the health system's reachability check.
func NewFetcher(log *slog.Logger, rates *health.Rates, reach func(ok bool)) *Fetcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reach == nil {
		reach = func(bool) {}
	}
	return &Fetcher{log: log, rates: rates, reach: reach, wake: make(chan struct{}, 1), cond: map[string]validators{}}
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

// Run is the "fetcher" worker.
func (f *Fetcher) Run(ctx context.Context, w *supervisor.Worker) error {
	f.LoadLastGood()
	for {
		f.Fetch(ctx, w)
		f.mu.Lock()
		iv := time.Duration(f.cfg.Interval) * time.Second
		f.mu.Unlock()
		if err := w.WaitOrWake(ctx, iv, f.wake); err != nil {
			return nil
		}
	}
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
	if err := f.publish(es, nil); err != nil {
		f.log.Error("publish directory", "err", err)
	}
}

// Fetch tries each server in order until one delivers a usable phonebook.
func (f *Fetcher) Fetch(ctx context.Context, w *supervisor.Worker) {
	f.mu.Lock()
	servers := append([]string(nil), f.cfg.Servers...)
	timeout := time.Duration(f.cfg.Timeout) * time.Second
	maxBytes := int64(f.cfg.MaxKB) * 1024
	f.lastTry = time.Now()
	f.mu.Unlock()
	if len(servers) == 0 {
		return
	}
	var errs []string
	for _, srv := range servers {
		if w != nil {
			w.Beat()
		}
		err := f.fetchOne(ctx, srv, timeout, maxBytes)
		if err == nil {
			f.reach(true)
			return
		}
		if ctx.Err() != nil {
			return
		}
		f.rates.Add(health.CategoryFetch, 1)
		errs = append(errs, fmt.Sprintf("%s: %v", srv, err))
		f.log.Warn("phonebook fetch failed", "server", srv, "err", err)
	}
	f.reach(false)
	f.mu.Lock()
	f.lastErr = fmt.Sprint(errs)
	f.mu.Unlock()
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
		f.mu.Lock()
		f.lastOK, f.lastErr = time.Now(), ""
		f.mu.Unlock()
		return nil
	}
	if resp.Status != 200 {
		return fmt.Errorf("HTTP status %d", resp.Status)
	}
	es, st, err := Parse(resp.Body)
	if err != nil {
		return err
	}
	if len(es) == 0 {
		return fmt.Errorf("no usable entries (%d rows, %d bad)", st.Rows, st.Bad)
	}
	if st.Bad > 0 || st.Duplicates > 0 {
		f.log.Info("phonebook rows skipped", "server", url, "bad", st.Bad, "duplicates", st.Duplicates, "first", st.Reasons)
	}
	f.mu.Lock()
	f.entries, f.stats, f.source = es, st, url
	f.lastOK, f.lastErr = time.Now(), ""
	f.cond[url] = validators{etag: resp.ETag, modified: resp.Modified}
	f.mu.Unlock()
	return f.publish(es, resp.Body)
}

// publish writes the XML and (when given) the CSV, each only if changed.
func (f *Fetcher) publish(es []Entry, csv []byte) error {
	f.mu.Lock()
	xmlPath, csvPath := f.xmlPath(), filepath.Join(f.main.StateDir, CSVFile)
	f.mu.Unlock()
	if err := f.writeIfChanged(xmlPath, YealinkXML(es)); err != nil {
		return err
	}
	if csv != nil {
		return f.writeIfChanged(csvPath, csv)
	}
	return nil
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

// Status is the directory section of "phonebook status".
func (f *Fetcher) Status() ubus.Value {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := func(name string, at time.Time) ubus.Value {
		if at.IsZero() {
			return ubus.Null(name)
		}
		return ubus.Str(name, at.UTC().Format(time.RFC3339))
	}
	v := ubus.Tbl("directory",
		ubus.I32("entries", int32(len(f.entries))),
		ubus.I32("bad_rows", int32(f.stats.Bad)),
		ubus.I32("duplicates", int32(f.stats.Duplicates)),
		ubus.Str("xml_path", f.xmlPath()),
		t("last_fetch", f.lastTry),
		t("last_success", f.lastOK),
		ubus.I32("servers", int32(len(f.cfg.Servers))),
		ubus.I32("files_written", int32(f.writes)),
	)
	if f.source != "" {
		v.List = append(v.List, ubus.Str("source", f.source))
	} else {
		v.List = append(v.List, ubus.Null("source"))
	}
	if f.lastErr != "" {
		v.List = append(v.List, ubus.Str("last_error", f.lastErr))
	} else {
		v.List = append(v.List, ubus.Null("last_error"))
	}
	return v
}

// FormatStatus renders the status as one line of JSON (logs, tests).
func FormatStatus(v ubus.Value) string { return ubus.FormatJSON(v.List, false, -1) }
