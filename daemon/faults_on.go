//go:build faults

package daemon

import (
	"context"
	"time"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/supervisor"
)

// The conditions the faults object injects, registered only in builds
// tagged faults: an instance's key is the code the test gives.
var (
	injectedWarning = health.Register(&health.Descriptor{Code: "injected_warning", Level: health.LevelWarning, Penalty: 10,
		When: "a test injected it (faults builds only)", Text: func(a health.Args) string { return "injected condition " + a[health.ArgKey] }})
	injectedCritical = health.Register(&health.Descriptor{Code: "injected_critical", Level: health.LevelCritical, Penalty: 10,
		When: "a test injected it (faults builds only)", Text: func(a health.Args) string { return "injected condition " + a[health.ArgKey] }})
)

// faultWorkers adds "canary", a worker with a one-second heartbeat, so
// that hang tests meet its deadline (3 s) quickly.
func (d *Daemon) faultWorkers() []supervisor.Spec {
	return []supervisor.Spec{{Name: "canary", Period: time.Second, Run: func(ctx context.Context, w *supervisor.Worker) error {
		for {
			if err := w.Wait(ctx, time.Hour); err != nil {
				return nil
			}
		}
	}}}
}
