package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/aredn/phonebookd/internal/atomicfile"
	"github.com/aredn/phonebookd/internal/clock"
	"github.com/aredn/phonebookd/internal/jsonread"
	"github.com/aredn/phonebookd/internal/jsonwrite"
)

// HistoryFile is the history's copy in run_dir (RAM): the last day's
// chart survives a restart of the daemon, so that it shows the crash it
// exists to explain; it never goes to flash.
const HistoryFile = "history.json"

// historyVersion is the file's format.
const historyVersion = 1

// HistoryWindow is how far back points are taken when the file is read.
const HistoryWindow = 24 * time.Hour

// maxMarkText bounds a mark's worker and reason read back.
const maxMarkText = 256

// savedHistory is the file: each point is [time (unix s), status, score,
// rss_kb, private_kb, fds, phones, sip_errors, probe_failures,
// fetch_failures], -1 for "not measured" as in the ring.
type savedHistory struct {
	Version int         `json:"version"`
	Points  [][10]int64 `json:"points"`
	Marks   []savedMark `json:"marks"`
}

type savedMark struct {
	Time   int64  `json:"time"` // unix seconds
	Kind   string `json:"kind"`
	Worker string `json:"worker"`
	Reason string `json:"reason"`
}

// appendJSON appends the file as encoding/json writes it, without
// encoding/json: the copy is written at each history point, and
// reflection's code would come back into memory each time after the
// start-up page-out (issue 19).
func (f *savedHistory) appendJSON(b []byte) []byte {
	b = strconv.AppendInt(append(b, `{"version":`...), int64(f.Version), 10)
	b = append(b, `,"points":`...)
	if f.Points == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, p := range f.Points {
			if i > 0 {
				b = append(b, ',')
			}
			for j, v := range p {
				if j == 0 {
					b = append(b, '[')
				} else {
					b = append(b, ',')
				}
				b = strconv.AppendInt(b, v, 10)
			}
			b = append(b, ']')
		}
		b = append(b, ']')
	}
	b = append(b, `,"marks":`...)
	if f.Marks == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, m := range f.Marks {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(append(b, `{"time":`...), m.Time, 10)
			b = jsonwrite.AppendString(append(b, `,"kind":`...), m.Kind)
			b = jsonwrite.AppendString(append(b, `,"worker":`...), m.Worker)
			b = append(jsonwrite.AppendString(append(b, `,"reason":`...), m.Reason), '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func (p point) saved() [10]int64 {
	return [10]int64{p.t, int64(p.status), int64(p.score), int64(p.rssKB), int64(p.privKB), int64(p.fds), int64(p.phones),
		int64(p.sipErr), int64(p.probeErr), int64(p.fetchErr)}
}

// pointOf checks a saved point; false when a field is out of its range.
func pointOf(v [10]int64) (point, bool) {
	i32 := func(x int64) bool { return x >= -1 && x <= math.MaxInt32 }
	if v[1] < 0 || v[1] >= int64(len(statusCodes)) || v[2] < -1 || v[2] > 100 {
		return point{}, false
	}
	for _, x := range v[3:] {
		if !i32(x) {
			return point{}, false
		}
	}
	return point{t: v[0], status: uint8(v[1]), score: int16(v[2]), rssKB: int32(v[3]), privKB: int32(v[4]), fds: int32(v[5]),
		phones: int32(v[6]), sipErr: int32(v[7]), probeErr: int32(v[8]), fetchErr: int32(v[9])}, true
}

// Keep writes the history to path whenever a point or mark was added,
// at most once per history step (a point is added once per step, so
// each is written), and once more when ctx ends.
func (h *History) Keep(ctx context.Context, path string, clk clock.Clock, log *slog.Logger) {
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var last time.Time
	var written uint64
	for {
		select {
		case <-ctx.Done():
			h.save(path, &written, log)
			return
		case <-h.changed:
		}
		h.mu.Lock()
		step := h.step
		h.mu.Unlock()
		if !last.IsZero() {
			if wait := step - clk.Now().Sub(last); wait > 0 {
				t := clk.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					h.save(path, &written, log)
					return
				case <-t.C():
				}
			}
		}
		if h.save(path, &written, log) {
			last = clk.Now()
		}
	}
}

