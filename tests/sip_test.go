package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sippPath(t *testing.T) string {
	p, err := exec.LookPath("sipp")
	if err != nil {
		t.Fatal("sipp is not installed (Debian package sip-tester; .ci/run installs it)")
	}
	return p
}

// sipAddr reads the daemon's bound SIP address from phonebook status,
// waiting while the main worker has not bound it yet (it is retried with
// backoff when the port is taken).
func sipAddr(t *testing.T, sock string) (string, int) {
	var host string
	var p int
	waitFor(t, 10*time.Second, "a bound sip.listen in phonebook status", func() bool {
		listen, _ := get(call(t, sock, "phonebook", "status", ""), "sip", "listen").(string)
		h, port, err := net.SplitHostPort(listen)
		if err != nil {
			return false
		}
		host = h
		p, err = strconv.Atoi(port)
		return err == nil && p != 0
	})
	return host, p
}

func sipCounts(t *testing.T, sock string) (int, int) {
	st := call(t, sock, "phonebook", "status", "")
	return int(num(get(st, "sip", "registered_users"))), int(num(get(st, "sip", "active_calls")))
}

// rawSIP sends one datagram and returns the first answer (or "").
func rawSIP(t *testing.T, to string, msg string) string {
	c, err := net.Dial("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg = strings.ReplaceAll(msg, "{via}", c.LocalAddr().String())
	c.Write([]byte(msg))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 4096)
	n, _ := c.Read(b)
	return string(b[:n])
}

