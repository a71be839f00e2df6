// Package page renders the AREDN app launcher's phonebook page: what an
// operator reads at a glance (status, score, workers, alerts, recent
// crashes, directory figures), from the daemon's own ubus documents. It is
// served as CGI by /www/cgi-bin/apps/phonebook/user.
package page

import (
	"context"
	"fmt"
	"html"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/jsonread"
	"github.com/aredn/phonebookd/metrics"
	"github.com/aredn/phonebookd/ubus"
)

// Data is what the page shows: the daemon's own documents, as their Go
// types, the status document's service sections (directory, SIP, monitor)
// included.
type Data struct {
	Running bool
	Error   string
	Check   health.Check
	Health  health.SoftwareHealth
	Status  *metrics.Services // nil: "phonebook status" not read
	Crashes []health.CrashRecord
	Workers []Worker
	History health.HistoryDoc
	Now     string
}

// Worker is one row of the workers table.
type Worker struct {
	Name string
	*health.Thread
}

// decode reads a reply into a document type, through the JSON the ubus
// CLI would print: the page reads the documents' Go types with
// internal/jsonread, as it reads what D-Bus and the reporter send.
func decode(vs []ubus.Value, doc any) error {
	return jsonread.Unmarshal([]byte(ubus.FormatJSON(vs, false, -1)), doc)
}

// Collect asks the daemon for its documents over ubus.
func Collect(ctx context.Context, socket string) Data {
	d := Data{Now: time.Now().UTC().Format(time.RFC3339)}
	c, err := ubus.Dial(ctx, socket, nil)
	if err != nil {
		d.Error = "ubus is not reachable: " + err.Error()
		return d
	}
	defer c.Close()
	get := func(obj, method string, args []ubus.Value, doc any) error {
		r, err := c.Call(ctx, obj, method, args)
		if err != nil {
			return err
		}
		if len(r) == 0 {
			return fmt.Errorf("%s %s: no document", obj, method)
		}
		return decode(r[0], doc)
	}
	if err := get("phonebook.health", "check", nil, &d.Check); err != nil {
		d.Error = "phonebookd is not running (" + err.Error() + ")"
		return d
	}
	d.Running = true
	get("phonebook.health", "status", nil, &d.Health)
	var st metrics.Services
	if get("phonebook", "status", nil, &st) == nil {
		d.Status = &st
	}
	var cr health.Crashes
	if get("phonebook.health", "crashes", []ubus.Value{ubus.I32("limit", 5)}, &cr) == nil {
		d.Crashes = cr.Crashes
	}
	d.History, _ = CollectHistory(ctx, UbusHistoryPager(c)) // in pages: one answer of a large ring would pass ubus's limit
	for name, th := range d.Health.Threads {
		d.Workers = append(d.Workers, Worker{Name: name, Thread: th})
	}
	sort.Slice(d.Workers, func(i, j int) bool { return d.Workers[i].Name < d.Workers[j].Name })
	// The page says times relative to now: the instant after every
	// document was read, so that none of their times lies after it.
	d.Now = time.Now().UTC().Format(time.RFC3339)
	return d
}

// state is the CSS class of a status word; its colour is the
// stylesheet's (AREDN's service colours where its theme is loaded).
func state(s any) string {
	switch s {
	case "healthy":
		return "ok"
	case "degraded", "restarting", "warning":
		return "warn"
	case "critical", "failed", "unresponsive", "blocked", "not running":
		return "bad"
	}
	return "other"
}

// text renders a document value for a table cell: a dash for null.
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return "–"
	case float64:
		return fmt.Sprintf("%.1f", x)
	case string:
		return x
	case health.Time:
		if x.IsZero() {
			return "–"
		}
		return x.UTC().Format(time.RFC3339)
	case *float64:
		if x == nil {
			return "–"
		}
		return text(*x)
	case *int32:
		if x == nil {
			return "–"
		}
		return fmt.Sprint(*x)
	case *int64:
		if x == nil {
			return "–"
		}
		return fmt.Sprint(*x)
	case *string:
		if x == nil {
			return "–"
		}
		return *x
	case errText:
		return text(x.s)
	}
	return fmt.Sprint(v)
}

// isNull reports a null document value (a nil pointer, an unknown time).
func isNull(v any) bool { return text(v) == "–" }

