package tests

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildFlood builds cmd/sipflood, the flood of scripts/flood.sh.
func buildFlood(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sipflood")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sipflood")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build sipflood: %v\n%s", err, out)
	}
	return bin
}

// TestFloodOverloadNoRestart is scripts/flood.sh scaled for CI: 4
// senders on 127.0.0.0/8 send 500,000 OPTIONS each as fast as they can
// (bounded by count, not by time) to the router build. No worker
// restarts, the process stays up, "overload" shows in phonebook.health
// check while the flood runs, the datagrams the kernel dropped are
// counted in sip.shed.receive_queue, and RSS stays within the flood
// budget. Before, main's heartbeat OPTIONS queued behind the flood: main
// was declared unresponsive and restarted every few seconds, and past
// max_restart_attempts the process exited 1.
func TestFloodOverloadNoRestart(t *testing.T) {
	flood := buildFlood(t)
	e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1"})
	p := e.tr.start(t, bins.router)
	host, port := sipAddr(t, e.sock)
	target := host + ":" + strconv.Itoa(port)
	stopWatch := rssWatch(t, p.cmd.Process.Pid)

	cmd := exec.Command(flood, "-target", target, "-senders", "4", "-count", "500000")
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// Sample the health check and the workers while the flood runs.
	var mu sync.Mutex
	overload, samples := 0, 0
	var notHealthy []string
	sample := func() {
		ck := call(t, e.sock, "phonebook.health", "check", "")
		th := e.thread("main")
		mu.Lock()
		defer mu.Unlock()
		samples++
		for _, a := range ck["alerts"].([]any) {
			if get(a, "code") == "overload" {
				overload++
			}
		}
		if th == nil || th["status"] != "healthy" || num(th["restart_count"]) != 0 {
			notHealthy = append(notHealthy, fmt.Sprint(th))
		}
	}
	var floodErr error
wait:
	for {
		select {
		case floodErr = <-done:
			break wait
		case <-time.After(500 * time.Millisecond):
			if p.exited() {
				t.Fatalf("daemon exited with %d during the flood", p.code)
			}
			sample()
		}
	}
	if floodErr != nil {
		t.Fatalf("sipflood: %v\n%s", floodErr, out.String())
	}
	// Past main's deadline (3 periods of 2 s) after the last datagram: a
	// heartbeat lost to the flood would show now.
	for range 14 {
		time.Sleep(500 * time.Millisecond)
		sample()
	}
	peak := stopWatch()

	st := call(t, e.sock, "phonebook", "status", "")
	shed := num(get(st, "sip", "shed", "receive_queue"))
	threads := call(t, e.sock, "phonebook.threads", "list", "")
	restarts := 0.0
	for name := range get(threads, "threads").(map[string]any) {
		restarts += num(get(threads, "threads", name, "restart_count"))
	}
	t.Logf("%s; overload in %d of %d health checks; %.0f datagrams shed at the receive queue; worker restarts %v; peak RSS %d KB",
		strings.TrimSpace(out.String()), overload, samples, shed, restarts, peak)
	if p.exited() {
		t.Fatalf("daemon exited with %d", p.code)
	}
	if restarts != 0 || len(notHealthy) > 0 {
		t.Errorf("workers restarted during the flood: %v restarts; main not healthy in %d samples, first %v", restarts, len(notHealthy), notHealthy)
	}
	if overload == 0 {
		t.Errorf("overload never shown in phonebook.health check during the flood")
	}
	if shed == 0 {
		t.Errorf("sip.shed.receive_queue is 0 after the flood")
	}
	if peak > floodBudgetKB {
		t.Errorf("RSS peaked at %d KB, budget %d KB", peak, floodBudgetKB)
	}
	if ans := rawSIP(t, target, "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKafter\r\nFrom: <sip:9@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: after1\r\nCSeq: 1 OPTIONS\r\n\r\n"); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Errorf("OPTIONS after the flood: %q", ans)
	}
}
