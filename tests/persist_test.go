package tests

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPhonesAndHistorySurviveKill: a phone registers, the daemon is
// killed with SIGKILL (as the OOM killer or procd's term_timeout would)
// and started again on the same run_dir, as procd respawns it. A call to
// the phone reaches its socket (before: 404 until the phone registered
// again, up to an hour), and phonebook.health history still has the
// points from before the crash, with the crash marked among them
// (before: the day's history was lost, the chart began after the crash).
// Neither the phones nor the history go to state_dir (flash).
func TestPhonesAndHistorySurviveKill(t *testing.T) {
	e := newFaultEnv(t, map[string]string{"health.history_step": "10", "health.crash_coalesce": "0"})
	p := e.tr.start(t, bins.daemon)

	phone, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	host, port := sipAddr(t, e.sock)
	server := fmt.Sprintf("%s:%d", host, port)
	if ans := rawSIP(t, server, register("555", phone.LocalAddr().String(), 3600)); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("register: %q", ans)
	}
	// Kill only once both are in run_dir (the writers run at most once a
	// second and once per history step); a daemon that never writes them
	// is killed after 10 s and fails below, on what a user sees.
	bindings, history := filepath.Join(e.tr.runDir, "bindings.json"), filepath.Join(e.tr.runDir, "history.json")
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(bindings)
		if _, err := os.Stat(history); err == nil && strings.Contains(string(b), `"555"`) {
			break
		}
	}
	before := call(t, e.sock, "phonebook.health", "history", "")["time"].([]any)
	if len(before) == 0 {
		t.Fatal("no history point before the crash")
	}
	noPhonesOnFlash(t, e.tr.stateDir)

	pid := daemonPID(t, e)
	syscall.Kill(pid, syscall.SIGKILL)
	if code := p.wait(5 * time.Second); code != -int(syscall.SIGKILL) {
		t.Fatalf("exit %d, want killed", code)
	}
	e.tr.start(t, bins.daemon)

	if reg, _ := sipCounts(t, e.sock); reg != 1 {
		t.Errorf("registered_users %d after the restart, want the phone registered before it", reg)
	}
	host, port = sipAddr(t, e.sock)
	server = fmt.Sprintf("%s:%d", host, port)
	caller, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	me := caller.LocalAddr().String()
	invite := fmt.Sprintf("INVITE sip:555@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-persist-%d;rport\r\nFrom: <sip:caller@%s>;tag=c1\r\nTo: <sip:555@%s>\r\nCall-ID: persist-%d@test\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@%s>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		server, me, time.Now().UnixNano(), me, server, time.Now().UnixNano(), me)
	ua, _ := net.ResolveUDPAddr("udp4", server)
	caller.WriteToUDP([]byte(invite), ua)
	buf := make([]byte, 8192)
	phone.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := ""
	for err == nil && !strings.HasPrefix(got, "INVITE ") { // the monitor's OPTIONS may come first
		var n int
		n, _, err = phone.ReadFromUDP(buf)
		got = string(buf[:n])
	}
	if err != nil || !strings.HasPrefix(got, "INVITE sip:555@"+phone.LocalAddr().String()+" SIP/2.0") {
		caller.SetReadDeadline(time.Now().Add(time.Second))
		m, _, _ := caller.ReadFromUDP(buf)
		t.Errorf("INVITE after the restart did not reach the phone (%v, %q); the caller got %q", err, got, strings.SplitN(string(buf[:m]), "\r\n", 2)[0])
	}

	h := call(t, e.sock, "phonebook.health", "history", "")
	times := map[float64]bool{}
	for _, v := range h["time"].([]any) {
		times[num(v)] = true
	}
	for _, v := range before {
		if !times[num(v)] {
			t.Errorf("point at %v from before the crash missing after it: %v", v, h["time"])
		}
	}
	crashMarked := false
	for _, m := range h["marks"].([]any) {
		crashMarked = crashMarked || get(m, "kind") == "crash"
	}
	if !crashMarked {
		t.Errorf("no crash mark in the history: %v", h["marks"])
	}
	noPhonesOnFlash(t, e.tr.stateDir)
}

// noPhonesOnFlash fails if the binding table or the history, or any
// file naming the phone, is in the state directory.
func noPhonesOnFlash(t *testing.T, stateDir string) {
	t.Helper()
	filepath.WalkDir(stateDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(path)
		name := d.Name()
		if strings.Contains(name, "bindings") || strings.Contains(name, "history.json") || strings.Contains(string(b), "sip:555@") {
			t.Errorf("%s is on flash (state_dir)", path)
		}
		return nil
	})
}