// At walks a decoded document: At(doc, "threads", "main", "status").
func At(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

// tidy says an error text once. Wrapping layers that each add the same
// context ("listen udp X: listen udp X: bind: listen udp: address already
// in use") repeat it; a part is dropped when an earlier part is the same,
// or starts with it word for word ("listen udp" after "listen udp X").
// The last part, the cause, is dropped only when repeated verbatim.
func tidy(s string) string {
	parts := strings.Split(s, ": ")
	out := make([]string, 0, len(parts))
	for i, p := range parts {
		dup := false
		for _, q := range out {
			if q == p || (i < len(parts)-1 && strings.HasPrefix(q, p+" ")) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, p)
		}
	}
	return strings.Join(out, ": ")
}

// errText is an error text from a document: shown tidied, broken
// anywhere on a narrow screen.
type errText struct{ s *string }

func errOf(s string) errText { return errText{&s} }

// rawHTML is a cell built by the page itself, every daemon text in it
// already escaped.
type rawHTML string

// durationText says a duration in its two largest units: "45 s", "3 min",
// "2 h 5 min", "3 d 4 h".
func durationText(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%d s", s)
	case s < 3600:
		return fmt.Sprintf("%d min", s/60)
	case s < 86400:
		if m := s % 3600 / 60; m != 0 {
			return fmt.Sprintf("%d h %d min", s/3600, m)
		}
		return fmt.Sprintf("%d h", s/3600)
	}
	if h := s % 86400 / 3600; h != 0 {
		return fmt.Sprintf("%d d %d h", s/86400, h)
	}
	return fmt.Sprintf("%d d", s/86400)
}

// ago says when t was, seen from ref: "3 min ago". A time after ref
// (the clock was stepped back) says so: "in 5 s".
func ago(ref, t time.Time) string {
	d := ref.Sub(t)
	switch {
	case d > -time.Second && d < time.Second:
		return "now"
	case d < 0:
		return "in " + durationText(-d)
	}
	return durationText(d) + " ago"
}

type writer struct {
	b   strings.Builder
	ref time.Time // the instant the documents were read: times are said relative to it
}

func (w *writer) raw(s string) { w.b.WriteString(s) }
func (w *writer) esc(v any)    { w.b.WriteString(html.EscapeString(text(v))) }

// when writes a time relative to the page's reference, with the ISO time
// in the tooltip and the datetime attribute.
func (w *writer) when(t time.Time) {
	if t.IsZero() {
		w.raw("–")
		return
	}
	iso := t.UTC().Format(time.RFC3339)
	fmt.Fprintf(&w.b, `<time datetime="%s" title="%s">%s</time>`, iso, iso, ago(w.ref, t))
}

// val writes a document value: times relative, error texts tidied.
func (w *writer) val(v any) {
	switch x := v.(type) {
	case health.Time:
		w.when(x.Time)
	case errText:
		if x.s == nil {
			w.raw("–")
			return
		}
		w.raw(`<span class="err">` + html.EscapeString(tidy(*x.s)) + "</span>")
	case rawHTML:
		w.raw(string(x))
	case string:
		// A time in the status document (decoded values) reads as one.
		if t, err := time.Parse(time.RFC3339, x); err == nil {
			w.when(t)
			return
		}
		w.esc(x)
	default:
		w.esc(v)
	}
}

func (w *writer) badge(s any) {
	fmt.Fprintf(&w.b, `<span class="badge %s">`, state(s))
	w.esc(s)
	w.raw("</span>")
}

// cell is one figure of a grid: a label over a value.
func (w *writer) cell(label string, v any, unit string) {
	w.raw(`<div class="fig"><div class="label">` + html.EscapeString(label) + `</div><div class="big">`)
	w.val(v)
	if !isNull(v) {
		w.raw(html.EscapeString(unit))
	}
	w.raw("</div></div>")
}

// tableShape says how a table stacks on a narrow screen: its first
// heads columns (a name, a status) lead each block without their labels;
// the wide column (a message, an error text) takes a line of its own at
// the end; the others flow in between as small labelled figures.
type tableShape struct {
	class    string
	badgeCol int // the column shown as a status badge, -1 for none
	heads    int
	wide     int  // -1 for none
	bare     bool // the wide column says what it is: no label
}

