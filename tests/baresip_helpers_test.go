package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// baresip is one real phone: a baresip process with a private config
// directory, driven over its ctrl_tcp socket (netstring-framed JSON:
// commands {"command","params","token"}, answered {"response":true,
// "ok","data","token"}, and events {"event":true,"type",...}).
type baresip struct {
	t       *testing.T
	name    string
	proc    *proc
	sipPort int
	ctrl    net.Conn

	mu      sync.Mutex
	events  []map[string]any
	replies map[string]chan map[string]any
	seq     int
	changed chan struct{} // closed and replaced on each event
}

func baresipPath(t *testing.T) string {
	p, err := exec.LookPath("baresip")
	if err != nil {
		t.Fatal("baresip is not installed (Debian package baresip-core; .ci/run installs it)")
	}
	return p
}

// freeSIPPort is a port free for UDP and TCP whose next port is free for
// TCP as well: baresip listens for TLS on sip_listen's port + 1.
func freeSIPPort(t *testing.T) int {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err1 := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		l2, err2 := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l.Close()
		if err1 == nil {
			u.Close()
		}
		if err2 == nil {
			l2.Close()
		}
		if err1 == nil && err2 == nil {
			return p
		}
	}
	t.Fatal("no free port pair for baresip")
	return 0
}

// freeTCPPortBut is a port free for TCP that is none of taken: the
// kernel may hand out again a port just closed, such as the pair
// freeSIPPort checked (a CI run had baresip's ctrl_tcp on its own SIP
// port: "ctrl_tcp: failed to listen on TCP 127.0.0.1:34915 (Address
// already in use)", and the call test found no ctrl connection).
func freeTCPPortBut(t *testing.T, taken ...int) int {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !slices.Contains(taken, p) {
			return p
		}
	}
	t.Fatalf("no free TCP port but %v", taken)
	return 0
}

// startBaresip runs a phone whose accounts are the given lines of
// baresip's accounts file. Audio: a 440 Hz sine (ausine, which wants
// 48 kHz stereo, resampled to PCMU) as the source and the aubridge
// null device as the player. -s traces every SIP message to its output.
func startBaresip(t *testing.T, name string, accounts ...string) *baresip {
	t.Helper()
	bin := baresipPath(t)
	dir := filepath.Join(shortDir(t), name)
	os.MkdirAll(dir, 0o755)
	// baresip takes sipPort for UDP and TCP and sipPort+1 for TLS
	sipPort := freeSIPPort(t)
	ctrlPort := freeTCPPortBut(t, sipPort, sipPort+1)
	config := fmt.Sprintf(`poll_method epoll
sip_listen 127.0.0.1:%d
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aubridge.so
module account.so
module menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:%d
audio_player aubridge,%s
audio_source ausine,440
audio_alert aubridge,%s
ausrc_srate 48000
ausrc_channels 2
auplay_srate 48000
rtp_stats yes
statmode_default off
`, sipPort, ctrlPort, name, name)
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "accounts"), []byte(strings.Join(accounts, "\n")+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "contacts"), nil, 0o644)
	b := &baresip{t: t, name: name, sipPort: sipPort, replies: map[string]chan map[string]any{}, changed: make(chan struct{})}
	b.proc = start(t, bin, "-f", dir, "-s")
	waitFor(t, 10*time.Second, name+"'s ctrl_tcp", func() bool {
		if b.proc.exited() {
			t.Fatalf("baresip %s exited:\n%s", name, b.proc.out.String())
		}
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(ctrlPort))
		if err == nil {
			b.ctrl = c
		}
		return err == nil
	})
	t.Cleanup(func() {
		b.ctrl.Close()
		if t.Failed() {
			b.mu.Lock()
			for _, e := range b.events {
				t.Logf("%s event: %v %v %v", name, e["type"], e["param"], e["rtcp_stats"])
			}
			b.mu.Unlock()
		}
	})
	go b.read()
	return b
}

// read splits the ctrl_tcp stream into netstrings ("len:json,").
func (b *baresip) read() {
	r := bufio.NewReader(b.ctrl)
	for {
		n, err := r.ReadString(':')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimLeft(n[:len(n)-1], ","))
		if err != nil || size < 0 || size > 1<<20 {
			return
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		var m map[string]any
		if json.Unmarshal(buf, &m) != nil {
			continue
		}
		b.mu.Lock()
		if m["response"] == true {
			tok, _ := m["token"].(string)
			if ch := b.replies[tok]; ch != nil {
				ch <- m
				delete(b.replies, tok)
			}
		} else if m["event"] == true {
			b.events = append(b.events, m)
			close(b.changed)
			b.changed = make(chan struct{})
		}
		b.mu.Unlock()
	}
}

// cmd runs a command (those of baresip's menu module: dial, hangup,
// accept, hold, resume) and returns its answer's data.
func (b *baresip) cmd(command, params string) string {
	b.t.Helper()
	b.mu.Lock()
	b.seq++
	tok := strconv.Itoa(b.seq)
	ch := make(chan map[string]any, 1)
	b.replies[tok] = ch
	b.mu.Unlock()
	msg, _ := json.Marshal(map[string]string{"command": command, "params": params, "token": tok})
	if _, err := fmt.Fprintf(b.ctrl, "%d:%s,", len(msg), msg); err != nil {
		b.t.Fatalf("%s %s: %v", b.name, command, err)
	}
	select {
	case r := <-ch:
		if r["ok"] != true {
			b.t.Fatalf("%s %s %s: %v", b.name, command, params, r["data"])
		}
		s, _ := r["data"].(string)
		return s
	case <-time.After(10 * time.Second):
		b.t.Fatalf("%s %s: no answer", b.name, command)
		return ""
	}
}

// count is how many events since index from match.
func (b *baresip) count(from int, match func(map[string]any) bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, e := range b.events[min(from, len(b.events)):] {
		if match(e) {
			n++
		}
	}
	return n
}

// mark is the index of the next event: waits after it look only at
// events that came later.
func (b *baresip) mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.events)
}

// wait waits for an event since index from that matches, and returns it.
func (b *baresip) wait(from int, timeout time.Duration, what string, match func(map[string]any) bool) map[string]any {
	b.t.Helper()
	deadline := time.After(timeout)
	for {
		b.mu.Lock()
		for _, e := range b.events[min(from, len(b.events)):] {
			if match(e) {
				b.mu.Unlock()
				return e
			}
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			b.t.Fatalf("%s: no %s within %s", b.name, what, timeout)
			return nil
		}
	}
}

// event matches an event type (and, when given, its param's prefix).
func event(typ string, paramPrefix ...string) func(map[string]any) bool {
	return func(e map[string]any) bool {
		if e["type"] != typ {
			return false
		}
		if len(paramPrefix) > 0 {
			p, _ := e["param"].(string)
			return strings.HasPrefix(p, paramPrefix[0])
		}
		return true
	}
}

// rtpReceived matches an RTCP report saying RTP came in.
func rtpReceived(e map[string]any) bool {
	if e["type"] != "CALL_RTCP" {
		return false
	}
	return num(get(e, "rtcp_stats", "rx", "sent")) > 0
}

// sipTrace is the SIP trace baresip wrote (-s).
func (b *baresip) sipTrace() string { return b.proc.out.String() }
