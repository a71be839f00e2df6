package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// baresipPhone runs one baresip (Debian baresip-core) registering number
// at server over transport ("udp" or "tcp", the only one it listens on).
func baresipPhone(t *testing.T, server, number, transport string) {
	t.Helper()
	bin, err := exec.LookPath("baresip")
	if err != nil {
		t.Fatal("baresip is not installed (Debian package baresip-core)")
	}
	dir := shortDir(t)
	config := fmt.Sprintf(`poll_method epoll
sip_listen 127.0.0.1:0
sip_transports %s
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aufile.so
module_app account.so
audio_player aufile,/dev/null
audio_source ausine,440
audio_alert aufile,/dev/null
`, transport)
	account := fmt.Sprintf("<sip:%s@%s;transport=%s>;regint=600;answermode=auto\n", number, server, transport)
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte(account), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, bin, "-f", dir)
}

// TestBaresipPhonesAnswerTheMonitor: two real phones (baresip 1.0.0),
// one registered over UDP and one over TCP only, are both alive after a
// probe round: no phone in monitor.phones.not_answering_numbers, no
// phones_unreachable. Before: the monitor sent OPTIONS sip:IP:port,
// baresip answered 404, counted as a failure ("2 of 2 registered phones
// do not answer"), and the TCP phone was probed over UDP.
func TestBaresipPhonesAnswerTheMonitor(t *testing.T) {
	e := newFaultEnv(t, map[string]string{"monitor.interval": "5", "monitor.probe_timeout_ms": "2000", "health.health_check_interval": "1"})
	e.tr.start(t, bins.daemon)
	host, port := sipAddr(t, e.sock)
	server := fmt.Sprintf("%s:%d", host, port)
	baresipPhone(t, server, "2101", "udp")
	baresipPhone(t, server, "2102", "tcp")
	waitFor(t, 15*time.Second, "both phones registered", func() bool {
		reg, _ := sipCounts(t, e.sock)
		return reg == 2
	})
	var phones map[string]any
	waitFor(t, 20*time.Second, "a probe round over both phones", func() bool {
		phones, _ = get(call(t, e.sock, "phonebook", "status", ""), "monitor", "phones").(map[string]any)
		return num(phones["probed"]) == 2
	})
	silent, listed := phones["not_answering_numbers"].([]any)
	if num(phones["not_answering"]) != 0 || !listed || len(silent) != 0 {
		t.Errorf("live phones reported silent: %v", phones)
	}
	ck := call(t, e.sock, "phonebook.health", "check", "")
	for _, a := range ck["alerts"].([]any) {
		if get(a, "code") == "phones_unreachable" {
			t.Errorf("alert %v", a)
		}
	}
}
