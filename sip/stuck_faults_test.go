//go:build faults

package sip

import (
	"net/netip"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/poll"
	"github.com/aredn/phonebookd/supervisor"
)

// TestStuckHandlerIsUnresponsive: a handler held on one message (the
// sip_stuck fault) stops main's heartbeat, with no phone sending anything
// (main's own OPTIONS reaches the handler), and the supervisor declares
// main unresponsive and restarts it: judging liveness by progress still
// catches a real hang.
func TestStuckHandlerIsUnresponsive(t *testing.T) {
	cfg := config.Defaults().SIP
	cfg.Listen = "127.0.0.1:0"
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), newCondLog())
	sup := superviseMain(t, s)
	netip.MustParseAddrPort(s.Addr())
	if st, _ := mainState(sup); st != supervisor.StatusHealthy {
		t.Fatalf("main %s before the fault", st)
	}
	s.InjectStuck()
	poll.Within(t, 30*time.Second, "main unresponsive and restarted", func() bool {
		_, restarts := mainState(sup)
		return restarts > 0
	})
}
