package tests

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// uciSet sets options with the project's uci subcommand and commits them.
func uciSet(t *testing.T, tr *tree, assignments ...string) {
	t.Helper()
	for _, a := range append(assignments, "") {
		args := []string{"uci", "-c", tr.confDir, "-t", tr.saveDir, "set", a}
		if a == "" {
			args = []string{"uci", "-c", tr.confDir, "-t", tr.saveDir, "commit", "phonebook"}
		}
		if out, err := exec.Command(bins.daemon, args...).CombinedOutput(); err != nil {
			t.Fatalf("uci %v: %v %s", args[5:], err, out)
		}
	}
}

func optionsAt(target string) string {
	return "OPTIONS sip:" + target + " SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK" + strconv.FormatInt(time.Now().UnixNano(), 36) +
		"\r\nFrom: <sip:9@x>;tag=1\r\nTo: <sip:" + target + ">\r\nCall-ID: o" + strconv.FormatInt(time.Now().UnixNano(), 36) + "\r\nCSeq: 1 OPTIONS\r\n\r\n"
}

// alertWith returns the first alert of the health check whose code is
// code, or nil.
func alertWith(t *testing.T, sock, code string) map[string]any {
	ck := call(t, sock, "phonebook.health", "check", "")
	for _, a := range ck["alerts"].([]any) {
		if get(a, "code") == code {
			return a.(map[string]any)
		}
	}
	return nil
}

// TestSIPListenReload: a sip.listen changed with uci and applied by
// "phonebook reload" is bound without a restart: the old port stops
// answering and the new one answers. A taken address leaves the old one
// serving, with a sip_listen alert naming it. Before, the change was
// silently ignored, even after the worker restarted.
func TestSIPListenReload(t *testing.T) {
	e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1"})
	p := e.tr.start(t, bins.daemon)
	host, port := sipAddr(t, e.sock)
	old := net.JoinHostPort(host, strconv.Itoa(port))
	if ans := rawSIP(t, old, optionsAt(old)); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("OPTIONS to %s: %q", old, ans)
	}
	next := "127.0.0.1:" + strconv.Itoa(freeUDPPort(t))
	uciSet(t, e.tr, "phonebook.sip.listen="+next)
	call(t, e.sock, "phonebook", "reload", "")
	waitFor(t, 10*time.Second, "the new address in phonebook status", func() bool {
		return get(call(t, e.sock, "phonebook", "status", ""), "sip", "listen") == next
	})
	if ans := rawSIP(t, next, optionsAt(next)); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Errorf("OPTIONS to the new address %s: %q", next, ans)
	}
	if ans := rawSIP(t, old, optionsAt(old)); ans != "" {
		t.Errorf("the old address %s still answers: %q", old, ans)
	}

	hold, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	taken := hold.LocalAddr().String()
	uciSet(t, e.tr, "phonebook.sip.listen="+taken)
	p.cmd.Process.Signal(syscallHUP()) // procd's reload without ubus
	waitFor(t, 10*time.Second, "sip_listen alert", func() bool { return alertWith(t, e.sock, "sip_listen") != nil })
	if msg := fmt.Sprint(alertWith(t, e.sock, "sip_listen")["message"]); !strings.Contains(msg, taken) || !strings.Contains(msg, next) {
		t.Errorf("sip_listen alert %q does not name %s (wanted) and %s (serving)", msg, taken, next)
	}
	if ans := rawSIP(t, next, optionsAt(next)); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Errorf("the serving address %s stopped answering: %q", next, ans)
	}
	if th := e.thread("main"); th["status"] != "healthy" || num(th["restart_count"]) != 0 {
		t.Errorf("main: %v", th)
	}
	if p.exited() {
		t.Fatalf("daemon exited with %d", p.code)
	}
}

// restrictAFEnv: when set, the test binary is not a test run but a
// wrapper that restricts the address families its process may open
// sockets of to the variable's value (systemd's RestrictAddressFamilies=
// syntax) with a seccomp filter, as systemd does, and execs its
// arguments: the unit's sandbox without systemd.
const restrictAFEnv = "PHONEBOOKD_TEST_RESTRICT_AF"

func init() {
	fams, ok := os.LookupEnv(restrictAFEnv)
	if !ok {
		return
	}
	os.Unsetenv(restrictAFEnv)
	if err := restrictFamilies(fams); err != nil {
		fmt.Fprintln(os.Stderr, "restrict address families:", err)
		os.Exit(111)
	}
	err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(111)
}

