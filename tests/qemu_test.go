package tests

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/internal/dbustest"
)

// TestInstalledPackagesUnderQemu builds the stripped router binaries for
// mips (softfloat) and arm (GOARM=7), tagged nodbus as packaged, packs them (.ipk for mips, .apk for
// arm), installs each with the real opkg or apk into a scratch root, and
// runs the installed binary under qemu-user-static with the installed
// configuration against the broker, asking it for phonebook.health
// status. Each package must stay within 3 MB.
func TestInstalledPackagesUnderQemu(t *testing.T) {
	if testing.Short() {
		t.Skip("cross builds take a while; not in -short")
	}
	targets := []struct{ arch, format, qemu, goarch, env string }{
		{"mips_24kc", "ipk", "qemu-mips-static", "mips", "GOMIPS=softfloat"},
		{"arm_cortex-a7_neon-vfpv4", "apk", "qemu-arm-static", "arm", "GOARM=7"},
	}
	for _, tg := range targets {
		t.Run(tg.arch, func(t *testing.T) {
			q, err := exec.LookPath(tg.qemu)
			if err != nil {
				t.Fatalf("%s not installed (Debian package qemu-user-static; make setup installs it)", tg.qemu)
			}
			bin := filepath.Join(shortDir(t), "phonebookd")
			cmd := exec.Command("sh", "scripts/router-build.sh", bin)
			cmd.Dir = ".."
			cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+tg.goarch, tg.env)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("build: %v\n%s", err, out)
			}
			file, _ := exec.Command("file", bin).Output()
			t.Logf("%s", strings.TrimSpace(string(file)))
			pkg := mkpkg(t, tg.format, tg.arch, bin, "1", "")
			st, _ := os.Stat(bin)
			pst, _ := os.Stat(pkg)
			t.Logf("%s: binary %d bytes, %s %d bytes", tg.arch, st.Size(), filepath.Base(pkg), pst.Size())
			if st.Size() > 8<<20 || pst.Size() > 3<<20 {
				t.Errorf("over the footprint budget (8 MB binary, 3 MB package)")
			}

			root := scratchRoot(t)
			env := []string{"IPKG_INSTROOT=" + root}
			switch tg.format {
			case "ipk":
				conf := filepath.Join(shortDir(t), "opkg.conf")
				os.WriteFile(conf, []byte("dest root /\nlists_dir ext /var/opkg-lists\narch all 1\narch noarch 1\narch "+tg.arch+" 10\n"), 0o644)
				os.MkdirAll(filepath.Join(root, "usr", "lib", "opkg"), 0o755)
				os.WriteFile(filepath.Join(root, "usr", "lib", "opkg", "status"), []byte("Package: libc\nVersion: 1.2.5-r4\nStatus: install user installed\nArchitecture: "+tg.arch+"\n\n"), 0o644)
				run(t, env, sharedTool(t, "opkg"), "-o", root, "-f", conf, "--force-postinstall", "install", pkg)
			case "apk":
				a := []string{"--root", root, "--allow-untrusted", "--no-network", "--force-no-chroot", "--arch", tg.arch}
				run(t, env, sharedTool(t, "apk"), append(a, "--initdb", "add", "--virtual", "libc")...)
				run(t, env, sharedTool(t, "apk"), append(a, "add", pkg)...)
			}

			// The installed tree's configuration, its paths moved into the
			// scratch root (as a router's would be /etc, /tmp and /www).
			installed := filepath.Join(root, "usr", "bin", "phonebookd")
			confDir, saveDir := filepath.Join(root, "etc", "config"), filepath.Join(root, "tmp", ".uci")
			for _, kv := range []string{"main.state_dir=" + root + "/etc/phonebook", "main.run_dir=" + root + "/tmp/phonebook",
				"main.www_dir=" + root + "/www", "main.apps_dir=" + root + "/tmp/apps/phonebook", "sip.listen=127.0.0.1:0"} {
				run(t, nil, bins.daemon, "uci", "-c", confDir, "-t", saveDir, "set", "phonebook."+kv)
			}
			run(t, nil, bins.daemon, "uci", "-c", confDir, "-t", saveDir, "commit", "phonebook")
			sock := filepath.Join(shortDir(t), "ubus.sock")
			startBroker(t, sock)
			p := start(t, q, installed, "-c", confDir, "-t", saveDir, "-s", sock)
			waitFor(t, 60*time.Second, "the emulated daemon on ubus", func() bool {
				if p.exited() {
					t.Fatalf("exited with %d", p.code)
				}
				_, rc := callRaw(sock, "phonebook.health", "status", "")
				return rc == 0
			})
			h := call(t, sock, "phonebook.health", "status", "")
			if get(h, "threads", "safety", "status") != "healthy" || num(get(h, "memory", "rss_mb")) <= 0 {
				t.Errorf("status from %s: %v", tg.arch, h)
			}
			t.Logf("%s, installed by %s, under qemu: rss %.1f MB (the emulator's)", tg.arch, tg.format, num(get(h, "memory", "rss_mb")))
		})
	}
}

// TestRaspberryPiBuildUnderQemu builds the Debian binary (-tags noubus)
// for a Raspberry Pi (arm64) and runs it under qemu-aarch64-static with
// D-Bus on a private dbus-daemon and the metrics listener: dbus-send gets
// the healthcheck document and /metrics the health score.
func TestRaspberryPiBuildUnderQemu(t *testing.T) {
	if testing.Short() {
		t.Skip("cross builds take a while; not in -short")
	}
	q, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatalf("qemu-aarch64-static not installed (Debian package qemu-user-static): %v", err)
	}
	bin := filepath.Join(shortDir(t), "phonebookd")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-tags", "noubus", "-o", bin, "./cmd/phonebookd")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	bus := dbustest.Start(t, dbusPolicy)
	metricsAddr := freeAddr(t)
	// The buses chosen on the command line, over the tree's main.dbus 0.
	tr := newTree(t, filepath.Join(shortDir(t), "no-ubus.sock"), map[string]string{
		"main.dbus_address": bus.Address, "metrics.listen": metricsAddr})
	p := start(t, q, bin, "-c", tr.confDir, "-t", tr.saveDir, "-ubus", "0", "-dbus", "1")
	var out string
	waitFor(t, 60*time.Second, "the emulated daemon on D-Bus", func() bool {
		if p.exited() {
			t.Fatalf("exited with %d", p.code)
		}
		var err error
		out, err = dbusCall(bus.Address, "/org/aredn/Phonebook1/Health", "org.aredn.Phonebook1.Health.Check")
		return err == nil
	})
	if !strings.Contains(out, `"status":"healthy"`) {
		t.Errorf("Check over D-Bus from the arm64 build: %s", out)
	}
	var body string
	waitFor(t, 30*time.Second, "/metrics from the arm64 build", func() bool {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	})
	if !strings.Contains(body, "phonebook_health_score 100") {
		t.Errorf("metrics from the arm64 build lack the score:\n%s", body)
	}
	if strings.Contains(p.out.String(), "ubus") {
		t.Errorf("the noubus build mentions ubus in its log:\n%s", p.out.String())
	}
}
