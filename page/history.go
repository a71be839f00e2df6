package page

import (
	"context"
	"fmt"
	"html"
	"strings"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/ubus"
)

// The last day as small inline SVG charts: no script, no framework, one
// request. Lines use fixed mid-tone colours readable on a light and a
// dark background; axes use currentColor, so they follow the page's (and
// the AREDN UI's) text colour. Crashes (red) and worker restarts (orange)
// are marked on every chart's time axis.
//
// The plot stretches to its box (preserveAspectRatio none) with strokes
// that do not scale; the value and time labels are HTML beside it, in
// CSS pixels (12 px), so that they keep their size at any width of the
// screen (SVG text would shrink with the plot, to 7 px on a phone).

// Chart geometry, in SVG user units.
const (
	chartW, chartH = 600.0, 100.0
	padT, padB     = 3.0, 1.0 // room for the stroke at the top and bottom values
)

type series struct {
	label, color string
	values       []*float64
}

// chart draws one chart of series over times (unix seconds).
func chart(title, unit string, times []int64, marks []health.HistoryMark, ss ...series) string {
	var b strings.Builder
	n := len(times)
	lo, hi := 0.0, 0.0 // the axis starts at 0 (or below, for a negative figure)
	for _, s := range ss {
		for _, v := range s.values {
			if v != nil {
				lo, hi = min(lo, *v), max(hi, *v)
			}
		}
	}
	if hi <= lo {
		hi = lo + 1
	}
	t0, t1 := int64(0), int64(1)
	if n > 0 {
		t0, t1 = times[0], times[n-1]
		if t1 <= t0 {
			t1 = t0 + 1
		}
	}
	x := func(t int64) float64 { return chartW * float64(t-t0) / float64(t1-t0) }
	y := func(v float64) float64 { return padT + (chartH-padT-padB)*(1-(v-lo)/(hi-lo)) }

	fmt.Fprintf(&b, `<figure class="chart"><figcaption>%s`, html.EscapeString(title))
	for _, s := range ss {
		fmt.Fprintf(&b, ` <span style="color:%s">&#9644; %s</span>`, s.color, html.EscapeString(s.label))
	}
	// The value range, beside the plot.
	fmt.Fprintf(&b, `</figcaption><div class="plot"><div class="yl"><span>%s</span><span>%s</span></div>`,
		html.EscapeString(short(hi)+unit), html.EscapeString(short(lo)+unit))
	fmt.Fprintf(&b, `<svg viewBox="0 0 %g %g" preserveAspectRatio="none" role="img" aria-label="%s" data-points="%d">`, chartW, chartH, html.EscapeString(title), n)
	// Axes, in the text colour.
	fmt.Fprintf(&b, `<g stroke="currentColor" stroke-opacity=".35" stroke-width="1" vector-effect="non-scaling-stroke"><line x1="0" y1="0" x2="0" y2="%g" vector-effect="non-scaling-stroke"/><line x1="0" y1="%g" x2="%g" y2="%g" vector-effect="non-scaling-stroke"/></g>`,
		chartH, chartH, chartW, chartH)
	for _, m := range marks {
		t := m.Time.Unix()
		if n == 0 || t < t0 || t > t1 {
			continue
		}
		color := "#e65100"
		if m.Kind == "crash" {
			color = "#c62828"
		}
		fmt.Fprintf(&b, `<line class="mark %s" x1="%.1f" y1="0" x2="%.1f" y2="%g" stroke="%s" stroke-width="1.5" stroke-dasharray="3 3" vector-effect="non-scaling-stroke"><title>%s</title></line>`,
			html.EscapeString(m.Kind), x(t), x(t), chartH, color,
			html.EscapeString(fmt.Sprintf("%s %s %s %s", m.Kind, m.Worker, m.Time.UTC().Format(time.RFC3339), m.Reason)))
	}
	for _, s := range ss {
		// A null (not measured) breaks the line rather than draw a 0.
		var pts []string
		flush := func() {
			if len(pts) > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" vector-effect="non-scaling-stroke" points="%s"/>`, s.color, strings.Join(pts, " "))
			}
			pts = pts[:0]
		}
		for i, v := range s.values {
			if v == nil || i >= n {
				flush()
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(times[i]), y(*v)))
		}
		flush()
	}
	b.WriteString("</svg></div>")
	// The time span, under the plot.
	if n > 0 {
		fmt.Fprintf(&b, `<div class="xl"><time datetime="%s">%s</time><time datetime="%s">%s</time></div>`,
			iso(t0), hhmm(t0), iso(t1), hhmm(t1))
	}
	b.WriteString("</figure>\n")
	return b.String()
}

