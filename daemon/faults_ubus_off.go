//go:build !faults && !noubus

package daemon

import "github.com/aredn/phonebookd/ubus"

// faultObjects is empty: fault injection exists only in "faults" builds.
func (d *Daemon) faultObjects() []*ubus.Object { return nil }
