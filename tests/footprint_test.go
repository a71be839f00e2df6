package tests

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The footprint test is scripts/footprint.sh scaled down (issue 19): the
// router build as packaged (CGO_ENABLED=0, -trimpath, -ldflags '-s -w',
// tags nodbus) in a network namespace of its own, sampled at idle, with
// 256 phones, after 2,000 REGISTERs at 5,000/s and after 5,000 OPTIONS
// from 100 sources. It asserts bounds on RSS, OS threads and goroutines,
// never durations. The bounds hold today with a margin for noise; the
// issue's targets (idle <= 4 MB, <= 4.5 MB with 256 phones, back within
// base + 1 MB after load) are docs/BENCHMARKS.md's "after" column, for
// the work that follows.

// footprint is one sample of the daemon's memory, in KB.
type footprint struct {
	rss, anon, file, hwm int
	threads              int
	goroutines           int // the health snapshot's, at most a second old
}

func (f footprint) String() string {
	return fmt.Sprintf("VmRSS %d KB (RssAnon %d, RssFile %d, VmHWM %d), %d threads, %d goroutines",
		f.rss, f.anon, f.file, f.hwm, f.threads, f.goroutines)
}

// readFootprint samples /proc/PID/status and the health snapshot.
func readFootprint(t *testing.T, pid int, sock string) footprint {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read status: %v", err)
	}
	var f footprint
	fields := map[string]*int{"VmRSS:": &f.rss, "RssAnon:": &f.anon, "RssFile:": &f.file, "VmHWM:": &f.hwm, "Threads:": &f.threads}
	for _, l := range strings.Split(string(b), "\n") {
		w := strings.Fields(l)
		if len(w) < 2 {
			continue
		}
		if p, ok := fields[w[0]]; ok {
			*p, _ = strconv.Atoi(w[1])
			delete(fields, w[0])
		}
	}
	if len(fields) > 0 {
		t.Fatalf("/proc/%d/status without %v", pid, fields)
	}
	g, ok := get(call(t, sock, "phonebook.health", "status", ""), "memory", "goroutines").(float64)
	if !ok {
		t.Fatal("phonebook.health status: no memory.goroutines")
	}
	f.goroutines = int(g)
	return f
}

// buildRouter builds the daemon as Makefile's cross target does, for
// this machine's architecture.
func buildRouter(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "phonebookd-router-nodbus")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-tags", "nodbus", "-o", out, "./cmd/phonebookd")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("router build: %v\n%s", err, b)
	}
	return out
}

// sippRegisterIn registers n users from first at rate per second with
// sipp, run in the network namespace of pid.
func sippRegisterIn(t *testing.T, pid int, target string, first, n, rate int) {
	t.Helper()
	sipp := sippPath(t)
	dir := shortDir(t)
	var users strings.Builder
	users.WriteString("SEQUENTIAL\n")
	for i := range n {
		fmt.Fprintf(&users, "%d\n", first+i)
	}
	inf := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(inf, []byte(users.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	scenario, err := filepath.Abs("testdata/register.xml")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", sipp, "-sf", scenario, "-inf", inf,
		"-m", strconv.Itoa(n), "-r", strconv.Itoa(rate), "-l", "2000", "-i", "127.0.0.1", "-nostdin", "-timeout", "60s", target)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		// sipp exits non-zero when a call failed: UDP may lose a few;
		// the registered count the test reads says how many landed.
		t.Logf("sipp: %v (%d bytes of output)", err, len(b))
	}
}

// optionsFrom sends total OPTIONS to target round robin from sources
// addresses 127.1.x.y in the network namespace of pid, about 5,000 per
// second, and returns how many were answered.
func optionsFrom(t *testing.T, pid int, target string, sources, total int) int64 {
	t.Helper()
	conns := make([]*net.UDPConn, 0, sources)
	inNetOf(t, pid, func() error {
		for i := range sources {
			src := netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(1 + i%250)})
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
			if err != nil {
				return fmt.Errorf("bind %s: %w", src, err)
			}
			conns = append(conns, c)
		}
		return nil
	})
	var answered atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					return
				}
				if strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
					answered.Add(1)
				}
			}
		}()
	}
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(target))
	for k := range total {
		if k%50 == 49 {
			time.Sleep(10 * time.Millisecond) // about 5,000/s
		}
		c := conns[k%sources]
		msg := "OPTIONS sip:phonebook SIP/2.0\r\nVia: SIP/2.0/UDP " + c.LocalAddr().String() + ";branch=z9hG4bKfp" + strconv.Itoa(k) +
			";rport\r\nFrom: <sip:fp@127.1.0.1>;tag=fp\r\nTo: <sip:phonebook>\r\nCall-ID: fp" + strconv.Itoa(k) +
			"\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
		c.WriteToUDP([]byte(msg), dst)
	}
	// the last answers; counted, not timed
	time.Sleep(time.Second)
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	return answered.Load()
}

