package page

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/jsonread"
	"github.com/aredn/phonebookd/ubus"
	"github.com/aredn/phonebookd/uci"
)

// HealthcheckOptions say where the daemon and its settings are.
type HealthcheckOptions struct {
	Socket  string // ubusd
	Store   uci.Store
	Timeout time.Duration
	Now     func() time.Time
}

// Healthcheck writes /cgi-bin/healthcheck's response: the daemon's
// healthcheck document, 200 unless its status is critical (503); when the
// daemon cannot be asked, a document with every field of the
// specification, status critical and an alert saying why; 404 when
// phonebook.health.health_endpoint is 0. The request is never read.
func Healthcheck(w io.Writer, opt HealthcheckOptions) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Timeout == 0 {
		opt.Timeout = 5 * time.Second
	}
	if cfg, _ := config.LoadStore(opt.Store, nil); !cfg.Health.HealthEndpoint {
		reply(w, "404 Not Found", []byte(`{"error": "the health endpoint is disabled (phonebook.health.health_endpoint)"}`))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opt.Timeout)
	defer cancel()
	doc, err := askCheck(ctx, opt.Socket)
	if err != nil {
		reply(w, "503 Service Unavailable", DownDocument(opt.Now(), err))
		return
	}
	var parsed struct {
		Status string `json:"status"`
	}
	if err := jsonread.Unmarshal(doc, &parsed); err != nil || parsed.Status == "" {
		reply(w, "503 Service Unavailable", DownDocument(opt.Now(), fmt.Errorf("unreadable answer from phonebookd")))
		return
	}
	status := "200 OK"
	if parsed.Status == "critical" {
		status = "503 Service Unavailable"
	}
	reply(w, status, doc)
}

func askCheck(ctx context.Context, socket string) ([]byte, error) {
	c, err := ubus.Dial(ctx, socket, nil)
	if err != nil {
		return nil, fmt.Errorf("ubus is not reachable: %w", err)
	}
	defer c.Close()
	r, err := c.Call(ctx, "phonebook.health", "check", nil)
	if err != nil {
		return nil, fmt.Errorf("phonebookd is not running (phonebook.health check: %w)", err)
	}
	if len(r) == 0 {
		return nil, fmt.Errorf("phonebookd sent no document")
	}
	// The document's own type, written by encoding/json as every
	// document that is not on ubus is.
	var doc health.Check
	if err := decode(r[0], &doc); err != nil {
		return nil, fmt.Errorf("phonebookd sent an unreadable document: %w", err)
	}
	return checkJSON(doc), nil
}

// DownDocument is the healthcheck document when the daemon cannot be
// asked: every field of the specification, with null where nothing can
// be known without the daemon.
func DownDocument(now time.Time, why error) []byte {
	// The registry's daemon_down writes the alert; the score and status
	// follow from it by the formula of docs/HEALTH.md.
	c := health.ConditionOf(health.DaemonDown, "", health.Args{health.ArgError: why.Error()})
	score, status := health.Score([]health.Condition{c})
	f, s := false, float64(score)
	doc := health.Check{
		Status: status, Timestamp: health.Time{Time: now}, HealthScore: &s,
		// Only what is known without the daemon: its workers are not
		// responding. The rest is unknown (null), not guessed; the
		// daemon's uptime too (it is not running).
		Checks:          &health.Checks{ThreadsResponsive: &f},
		Alerts:          []health.Notice{{Level: c.Level, Code: c.Code, Since: health.Time{Time: now}, Message: c.Message}},
		Recommendations: []string{c.Recommendation},
	}
	return checkJSON(doc)
}

// checkJSON is the healthcheck document as the CGI sends it: indented
// with tabs, texts as they are.
func checkJSON(doc health.Check) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "\t")
	enc.SetEscapeHTML(false)
	enc.Encode(doc) // cannot fail: every figure of the document is finite
	return bytes.TrimSpace(b.Bytes())
}

func reply(w io.Writer, status string, body []byte) {
	fmt.Fprintf(w, "Status: %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n\r\n%s\n", status, body)
}