func short(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprint(int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}

func hhmm(t int64) string { return time.Unix(t, 0).UTC().Format("Jan 2 15:04 UTC") }

func iso(t int64) string { return time.Unix(t, 0).UTC().Format(time.RFC3339) }

func ints[T int32 | int64](vs []T) []*float64 {
	out := make([]*float64, len(vs))
	for i, v := range vs {
		f := float64(v)
		out[i] = &f
	}
	return out
}

func optInts(vs []*int32) []*float64 {
	out := make([]*float64, len(vs))
	for i, v := range vs {
		if v != nil {
			f := float64(*v)
			out[i] = &f
		}
	}
	return out
}

// History renders the charts of a history document.
func History(h health.HistoryDoc) string {
	if len(h.Time) == 0 {
		return `<p class="muted">No history yet: the first point comes with the first evaluation.</p>`
	}
	var b strings.Builder
	span := time.Duration(h.Time[len(h.Time)-1]-h.Time[0]) * time.Second
	fmt.Fprintf(&b, `<p class="muted">%d points, one every %d s, over %s (at most %d points, kept in RAM). Marks: <span style="color:#c62828">crash</span>, <span style="color:#e65100">worker restart</span>.</p>`,
		len(h.Time), h.StepSeconds, durationText(span), h.Capacity)
	b.WriteString(`<div class="charts">`)
	b.WriteString(chart("Health score", "", h.Time, h.Marks, series{"score", "#1e88e5", optInts(h.Score)}))
	b.WriteString(chart("Memory", " MB", h.Time, h.Marks, series{"RSS", "#8e24aa", h.RSSMB}, series{"private", "#00897b", h.PrivateMB}))
	b.WriteString(chart("Registered phones", "", h.Time, h.Marks, series{"phones", "#43a047", ints(h.Phones)}))
	b.WriteString(chart("Open files", "", h.Time, h.Marks, series{"descriptors", "#a1887f", optInts(h.FDs)}))
	b.WriteString(chart("Errors per hour", "", h.Time, h.Marks,
		series{"SIP", "#e53935", ints(h.SIPErrorsPerHour)}, series{"probes", "#fb8c00", ints(h.ProbeFailuresPerHour)}, series{"fetches", "#5c6bc0", ints(h.FetchFailuresPerHour)}))
	b.WriteString(`</div>`)
	return b.String()
}

// HistoryPager asks the daemon for one page of its history
// (phonebook.health history with limit and offset).
type HistoryPager func(ctx context.Context, limit, offset int) (health.HistoryDoc, error)

// maxHistoryPages bounds the pages asked for, whatever the answers say:
// the largest ring allowed (10,080 points) is seven pages.
const maxHistoryPages = 16

// CollectHistory asks for the whole history page by page, newest first,
// each answer at most health.MaxHistoryPage points (a single answer of
// the largest ring would pass ubus's 1 MiB message limit), and joins
// them oldest first. A point that a page repeats (the ring moved on
// between two calls) is taken once; an error after the first page keeps
// what was read.
func CollectHistory(ctx context.Context, page HistoryPager) (health.HistoryDoc, error) {
	doc, err := page(ctx, health.MaxHistoryPage, 0)
	if err != nil {
		return health.HistoryDoc{}, err
	}
	seen := map[health.HistoryMark]bool{}
	for _, m := range doc.Marks {
		seen[m] = true
	}
	offset, total := len(doc.Time), int(doc.Total)
	for i := 1; i < maxHistoryPages && len(doc.Time) > 0 && offset < total; i++ {
		older, err := page(ctx, health.MaxHistoryPage, offset)
		if err != nil || len(older.Time) == 0 {
			break
		}
		offset, total = offset+len(older.Time), int(older.Total) // the ring may have grown
		// Keep only points older than those held.
		n := 0
		for n < len(older.Time) && older.Time[n] < doc.Time[0] {
			n++
		}
		doc.Time = append(older.Time[:n:n], doc.Time...)
		doc.Status = append(older.Status[:n:n], doc.Status...)
		doc.Score = append(older.Score[:n:n], doc.Score...)
		doc.RSSMB = append(older.RSSMB[:n:n], doc.RSSMB...)
		doc.PrivateMB = append(older.PrivateMB[:n:n], doc.PrivateMB...)
		doc.FDs = append(older.FDs[:n:n], doc.FDs...)
		doc.Phones = append(older.Phones[:n:n], doc.Phones...)
		doc.SIPErrorsPerHour = append(older.SIPErrorsPerHour[:n:n], doc.SIPErrorsPerHour...)
		doc.ProbeFailuresPerHour = append(older.ProbeFailuresPerHour[:n:n], doc.ProbeFailuresPerHour...)
		doc.FetchFailuresPerHour = append(older.FetchFailuresPerHour[:n:n], doc.FetchFailuresPerHour...)
		for _, m := range older.Marks {
			if !seen[m] {
				seen[m] = true
				doc.Marks = append(doc.Marks, m)
			}
		}
	}
	doc.Offset, doc.Total = 0, int32(len(doc.Time))
	return doc, nil
}

// UbusHistoryPager asks over a ubus connection.
func UbusHistoryPager(c *ubus.Conn) HistoryPager {
	return func(ctx context.Context, limit, offset int) (health.HistoryDoc, error) {
		var d health.HistoryDoc
		r, err := c.Call(ctx, "phonebook.health", "history", []ubus.Value{ubus.I32("limit", int32(limit)), ubus.I32("offset", int32(offset))})
		if err != nil {
			return d, fmt.Errorf("phonebook.health history offset %d: %w", offset, err)
		}
		if len(r) == 0 {
			return d, fmt.Errorf("phonebook.health history offset %d: no document", offset)
		}
		return d, decode(r[0], &d)
	}
}