// Bounds in KB on today's router build (amd64), with a margin over the
// figures measured when they were set (docs/BENCHMARKS.md, "before").
const (
	idleBoundKB      = 12 * 1024 // measured 6.5 MB
	phonesBoundKB    = 14 * 1024 // measured 7.4 MB
	registerGrowthKB = 10 * 1024 // 2,000 more bindings; measured +3.7 MB
	optionsGrowthKB  = 2 * 1024  // OPTIONS leave nothing behind
	threadsBound     = 24        // measured 12-13 with GOMAXPROCS 2
	goroutineGrowth  = 8         // no goroutine per peer; measured +2
)

// TestFootprintRouterBuild: the router build's RSS idle, with 256 phones,
// after 2,000 REGISTERs at 5,000/s and after 5,000 OPTIONS from 100
// sources stays inside its bounds; OS threads stay bounded and no
// goroutine is left per phone or per source.
func TestFootprintRouterBuild(t *testing.T) {
	netns := privateNet(t)
	bin := buildRouter(t)
	sock := filepath.Join(shortDir(t), "ubus.sock")
	startBroker(t, sock)
	tr := newTree(t, sock, map[string]string{
		"sip.max_bindings": "4096", "monitor.probe_phones": "0", "health.health_check_interval": "1",
	})
	// Loopback up before the daemon starts, as on a router: with it down
	// the SIP self-probe's send fails at once and its loop spins.
	p := tr.startWith(t, append(netns, "sh", "-c", `ip link set lo up && exec "$0" "$@"`), bin)
	pid := p.cmd.Process.Pid
	host, port := sipAddr(t, sock)
	target := net.JoinHostPort(host, strconv.Itoa(port))
	check := func(name string, got, bound int) {
		t.Helper()
		if got > bound {
			t.Errorf("%s: %d, bound %d", name, got, bound)
		}
	}
	start := time.Now()

	time.Sleep(time.Until(start.Add(5 * time.Second)))
	idle := readFootprint(t, pid, sock)
	t.Logf("idle, 5 s: %v", idle)
	check("idle VmRSS (KB)", idle.rss, idleBoundKB)
	check("idle threads", idle.threads, threadsBound)

	sippRegisterIn(t, pid, target, 1000, 256, 500)
	if reg, _ := sipCounts(t, sock); reg != 256 {
		t.Fatalf("registered phones: %d, want 256", reg)
	}
	time.Sleep(time.Second)
	phones := readFootprint(t, pid, sock)
	t.Logf("256 phones: %v", phones)
	check("VmRSS with 256 phones (KB)", phones.rss, phonesBoundKB)
	check("goroutines with 256 phones", phones.goroutines, idle.goroutines+goroutineGrowth)

	sippRegisterIn(t, pid, target, 100000, 2000, 5000)
	reg, _ := sipCounts(t, sock)
	if reg < 256+1900 {
		t.Fatalf("registered after 2,000 REGISTERs: %d, want at least %d", reg, 256+1900)
	}
	time.Sleep(10 * time.Second)
	registered := readFootprint(t, pid, sock)
	t.Logf("2,000 REGISTERs at 5,000/s, 10 s after (%d registered): %v", reg, registered)
	check("VmRSS 10 s after 2,000 REGISTERs (KB)", registered.rss, phones.rss+registerGrowthKB)
	check("VmHWM through 2,000 REGISTERs (KB)", registered.hwm, phones.rss+registerGrowthKB)
	check("goroutines after 2,000 REGISTERs", registered.goroutines, idle.goroutines+goroutineGrowth)
	check("threads after 2,000 REGISTERs", registered.threads, threadsBound)

	const sent = 5000
	answered := optionsFrom(t, pid, target, 100, sent)
	time.Sleep(10 * time.Second)
	after := readFootprint(t, pid, sock)
	t.Logf("5,000 OPTIONS from 100 sources (%d answered), 10 s after: %v", answered, after)
	if answered < sent/2 {
		t.Errorf("OPTIONS answered: %d of %d; the load did not reach the daemon", answered, sent)
	}
	check("VmRSS 10 s after the OPTIONS (KB)", after.rss, registered.rss+optionsGrowthKB)
	check("goroutines after the OPTIONS", after.goroutines, idle.goroutines+goroutineGrowth)
	check("threads after the OPTIONS", after.threads, threadsBound)
	if p.exited() {
		t.Fatalf("daemon exited: %d", p.code)
	}
}
