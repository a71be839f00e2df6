package sip

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/internal/atomicfile"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/internal/jsonread"
	"github.com/aredn/phonebookd/internal/jsonwrite"
)

// BindingsFile is the binding table's file in run_dir (RAM): phones
// survive a restart of the daemon (a crash, an upgrade, SIGTERM) but not
// a reboot, and the table never goes to flash.
const BindingsFile = "bindings.json"

// bindingsVersion is the file's format.
const bindingsVersion = 1

// FlushEvery is the least time between two writes of the binding table:
// a burst of registrations costs one write a second, an idle table none.
const FlushEvery = time.Second

// persistState is the binding table's save state.
type persistState struct {
	dirty  atomic.Bool                   // changed since the last write
	wake   atomic.Pointer[chan struct{}] // the flusher's, while it runs
	writes atomic.Int64                  // files written
}

// changed marks the binding table changed and wakes the flusher. It
// takes no lock (s.mu may be held).
func (s *Server) changed() {
	s.persist.dirty.Store(true)
	if w := s.persist.wake.Load(); w != nil {
		select {
		case *w <- struct{}{}:
		default:
		}
	}
}

// savedBinding is one binding as written: times are absolute (unix
// milliseconds), so that the expiry a phone asked for holds across a
// restart.
type savedBinding struct {
	User      string `json:"user"`
	URI       string `json:"uri"`
	Transport string `json:"transport"`
	Source    string `json:"source"`
	Local     string `json:"local,omitempty"`
	Expires   int64  `json:"expires_ms"`
	Updated   int64  `json:"updated_ms"`
	CallID    uint64 `json:"call_id"`
	CSeq      uint32 `json:"cseq"`
}

type savedTable struct {
	Version  int            `json:"version"`
	Bindings []savedBinding `json:"bindings"`
}

// maxBindingsFile bounds the file read at start: the largest table the
// settings allow, at most about 600 bytes a binding.
func maxBindingsFile(cfg config.SIP) int64 {
	return int64(cfg.MaxBindings)*int64(cfg.MaxContacts)*600 + 4096
}

// KeepBindings is the flusher: it writes the binding table to path when
// it changed, at most once per FlushEvery, and once more when ctx ends
// (a clean stop keeps the newest table). Nothing changed, nothing is
// written.
func (s *Server) KeepBindings(ctx context.Context, path string, clk clock.Clock) {
	if clk == nil {
		clk = clock.Real{}
	}
	wake := make(chan struct{}, 1)
	s.persist.wake.Store(&wake)
	defer s.persist.wake.Store(nil)
	if s.persist.dirty.Load() {
		// A change since the store may have filled the channel
		// already: a blocking send would wait for good.
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	for {
		select {
		case <-ctx.Done():
			s.flushBindings(path)
			return
		case <-wake:
		}
		s.flushBindings(path)
		t := clk.NewTimer(FlushEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			s.flushBindings(path)
			return
		case <-t.C():
		}
	}
}

// flushBindings writes the table if it changed since the last write.
func (s *Server) flushBindings(path string) {
	if !s.persist.dirty.Swap(false) {
		return
	}
	rows := s.bindingRows(time.Now())
	err := atomicfile.WriteFunc(path, 0o644, func(w io.Writer) error { return writeBindings(w, rows) })
	if err != nil {
		s.persist.dirty.Store(true) // tried again at the next change
		s.logs.Log(slog.LevelWarn, "bindings-save", "sip: binding table not saved", "path", path, "err", err)
		return
	}
	s.persist.writes.Add(1)
}

// bindingRow is one live binding as the flusher copies it under the
// table's lock: its strings are the table's own (nothing is formatted
// while REGISTERs wait), one row a binding in a slice of exactly the
// table's size, so that a flush during a REGISTER flood leaves no grown
// buffers behind.
type bindingRow struct {
	user, uri, transport string
	source               netip.AddrPort
	local                netip.Addr
	expires, updated     time.Time
	callID               uint64
	cseq                 uint32
}

// bindingRows copies the live table (in the map's order: the file is
// read whole, and sorting 20,000 rows every second of a flood costs).
func (s *Server) bindingRows(now time.Time) []bindingRow {
	s.mu.Lock()
	n := 0
	for _, a := range s.aors {
		n += len(a.contacts)
	}
	rows := make([]bindingRow, 0, n)
	for user, a := range s.aors {
		for _, c := range a.contacts {
			if c.expires.After(now) {
				rows = append(rows, bindingRow{user: user, uri: c.uri, transport: c.transport, source: c.source, local: c.local,
					expires: c.expires, updated: c.updated, callID: c.callID, cseq: c.cseq})
			}
		}
	}
	s.mu.Unlock()
	return rows
}

// writeBindings writes rows as a savedTable, one binding at a time,
// formatted by hand: during a REGISTER flood the table is written every
// second, and a reflective encoder made that cost 8-10 µs of CPU per
// REGISTER (docs/BENCHMARKS.md).
func writeBindings(w io.Writer, rows []bindingRow) error {
	bw := bufio.NewWriterSize(w, 16<<10)
	b := make([]byte, 0, 512)
	b = append(strconv.AppendInt(append(b, `{"version":`...), bindingsVersion, 10), `,"bindings":[`...)
	for i, r := range rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonwrite.AppendString(append(b, `{"user":`...), r.user)
		b = jsonwrite.AppendString(append(b, `,"uri":`...), r.uri)
		b = jsonwrite.AppendString(append(b, `,"transport":`...), r.transport)
		b = append(r.source.AppendTo(append(b, `,"source":"`...)), '"')
		if r.local.IsValid() {
			b = append(r.local.AppendTo(append(b, `,"local":"`...)), '"')
		}
		b = strconv.AppendInt(append(b, `,"expires_ms":`...), r.expires.UnixMilli(), 10)
		b = strconv.AppendInt(append(b, `,"updated_ms":`...), r.updated.UnixMilli(), 10)
		b = strconv.AppendUint(append(b, `,"call_id":`...), r.callID, 10)
		b = append(strconv.AppendUint(append(b, `,"cseq":`...), uint64(r.cseq), 10), '}')
		if _, err := bw.Write(b); err != nil {
			return err
		}
		b = b[:0]
	}
	bw.WriteString("]}\n")
	return bw.Flush()
}

