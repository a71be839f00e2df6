// Package page renders the AREDN app launcher's phonebook page: what an
// operator reads at a glance (status, score, workers, alerts, recent
// crashes, directory figures), from the daemon's own ubus documents. It is
// served as CGI by /www/cgi-bin/apps/phonebook/user.
package page

import (
	"context"
	"fmt"
	"html/template"
	"io"
	"sort"
	"sync"
	"time"

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

// Data is what the page shows.
type Data struct {
	Running bool
	Error   string
	Check   map[string]any
	Health  map[string]any
	Status  map[string]any
	Crashes []any
	Workers []Worker
	Now     string
}

// Worker is one row of the workers table.
type Worker struct {
	Name string
	Info map[string]any
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
	get := func(obj, method string) (map[string]any, error) {
		r, err := c.Call(ctx, obj, method, nil)
		if err != nil {
			return nil, err
		}
		if len(r) == 0 {
			return map[string]any{}, nil
		}
		return ToGo(r[0]), nil
	}
	if d.Check, err = get("phonebook.health", "check"); err != nil {
		d.Error = "phonebookd is not running (" + err.Error() + ")"
		return d
	}
	d.Running = true
	d.Health, _ = get("phonebook.health", "status")
	d.Status, _ = get("phonebook", "status")
	if cr, err := get("phonebook.health", "crashes"); err == nil {
		d.Crashes, _ = cr["crashes"].([]any)
		if len(d.Crashes) > 5 {
			d.Crashes = d.Crashes[:5]
		}
	}
	if th, ok := d.Health["threads"].(map[string]any); ok {
		for name, info := range th {
			m, _ := info.(map[string]any)
			d.Workers = append(d.Workers, Worker{Name: name, Info: m})
		}
		sort.Slice(d.Workers, func(i, j int) bool { return d.Workers[i].Name < d.Workers[j].Name })
	}
	return d
}

// tmpl is parsed on first use, not at process start (start-up time is the
// window in which a SIGTERM cannot yet be handled).
var tmpl = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("page").Funcs(template.FuncMap{
		"color": func(s any) string {
			switch s {
			case "healthy":
				return "#2e7d32"
			case "degraded", "restarting", "warning":
				return "#ef6c00"
			case "critical", "failed", "unresponsive":
				return "#c62828"
			}
			return "#616161"
		},
		"num": func(v any) string {
			switch x := v.(type) {
			case float64:
				return fmt.Sprintf("%.1f", x)
			case int64:
				return fmt.Sprint(x)
			case nil:
				return "–"
			}
			return fmt.Sprint(v)
		},
	}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Phonebook</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.2em;color:#212121;max-width:60em}
h1{font-size:1.4em;margin:0 0 .4em}h2{font-size:1.1em;margin:1.2em 0 .4em}
.badge{display:inline-block;padding:.2em .7em;border-radius:1em;color:#fff;font-weight:600}
table{border-collapse:collapse;width:100%}td,th{padding:.25em .5em;border-bottom:1px solid #e0e0e0;text-align:left;font-size:.92em}
th{background:#f5f5f5}.muted{color:#757575}.big{font-size:2em;font-weight:700}
.grid{display:flex;gap:2em;flex-wrap:wrap}.grid div{min-width:9em}
</style></head><body>
<h1>Phonebook</h1>
{{if not .Running}}
<p><span class="badge" style="background:#c62828">not running</span></p><p>{{.Error}}</p>
{{else}}
<div class="grid">
<div><div class="muted">Status</div><span class="badge" style="background:{{color .Check.status}}">{{.Check.status}}</span></div>
<div><div class="muted">Health score</div><div class="big">{{num .Check.health_score}}</div></div>
<div><div class="muted">Up</div><div>{{.Check.uptime_seconds}} s</div></div>
<div><div class="muted">Restarts (this boot)</div><div>{{.Health.restart_count}}</div></div>
<div><div class="muted">Crashes (24 h)</div><div>{{.Health.crash_count_24h}}</div></div>
</div>
<h2>Alerts</h2>
{{with .Check.alerts}}<table><tr><th>Level</th><th>Message</th><th>Since</th></tr>
{{range .}}<tr><td><span class="badge" style="background:{{color .level}}">{{.level}}</span></td><td>{{.message}}</td><td>{{.since}}</td></tr>{{end}}</table>
{{else}}<p class="muted">None.</p>{{end}}
{{with .Check.recommendations}}<h2>Recommendations</h2><ul>{{range .}}<li>{{.}}</li>{{end}}</ul>{{end}}
<h2>Workers</h2>
<table><tr><th>Worker</th><th>Status</th><th>Last heartbeat</th><th>Restarts</th><th>CPU %</th><th>Goroutines</th><th>Last error</th></tr>
{{range .Workers}}<tr><td>{{.Name}}</td><td><span class="badge" style="background:{{color .Info.status}}">{{.Info.status}}</span></td><td>{{.Info.last_heartbeat}}</td><td>{{.Info.restart_count}}</td><td>{{num .Info.cpu_pct}}</td><td>{{.Info.goroutines}}</td><td>{{.Info.last_error}}</td></tr>{{end}}
</table>
<h2>Memory and descriptors</h2>
<div class="grid">
<div><div class="muted">RSS</div><div>{{num .Health.memory.rss_mb}} MB</div></div>
<div><div class="muted">Live heap</div><div>{{num .Health.memory.heap_mb}} MB</div></div>
<div><div class="muted">Leak detected</div><div>{{.Health.memory.leak_detected}}</div></div>
<div><div class="muted">Open files</div><div>{{.Health.file_descriptors.open}} / {{.Health.file_descriptors.max}}</div></div>
</div>
{{with .Status.sip}}<h2>SIP</h2><div class="grid">
<div><div class="muted">Registered phones</div><div class="big">{{.registered_users}}</div></div>
<div><div class="muted">Active calls</div><div class="big">{{.active_calls}}</div></div>
</div>{{end}}
{{with .Status.directory}}<h2>Directory</h2><div class="grid">
<div><div class="muted">Entries</div><div class="big">{{.entries}}</div></div>
<div><div class="muted">Last fetch</div><div>{{.last_success}}</div></div>
<div><div class="muted">Skipped rows</div><div>{{.bad_rows}}</div></div>
<div><div class="muted">Source</div><div>{{.source}}</div></div>
</div>{{end}}
<h2>Recent crashes</h2>
{{with .Crashes}}<table><tr><th>Time</th><th>Kind</th><th>Worker</th><th>Reason</th><th>Count</th></tr>
{{range .}}<tr><td>{{.time}}</td><td>{{.kind}}</td><td>{{.worker}}</td><td>{{.reason}}</td><td>{{.count}}</td></tr>{{end}}</table>
{{else}}<p class="muted">None recorded.</p>{{end}}
{{end}}
<p class="muted">{{.Now}} · ubus call phonebook.health check</p>
</body></html>
`))
})

// Render writes the page as a CGI response.
func Render(w io.Writer, d Data) error {
	if _, err := io.WriteString(w, "Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n\r\n"); err != nil {
		return err
	}
	return tmpl().Execute(w, d)
}
