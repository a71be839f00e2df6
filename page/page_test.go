package page

import (
	"strings"
	"testing"

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
