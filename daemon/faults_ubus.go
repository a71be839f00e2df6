//go:build faults && !noubus

package daemon

import (
	"context"
	"runtime"
	"runtime/metrics"

	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/ubus"
)

// faultObjects publishes phonebook.faults, through which the whole-daemon
// tests make a worker panic, hang, or crash the process. Built only with
// the "faults" tag; never in a package for a router.
func (d *Daemon) faultObjects() []*ubus.Object {
	return []*ubus.Object{{Path: "phonebook.faults", Methods: []ubus.Method{
		{Name: "inject", Params: []ubus.Param{{Name: "worker", Kind: ubus.String, Required: true}, {Name: "fault", Kind: ubus.String, Required: true}},
			Handler: func(_ context.Context, req *ubus.Request) ([]ubus.Value, error) {
				w, _ := req.String("worker")
				f, _ := req.String("fault")
				if w == "main" && f == "sip_stuck" { // every SIP handler hangs
					d.sip.InjectStuck()
					return []ubus.Value{ubus.Str("armed", f)}, nil
				}
				if err := d.sup.Inject(w, f); err != nil {
					return nil, ubus.StatusInvalidArgument
				}
				return []ubus.Value{ubus.Str("armed", f)}, nil
			}},
		{Name: "gc", Handler: func(context.Context, *ubus.Request) ([]ubus.Value, error) {
			// A collection now, then the live heap it left: tests compare
			// the heap of runs without waiting for the runtime's own GC.
			runtime.GC()
			s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
			metrics.Read(s)
			return []ubus.Value{ubus.I64("heap_live_bytes", int64(s[0].Value.Uint64()))}, nil
		}},
		{Name: "condition", Params: []ubus.Param{{Name: "code", Kind: ubus.String, Required: true}, {Name: "level", Kind: ubus.String}, {Name: "clear", Kind: ubus.Int8}},
			Handler: func(ctx context.Context, req *ubus.Request) ([]ubus.Value, error) {
				key, _ := req.String("code")
				if req.Args["clear"].Int != 0 {
					d.sys.SetHealthy(injectedWarning, key)
					d.sys.SetHealthy(injectedCritical, key)
				} else {
					cond := injectedWarning
					if level, _ := req.String("level"); level == health.LevelCritical {
						cond = injectedCritical
					}
					d.sys.SetUnhealthy(cond, key, nil)
				}
				s := d.evaluatedAfter(ctx)
				return []ubus.Value{ubus.Str("status", s.Status)}, nil
			}},
	}}}
}
