package page

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/aredn/phonebookd/directory"
	"github.com/aredn/phonebookd/metrics"
	"github.com/aredn/phonebookd/monitor"
	"github.com/aredn/phonebookd/sip"
	"html"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/health"
)

// The app page in a real browser: headless Chromium (Debian package
// chromium; scripts/setup.sh installs it) lays the page out at phone and
// desktop widths, in the light and the dark scheme. The test fails when
// the page is wider than the screen, when any text is drawn under 11 px,
// or when the page asks for anything but itself. It takes the
// screenshots of docs/ (PAGE_SCREENSHOTS=docs, scripts/app-page-screenshot.sh).
//
// Headless Chromium does not make a window narrower than 500 px, so the
// page is laid out in an iframe of the exact width, served with its probe
// from a local HTTP server (same origin: the probe reads the frame).

// chromium finds the browser; the test fails without it, so that a CI
// without it cannot pass silently.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found (Debian package chromium; scripts/setup.sh installs it)")
	return ""
}

// runChromium runs one headless Chromium on url with the window size and
// colour scheme given, plus extra flags, and returns its standard output.
func runChromium(t *testing.T, bin, url string, w, h int, dark bool, extra ...string) []byte {
	t.Helper()
	scheme := "1" // blink's preferredColorScheme: 0 dark, 1 light
	if dark {
		scheme = "0"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--user-data-dir=" + t.TempDir(), "--hide-scrollbars", "--force-color-profile=srgb", "--force-device-scale-factor=1",
		"--blink-settings=preferredColorScheme=" + scheme, fmt.Sprintf("--window-size=%d,%d", w, h)}, extra...)
	args = append(args, url)
	cmd := exec.CommandContext(ctx, bin, args...)
	start := time.Now()
	defer func() { t.Logf("chromium %dx%d %s: %v", w, h, url, time.Since(start).Round(time.Millisecond)) }()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr.Bytes())
	}
	return out
}

// layout is what the probe measures of the page in one frame.
type layout struct {
	Width    int      `json:"width"`  // the frame's width, CSS px
	Inner    int      `json:"inner"`  // the page's window.innerWidth
	Scroll   int      `json:"scroll"` // document.documentElement.scrollWidth
	Height   int      `json:"height"` // the page's height
	Wide     []string `json:"wide"`   // elements past the right edge
	MinFont  float64  `json:"minFont"`
	MinAt    string   `json:"minAt"`
	Dark     bool     `json:"dark"`
	Times    int      `json:"times"`    // <time> elements with the ISO time in a tooltip
	RawTimes int      `json:"rawTimes"` // visible texts that are raw ISO times
}

// probeJS measures every frame once the page has loaded: overflow
// (scrollWidth against innerWidth, and which elements stick out), the
// smallest text drawn (an SVG text's size times its scale on screen), and
// the times shown, and writes the result into the DOM for --dump-dom.
const probeJS = `
function measure(f) {
  const w = f.contentWindow, d = f.contentDocument, de = d.documentElement, iw = w.innerWidth;
  const wide = [];
  for (const el of d.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > iw + 0.5) {
      wide.push(el.tagName.toLowerCase() + (typeof el.className === 'string' && el.className ? '.' + el.className.trim().replace(/ +/g, '.') : '') + ' to ' + Math.round(r.right) + ' px: ' + (el.textContent || '').trim().slice(0, 40));
    }
  }
  let min = 1e9, minAt = '', rawTimes = 0;
  const walk = d.createTreeWalker(d.body, w.NodeFilter.SHOW_TEXT);
  for (let n; (n = walk.nextNode());) {
    const s = n.nodeValue.trim(), el = n.parentElement;
    if (!s || el.closest('title,style,script') || el.getClientRects().length === 0) continue;
    const cs = w.getComputedStyle(el);
    if (cs.visibility === 'hidden') continue;
    let px = parseFloat(cs.fontSize);
    if (el instanceof w.SVGElement) { const m = el.getScreenCTM(); if (m) px *= Math.abs(m.d); }
    if (px < min) { min = px; minAt = el.tagName.toLowerCase() + ': ' + s.slice(0, 40); }
    if (/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.test(s)) rawTimes++;
  }
  const times = d.querySelectorAll('time[title]').length;
  return {width: +f.dataset.w, inner: iw, scroll: de.scrollWidth, height: Math.ceil(de.getBoundingClientRect().height),
    wide: wide.slice(0, 6), minFont: min, minAt: minAt, dark: w.matchMedia('(prefers-color-scheme: dark)').matches,
    times: times, rawTimes: rawTimes};
}
window.addEventListener('load', () => {
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify([...document.querySelectorAll('iframe')].map(measure));
  document.body.appendChild(pre);
});
`

