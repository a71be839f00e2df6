//go:build noubus

package daemon

// newUbusFront: this build has no ubus (a Debian build tagged noubus).
func newUbusFront(*Daemon) front { return nil }
