package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCrossBinariesUnderQemu builds the stripped router binaries for mips
// (softfloat) and arm (GOARM=7), starts each under qemu-user-static
// against the broker, and asks it for phonebook.health status.
func TestCrossBinariesUnderQemu(t *testing.T) {
	if testing.Short() {
		t.Skip("cross builds take a while; not in -short")
	}
	targets := []struct{ name, qemu, goarch, env string }{
		{"mips_24kc", "qemu-mips-static", "mips", "GOMIPS=softfloat"},
		{"arm_cortex-a7_neon-vfpv4", "qemu-arm-static", "arm", "GOARM=7"},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			q, err := exec.LookPath(tg.qemu)
			if err != nil {
				t.Fatalf("%s not installed (Debian package qemu-user-static; .ci/run installs it)", tg.qemu)
			}
			bin := filepath.Join(shortDir(t), "phonebookd")
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/phonebookd")
			cmd.Dir = ".."
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+tg.goarch, tg.env)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("build: %v\n%s", err, out)
			}
			file, _ := exec.Command("file", bin).Output()
			t.Logf("%s", strings.TrimSpace(string(file)))
			// Footprint budget: the stripped binary at most 8 MB, its
			// package at most 3 MB.
			st, _ := os.Stat(bin)
			pkgDir := shortDir(t)
			mk := exec.Command("scripts/mkipk.sh", tg.name, bin, "0.0.0", pkgDir)
			mk.Dir = ".."
			ipk, err := mk.Output()
			if err != nil {
				t.Fatalf("mkipk: %v", err)
			}
			ist, _ := os.Stat(strings.TrimSpace(string(ipk)))
			t.Logf("%s: binary %d bytes, package %d bytes", tg.name, st.Size(), ist.Size())
			if st.Size() > 8<<20 || ist.Size() > 3<<20 {
				t.Errorf("over the footprint budget (8 MB binary, 3 MB package)")
			}
			sock := filepath.Join(shortDir(t), "ubus.sock")
			startBroker(t, sock)
			tr := newTree(t, sock, nil)
			p := start(t, q, bin, "-c", tr.confDir, "-t", tr.saveDir, "-s", sock)
			waitFor(t, 60*time.Second, "the emulated daemon on ubus", func() bool {
				if p.exited() {
					t.Fatalf("exited with %d", p.code)
				}
				_, rc := callRaw(sock, "phonebook.health", "status", "")
				return rc == 0
			})
			h := call(t, sock, "phonebook.health", "status", "")
			if get(h, "threads", "safety", "status") != "healthy" || num(get(h, "memory", "rss_mb")) <= 0 {
				t.Errorf("status from %s: %v", tg.name, h)
			}
			t.Logf("%s under qemu: rss %.1f MB, heap %.1f MB", tg.name, num(get(h, "memory", "rss_mb")), num(get(h, "memory", "heap_mb")))
		})
	}
}