// pageServer serves the page at /page, frames of it at /frames and
// /shot, and records every other request.
type pageServer struct {
	*httptest.Server
	mu    sync.Mutex
	other []string
}

func newPageServer(t *testing.T, page string) *pageServer {
	s := &pageServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		switch r.URL.Path {
		case "/page":
			fmt.Fprint(w, page)
		case "/frames": // ?w=360&w=1280: one frame per width, and the probe
			fmt.Fprint(w, `<!DOCTYPE html><html><head><style>body{margin:0}iframe{border:0;display:block;height:3000px}</style></head><body>`)
			for _, wd := range r.URL.Query()["w"] {
				fmt.Fprintf(w, `<iframe src="/page" data-w="%s" style="width:%spx"></iframe>`, html.EscapeString(wd), html.EscapeString(wd))
			}
			// The probe's own check: a page that overflows, with small SVG text.
			fmt.Fprint(w, `<iframe src="/canary" data-w="360" style="width:360px"></iframe>`)
			fmt.Fprint(w, "<script>"+probeJS+"</script></body></html>")
		case "/canary":
			fmt.Fprint(w, canaryPage)
		case "/shot": // ?w=360&h=2000: one frame of that size at the top left
			q := r.URL.Query()
			fmt.Fprintf(w, `<!DOCTYPE html><html><head><style>body{margin:0}iframe{border:0;display:block}</style></head><body><iframe src="/page" style="width:%spx;height:%spx"></iframe></body></html>`,
				html.EscapeString(q.Get("w")), html.EscapeString(q.Get("h")))
		default:
			s.mu.Lock()
			s.other = append(s.other, r.URL.Path)
			s.mu.Unlock()
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// canaryPage is what the probe must find at 360 px: a table 700 px wide
// and 10-unit SVG text drawn at 5 px (as main's page had).
const canaryPage = `<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width, initial-scale=1"></head><body style="margin:0">` +
	`<table style="width:700px"><tr><td>wide</td></tr></table>` +
	`<svg viewBox="0 0 600 80" style="width:300px"><text x="10" y="20" font-size="10">small</text></svg></body></html>`

// probe lays the page out at each width in one browser and measures it;
// it checks itself on a page that overflows.
func probe(t *testing.T, bin, base string, dark bool, widths []int) []layout {
	t.Helper()
	q := make([]string, len(widths))
	wmax := 0
	for i, w := range widths {
		q[i] = fmt.Sprintf("w=%d", w)
		wmax += w
	}
	out := runChromium(t, bin, base+"/frames?"+strings.Join(q, "&"), wmax, 3000, dark, "--dump-dom")
	m := regexp.MustCompile(`<pre id="probe">([^<]*)</pre>`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("the probe wrote nothing; the browser's DOM:\n%.2000s", out)
	}
	var ls []layout
	if err := json.Unmarshal([]byte(html.UnescapeString(string(m[1]))), &ls); err != nil {
		t.Fatalf("probe result: %v: %s", err, m[1])
	}
	if len(ls) != len(widths)+1 {
		t.Fatalf("probe measured %d frames, want %d", len(ls), len(widths)+1)
	}
	if c := ls[len(widths)]; c.Scroll <= c.Inner || c.MinFont > 5.5 || c.MinFont < 4.5 || len(c.Wide) == 0 {
		t.Fatalf("the probe misses an overflow or small text: %+v", c)
	}
	return ls[:len(widths)]
}

// shot takes a screenshot of the page w px wide, h px high, and checks it
// is one: the size asked, a page drawn (many colours), the scheme's
// background at the top left corner.
func shot(t *testing.T, bin, base string, w, h int, dark bool, file string) {
	t.Helper()
	runChromium(t, bin, fmt.Sprintf("%s/shot?w=%d&h=%d", base, w, h), w, h, dark, "--screenshot="+file)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Errorf("%s is %dx%d, want %dx%d", file, b.Dx(), b.Dy(), w, h)
	}
	colours := map[[3]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 8, g >> 8, bl >> 8}] = true
		}
	}
	if len(colours) < 50 {
		t.Errorf("%s: %d colours, a blank page?", file, len(colours))
	}
	if l := luminance(img, image.Rect(0, 0, 8, 8)); dark && l > 80 || !dark && l < 200 {
		t.Errorf("%s: background luminance %d, not the %s scheme", file, l, map[bool]string{true: "dark", false: "light"}[dark])
	}
}

