package page

import (
	"strings"
	"testing"
)

func TestHTMLEscapesDaemonText(t *testing.T) {
	d := Data{Running: true, Now: "now",
		Check:   map[string]any{"status": "degraded", "health_score": 95.0, "alerts": []any{map[string]any{"level": "warning", "message": "<script>alert(1)</script>", "since": "t"}}},
		Health:  map[string]any{"restart_count": int64(1)},
		Workers: []Worker{{Name: "fetcher", Info: map[string]any{"status": "healthy", "last_error": `"><img src=x>`}}},
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
