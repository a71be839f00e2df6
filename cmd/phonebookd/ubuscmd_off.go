//go:build noubus

package main

import (
	"fmt"
	"os"
)

// defaultSocket would be ubusd's socket; this build has no ubus front and
// ignores it (the -s flag stays for scripts that pass it).
const defaultSocket = "/var/run/ubus/ubus.sock"

// runUbusCommand: this build (Debian, tagged noubus) has no ubus client.
// The daemon answers on D-Bus there: busctl or dbus-send reach it.
func runUbusCommand(name string, _ []string) int {
	fmt.Fprintf(os.Stderr, "phonebookd %s: not in this build (noubus); on D-Bus: busctl introspect org.aredn.Phonebook1 /org/aredn/Phonebook1/Health\n", name)
	return 2
}