func luminance(img image.Image, r image.Rectangle) int {
	sum, n := 0, 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			sum += int((299*cr + 587*cg + 114*cb) / 1000 >> 8)
			n++
		}
	}
	return sum / n
}

// showcase is a node as an operator meets it: a day of real history
// (simulatedDay), workers with a past panic and a collector that refuses
// reports, phones that do not answer, a directory; every alert's text
// from the registry.
func showcase(t *testing.T) Data {
	d := simulatedDay(t)
	now, _ := time.Parse(time.RFC3339, d.Now)
	at := func(ago time.Duration) health.Time { return health.Time{Time: now.Add(-ago)} }
	f := func(v float64) *float64 { return &v }
	i32 := func(v int32) *int32 { return &v }
	s := func(v string) *string { return &v }
	panicked := "panic: runtime error: index out of range"
	refused := "reporter: post http://collector.local.mesh:8080/report: dial tcp 10.54.0.12:8080: connect: connection refused"
	d.Workers = []Worker{
		{"fetcher", &health.Thread{Status: "healthy", LastHeartbeat: at(41 * time.Second), RestartCount: 1, CPUPct: f(0.1), Goroutines: 1, LastError: &panicked}},
		{"main", &health.Thread{Status: "healthy", LastHeartbeat: at(2 * time.Second), CPUPct: f(0.6), Goroutines: 4}},
		{"monitor", &health.Thread{Status: "healthy", LastHeartbeat: at(12 * time.Second), CPUPct: f(0.2), Goroutines: 2}},
		{"reporter", &health.Thread{Status: "healthy", LastHeartbeat: at(3 * time.Minute), CPUPct: f(0), Goroutines: 1, LastError: s(refused)}},
		{"safety", &health.Thread{Status: "healthy", LastHeartbeat: at(7 * time.Second), CPUPct: nil, Goroutines: 1}},
	}
	silent := []string{"1004", "1017", "1022", "2310", "2311"}
	conds := []health.Condition{
		health.ConditionOf(health.PhonesUnreachable, "", health.Args{health.ArgCount: "5", health.ArgTotal: "14", health.ArgDetail: "1004, 1017, 1022 and 2 more"}),
		health.ConditionOf(health.RecentCrashes, "", health.Args{health.ArgCount: "1", health.ArgError: "panic: runtime error: index out of range"}),
	}
	score, status := health.Score(conds)
	sc := float64(score)
	up := int64(36 * 3600)
	d.Check = health.Check{Status: status, Timestamp: health.Time{Time: now}, UptimeSeconds: &up, HealthScore: &sc}
	for i, c := range conds {
		d.Check.Alerts = append(d.Check.Alerts, health.Notice{Level: c.Level, Code: c.Code, Message: c.Message, Since: at(time.Duration(i+1) * 17 * time.Minute)})
		d.Check.Recommendations = append(d.Check.Recommendations, c.Recommendation)
	}
	d.Health = health.SoftwareHealth{RestartCount: 0, CrashCount24h: 1,
		Memory:          &health.Memory{RSSMB: f(9.8), RSSAnonMB: f(3.1), HeapMB: f(1.4)},
		FileDescriptors: &health.FileDescriptors{Open: i32(17), Max: 1024}}
	src := "http://pb.local.mesh/phonebook/phonebook.csv"
	d.Status = &metrics.Services{SIP: sip.Status{RegisteredUsers: 14, ActiveCalls: 1},
		Monitor:   monitor.Status{Phones: monitor.PhonesStatus{Probed: 14, NotAnswering: 5, NotAnsweringNumbers: silent, NotAnsweringNumbersTotal: 5}},
		Directory: directory.Status{Entries: 502, LastSuccess: health.Time{Time: now.Add(-23 * time.Minute)}, Source: &src}}
	return d
}

