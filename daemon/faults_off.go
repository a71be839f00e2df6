//go:build !faults

package daemon

import (
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/ubus"
)

// faultObjects is empty: fault injection exists only in "faults" builds.
func (d *Daemon) faultObjects() []*ubus.Object { return nil }

// faultWorkers is empty: test workers exist only in "faults" builds.
func (d *Daemon) faultWorkers() []health.Spec { return nil }
