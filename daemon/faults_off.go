//go:build !faults

package daemon

import (
	"github.com/aredn/phonebookd/supervisor"
)

// faultWorkers is empty: test workers exist only in "faults" builds.
func (d *Daemon) faultWorkers() []supervisor.Spec { return nil }
