// Package page renders the AREDN app launcher's phonebook page: what an
// operator reads at a glance (status, score, workers, alerts, recent
// crashes, directory figures), from the daemon's own ubus documents. It is
// served as CGI by /www/cgi-bin/apps/phonebook/user.
package page

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/ubus"
)

// ToGo turns a blobmsg table body into plain Go values for templates.
func ToGo(vs []ubus.Value) map[string]any {
	m := make(map[string]any, len(vs))
	for _, v := range vs {
		m[v.Name] = value(v)
	}
	return m
}

func value(v ubus.Value) any {
	switch v.Kind {
	case ubus.Table:
		return ToGo(v.List)
	case ubus.Array:
		l := make([]any, len(v.List))
		for i, it := range v.List {
			l[i] = value(it)
		}
		return l
	case ubus.String:
		return v.Str
	case ubus.Int8:
		return v.Int != 0
	case ubus.Int16, ubus.Int32, ubus.Int64:
		return v.Int
	case ubus.Double:
		return v.Float
	}
	return nil
}

// Data is what the page shows: the daemon's own documents, as their Go
// types, and the status document (directory, SIP) as decoded values.
type Data struct {
	Running bool
	Error   string
	Check   health.Check
	Health  health.SoftwareHealth
	Status  map[string]any
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
// CLI would print.
func decode(vs []ubus.Value, doc any) error {
	return json.Unmarshal([]byte(ubus.FormatJSON(vs, false, -1)), doc)
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
	if r, err := c.Call(ctx, "phonebook", "status", nil); err == nil && len(r) > 0 {
		d.Status = ToGo(r[0])
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
	return d
}

func color(s any) string {
	switch s {
	case "healthy":
		return "#2e7d32"
	case "degraded", "restarting", "warning":
		return "#ef6c00"
	case "critical", "failed", "unresponsive":
		return "#c62828"
	}
	return "#616161"
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

type writer struct{ b strings.Builder }

func (w *writer) raw(s string) { w.b.WriteString(s) }
func (w *writer) esc(v any)    { w.b.WriteString(html.EscapeString(text(v))) }
func (w *writer) badge(s any) {
	fmt.Fprintf(&w.b, `<span class="badge" style="background:%s">`, color(s))
	w.esc(s)
	w.raw("</span>")
}
func (w *writer) cell(label string, v any, unit string) {
	w.raw(`<div><div class="muted">` + html.EscapeString(label) + `</div><div class="big">`)
	w.esc(v)
	if !isNull(v) {
		w.raw(unit)
	}
	w.raw("</div></div>")
}

func (w *writer) table(head []string, rows [][]any, badgeCol int) {
	w.raw("<table><tr>")
	for _, h := range head {
		w.raw("<th>" + html.EscapeString(h) + "</th>")
	}
	w.raw("</tr>")
	for _, r := range rows {
		w.raw("<tr>")
		for i, c := range r {
			w.raw("<td>")
			if i == badgeCol {
				w.badge(c)
			} else {
				w.esc(c)
			}
			w.raw("</td>")
		}
		w.raw("</tr>\n")
	}
	w.raw("</table>\n")
}

const style = `body{font-family:system-ui,sans-serif;margin:1.2em;color:#212121;max-width:60em}
h1{font-size:1.4em;margin:0 0 .4em}h2{font-size:1.1em;margin:1.2em 0 .4em}
.badge{display:inline-block;padding:.15em .7em;border-radius:1em;color:#fff;font-weight:600}
table{border-collapse:collapse;width:100%}td,th{padding:.25em .5em;border-bottom:1px solid #e0e0e0;text-align:left;font-size:.92em}
th{background:#f5f5f5}.muted{color:#757575;font-size:.85em}.big{font-size:1.6em;font-weight:700}
.grid{display:flex;gap:2em;flex-wrap:wrap}.grid div{min-width:8em}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(22em,1fr));gap:.6em 1.5em}
.chart{margin:0}.chart figcaption{font-size:.85em;font-weight:600}.chart figcaption span{font-weight:400;margin-left:.6em}.chart svg{width:100%;height:auto;display:block}
@media (prefers-color-scheme:dark){body{background:#121212;color:#e0e0e0}th{background:#1e1e1e}td,th{border-color:#333}.muted{color:#9e9e9e}}`

// HTML renders the page. Every value from the daemon is escaped.
func HTML(d Data) string {
	w := &writer{}
	w.raw(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Phonebook</title><style>` + style + "</style></head><body>\n<h1>Phonebook</h1>\n")
	if !d.Running {
		w.raw("<p>")
		w.badge("not running")
		w.raw("</p><p>")
		w.esc(d.Error)
		w.raw("</p>")
	} else {
		w.raw(`<div class="grid"><div><div class="muted">Status</div><div class="big">`)
		w.badge(d.Check.Status)
		w.raw("</div></div>")
		w.cell("Health score", d.Check.HealthScore, "")
		w.cell("Up", d.Check.UptimeSeconds, " s")
		w.cell("Restarts (this boot)", d.Health.RestartCount, "")
		w.cell("Crashes (24 h)", d.Health.CrashCount24h, "")
		w.raw("</div>\n<h2>Alerts</h2>\n")
		if len(d.Check.Alerts) == 0 {
			w.raw(`<p class="muted">None.</p>`)
		} else {
			var rows [][]any
			for _, a := range d.Check.Alerts {
				rows = append(rows, []any{a.Level, a.Message, a.Since})
			}
			w.table([]string{"Level", "Message", "Since"}, rows, 0)
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
			rows = append(rows, []any{wk.Name, wk.Status, wk.LastHeartbeat, wk.RestartCount, wk.CPUPct, wk.Goroutines, wk.LastError})
		}
		w.table([]string{"Worker", "Status", "Last heartbeat", "Restarts", "CPU %", "Goroutines", "Last error"}, rows, 1)
		w.raw(`<h2>Memory and descriptors</h2><div class="grid">`)
		if m := d.Health.Memory; m != nil {
			w.cell("RSS", m.RSSMB, " MB")
			w.cell("Private", m.RSSAnonMB, " MB")
			if m.HeapMB != nil {
				w.cell("Live heap", m.HeapMB, " MB")
			} else { // no garbage collection yet
				w.cell("Heap objects", m.HeapObjectsMB, " MB")
			}
			w.cell("Leak detected", m.LeakDetected, "")
		}
		if fd := d.Health.FileDescriptors; fd != nil {
			w.cell("Open files", fd.Open, fmt.Sprintf(" / %d", fd.Max))
		}
		w.raw("</div>\n")
		if sip, ok := d.Status["sip"].(map[string]any); ok {
			w.raw(`<h2>SIP</h2><div class="grid">`)
			w.cell("Registered phones", sip["registered_users"], "")
			w.cell("Active calls", sip["active_calls"], "")
			w.raw("</div>\n")
		}
		if dir, ok := d.Status["directory"].(map[string]any); ok {
			w.raw(`<h2>Directory</h2><div class="grid">`)
			w.cell("Entries", dir["entries"], "")
			w.cell("Skipped rows", dir["bad_rows"], "")
			w.raw(`<div><div class="muted">Last fetch</div><div>`)
			w.esc(dir["last_success"])
			w.raw(`</div></div><div><div class="muted">Source</div><div>`)
			w.esc(dir["source"])
			w.raw("</div></div></div>\n")
		}
		w.raw("<h2>Last 24 hours</h2>\n")
		w.raw(History(d.History))
		w.raw("<h2>Recent crashes</h2>\n")
		if len(d.Crashes) == 0 {
			w.raw(`<p class="muted">None recorded.</p>`)
		} else {
			var rows [][]any
			for _, c := range d.Crashes {
				rows = append(rows, []any{c.Time, c.Kind, c.Worker, c.Reason, c.Count})
			}
			w.table([]string{"Time", "Kind", "Worker", "Reason", "Count"}, rows, -1)
		}
	}
	w.raw(`<p class="muted">`)
	w.esc(d.Now)
	w.raw(" · ubus call phonebook.health check</p>\n</body></html>\n")
	return w.b.String()
}

// Render writes the page as a CGI response.
func Render(out io.Writer, d Data) error {
	_, err := io.WriteString(out, "Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n\r\n"+HTML(d))
	return err
}
