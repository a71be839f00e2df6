package tests

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// sharedTool is a package manager from ../shared/tools (built from the
// public sources of apk-tools v3 and opkg-lede).
func sharedTool(t *testing.T, name string) string {
	p, err := filepath.Abs(filepath.Join("..", "..", "shared", "tools", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s missing: %v (../shared/tools beside the checkout)", name, err)
	}
	return p
}

// mkpkg builds a package with scripts/mkpkg.sh; files, when not empty, is
// another files/ tree.
func mkpkg(t *testing.T, format, arch, bin, release, files string) string {
	t.Helper()
	cmd := exec.Command("scripts/mkpkg.sh", format, arch, bin, "0.1.0", release, shortDir(t))
	cmd.Dir = ".."
	cmd.Env = os.Environ()
	if files != "" {
		cmd.Env = append(cmd.Env, "FILES="+files)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mkpkg %s: %v\n%s", format, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// scratchRoot is an empty OpenWrt-like root: passwd and group, and the
// lock directory opkg needs.
func scratchRoot(t *testing.T) string {
	r := shortDir(t)
	os.MkdirAll(filepath.Join(r, "etc"), 0o755)
	os.MkdirAll(filepath.Join(r, "var", "lock"), 0o755)
	os.WriteFile(filepath.Join(r, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/ash\nnobody:*:65534:65534:nobody:/var:/bin/false\n"), 0o644)
	os.WriteFile(filepath.Join(r, "etc", "group"), []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	os.WriteFile(filepath.Join(r, "etc", "shadow"), []byte("root:::0:99999:7:::\n"), 0o600)
	return r
}

// treeFiles lists a root's regular files with their modes.
func treeFiles(t *testing.T, root string, skip ...string) map[string]fs.FileMode {
	out := map[string]fs.FileMode{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		for _, s := range skip {
			if strings.HasPrefix(rel, s) {
				return nil
			}
		}
		info, _ := d.Info()
		out[rel] = info.Mode().Perm()
		return nil
	})
	return out
}

// wantInstalled: every file of files/ and the binary, with its mode.
func wantInstalled(t *testing.T) map[string]fs.FileMode {
	want := map[string]fs.FileMode{"usr/bin/phonebookd": 0o755}
	filepath.WalkDir("../files", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel("../files", p)
		info, _ := d.Info()
		mode := fs.FileMode(0o644)
		if info.Mode()&0o100 != 0 {
			mode = 0o755
		}
		want[rel] = mode
		return nil
	})
	return want
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// onlyKept fails for any file a removal left but what OpenWrt keeps: the
// users, the edited config, and the manager's copy of the new one.
func onlyKept(t *testing.T, how string, left []string, newConfig string) {
	t.Helper()
	t.Logf("left after %s: %v", how, left)
	for _, f := range left {
		switch f {
		case "etc/passwd", "etc/group", "etc/shadow", "etc/config/phonebook", newConfig:
		default:
			t.Errorf("left behind by %s: %s", how, f)
		}
	}
}

// TestPackagesWithRealManagers installs, upgrades and removes the .ipk
// with opkg and the .apk with apk-tools v3 in scratch roots, the scripts
// run with IPKG_INSTROOT set (so they create the phonebook user there and
// start nothing): every file in place with its mode, the user created,
// an edited /etc/config/phonebook kept across an upgrade to a release
// whose shipped config differs, and after removal nothing left but what
// OpenWrt keeps (the edited config, the user).
func TestPackagesWithRealManagers(t *testing.T) {
	hostPasswd, _ := os.ReadFile("/etc/passwd")
	// Release 2 ships a config that differs from release 1's.
	next := shortDir(t)
	if out, err := exec.Command("cp", "-R", "../files/.", next).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	cfg := filepath.Join(next, "etc", "config", "phonebook")
	b, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(b, []byte("# release 2\n")...), 0o644)
	const edit = "\n# edited by the operator\n"

	check := func(t *testing.T, root string) {
		got := treeFiles(t, root)
		for f, mode := range wantInstalled(t) {
			if m, ok := got[f]; !ok || m != mode {
				t.Errorf("%s: installed %v (present %v), want mode %o", f, m, ok, mode)
			}
		}
		passwd, _ := os.ReadFile(filepath.Join(root, "etc", "passwd"))
		group, _ := os.ReadFile(filepath.Join(root, "etc", "group"))
		if !strings.Contains(string(passwd), "\nphonebook:x:") || !strings.Contains(string(group), "\nphonebook:x:") {
			t.Errorf("phonebook user or group not created in the root:\n%s\n%s", passwd, group)
		}
		if strings.Count("\n"+string(passwd), "\nphonebook:") != 1 {
			t.Errorf("phonebook user added more than once:\n%s", passwd)
		}
	}
	editConfig := func(root string) {
		f, _ := os.OpenFile(filepath.Join(root, "etc", "config", "phonebook"), os.O_APPEND|os.O_WRONLY, 0)
		f.WriteString(edit)
		f.Close()
	}
	keptEdit := func(t *testing.T, root, when string) {
		b, _ := os.ReadFile(filepath.Join(root, "etc", "config", "phonebook"))
		if !strings.Contains(string(b), edit) {
			t.Errorf("%s: the operator's edit of /etc/config/phonebook was lost", when)
		}
	}
	remaining := func(root string, managerDirs ...string) []string {
		var left []string
		for f := range treeFiles(t, root, managerDirs...) {
			left = append(left, f)
		}
		sort.Strings(left)
		return left
	}

	t.Run("ipk", func(t *testing.T) {
		opkg := sharedTool(t, "opkg")
		v1 := mkpkg(t, "ipk", "x86_64", bins.router, "1", "")
		v2 := mkpkg(t, "ipk", "x86_64", bins.router, "2", next)
		root := scratchRoot(t)
		conf := filepath.Join(shortDir(t), "opkg.conf")
		os.WriteFile(conf, []byte("dest root /\nlists_dir ext /var/opkg-lists\narch all 1\narch noarch 1\narch x86_64 10\n"), 0o644)
		o := []string{"-o", root, "-f", conf, "--force-postinstall"}
		env := []string{"IPKG_INSTROOT=" + root}
		// libc is in every OpenWrt image.
		os.MkdirAll(filepath.Join(root, "usr", "lib", "opkg", "info"), 0o755)
		os.WriteFile(filepath.Join(root, "usr", "lib", "opkg", "status"), []byte("Package: libc\nVersion: 1.2.5-r4\nStatus: install user installed\nArchitecture: x86_64\n\n"), 0o644)
		run(t, env, opkg, append(o, "install", v1)...)
		check(t, root)
		editConfig(root)
		run(t, env, opkg, append(o, "install", v2)...)
		keptEdit(t, root, "opkg upgrade")
		if out := run(t, env, opkg, append(o, "list-installed")...); !strings.Contains(out, "phonebookd - 0.1.0-r2") {
			t.Errorf("after the upgrade: %s", out)
		}
		check(t, root)
		run(t, env, opkg, append(o, "remove", "phonebookd")...)
		keptEdit(t, root, "opkg remove")
		onlyKept(t, "opkg remove", remaining(root, "usr/lib/opkg", "var/"), "etc/config/phonebook-opkg")
	})

	t.Run("apk", func(t *testing.T) {
		apk := sharedTool(t, "apk")
		v1 := mkpkg(t, "apk", "x86_64", bins.router, "1", "")
		v2 := mkpkg(t, "apk", "x86_64", bins.router, "2", next)
		root := scratchRoot(t)
		a := []string{"--root", root, "--allow-untrusted", "--no-network", "--force-no-chroot", "--arch", "x86_64"}
		env := []string{"IPKG_INSTROOT=" + root}
		run(t, env, apk, append(a, "--initdb", "add", "--virtual", "libc")...) // in every OpenWrt image
		run(t, env, apk, append(a, "add", v1)...)
		check(t, root)
		editConfig(root)
		out := run(t, env, apk, append(a, "add", v2)...)
		keptEdit(t, root, "apk upgrade")
		if !strings.Contains(out, "phonebookd (0.1.0-r1 -> 0.1.0-r2)") && !strings.Contains(out, "0.1.0-r2") {
			t.Errorf("apk upgrade said: %s", out)
		}
		check(t, root)
		run(t, env, apk, append(a, "del", "phonebookd")...)
		keptEdit(t, root, "apk del")
		onlyKept(t, "apk del", remaining(root, "lib/apk", "etc/apk", "var/"), "etc/config/phonebook.apk-new")
	})
	if now, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(now, hostPasswd) {
		t.Error("a package script changed the host's /etc/passwd")
	}
}