// table writes rows under head. On a narrow screen the stylesheet turns
// every row into a block, each cell under its column's label
// (data-label), so that no table runs off the screen.
func (w *writer) table(shape tableShape, head []string, rows [][]any) {
	w.raw(`<table class="stack ` + shape.class + `"><thead><tr>`)
	for _, h := range head {
		w.raw("<th>" + html.EscapeString(h) + "</th>")
	}
	w.raw("</tr></thead><tbody>\n")
	for _, r := range rows {
		w.raw("<tr>")
		for i, c := range r {
			class := ""
			switch {
			case i < shape.heads:
				class = ` class="head"`
			case i == shape.wide && shape.bare:
				class = ` class="wide head"`
			case i == shape.wide && isNull(c):
				class = ` class="wide none"` // a dash on a wide screen, nothing when stacked
			case i == shape.wide:
				class = ` class="wide"`
			}
			w.raw(`<td` + class + ` data-label="` + html.EscapeString(head[i]) + `">`)
			if i == shape.badgeCol {
				w.badge(c)
			} else {
				w.val(c)
			}
			w.raw("</td>")
			if i == shape.heads-1 && shape.heads > 1 {
				// Ends the leading line of a stacked block; no cell on a wide screen.
				w.raw(`<td class="br" aria-hidden="true"></td>`)
			}
		}
		w.raw("</tr>\n")
	}
	w.raw("</tbody></table>\n")
}

// style follows AREDN's UI (files/app/resource/css): its theme's custom
// properties where the page sits in its layout, their light and dark
// values otherwise; grey small-caps section titles; status chips in its
// service colours. Text is never under 12 px. Below 40em tables stack.
const style = `:root{color-scheme:light dark;
--pb-fg:var(--default-fg-color,#202020);--pb-bg:var(--body-bg-color,#f8f8f8);--pb-title:var(--title-fg-color,#202020);
--pb-muted:var(--section-subtitle-fg-color,#666);--pb-section:var(--section-title-fg-color,#707070);
--pb-line:var(--hr-color,#e0e0e0);--pb-head:var(--nav-bg-color,#e8e8e8);--pb-chip-fg:var(--service-fg-color-status,#f0f0f0);
--pb-ok:var(--service-bg-color-status-active,#005500);--pb-bad:var(--service-bg-color-status-disabled,#900000);
--pb-other:var(--service-bg-color-status-inactive,#707070);--pb-warn:#a34700;--pb-chip:var(--ctrl-modal-bg-secondary-color,#e0e0e0)}
@media (prefers-color-scheme:dark){:root{--pb-fg:var(--default-fg-color,#d8d8d8);--pb-bg:var(--body-bg-color,#282828);--pb-title:var(--title-fg-color,#e0e0e0);
--pb-muted:var(--section-subtitle-fg-color,#a8a8a8);--pb-section:var(--section-title-fg-color,#a0a0a0);--pb-line:var(--hr-color,#505050);
--pb-head:var(--nav-bg-color,#1c1c1c);--pb-ok:var(--service-bg-color-status-active,#356535);--pb-warn:#b35a00;--pb-chip:var(--ctrl-modal-bg-secondary-color,#383838)}}
*{box-sizing:border-box}
html{background:var(--pb-bg)}
body{font-family:var(--font-family,sans-serif);font-size:16px;line-height:1.35;margin:0 auto;padding:12px 16px 24px;color:var(--pb-fg);background:var(--pb-bg);max-width:72em;overflow-wrap:break-word}
h1{font-size:24px;margin:0 0 8px;color:var(--pb-title)}
h2{font-size:18px;font-weight:400;font-variant:small-caps;color:var(--pb-section);margin:20px 0 8px;border-top:1px solid var(--pb-line);padding-top:12px}
.badge{display:inline-block;padding:2px 8px;border-radius:5px;color:var(--pb-chip-fg);font-weight:600;font-size:14px;white-space:nowrap;background:var(--pb-other)}
.badge.ok{background:var(--pb-ok)}.badge.warn{background:var(--pb-warn)}.badge.bad{background:var(--pb-bad)}
.big .badge{font-size:18px;padding:2px 12px}
table{border-collapse:collapse;width:100%}
td,th{padding:4px 8px;border-bottom:1px solid var(--pb-line);text-align:left;vertical-align:top;font-size:14px}
th{background:var(--pb-head);font-weight:600}
td time,td .badge{white-space:nowrap}
.err{overflow-wrap:anywhere}
.muted,.label{color:var(--pb-muted);font-size:13px}
.big{font-size:22px;font-weight:700}.big time{font-size:16px;font-weight:400}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(10em,1fr));gap:8px 20px}
.fig{min-width:0}
ul.nums{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:4px 6px}
ul.nums li{background:var(--pb-chip);border-radius:5px;padding:1px 8px;font-size:14px;font-variant-numeric:tabular-nums}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(22em,100%),1fr));gap:12px 24px}
.chart{margin:0;min-width:0}
.chart figcaption{font-size:14px;font-weight:600}.chart figcaption span{font-weight:400;margin-left:8px;white-space:nowrap}
.plot{display:flex;gap:4px}
.plot svg{flex:1;min-width:0;height:88px;display:block;overflow:visible}
.yl{display:flex;flex-direction:column;justify-content:space-between;text-align:right;min-width:3.2em}
.yl,.xl{font-size:12px;color:var(--pb-muted);font-variant-numeric:tabular-nums}
.xl{display:flex;justify-content:space-between;margin-left:calc(3.2em + 4px)}
td.br{display:none}
@media (max-width:40em){
body{padding:8px 10px 20px}
table.stack,table.stack tbody{display:block;width:100%}
table.stack thead{display:none}
table.stack tr{display:flex;flex-wrap:wrap;align-items:flex-end;gap:4px 18px;border-bottom:1px solid var(--pb-line);padding:8px 0}
table.stack td{display:block;border:0;padding:0;min-width:0}
table.stack td::before{content:attr(data-label);display:block;color:var(--pb-muted);font-size:12px}
table.stack td.head::before{content:none}
table.stack td.head:first-child{font-weight:700;font-size:16px}
table.stack td.br{display:block;flex-basis:100%;height:0}
table.stack td.wide{flex-basis:100%;order:1;font-weight:400;font-size:14px}
table.stack td.none{display:none}
}`

