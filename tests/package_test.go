package tests

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func untar(t *testing.T, data []byte) map[string]*tar.Header {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		h.PAXRecords = map[string]string{"data": string(b)}
		out[h.Name] = h
	}
}

// TestIPKLayout assembles an .ipk the way `make ipk` does and checks what
// opkg will see: the three members, control fields, conffiles, scripts,
// and every installed file with its mode.
func TestIPKLayout(t *testing.T) {
	out := shortDir(t)
	cmd := exec.Command("scripts/mkipk.sh", "x86_64", bins.daemon, "0.1.0", out)
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkipk: %v\n%s", err, b)
	}
	ipk, err := os.ReadFile(filepath.Join(out, "phonebookd_0.1.0_x86_64.ipk"))
	if err != nil {
		t.Fatal(err)
	}
	outer := untar(t, ipk)
	for _, m := range []string{"./debian-binary", "./data.tar.gz", "./control.tar.gz"} {
		if outer[m] == nil {
			t.Fatalf("ipk lacks %s: %v", m, outer)
		}
	}
	control := untar(t, []byte(outer["./control.tar.gz"].PAXRecords["data"]))
	ctl := control["./control"].PAXRecords["data"]
	for _, f := range []string{"Package: phonebookd", "Version: 0.1.0", "Architecture: x86_64", "Installed-Size: "} {
		if !strings.Contains(ctl, f) {
			t.Errorf("control lacks %q:\n%s", f, ctl)
		}
	}
	if control["./conffiles"].PAXRecords["data"] != "/etc/config/phonebook\n" {
		t.Errorf("conffiles %q", control["./conffiles"].PAXRecords["data"])
	}
	data := untar(t, []byte(outer["./data.tar.gz"].PAXRecords["data"]))
	want := map[string]int64{
		"./usr/bin/phonebookd": 0o755, "./etc/init.d/phonebook": 0o755, "./etc/config/phonebook": 0o644,
		"./usr/share/rpcd/acl.d/phonebook.json": 0o644, "./www/cgi-bin/healthcheck": 0o755,
		"./www/cgi-bin/showphonebook": 0o755, "./www/cgi-bin/apps/phonebook/user": 0o755,
		"./www/apps/phonebook/icon.svg": 0o644, "./lib/upgrade/keep.d/phonebook": 0o644,
	}
	for name, mode := range want {
		h := data[name]
		if h == nil {
			t.Errorf("data lacks %s", name)
			continue
		}
		if h.Mode&0o777 != mode || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mode %o uid %d gid %d", name, h.Mode&0o777, h.Uid, h.Gid)
		}
	}
}