func register(user, contact string, expires int) string {
	return fmt.Sprintf("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via}%s;branch=z9hG4bK-%s-%d\r\nFrom: <sip:%s@127.0.0.1>;tag=t%s\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: reg-%s-%d@test\r\nCSeq: 1 REGISTER\r\nContact: <sip:%s@%s>\r\nExpires: %d\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"", user, time.Now().UnixNano(), user, user, user, user, time.Now().UnixNano(), user, contact, expires)
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// silentUDPPort is a loopback UDP port held open until the test ends and
// never read: a phone there is switched off, and no socket the test opens
// later can be given its number (a port freed at once could be, and would
// then answer).
func silentUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestSIPWithSipp: 200 phones register with sipp, two of them call each
// other through the proxy (INVITE, 200, ACK, BYE) while active_calls goes
// 0 -> 1 -> 0, and a burst of malformed messages is answered 400 and
// counted, without a crash.
func TestSIPWithSipp(t *testing.T) {
	sipp := sippPath(t)
	// Health figures come from the snapshot taken every interval.
	e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1"})
	p := e.tr.start(t, bins.daemon)
	host, port := sipAddr(t, e.sock)
	target := net.JoinHostPort(host, strconv.Itoa(port))
	dir := shortDir(t)

	var users strings.Builder
	users.WriteString("SEQUENTIAL\n")
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&users, "%d\n", 1000+i)
	}
	os.WriteFile(filepath.Join(dir, "users.csv"), []byte(users.String()), 0o644)
	reg := exec.Command(sipp, "-sf", "testdata/register.xml", "-inf", filepath.Join(dir, "users.csv"),
		"-m", "200", "-r", "200", "-l", "50", "-i", "127.0.0.1", "-nostdin", "-timeout", "30s", "-timeout_error", "-trace_err",
		"-error_file", filepath.Join(dir, "reg_err.log"), target)
	reg.Dir = "."
	if out, err := reg.CombinedOutput(); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "reg_err.log"))
		t.Fatalf("sipp register: %v\n%s\n%s", err, tail(out), b)
	}
	if reg, active := sipCounts(t, e.sock); reg != 200 || active != 0 {
		t.Fatalf("after 200 REGISTERs: registered_users %d, active_calls %d", reg, active)
	}

	// The callee: a sipp UAS, registered as 2000 at its own port.
	uasPort := freeUDPPort(t)
	uas := start(t, sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", strconv.Itoa(uasPort), "-m", "1", "-nostdin", "-timeout", "30s")
	if ans := rawSIP(t, target, register("2000", "127.0.0.1:"+strconv.Itoa(uasPort), 3600)); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("register 2000: %q", ans)
	}
	// The caller: a sipp UAC (registered above as 1000) calls 2000,
	// holds the call 3 s, then hangs up.
	uac := start(t, sipp, "-sn", "uac", "-s", "2000", "-i", "127.0.0.1", "-m", "1", "-d", "3000", "-nostdin", "-timeout", "30s", target)
	waitFor(t, 10*time.Second, "active_calls 1", func() bool { _, a := sipCounts(t, e.sock); return a == 1 })
	if code := uac.wait(20 * time.Second); code != 0 {
		t.Fatalf("sipp uac exit %d:\n%s", code, tail([]byte(uac.out.String())))
	}
	if code := uas.wait(10 * time.Second); code != 0 {
		t.Fatalf("sipp uas exit %d:\n%s", code, tail([]byte(uas.out.String())))
	}
	waitFor(t, 5*time.Second, "active_calls 0", func() bool { _, a := sipCounts(t, e.sock); return a == 0 })

	// A burst of malformed messages: each answered 400, each counted.
	bad := []string{
		"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKm%d\r\nFrom: <sip:9@x>;tag=1\r\nTo: <sip:9@x>\r\nCall-ID: m%d\r\n\r\n", // no CSeq
		"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKn%d\r\nCSeq: banana\r\nFrom: <sip:9@x>;tag=1\r\nTo: x\r\nCall-ID: n%d\r\n\r\n",
	}
	answered := 0
	for i := 0; i < 50; i++ {
		msg := fmt.Sprintf(bad[i%2], i, i)
		if strings.HasPrefix(rawSIP(t, target, msg), "SIP/2.0 400") {
			answered++
		}
	}
	time.Sleep(1500 * time.Millisecond) // the next snapshot
	st := call(t, e.sock, "phonebook", "status", "")
	h := call(t, e.sock, "phonebook.health", "status", "")
	if answered != 50 || num(get(st, "sip", "malformed_total")) != 50 || num(get(h, "error_rates", "sip_errors_per_hour")) < 50 {
		t.Errorf("malformed: %d answered 400, malformed_total %v, sip_errors_per_hour %v", answered, get(st, "sip", "malformed_total"), get(h, "error_rates", "sip_errors_per_hour"))
	}
	if ans := rawSIP(t, target, "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKo\r\nFrom: <sip:9@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n\r\n"); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Errorf("OPTIONS: %q", ans)
	}
	if ans := rawSIP(t, target, "MESSAGE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKp\r\nFrom: <sip:9@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: p1\r\nCSeq: 1 MESSAGE\r\n\r\n"); !strings.HasPrefix(ans, "SIP/2.0 501") {
		t.Errorf("MESSAGE: %q", ans)
	}
	if th := get(h, "threads", "main"); get(th, "status") != "healthy" || num(get(th, "restart_count")) != 0 {
		t.Errorf("main worker after the burst: %v", th)
	}
	e.stop(p)
}

// TestSIPCapacityNeverLies: past max_bindings a new phone gets 503 with
// Retry-After (never a 200 for a binding not kept) and an alert is raised.
func TestSIPCapacityNeverLies(t *testing.T) {
	e := newFaultEnv(t, map[string]string{"sip.max_bindings": "3"})
	e.tr.start(t, bins.daemon)
	host, port := sipAddr(t, e.sock)
	target := net.JoinHostPort(host, strconv.Itoa(port))
	for i := 0; i < 3; i++ {
		if ans := rawSIP(t, target, register(strconv.Itoa(300+i), "127.0.0.1:5999", 600)); !strings.HasPrefix(ans, "SIP/2.0 200") {
			t.Fatalf("register %d: %q", i, ans)
		}
	}
	ans := rawSIP(t, target, register("399", "127.0.0.1:5999", 600))
	if !strings.HasPrefix(ans, "SIP/2.0 503") || !strings.Contains(ans, "Retry-After: 60") {
		t.Fatalf("4th register: %q", ans)
	}
	if ans := rawSIP(t, target, register("300", "127.0.0.1:5998", 600)); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Errorf("refresh of a kept binding at capacity: %q", ans)
	}
	if reg, _ := sipCounts(t, e.sock); reg != 3 {
		t.Errorf("registered_users %d", reg)
	}
	// The condition is raised by the main worker's next period check,
	// once, not for every refused REGISTER.
	waitFor(t, 3*sipPeriod, "the capacity alert", func() bool {
		for _, a := range call(t, e.sock, "phonebook.health", "check", "")["alerts"].([]any) {
			if get(a, "code") == "sip_capacity" {
				return true
			}
		}
		return false
	})
	// Un-registering one makes room and clears the alert.
	rawSIP(t, target, register("301", "127.0.0.1:5999", 0))
	if ans := rawSIP(t, target, register("399", "127.0.0.1:5999", 600)); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Errorf("after un-register: %q", ans)
	}
}

