package health

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/aredn/phonebookd/crash"
)

// History is the last day of health at a glance: a fixed ring of points,
// one every step, kept in RAM only (never on flash), so that an operator
// can ask "was it leaking last night?" or "when did phones drop?". Its
// size is set once (history_points); a longer run overwrites the oldest
// point, so the ring never grows.
type History struct {
	mu       sync.Mutex
	step     time.Duration
	points   []point // ring storage, len == capacity
	next     int     // where the next point goes
	n        int     // points held
	marks    []HistoryMark
	last     time.Time      // time of the newest point
	restarts map[string]int // restart count per worker at the last point
	// gen counts the points and marks added; changed is signalled with
	// it, for the writer of the copy in run_dir (history_persist.go).
	gen     uint64
	changed chan struct{}
}

// point is one sample, compact (about 40 bytes): -1 is "not measured".
type point struct {
	t                          int64 // unix seconds
	status                     uint8
	score                      int16 // -1: monitoring disabled
	rssKB, privKB              int32
	fds                        int32
	phones                     int32
	sipErr, probeErr, fetchErr int32
}

// maxMarks bounds the crash and restart marks kept.
const maxMarks = 64

var statusCodes = []string{Healthy, Degraded, Critical, Disabled}

func statusCode(s string) uint8 {
	for i, v := range statusCodes {
		if v == s {
			return uint8(i)
		}
	}
	return uint8(len(statusCodes) - 1)
}

// NewHistory makes a ring of capacity points, one every step.
func NewHistory(step time.Duration, capacity int) *History {
	return &History{step: step, points: make([]point, max(capacity, 1)), restarts: map[string]int{}, changed: make(chan struct{}, 1)}
}

// Resize applies new settings; the points kept are the newest that fit.
func (h *History) Resize(step time.Duration, capacity int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	capacity = max(capacity, 1)
	h.step = step
	if capacity == len(h.points) {
		return
	}
	old := h.ordered()
	if len(old) > capacity {
		old = old[len(old)-capacity:]
	}
	h.points = make([]point, capacity)
	copy(h.points, old)
	h.n = len(old)
	h.next = h.n % capacity
}

// ordered returns the points oldest first; h.mu is held.
func (h *History) ordered() []point {
	out := make([]point, 0, h.n)
	start := (h.next - h.n + len(h.points)) % len(h.points)
	for i := 0; i < h.n; i++ {
		out = append(out, h.points[(start+i)%len(h.points)])
	}
	return out
}

// Len is how many points are held; Cap how many can be.
func (h *History) Len() int { h.mu.Lock(); defer h.mu.Unlock(); return h.n }

// Cap is the ring's capacity.
func (h *History) Cap() int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.points) }

// record adds snap as a point if a step has passed since the last one,
// and marks the workers restarted since then.
func (h *History) record(snap *Snapshot, phones int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range snap.Workers {
		if prev, ok := h.restarts[w.Name]; ok && w.Restarts > prev {
			h.mark(HistoryMark{Time: Time{snap.Time}, Kind: "restart", Worker: w.Name})
		}
		h.restarts[w.Name] = w.Restarts
	}
	if !h.last.IsZero() && snap.Time.Sub(h.last) < h.step {
		return
	}
	h.last = snap.Time
	p := point{t: snap.Time.Unix(), status: statusCode(snap.Status), score: -1, rssKB: -1, privKB: -1, fds: -1, phones: int32(phones)}
	if snap.Status != Disabled {
		p.score = int16(snap.Score)
	}
	sh := &snap.Health
	if m := sh.Memory; m != nil {
		if m.RSSMB != nil {
			p.rssKB = int32(*m.RSSMB * 1024)
		}
		if m.RSSAnonMB != nil {
			p.privKB = int32(*m.RSSAnonMB * 1024)
		}
	}
	if f := sh.FileDescriptors; f != nil && f.Open != nil {
		p.fds = *f.Open
	}
	if e := sh.ErrorRates; e != nil {
		p.sipErr, p.probeErr, p.fetchErr = e.SIPErrorsPerHour, e.ProbeFailuresPerHour, e.FetchFailuresPerHour
	}
	h.points[h.next] = p
	h.next = (h.next + 1) % len(h.points)
	h.n = min(h.n+1, len(h.points))
	h.touch()
}

func (h *History) mark(m HistoryMark) {
	if len(h.marks) == maxMarks {
		h.marks = append(h.marks[:0], h.marks[1:]...)
	}
	h.marks = append(h.marks, m)
	h.touch()
}

// MaxHistoryPage bounds the points of one history answer: a day at the
// default step (history_points 1440, 60 s), so that the default ring is
// one answer, and the largest ring allowed (10,080 points) is seven
// answers of at most about 200 KB of blobmsg each, far inside ubus's
// 1 MiB message (a single answer of it was 1,379,448 B).
const MaxHistoryPage = 1440

