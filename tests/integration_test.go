package tests

import (
	"bufio"
	"encoding/json"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// shellScripts lists every shell script of the project.
func shellScripts(t *testing.T) []string {
	var out []string
	filepath.Walk("..", func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			if info != nil && info.IsDir() && (info.Name() == ".git" || info.Name() == "run" || info.Name() == "dist" || info.Name() == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		line, _ := bufio.NewReader(f).ReadString('\n')
		if strings.HasPrefix(line, "#!/bin/sh") || strings.HasPrefix(line, "#!/usr/bin/env bash") || strings.HasPrefix(line, "#!/bin/bash") {
			out = append(out, p)
		}
		return nil
	})
	if len(out) < 5 {
		t.Fatalf("only %d shell scripts found: %v", len(out), out)
	}
	return out
}

func TestShellScriptsClean(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatal("shellcheck is not installed (Debian package shellcheck; .ci/run installs it)")
	}
	for _, s := range shellScripts(t) {
		shell := "sh"
		if b, _ := os.ReadFile(s); strings.Contains(strings.SplitN(string(b), "\n", 2)[0], "bash") {
			shell = "bash"
		}
		if out, err := exec.Command(shell, "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", shell, s, err, out)
		}
		if out, err := exec.Command(sc, s).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s:\n%s", s, out)
		}
	}
}

// shims puts `ubus` and `uci` stand-ins on PATH: phonebookd's own call and
// uci subcommands, pointed at the test's socket and configuration.
func shims(t *testing.T, sock string, tr *tree) string {
	dir := shortDir(t)
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("ubus", `if [ "$1" = "-t" ]; then t=$2; shift 2; else t=30; fi
cmd=$1; shift
exec `+bins.daemon+` "$cmd" -s `+sock+` -t "$t" "$@"`)
	write("uci", `exec `+bins.daemon+` uci -c `+tr.confDir+` -t `+tr.saveDir+` "$@"`)
	return dir
}

func cgiGet(t *testing.T, script, path string) (int, string) {
	h := &cgi.Handler{Path: "/bin/sh", Args: []string{script}, Env: []string{"PATH=" + path}}
	if strings.HasSuffix(script, "/healthcheck") {
		// One exec of the daemon's binary, pointed at the test's tree.
		h.Args = []string{"-c", `sed "s|exec /usr/bin/phonebookd cgi healthcheck|exec ` + cgiBin + ` cgi healthcheck -s ` + cgiSock + ` -c ` + cgiConf + ` -t ` + cgiSave + `|" "$0" | sh`, script}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/cgi-bin/x?a=$(touch%20/tmp/pwned)&b=`id`", nil))
	return rec.Code, rec.Body.String()
}

// The healthcheck CGI's binary, socket and UCI directories (set by TestCGI).
var cgiBin, cgiSock, cgiConf, cgiSave string

// TestCGI runs the CGI scripts under Go's CGI host with ubus and uci
// stand-ins: healthy, critical, daemon down, endpoint disabled.
func TestCGI(t *testing.T) {
	e := newFaultEnv(t, nil)
	path := shims(t, e.sock, e.tr) + ":/usr/bin:/bin"
	health, _ := filepath.Abs("../files/www/cgi-bin/healthcheck")
	show, _ := filepath.Abs("../files/www/cgi-bin/showphonebook")
	user, _ := filepath.Abs("../files/www/cgi-bin/apps/phonebook/user")

	cgiBin, cgiSock, cgiConf, cgiSave = bins.daemon, e.sock, e.tr.confDir, e.tr.saveDir
	code, body := cgiGet(t, health, path)
	var down map[string]any
	if code != 503 || json.Unmarshal([]byte(body), &down) != nil || down["status"] != "critical" || !strings.Contains(body, "not running") {
		t.Errorf("daemon down: %d %s", code, body)
	}
	// Every field of the specification, even with the daemon down.
	for _, f := range []string{"status", "timestamp", "uptime_seconds", "health_score", "checks", "alerts", "recommendations"} {
		if _, ok := down[f]; !ok {
			t.Errorf("daemon down: no %s in %s", f, body)
		}
	}
	code, body = cgiGet(t, show, path)
	if code != 503 {
		t.Errorf("showphonebook, daemon down: %d %s", code, body)
	}
	p := e.start()
	code, body = cgiGet(t, health, path)
	var doc map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &doc) != nil || doc["status"] != "healthy" {
		t.Errorf("healthy: %d %s", code, body)
	}
	code, body = cgiGet(t, show, path)
	if code != 200 || json.Unmarshal([]byte(body), &doc) != nil || get(doc, "software_health", "threads", "safety", "status") != "healthy" {
		t.Errorf("showphonebook: %d %s", code, body)
	}
	call(t, e.sock, "phonebook.faults", "condition", `{"code":"test_critical","level":"critical"}`)
	code, body = cgiGet(t, health, path)
	if code != 503 || !strings.Contains(body, `"status": "critical"`) {
		t.Errorf("critical: %d %s", code, body)
	}
	call(t, e.sock, "phonebook.faults", "condition", `{"code":"test_critical","clear":true}`)

	// The app page, rendered by the daemon's binary through the CGI.
	h := &cgi.Handler{Path: "/bin/sh", Args: []string{"-c", `sed "s|/usr/bin/phonebookd page|` + bins.daemon + ` page -s ` + e.sock + `|" "$0" | sh`, user}, Env: []string{"PATH=" + path}}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/cgi-bin/apps/phonebook/user", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "Health score") || !strings.Contains(rec.Body.String(), "safety") {
		t.Errorf("app page: %d %s", rec.Code, rec.Body.String())
	}

	// Endpoint disabled through UCI, as an operator would.
	exec.Command(bins.daemon, "uci", "-c", e.tr.confDir, "-t", e.tr.saveDir, "set", "phonebook.health.health_endpoint=0").Run()
	code, _ = cgiGet(t, health, path)
	if code != 404 {
		t.Errorf("endpoint disabled: %d", code)
	}
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Error("query string reached a shell")
	}
	e.stop(p)
}

// TestACLNamesRealMethods: every method the rpcd ACL files grant exists on
// the daemon's objects, and every method is granted by one group.
func TestACLNamesRealMethods(t *testing.T) {
	e := newFaultEnv(t, nil)
	p := e.tr.start(t, bins.daemon)
	out, err := exec.Command(bins.daemon, "list", "-s", e.sock, "-v", "phonebook*").Output()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	obj := ""
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "'") {
			obj = strings.Split(line, "'")[1]
		} else if strings.HasPrefix(line, "\t\"") {
			have[obj+" "+strings.Split(line, "\"")[1]] = true
		}
	}
	granted := map[string]bool{}
	for _, f := range []string{"../files/usr/share/rpcd/acl.d/phonebook.json", "../files/usr/share/phonebook/acl-unauthenticated.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var acl map[string]map[string]any
		if err := json.Unmarshal(b, &acl); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for group, g := range acl {
			for _, mode := range []string{"read", "write"} {
				objs, _ := get(g[mode], "ubus").(map[string]any)
				for o, ms := range objs {
					for _, m := range ms.([]any) {
						k := o + " " + m.(string)
						if !have[k] {
							t.Errorf("%s: group %s grants %s, which does not exist", f, group, k)
						}
						granted[k] = true
					}
				}
			}
		}
	}
	for k := range have {
		if !granted[k] {
			t.Errorf("%s is in no ACL group", k)
		}
	}
	e.stop(p)
}
