package loglimit

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestBurstThenSuppressedCount(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 3, time.Minute, func() time.Time { return now })
	for i := 0; i < 1000; i++ {
		l.Log(slog.LevelWarn, "malformed", "bad request")
	}
	if n := strings.Count(buf.String(), "\n"); n != 3 {
		t.Fatalf("%d lines for 1000 events, want 3:\n%s", n, buf.String())
	}
	if got := l.Suppressed()["malformed"]; got != 997 {
		t.Fatalf("suppressed %d, want 997", got)
	}
	now = now.Add(time.Minute)
	l.Log(slog.LevelWarn, "malformed", "bad request")
	if !strings.Contains(buf.String(), "suppressed=997") {
		t.Fatalf("no suppressed count in the next line:\n%s", buf.String())
	}
	// Another cause has its own budget.
	if !l.Log(slog.LevelWarn, "oversize", "too large") {
		t.Fatal("a second cause was suppressed by the first")
	}
}

func TestCausesBounded(t *testing.T) {
	l := New(slog.New(slog.NewTextHandler(io.Discard, nil)), 1, time.Minute, nil)
	for i := 0; i < 10*MaxCauses; i++ {
		l.Log(slog.LevelError, string(rune('a'+i%26))+string(rune(i)), "x")
	}
	if len(l.causes) > MaxCauses {
		t.Fatalf("%d causes tracked, bound %d", len(l.causes), MaxCauses)
	}
}
