//go:build nodbus

package daemon

import "github.com/aredn/phonebookd/ubus"

// newDBusFront: this build has no D-Bus (an OpenWrt build tagged nodbus).
func newDBusFront(*Daemon) front { return nil }

// dbusStatus: no D-Bus in this build.
func (d *Daemon) dbusStatus() ubus.Value { return ubus.Tbl("dbus", ubus.Bool("enabled", false)) }