// TestPageInABrowser: at 360, 420, 641, 768 and 1280 px, light and dark, the
// page fits the screen, draws no text under 11 px and shows no raw ISO
// time; it fetches nothing but itself. Screenshots at 1280 and 360 px.
func TestPageInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("slow (a simulated day, then Chromium): make test runs it")
	}
	bin := chromium(t)
	page := HTML(showcase(t))
	if strings.Contains(page, "<script") || regexp.MustCompile(`(src|href)="?https?:`).MatchString(page) {
		t.Fatal("the page must not load scripts or anything from outside")
	}
	srv := newPageServer(t, page)
	outDir := os.Getenv("PAGE_SCREENSHOTS")
	if outDir == "" {
		outDir = t.TempDir()
	}
	widths := []int{360, 420, 641, 768, 1280} // 641: the narrowest with tables as tables
	for _, dark := range []bool{false, true} {
		name := map[bool]string{false: "light", true: "dark"}[dark]
		heights := map[int]int{}
		for _, l := range probe(t, bin, srv.URL, dark, widths) {
			heights[l.Width] = l.Height
			t.Logf("%s %4d px: innerWidth %d, scrollWidth %d, height %d, smallest text %.1f px (%s), %d times",
				name, l.Width, l.Inner, l.Scroll, l.Height, l.MinFont, l.MinAt, l.Times)
			if l.Inner != l.Width {
				t.Errorf("%s %d px: the frame's innerWidth is %d", name, l.Width, l.Inner)
			}
			if l.Scroll > l.Inner {
				t.Errorf("%s %d px: the page overflows horizontally (scrollWidth %d > innerWidth %d); past the edge:\n  %s",
					name, l.Width, l.Scroll, l.Inner, strings.Join(l.Wide, "\n  "))
			}
			if l.MinFont < 11 {
				t.Errorf("%s %d px: text drawn at %.1f px (%s), want at least 11", name, l.Width, l.MinFont, l.MinAt)
			}
			if l.RawTimes > 0 || l.Times == 0 {
				t.Errorf("%s %d px: %d raw ISO times shown, %d relative times with a tooltip", name, l.Width, l.RawTimes, l.Times)
			}
			if l.Dark != dark {
				t.Errorf("%d px: prefers-color-scheme dark is %v, want %v", l.Width, l.Dark, dark)
			}
		}
		for _, w := range []int{1280, 360} {
			file := fmt.Sprintf("app-page-%d.png", w)
			if dark {
				file = fmt.Sprintf("app-page-%d-dark.png", w)
			}
			shot(t, bin, srv.URL, w, heights[w], dark, filepath.Join(outDir, file))
		}
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, p := range srv.other {
		if p != "/favicon.ico" {
			t.Errorf("the page asked for %s", p)
		}
	}
}