// sipPeriod is the main worker's period (sip.Period): conditions it owns
// are raised or cleared within one.
const sipPeriod = 2 * time.Second

func tail(b []byte) string {
	s := string(b)
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}

// optionsResponder answers SIP OPTIONS on a UDP port until stopped.
func optionsResponder(t *testing.T, addr string) (stop func()) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		b := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			lines := strings.Split(string(b[:n]), "\r\n")
			if !strings.HasPrefix(lines[0], "OPTIONS ") {
				continue
			}
			var resp strings.Builder
			resp.WriteString("SIP/2.0 200 OK\r\n")
			for _, l := range lines[1:] {
				name := strings.ToLower(strings.SplitN(l, ":", 2)[0])
				switch name {
				case "via", "from", "call-id", "cseq":
					resp.WriteString(l + "\r\n")
				case "to":
					resp.WriteString(l + ";tag=resp\r\n")
				}
			}
			resp.WriteString("Content-Length: 0\r\n\r\n")
			pc.WriteTo([]byte(resp.String()), from)
		}
	}()
	return func() { pc.Close() }
}

// TestMonitorProbesRealTarget: a mesh target answering OPTIONS, then
// silent, then answering again: probe_success_rate drops and an alert is
// raised, which clears when it answers again.
func TestMonitorProbesRealTarget(t *testing.T) {
	port := freeUDPPort(t)
	target := "127.0.0.1:" + strconv.Itoa(port)
	stop := optionsResponder(t, target)
	e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1", "monitor.interval": "5",
		"monitor.probe_timeout_ms": "800", "monitor.probe_phones": "0"})
	exec.Command(bins.daemon, "uci", "-c", e.tr.confDir, "-t", e.tr.saveDir, "add_list", "phonebook.monitor.target="+target).Run()
	exec.Command(bins.daemon, "uci", "-c", e.tr.confDir, "-t", e.tr.saveDir, "commit", "phonebook").Run()
	e.tr.start(t, bins.daemon)
	rate := func() any {
		return get(call(t, e.sock, "phonebook.health", "status", ""), "threads", "monitor", "probe_success_rate")
	}
	alert := func() bool {
		for _, a := range call(t, e.sock, "phonebook.health", "check", "")["alerts"].([]any) {
			if get(a, "code") == "probe_failed:"+target {
				return true
			}
		}
		return false
	}
	waitFor(t, 12*time.Second, "a successful probe", func() bool {
		if rate() == 100.0 {
			return true
		}
		time.Sleep(200 * time.Millisecond)
		return false
	})
	stop()
	waitFor(t, 15*time.Second, "the silent target's alert", alert)
	if r, _ := rate().(float64); r >= 100 {
		t.Errorf("probe_success_rate %v after a lost probe", r)
	}
	st := call(t, e.sock, "phonebook", "status", "")
	t.Logf("monitor: %v", get(st, "monitor"))
	stop = optionsResponder(t, target)
	defer stop()
	waitFor(t, 15*time.Second, "the alert to clear", func() bool { return !alert() })
}
