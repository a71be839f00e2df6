package tests

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aredn/phonebookd/ubus"
)

// TestUbusEndToEnd: the broker as a process, an object with three methods
// served through a reconnecting Bus, the call and list subcommands against
// it, 1,000 concurrent calls from 8 goroutines, and the broker killed and
// restarted mid-run with the object back without restarting its owner.
func TestUbusEndToEnd(t *testing.T) {
	sock := filepath.Join(shortDir(t), "ubus.sock")
	br := startBroker(t, sock)

	bus := ubus.NewBus(sock, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	obj := &ubus.Object{Path: "test.calc", Methods: []ubus.Method{
		{Name: "echo", Handler: func(_ context.Context, r *ubus.Request) ([]ubus.Value, error) { return r.Raw, nil }},
		{Name: "add", Params: []ubus.Param{{Name: "a", Kind: ubus.Int32, Required: true}, {Name: "b", Kind: ubus.Int32, Required: true}},
			Handler: func(_ context.Context, r *ubus.Request) ([]ubus.Value, error) {
				return []ubus.Value{ubus.I32("sum", int32(r.Args["a"].Int+r.Args["b"].Int))}, nil
			}},
		{Name: "slow", Params: []ubus.Param{{Name: "ms", Kind: ubus.Int32}},
			Handler: func(ctx context.Context, r *ubus.Request) ([]ubus.Value, error) {
				time.Sleep(time.Duration(r.Args["ms"].Int) * time.Millisecond)
				return []ubus.Value{ubus.Bool("done", true)}, nil
			}},
	}}
	bus.Register(ctx, obj)
	go bus.Run(ctx)
	waitFor(t, 5*time.Second, "object registered", func() bool { _, rc := callRaw(sock, "test.calc", "add", `{"a":1,"b":2}`); return rc == 0 })

	out, rc := callRaw(sock, "test.calc", "echo", `{"s":"x","neg":-1,"big":4294967296,"d":0.25,"b":true,"n":null,"a":["a",[]],"t":{"k":{}}}`)
	want := "{\n\t\"s\": \"x\",\n\t\"neg\": -1,\n\t\"big\": 4294967296,\n\t\"d\": 0.250000,\n\t\"b\": true,\n\t\"n\": null,\n\t\"a\": [\n\t\t\"a\",\n\t\t[\n\t\t\t\n\t\t]\n\t],\n\t\"t\": {\n\t\t\"k\": {\n\t\t\t\n\t\t}\n\t}\n}\n"
	if rc != 0 || out != want {
		t.Errorf("echo: rc=%d\n%q\nwant\n%q", rc, out, want)
	}
	list := exec.Command(bins.daemon, "list", "-s", sock, "-v", "test.*")
	lo, err := list.Output()
	if err != nil {
		t.Fatal(err)
	}
	wantList := fmt.Sprintf("'test.calc' @%08x\n\t\"echo\":{}\n\t\"add\":{\"a\":\"Integer\",\"b\":\"Integer\"}\n\t\"slow\":{\"ms\":\"Integer\"}\n", obj.ID())
	if string(lo) != wantList {
		t.Errorf("list -v:\n%q\nwant\n%q", lo, wantList)
	}
	for _, c := range []struct {
		obj, method, arg string
		rc               int
	}{
		{"test.calc", "add", `{"a":1}`, 254},
		{"test.calc", "nosuch", "", 253},
		{"nosuch.obj", "x", "", 4},
		{"test.calc", "add", `{"a":`, 244},
		{"test.calc", "add", `{"a":1,"b":2,"ubus_rpc_session":"00000000000000000000000000000000"}`, 0},
	} {
		if _, rc := callRaw(sock, c.obj, c.method, c.arg); rc != c.rc {
			t.Errorf("%s %s %s: exit %d, want %d", c.obj, c.method, c.arg, rc, c.rc)
		}
	}
	cmd := exec.Command(bins.daemon, "call", "-s", sock, "-t", "1", "test.calc", "slow", `{"ms":3000}`)
	cmd.Run()
	if rc := cmd.ProcessState.ExitCode(); rc != 249 {
		t.Errorf("timeout: exit %d, want 249", rc)
	}

	// 1,000 calls from 8 goroutines on one connection, none mixed up.
	conn, err := ubus.Dial(ctx, sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Ping(ctx); err != nil {
		t.Errorf("ping: %v", err)
	}
	id, err := conn.LookupID(ctx, "test.calc")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 125; i++ {
				a, b := int32(g*1000+i), int32(i*7)
				r, err := conn.Invoke(ctx, id, "add", []ubus.Value{ubus.I32("a", a), ubus.I32("b", b)})
				if err != nil || len(r) != 1 || r[0][0].Int != int64(a+b) {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%d+%d: %v %v", a, b, r, err))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of 1000 calls wrong, first: %s", len(bad), bad[0])
	}

	// Kill the broker mid-run; calls fail fast; restart it; the object
	// is back without restarting its owner.
	br.cmd.Process.Kill()
	br.wait(5 * time.Second)
	waitFor(t, 5*time.Second, "bus to notice", func() bool { return !bus.Connected() })
	// It fails fast: ErrNotConnected, not the deadline a call waiting
	// for the broker would reach (no duration is timed).
	gapCtx, gapCancel := context.WithTimeout(ctx, 30*time.Second)
	if _, err := bus.Call(gapCtx, "test.calc", "add", nil); !errors.Is(err, ubus.ErrNotConnected) {
		t.Errorf("call during the gap: %v, want ErrNotConnected", err)
	}
	gapCancel()
	time.Sleep(300 * time.Millisecond)
	startBroker(t, sock)
	back := time.Now()
	waitFor(t, 10*time.Second, "object back after broker restart", func() bool {
		_, rc := callRaw(sock, "test.calc", "add", `{"a":2,"b":3}`)
		return rc == 0
	})
	t.Logf("object reachable again %s after the broker's return", time.Since(back).Round(time.Millisecond))
	out, _ = callRaw(sock, "test.calc", "add", `{"a":2,"b":3}`)
	if !strings.Contains(out, `"sum": 5`) {
		t.Errorf("after reconnect: %q", out)
	}
}
