package page

import (
	"fmt"
	"github.com/aredn/phonebookd/directory"
	"github.com/aredn/phonebookd/metrics"
	"github.com/aredn/phonebookd/monitor"
	"github.com/aredn/phonebookd/sip"
	"html"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/health"
)

func TestHTMLEscapesDaemonText(t *testing.T) {
	score, lastErr := 95.0, `"><img src=x>`
	d := Data{Running: true, Now: "now",
		Check:   health.Check{Status: "degraded", HealthScore: &score, Alerts: []health.Notice{{Level: "warning", Message: "<script>alert(1)</script>"}}},
		Health:  health.SoftwareHealth{RestartCount: 1},
		Workers: []Worker{{Name: "fetcher", Thread: &health.Thread{Status: "healthy", LastError: &lastErr}}},
	}
	h := HTML(d)
	if strings.Contains(h, "<script>alert") || strings.Contains(h, `"><img`) {
		t.Fatalf("unescaped daemon text:\n%s", h)
	}
	for _, want := range []string{"95.0", "degraded", "&lt;script&gt;", "fetcher"} {
		if !strings.Contains(h, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if down := HTML(Data{Error: "phonebookd is not running"}); !strings.Contains(down, "not running") {
		t.Error("down page")
	}
}

// visibleText is the page's text as a browser shows it: no tags, no
// attributes (tooltips), no style sheet.
func visibleText(page string) string {
	page = regexp.MustCompile(`(?s)<style>.*?</style>|<title>.*?</title>`).ReplaceAllString(page, "")
	return html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(page, " "))
}

// TestTimesAreRelative: every time reads as "3 min ago", seen from the
// instant the documents were read, with the ISO time in the tooltip; no
// raw ISO time is shown.
func TestTimesAreRelative(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) health.Time { return health.Time{Time: now.Add(-d)} }
	reason := "panic: x"
	d := Data{Running: true, Now: now.Format(time.RFC3339),
		Check:   health.Check{Status: "healthy", Timestamp: at(0), Alerts: []health.Notice{{Level: "warning", Message: "m", Since: at(2*time.Hour + 5*time.Minute)}}},
		Workers: []Worker{{Name: "main", Thread: &health.Thread{Status: "healthy", LastHeartbeat: at(3*time.Minute + 20*time.Second)}}},
		Crashes: []health.CrashRecord{{Time: at(50 * time.Hour), Kind: "panic", Reason: reason, Count: 1}},
		Status:  &metrics.Services{Directory: directory.Status{LastSuccess: at(45 * time.Second)}},
	}
	page := HTML(d)
	for _, want := range []struct {
		ago time.Duration
		say string
	}{{3*time.Minute + 20*time.Second, "3 min ago"}, {2*time.Hour + 5*time.Minute, "2 h 5 min ago"}, {50 * time.Hour, "2 d 2 h ago"}, {45 * time.Second, "45 s ago"}} {
		iso := now.Add(-want.ago).Format(time.RFC3339)
		if tag := `<time datetime="` + iso + `" title="` + iso + `">` + want.say + `</time>`; !strings.Contains(page, tag) {
			t.Errorf("page lacks %s", tag)
		}
	}
	if iso := regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d`).FindString(visibleText(page)); iso != "" {
		t.Errorf("a raw ISO time is shown: %s", iso)
	}
	// Without the reading instant, the check document's own timestamp.
	d.Now = ""
	if !strings.Contains(HTML(d), ">3 min ago</time>") {
		t.Error("times not relative to the check document's timestamp")
	}
}

func TestAgo(t *testing.T) {
	ref := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		0: "now", 500 * time.Millisecond: "now", 59 * time.Second: "59 s ago", time.Minute: "1 min ago",
		time.Hour: "1 h ago", 26 * time.Hour: "1 d 2 h ago", 48 * time.Hour: "2 d ago", -5 * time.Second: "in 5 s",
	} {
		if got := ago(ref, ref.Add(-d)); got != want {
			t.Errorf("ago(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestErrorTextSaidOnce: an error whose wrapping layers repeat their
// context is shown with each part once, wherever it appears.
func TestErrorTextSaidOnce(t *testing.T) {
	for in, want := range map[string]string{
		"sip: listen udp 127.0.0.1:5060: listen udp 127.0.0.1:5060: bind: listen udp: address already in use": "sip: listen udp 127.0.0.1:5060: bind: address already in use",
		"listen udp [::]:5060: listen udp [::]:5060: bind: address already in use":                            "listen udp [::]:5060: bind: address already in use",
		"dial tcp 10.0.0.1:80: connect: connection refused":                                                   "dial tcp 10.0.0.1:80: connect: connection refused",
		"panic: runtime error: index out of range":                                                            "panic: runtime error: index out of range",
		"timeout: timeout":         "timeout",
		"read: read":               "read",
		"fetch: fetch http://x: 5": "fetch: fetch http://x: 5",
	} {
		if got := tidy(in); got != want {
			t.Errorf("tidy(%q) = %q, want %q", in, got, want)
		}
	}
	doubled := "sip: listen udp 127.0.0.1:5060: listen udp 127.0.0.1:5060: bind: listen udp: address already in use"
	c := health.ConditionOf(health.WorkerBlocked, "main", health.Args{health.ArgError: doubled})
	d := Data{Running: true, Now: "2026-11-28T12:00:00Z",
		Check:   health.Check{Status: "critical", Alerts: []health.Notice{{Level: c.Level, Code: c.Code, Message: c.Message}}},
		Workers: []Worker{{Name: "main", Thread: &health.Thread{Status: "blocked", LastError: &doubled}}},
		Crashes: []health.CrashRecord{{Kind: "panic", Reason: doubled, Count: 1}},
	}
	text := visibleText(HTML(d))
	if n := strings.Count(text, "listen udp"); n != 3 {
		t.Errorf(`"listen udp" shown %d times, want once in each of the alert, the worker and the crash:\n%s`, n, text)
	}
	if !strings.Contains(text, "Worker main cannot run: sip: listen udp 127.0.0.1:5060: bind: address already in use") {
		t.Errorf("alert text:\n%s", text)
	}
	if down := visibleText(HTML(Data{Error: "ubus is not reachable: dial unix /x: dial unix /x: connect: no such file"})); strings.Count(down, "dial unix") != 1 {
		t.Errorf("down page: %s", down)
	}
}

// TestPhonesNotAnsweringListed: the numbers of the phones that do not
// answer (phonebook status monitor.phones) are listed under Phones and
// with the phones_unreachable alert, with how many more there are.
func TestPhonesNotAnsweringListed(t *testing.T) {
	var listed []string
	for i := 0; i < 16; i++ {
		listed = append(listed, fmt.Sprintf("%d", 3000+i))
	}
	c := health.ConditionOf(health.PhonesUnreachable, "", health.Args{health.ArgCount: "20", health.ArgTotal: "30", health.ArgDetail: "3000, 3001, 3002 and 17 more"})
	d := Data{Running: true, Now: "2026-11-28T12:00:00Z",
		Check: health.Check{Status: "degraded", Alerts: []health.Notice{{Level: c.Level, Code: c.Code, Message: c.Message}}},
		Status: &metrics.Services{SIP: sip.Status{RegisteredUsers: 30},
			Monitor: monitor.Status{Phones: monitor.PhonesStatus{Probed: 30, NotAnswering: 20, NotAnsweringNumbers: listed, NotAnsweringNumbersTotal: 20}}},
	}
	page := HTML(d)
	for _, n := range listed {
		if c := strings.Count(page, "<li>"+n+"</li>"); c != 2 {
			t.Errorf("number %s listed %d times, want under Phones and in the alert", n, c)
		}
	}
	if c := strings.Count(page, "and 4 more"); c != 2 {
		t.Errorf(`"and 4 more" shown %d times, want 2`, c)
	}
	// An unrelated alert gets no list; no list without numbers.
	d.Check.Alerts[0].Code = "other"
	if c := strings.Count(HTML(d), "<li>3000</li>"); c != 1 {
		t.Errorf("number listed %d times with no phones alert, want 1", c)
	}
	d.Status.Monitor.Phones = monitor.PhonesStatus{Probed: 30, NotAnsweringNumbers: []string{}}
	if strings.Contains(HTML(d), `class="nums"`) {
		t.Error("a list with no phone in it")
	}
}

// TestChartLabelsAreHTML: the charts' value and time labels are HTML at
// 12 px beside the plot, not SVG text that shrinks with it (measured in
// a browser by TestPageInABrowser).
func TestChartLabelsAreHTML(t *testing.T) {
	one := 1.0
	svg := chart("x", " MB", []int64{0, 60, 120}, nil, series{"s", "#000", []*float64{&one, &one, &one}})
	if strings.Contains(svg, "<text") {
		t.Errorf("SVG text in a chart:\n%s", svg)
	}
	for _, want := range []string{`<div class="yl"><span>1 MB</span><span>0 MB</span></div>`, `<div class="xl"><time datetime="1970-01-01T00:00:00Z">Jan 1 00:00 UTC</time>`} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %s:\n%s", want, svg)
		}
	}
	if !regexp.MustCompile(`\.yl,\.xl\{font-size:1[2-9]px`).MatchString(style) {
		t.Error("chart labels under 12 px in the style sheet")
	}
}