// HistoryDoc is the phonebook.health history document: columns of equal
// length, oldest first (columns keep the message small: 1,440 points are
// about 200 KB of blobmsg), and the crash and restart marks that fall in
// the page's window. One answer holds a page of at most MaxHistoryPage
// points: the newest limit points (MaxHistoryPage when limit is 0 or
// larger) after skipping the newest offset; total says how many the ring
// holds, so a reader asks for older pages with offset += len(time) while
// offset + len(time) < total.
type HistoryDoc struct {
	StepSeconds          int32         `json:"step_seconds"`
	Capacity             int32         `json:"capacity"`
	Total                int32         `json:"total"`  // points held in the ring
	Offset               int32         `json:"offset"` // newest points skipped before this page
	Time                 []int64       `json:"time"`   // unix seconds
	Status               []string      `json:"status"`
	Score                []*int32      `json:"score"`
	RSSMB                []*float64    `json:"rss_mb"`
	PrivateMB            []*float64    `json:"private_mb"`
	FDs                  []*int32      `json:"fds"`
	Phones               []int32       `json:"phones"`
	SIPErrorsPerHour     []int32       `json:"sip_errors_per_hour"`
	ProbeFailuresPerHour []int32       `json:"probe_failures_per_hour"`
	FetchFailuresPerHour []int32       `json:"fetch_failures_per_hour"`
	Marks                []HistoryMark `json:"marks"`
}

// HistoryMark is a crash or a worker restart on the time axis.
type HistoryMark struct {
	Time   Time   `json:"time"`
	Kind   string `json:"kind"` // crash, restart
	Worker string `json:"worker"`
	Reason string `json:"reason"`
}

// Doc returns the newest page of the history document (limit points,
// at most MaxHistoryPage; 0 is MaxHistoryPage), with the crash records of
// crashes among the marks.
func (h *History) Doc(crashes []crash.Record, limit int) HistoryDoc {
	return h.Page(crashes, limit, 0)
}

// Page returns one page of the history document: at most limit points
// (bounded by MaxHistoryPage; 0 is MaxHistoryPage) ending offset points
// before the newest. Its marks are those from its first point up to the
// first point of the next newer page (the newest page: up to now), at
// most maxMarks crashes and maxMarks restarts, so that every page stays
// bounded whatever the crash history holds.
func (h *History) Page(crashes []crash.Record, limit, offset int) HistoryDoc {
	if limit <= 0 || limit > MaxHistoryPage {
		limit = MaxHistoryPage
	}
	offset = max(offset, 0)
	h.mu.Lock()
	// Only the page is copied: the ring's i-th oldest point is at
	// (start+i) mod capacity.
	ring, start := len(h.points), h.next-h.n+len(h.points)
	end := max(h.n-offset, 0)
	pts := make([]point, 0, min(limit, end))
	for i := max(end-limit, 0); i < end; i++ {
		pts = append(pts, h.points[(start+i)%ring])
	}
	var until int64 = math.MaxInt64 // marks before the next newer page's first point
	if end < h.n {
		until = h.points[(start+end)%ring].t
	}
	marks := append([]HistoryMark(nil), h.marks...)
	d := HistoryDoc{StepSeconds: int32(h.step / time.Second), Capacity: int32(ring), Total: int32(h.n), Offset: int32(offset)}
	h.mu.Unlock()
	n := len(pts)
	d.Time, d.Status, d.Score = make([]int64, n), make([]string, n), make([]*int32, n)
	d.RSSMB, d.PrivateMB, d.FDs = make([]*float64, n), make([]*float64, n), make([]*int32, n)
	d.Phones, d.SIPErrorsPerHour, d.ProbeFailuresPerHour, d.FetchFailuresPerHour = make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n)
	// One backing array per nullable column: a pointer per point would be
	// an allocation per point.
	rss, priv, score, fds := make([]float64, n), make([]float64, n), make([]int32, n), make([]int32, n)
	for i, p := range pts {
		d.Time[i], d.Status[i] = p.t, statusCodes[p.status]
		if p.score >= 0 {
			score[i] = int32(p.score)
			d.Score[i] = &score[i]
		}
		if p.rssKB >= 0 {
			rss[i] = float64(p.rssKB) / 1024
			d.RSSMB[i] = &rss[i]
		}
		if p.privKB >= 0 {
			priv[i] = float64(p.privKB) / 1024
			d.PrivateMB[i] = &priv[i]
		}
		if p.fds >= 0 {
			fds[i] = p.fds
			d.FDs[i] = &fds[i]
		}
		d.Phones[i], d.SIPErrorsPerHour[i], d.ProbeFailuresPerHour[i], d.FetchFailuresPerHour[i] = p.phones, p.sipErr, p.probeErr, p.fetchErr
	}
	var from int64
	if n > 0 {
		from = pts[0].t
	} else {
		from = until // an empty page (offset past the ring): no marks
	}
	in := func(t time.Time) bool { u := t.Unix(); return u >= from && u < until }
	d.Marks = []HistoryMark{}
	var cm []HistoryMark
	for _, r := range crashes {
		if in(r.Time) {
			cm = append(cm, HistoryMark{Time: Time{r.Time}, Kind: "crash", Worker: r.Worker, Reason: r.Reason})
		}
	}
	if len(cm) > maxMarks { // the newest maxMarks: crash_history_max may hold 1,000
		sort.SliceStable(cm, func(i, j int) bool { return cm[i].Time.Before(cm[j].Time.Time) })
		cm = cm[len(cm)-maxMarks:]
	}
	d.Marks = append(d.Marks, cm...)
	for _, m := range marks {
		if in(m.Time.Time) {
			d.Marks = append(d.Marks, m)
		}
	}
	return d
}
