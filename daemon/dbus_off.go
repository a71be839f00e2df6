//go:build nodbus

package daemon

// newDBusFront: this build has no D-Bus (an OpenWrt build tagged nodbus).
func newDBusFront(*Daemon) front { return nil }

// dbusStatus: no D-Bus in this build.
func (d *Daemon) dbusStatus() DBusStatus { return DBusStatus{} }
