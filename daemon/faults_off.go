//go:build !faults

package daemon

import (
	"github.com/aredn/phonebookd/supervisor"
	"github.com/aredn/phonebookd/ubus"
)

// faultObjects is empty: fault injection exists only in "faults" builds.
func (d *Daemon) faultObjects() []*ubus.Object { return nil }

// faultWorkers is empty: test workers exist only in "faults" builds.
func (d *Daemon) faultWorkers() []supervisor.Spec { return nil }