// LoadBindings reads the table saved in path (before Run serves):
// expired bindings are dropped, the rest keep their absolute expiry,
// and no more than max_bindings users of max_contacts bindings are
// taken. A file that cannot be read as a table, or is larger than any
// table the settings allow, is set aside (renamed *.bad) and logged: the
// daemon starts with an empty table, never fails for it. A missing file
// is no error. It returns how many bindings were loaded and how many of
// the file's were dropped.
func (s *Server) LoadBindings(path string, now time.Time) (loaded, dropped int, err error) {
	cfg := s.config()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("load bindings %s: %w", path, err)
	}
	limit := maxBindingsFile(cfg)
	b := make([]byte, 0, 4096)
	buf := make([]byte, 32<<10)
	for int64(len(b)) <= limit {
		n, rerr := f.Read(buf)
		b = append(b, buf[:n]...)
		if rerr != nil {
			break
		}
	}
	f.Close()
	var entries []contactEntry
	if int64(len(b)) > limit {
		err = fmt.Errorf("larger than %d bytes (sip.max_bindings x sip.max_contacts)", limit)
	} else {
		entries, dropped, err = parseBindings(b, cfg, now)
	}
	if err != nil {
		bad := path + ".bad"
		if rerr := os.Rename(path, bad); rerr != nil {
			os.Remove(path)
			bad = "(removed)"
		}
		s.log.Error("binding table unreadable; set aside, starting with no phones", "path", path, "kept_as", bad, "err", err)
		return 0, 0, fmt.Errorf("load bindings %s: %w", path, err)
	}
	s.mu.Lock()
	for _, e := range entries {
		a := s.aors[e.user]
		if a == nil {
			a = &aor{}
			s.aors[e.user] = a
		}
		a.contacts = append(a.contacts, e.c)
	}
	s.mu.Unlock()
	return len(entries), dropped, nil
}

// contactEntry is a binding read back.
type contactEntry struct {
	user string
	c    contact
}

// parseBindings checks a saved table: a file that is not one is an
// error; single bindings that are expired, malformed or past the bounds
// are dropped and counted. Input from disk gets the checks input from
// the network gets (lengths, URIs, addresses).
func parseBindings(b []byte, cfg config.SIP, now time.Time) ([]contactEntry, int, error) {
	var t savedTable
	if err := jsonread.Unmarshal(b, &t); err != nil {
		return nil, 0, fmt.Errorf("not a binding table: %w", err)
	}
	if t.Version != bindingsVersion {
		return nil, 0, fmt.Errorf("binding table version %d, want %d", t.Version, bindingsVersion)
	}
	var out []contactEntry
	perUser := map[string]int{}
	seen := map[string]bool{}
	dropped := 0
	latest := now.Add(maxExpires * time.Second)
	for _, sb := range t.Bindings {
		c, ok := savedContact(sb, now, latest)
		key := sb.User + "\x00" + sb.URI
		if !ok || seen[key] || perUser[sb.User] >= cfg.MaxContacts || (perUser[sb.User] == 0 && len(perUser) >= cfg.MaxBindings) {
			dropped++
			continue
		}
		seen[key] = true
		perUser[sb.User]++
		out = append(out, contactEntry{user: sb.User, c: c})
	}
	return out, dropped, nil
}

// savedContact rebuilds one binding; false when it is expired or not
// one the registrar could have made.
func savedContact(sb savedBinding, now, latest time.Time) (contact, bool) {
	if sb.User == "" || len(sb.User) > maxAORLen || len(sb.URI) > maxContactLen || strings.ContainsAny(sb.User+sb.URI, "\x00\r\n<> \t") {
		return contact{}, false
	}
	if sb.Transport != "UDP" && sb.Transport != "TCP" {
		return contact{}, false
	}
	expires, updated := time.UnixMilli(sb.Expires), time.UnixMilli(sb.Updated)
	if !expires.After(now) || expires.After(latest) || updated.After(expires) {
		return contact{}, false
	}
	u, err := ParseURI(sb.URI)
	if err != nil {
		return contact{}, false
	}
	src, err := netip.ParseAddrPort(sb.Source)
	if err != nil {
		return contact{}, false
	}
	c := contact{uri: sb.URI, transport: sb.Transport, source: src, expires: expires, updated: updated, callID: sb.CallID, cseq: sb.CSeq}
	if sb.Local != "" {
		if c.local, err = netip.ParseAddr(sb.Local); err != nil {
			return contact{}, false
		}
	}
	c.target, c.host = contactDest(u)
	return c, true
}