// restrictFamilies makes socket(2) of any family not in list fail with
// EAFNOSUPPORT in this process and what it execs.
func restrictFamilies(list string) error {
	known := map[string]uint32{"AF_UNIX": unix.AF_UNIX, "AF_INET": unix.AF_INET, "AF_INET6": unix.AF_INET6,
		"AF_NETLINK": unix.AF_NETLINK, "AF_PACKET": unix.AF_PACKET}
	arch, ok := map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}[runtime.GOARCH]
	if !ok {
		return fmt.Errorf("no seccomp architecture for %s", runtime.GOARCH)
	}
	var fams []uint32
	for _, f := range strings.Fields(list) {
		n, ok := known[f]
		if !ok {
			return fmt.Errorf("unknown family %s", f)
		}
		fams = append(fams, n)
	}
	const ld, jeq, ret = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_RET | unix.BPF_K
	allow := uint8(6 + len(fams)) // index of the final ALLOW
	prog := []unix.SockFilter{
		{Code: ld, K: 4}, // seccomp_data.arch
		{Code: jeq, K: arch, Jf: allow - 2},
		{Code: ld, K: 0}, // seccomp_data.nr
		{Code: jeq, K: unix.SYS_SOCKET, Jf: allow - 4},
		{Code: ld, K: 16}, // seccomp_data.args[0], low half (little endian)
	}
	for i, f := range fams {
		prog = append(prog, unix.SockFilter{Code: jeq, K: f, Jt: allow - uint8(5+i) - 1})
	}
	prog = append(prog,
		unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)},
		unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ALLOW})
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return fmt.Errorf("seccomp: %w", e)
	}
	return nil
}

// unitFamilies is the unit's RestrictAddressFamilies= value.
func unitFamilies(t *testing.T) string {
	b, err := os.ReadFile("../contrib/systemd/phonebookd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RestrictAddressFamilies="); ok {
			return v
		}
	}
	t.Fatal("the unit has no RestrictAddressFamilies=")
	return ""
}

// TestUnitSandboxOwnAddress runs the daemon under the Debian unit's
// RestrictAddressFamilies= (a seccomp filter, as systemd applies it): an
// INVITE addressed to the host's own IP reaches the registered phone. The
// unit lacked AF_NETLINK, net.InterfaceAddrs failed, and every such
// INVITE got 482 Loop Detected while health said healthy. Without
// AF_NETLINK (the old unit) the daemon now says so
// (interfaces_unreadable) and the INVITE still reaches the phone.
func TestUnitSandboxOwnAddress(t *testing.T) {
	var own netip.Addr
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() && !ip.IsLoopback() {
				own = ip.Unmap()
				break
			}
		}
	}
	if !own.IsValid() {
		t.Fatal("no non-loopback IPv4 address on this host to address the INVITE to")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unitFams := unitFamilies(t)
	for _, c := range []struct {
		name, families string
		unreadable     bool
	}{
		{"unit", unitFams, false},
		{"without AF_NETLINK", strings.Join(strings.Fields(strings.ReplaceAll(unitFams, "AF_NETLINK", "")), " "), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newFaultEnv(t, map[string]string{"health.health_check_interval": "1", "sip.listen": "0.0.0.0:0"})
			e.tr.startWith(t, []string{"env", restrictAFEnv + "=" + c.families, self}, bins.daemon)
			_, port := sipAddr(t, e.sock)
			proxy := "127.0.0.1:" + strconv.Itoa(port)
			callee, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer callee.Close()
			if ans := rawSIP(t, proxy, register("700", callee.LocalAddr().String(), 3600)); !strings.HasPrefix(ans, "SIP/2.0 200") {
				t.Fatalf("register: %q", ans)
			}
			host := netip.AddrPortFrom(own, uint16(port)).String()
			invite := "INVITE sip:700@" + host + " SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKown" + strconv.Itoa(port) +
				"\r\nFrom: <sip:caller@127.0.0.1>;tag=c1\r\nTo: <sip:700@" + host + ">\r\nCall-ID: own-" + c.name +
				"\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{via}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
			caller, err := net.Dial("udp", proxy)
			if err != nil {
				t.Fatal(err)
			}
			defer caller.Close()
			caller.Write([]byte(strings.ReplaceAll(invite, "{via}", caller.LocalAddr().String())))
			buf := make([]byte, 4096)
			callee.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, _ := callee.ReadFromUDP(buf)
			if got := string(buf[:n]); !strings.HasPrefix(got, "INVITE sip:700@") {
				caller.SetReadDeadline(time.Now().Add(time.Second))
				var answers []string
				for {
					n, err := caller.Read(buf)
					if err != nil {
						break
					}
					answers = append(answers, strings.SplitN(string(buf[:n]), "\r\n", 2)[0])
				}
				t.Errorf("INVITE to sip:700@%s under RestrictAddressFamilies=%s did not reach the phone; the caller got %v", host, c.families, answers)
			}
			if c.unreadable {
				waitFor(t, 10*time.Second, "interfaces_unreadable alert", func() bool { return alertWith(t, e.sock, "interfaces_unreadable") != nil })
			} else {
				time.Sleep(2 * time.Second) // two health evaluations
				if a := alertWith(t, e.sock, "interfaces_unreadable"); a != nil {
					t.Errorf("interfaces unreadable under the unit's families %s: %v", c.families, a)
				}
			}
		})
	}
}