// save writes the history if it changed since generation *written, and
// reports whether it wrote.
func (h *History) save(path string, written *uint64, log *slog.Logger) bool {
	h.mu.Lock()
	gen := h.gen
	if gen == *written {
		h.mu.Unlock()
		return false
	}
	pts := h.ordered()
	f := savedHistory{Version: historyVersion, Points: make([][10]int64, len(pts)), Marks: make([]savedMark, len(h.marks))}
	for i, m := range h.marks {
		f.Marks[i] = savedMark{Time: m.Time.Unix(), Kind: m.Kind, Worker: m.Worker, Reason: m.Reason}
	}
	h.mu.Unlock()
	for i, p := range pts {
		f.Points[i] = p.saved()
	}
	if err := atomicfile.Write(path, f.appendJSON(nil), 0o644); err != nil {
		log.Warn("history not saved", "path", path, "err", err)
		return false
	}
	*written = gen
	return true
}

// maxHistoryFile bounds the file read for a ring of capacity points.
func maxHistoryFile(capacity int) int64 {
	return int64(capacity)*160 + maxMarks*(2*maxMarkText+96) + 4096
}

// Load reads back the history a previous run wrote to path: points older
// than HistoryWindow (or ahead of now by more than a step, a clock that
// jumped) are dropped, at most the ring's capacity of the newest are
// kept. A file that is not a history, or is larger than the ring could
// have written, is renamed *.bad and logged; the ring stays empty. A
// missing file is no error. It returns how many points were taken.
func (h *History) Load(path string, now time.Time, log *slog.Logger) (int, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h.mu.Lock()
	capacity, step := len(h.points), h.step
	h.mu.Unlock()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("load history %s: %w", path, err)
	}
	limit := maxHistoryFile(capacity)
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	f.Close()
	var pts []point
	var marks []HistoryMark
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("larger than %d bytes (health.history_points)", limit)
	}
	if err == nil {
		pts, marks, err = parseHistory(b, now, step, capacity)
	}
	if err != nil {
		bad := path + ".bad"
		if rerr := os.Rename(path, bad); rerr != nil {
			os.Remove(path)
			bad = "(removed)"
		}
		log.Error("history unreadable; set aside, starting a new one", "path", path, "kept_as", bad, "err", err)
		return 0, fmt.Errorf("load history %s: %w", path, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	copy(h.points, pts)
	h.n, h.next = len(pts), len(pts)%len(h.points)
	if len(pts) > 0 {
		h.last = time.Unix(pts[len(pts)-1].t, 0)
	}
	h.marks = append(h.marks[:0], marks...)
	return len(pts), nil
}

// parseHistory checks a saved history: a file that is not one is an
// error; single points out of range, out of order or out of the window
// are dropped; at most capacity points and maxMarks marks are taken.
func parseHistory(b []byte, now time.Time, step time.Duration, capacity int) ([]point, []HistoryMark, error) {
	var f savedHistory
	if err := jsonread.Unmarshal(b, &f); err != nil {
		return nil, nil, fmt.Errorf("not a history: %w", err)
	}
	if f.Version != historyVersion {
		return nil, nil, fmt.Errorf("history version %d, want %d", f.Version, historyVersion)
	}
	from, to := now.Add(-HistoryWindow).Unix(), now.Add(step).Unix()
	pts := make([]point, 0, min(len(f.Points), capacity))
	for _, v := range f.Points {
		p, ok := pointOf(v)
		if !ok || p.t < from || p.t > to || (len(pts) > 0 && p.t <= pts[len(pts)-1].t) {
			continue
		}
		pts = append(pts, p)
	}
	if len(pts) > capacity {
		pts = pts[len(pts)-capacity:]
	}
	var marks []HistoryMark
	for _, m := range f.Marks {
		if m.Time < from || m.Time > to || m.Kind != "restart" || len(m.Worker) > maxMarkText || len(m.Reason) > maxMarkText {
			continue
		}
		marks = append(marks, HistoryMark{Time: Time{time.Unix(m.Time, 0)}, Kind: m.Kind, Worker: m.Worker, Reason: m.Reason})
	}
	if len(marks) > maxMarks {
		marks = marks[len(marks)-maxMarks:]
	}
	return pts, marks, nil
}

// touch counts a change and wakes the writer (h.mu held).
func (h *History) touch() {
	h.gen++
	select {
	case h.changed <- struct{}{}:
	default:
	}
}