// HTML renders the page. Every value from the daemon is escaped; times
// are said relative to the instant the documents were read (Data.Now,
// else the check document's own timestamp).
func HTML(d Data) string {
	w := &writer{}
	if t, err := time.Parse(time.RFC3339, d.Now); err == nil {
		w.ref = t
	} else {
		w.ref = d.Check.Timestamp.Time
	}
	w.raw(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Phonebook</title><style>` + style + "</style></head><body>\n<h1>Phonebook</h1>\n")
	if !d.Running {
		w.raw("<p>")
		w.badge("not running")
		w.raw("</p><p>")
		w.val(errOf(d.Error))
		w.raw("</p>")
	} else {
		w.body(d)
	}
	w.raw(`<p class="muted">Read from the daemon at `)
	if !w.ref.IsZero() {
		iso := w.ref.UTC().Format(time.RFC3339)
		fmt.Fprintf(&w.b, `<time datetime="%s" title="%s">%s</time>`, iso, iso, w.ref.UTC().Format("Jan 2 15:04:05 UTC"))
	}
	w.raw(" · ubus call phonebook.health check</p>\n</body></html>\n")
	return w.b.String()
}

// notAnswering is the monitor's list of phones whose last probe went
// unanswered (phonebook status monitor.phones): the numbers listed (at
// most monitor.MaxListed) and how many there are in all.
func notAnswering(status *metrics.Services) (numbers []string, total int64) {
	if status == nil {
		return nil, 0
	}
	p := status.Monitor.Phones
	return p.NotAnsweringNumbers, max(int64(len(p.NotAnsweringNumbers)), int64(p.NotAnsweringNumbersTotal))
}

// numbersHTML lists phone numbers as chips, saying how many more there
// are than the document lists.
func numbersHTML(numbers []string, total int64) string {
	var b strings.Builder
	b.WriteString(`<ul class="nums">`)
	for _, n := range numbers {
		b.WriteString("<li>" + html.EscapeString(n) + "</li>")
	}
	b.WriteString("</ul>")
	if more := total - int64(len(numbers)); more > 0 {
		fmt.Fprintf(&b, `<div class="muted">and %d more (ubus call phonebook status: monitor.phones)</div>`, more)
	}
	return b.String()
}

func (w *writer) body(d Data) {
	w.raw(`<div class="grid"><div class="fig"><div class="label">Status</div><div class="big">`)
	w.badge(d.Check.Status)
	w.raw("</div></div>")
	w.cell("Health score", d.Check.HealthScore, "")
	var up any
	if d.Check.UptimeSeconds != nil {
		up = durationText(time.Duration(*d.Check.UptimeSeconds) * time.Second)
	}
	w.cell("Up", up, "")
	w.cell("Restarts (this boot)", d.Health.RestartCount, "")
	w.cell("Crashes (24 h)", d.Health.CrashCount24h, "")
	w.raw("</div>\n<h2>Alerts</h2>\n")
	numbers, total := notAnswering(d.Status)
	if len(d.Check.Alerts) == 0 {
		w.raw(`<p class="muted">None.</p>`)
	} else {
		var rows [][]any
		for _, a := range d.Check.Alerts {
			msg := any(errOf(a.Message))
			if a.Code == "phones_unreachable" && len(numbers) > 0 {
				msg = rawHTML(`<div class="err">` + html.EscapeString(tidy(a.Message)) + "</div>" + numbersHTML(numbers, total))
			}
			rows = append(rows, []any{a.Level, msg, a.Since})
		}
		w.table(tableShape{class: "alerts", badgeCol: 0, heads: 1, wide: 1, bare: true}, []string{"Level", "Message", "Since"}, rows)
	}
	if recs := d.Check.Recommendations; len(recs) > 0 {
		w.raw("<h2>Recommendations</h2><ul>")
		for _, r := range recs {
			w.raw("<li>")
			w.esc(r)
			w.raw("</li>")
		}
		w.raw("</ul>\n")
	}
	w.raw("<h2>Workers</h2>\n")
	var rows [][]any
	for _, wk := range d.Workers {
		rows = append(rows, []any{wk.Name, wk.Status, wk.LastHeartbeat, wk.RestartCount, wk.CPUPct, wk.Goroutines, errText{wk.LastError}})
	}
	w.table(tableShape{class: "workers", badgeCol: 1, heads: 2, wide: 6}, []string{"Worker", "Status", "Last heartbeat", "Restarts", "CPU %", "Goroutines", "Last error"}, rows)
	w.raw(`<h2>Memory and descriptors</h2><div class="grid">`)
	if m := d.Health.Memory; m != nil {
		w.cell("RSS", m.RSSMB, " MB")
		w.cell("Private", m.RSSAnonMB, " MB")
		if m.HeapMB != nil {
			w.cell("Live heap", m.HeapMB, " MB")
		} else { // no garbage collection yet
			w.cell("Heap objects", m.HeapObjectsMB, " MB")
		}
		leak := "no"
		if m.LeakDetected {
			leak = "yes"
		}
		w.cell("Leak detected", leak, "")
	}
	if fd := d.Health.FileDescriptors; fd != nil {
		w.cell("Open files", fd.Open, fmt.Sprintf(" / %d", fd.Max))
	}
	w.raw("</div>\n")
	if st := d.Status; st != nil {
		w.raw(`<h2>Phones</h2><div class="grid">`)
		w.cell("Registered", st.SIP.RegisteredUsers, "")
		w.cell("Active calls", st.SIP.ActiveCalls, "")
		w.cell("Probed", st.Monitor.Phones.Probed, "")
		w.cell("Not answering", st.Monitor.Phones.NotAnswering, "")
		w.raw("</div>\n")
		if len(numbers) > 0 {
			w.raw(`<div class="label">Not answering their last SIP OPTIONS probe</div>` + numbersHTML(numbers, total) + "\n")
		}
	}
	if d.Status != nil {
		dir := &d.Status.Directory
		w.raw(`<h2>Directory</h2><div class="grid">`)
		w.cell("Entries", dir.Entries, "")
		w.cell("Skipped rows", dir.BadRows, "")
		w.cell("Last fetch", dir.LastSuccess, "")
		w.raw(`</div><div class="label">Source</div><div class="err">`)
		w.esc(dir.Source)
		w.raw("</div>\n")
	}
	w.raw("<h2>Last 24 hours</h2>\n")
	w.raw(History(d.History))
	w.raw("<h2>Recent crashes</h2>\n")
	if len(d.Crashes) == 0 {
		w.raw(`<p class="muted">None recorded.</p>`)
	} else {
		var rows [][]any
		for _, c := range d.Crashes {
			rows = append(rows, []any{c.Time, c.Kind, c.Worker, errOf(c.Reason), c.Count})
		}
		w.table(tableShape{class: "crashes", badgeCol: -1, wide: 3}, []string{"Time", "Kind", "Worker", "Reason", "Count"}, rows)
	}
}

// Render writes the page as a CGI response.
func Render(out io.Writer, d Data) error {
	_, err := io.WriteString(out, "Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n\r\n"+HTML(d))
	return err
}
