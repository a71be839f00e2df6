package tests

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowMetricsClients runs n clients, spread over the loopback sources
// 127.0.0.2 to 127.0.0.5, each sending a request to addr one byte a
// second and, when the server cuts it off or refuses it, connecting
// again, until stop is called; dialed counts the connections made.
func slowMetricsClients(t *testing.T, addr string, n int) (stop func(), dialed func() int64) {
	t.Helper()
	quit := make(chan struct{})
	var dials atomic.Int64
	var wg sync.WaitGroup
	req := "GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: " + strings.Repeat("s", 200) + "\r\n\r\n"
	for i := 0; i < n; i++ {
		src := fmt.Sprintf("127.0.0.%d", 2+i%4)
		wg.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
			for {
				c, err := d.Dial("tcp", addr)
				if err == nil {
					dials.Add(1)
					for j := 0; j < len(req); j++ {
						if _, err = c.Write([]byte{req[j]}); err != nil {
							break
						}
						select {
						case <-quit:
							c.Close()
							return
						case <-time.After(time.Second): // the client's pace, not a measurement
						}
					}
					c.Close()
				}
				select {
				case <-quit:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	}
	return func() { close(quit); wg.Wait() }, dials.Load
}

// metricsScrapeFrom is one legitimate scrape from the loopback address src:
// true when it is answered 200 with the metrics.
func metricsScrapeFrom(src, addr string) bool {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second)) // ends a hung test; not asserted
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	b, _ := io.ReadAll(c)
	return bytes.HasPrefix(b, []byte("HTTP/1.1 200 OK")) && bytes.Contains(b, []byte("phonebook_health_score"))
}

// TestMetricsSlowClientsDoNotStarveScrapes: 4, then 64 slow clients
// from 127.0.0.2-5 (one byte a second, over real TCP) and 30 scrapes
// from 127.0.0.1 against the daemon's metrics listener at its defaults
// (max_connections 4, max_connections_per_source 2, request_timeout
// 2 s): every scrape is answered, the slow clients are refused or cut
// off and counted in "phonebook status" (metrics), "metrics_refused" is
// raised over ubus, and RSS, goroutines and the log stay bounded.
// Before: one shared pool and a 5 s timeout; 4 such clients refused 22
// of 30 scrapes, 64 refused all 30, health stayed healthy, and the
// refusals could only be read on the endpoint refusing them.
func TestMetricsSlowClientsDoNotStarveScrapes(t *testing.T) {
	addr := freeAddr(t)
	e := newFaultEnv(t, map[string]string{"metrics.listen": addr, "health.health_check_interval": "1"})
	p := e.start()
	pid := p.cmd.Process.Pid
	waitFor(t, 10*time.Second, "the metrics listener", func() bool { return metricsScrapeFrom("127.0.0.1", addr) })
	metricsStatus := func() map[string]any {
		m, _ := call(t, e.sock, "phonebook", "status", "")["metrics"].(map[string]any)
		if m == nil {
			t.Error("phonebook status has no metrics table")
		}
		return m
	}
	rssBefore, logBefore := rssKB(t, pid), len(p.out.String())
	goBefore := num(get(e.health(), "memory", "goroutines"))
	peak := rssWatch(t, pid)

	for _, n := range []int{4, 64} {
		refusedBefore := num(metricsStatus()["refused"])
		stop, dialed := slowMetricsClients(t, addr, n)
		// Every slow client has connected, and they hold the slots (past
		// their cap, they are refused).
		waitFor(t, 20*time.Second, "the slow clients connected", func() bool { return dialed() >= int64(n) })
		time.Sleep(500 * time.Millisecond) // let them send a first byte or two; nothing is timed

		answered := 0
		for i := 0; i < 30; i++ {
			if metricsScrapeFrom("127.0.0.1", addr) {
				answered++
			}
			time.Sleep(100 * time.Millisecond) // spread the scrapes among the slow clients' bytes
		}
		m := metricsStatus()
		goDuring := num(get(e.health(), "memory", "goroutines"))
		stop()
		t.Logf("%d slow clients: %d of 30 scrapes answered; metrics %v; goroutines %v -> %v", n, answered, m, goBefore, goDuring)
		if answered != 30 {
			t.Errorf("%d slow clients: %d of 30 scrapes answered", n, answered)
		}
		if num(m["open"]) > 4 {
			t.Errorf("%v connections open, max_connections is 4", m["open"])
		}
		if goDuring > goBefore+12 {
			t.Errorf("goroutines %v -> %v: the listener is not bounded", goBefore, goDuring)
		}
		if n > 4 && num(m["refused"]) <= refusedBefore {
			t.Errorf("%d slow clients: refused %v (before %v): refusals not counted", n, m["refused"], refusedBefore)
		}
	}
	m := metricsStatus()
	shed, _ := m["shed"].(map[string]any)
	if num(m["refused"]) < 1 || num(shed["per_source"])+num(shed["busy"])+num(shed["evicted"]) != num(m["refused"]) {
		t.Errorf("metrics status %v: refusals not counted by cause", m)
	}
	var alert map[string]any
	waitFor(t, 10*time.Second, "metrics_refused over ubus", func() bool {
		for _, a := range call(t, e.sock, "phonebook.health", "check", "")["alerts"].([]any) {
			if a := a.(map[string]any); strings.HasPrefix(a["code"].(string), "metrics_refused") {
				alert = a
				return true
			}
		}
		return false
	})
	t.Logf("alert: %v", alert["message"])
	if !strings.Contains(alert["message"].(string), "127.0.0.") {
		t.Errorf("alert %v does not name the source", alert["message"])
	}
	pk, grew := peak(), len(p.out.String())-logBefore
	t.Logf("RSS %d KB before, peak %d KB; log grew %d bytes", rssBefore, pk, grew)
	if pk > rssBefore+8*1024 {
		t.Errorf("RSS %d KB before, peak %d KB", rssBefore, pk)
	}
	if grew > 4096 {
		t.Errorf("log grew %d bytes", grew)
	}
	if p.exited() {
		t.Fatal("daemon exited")
	}
}
