//go:build !race

package runtimetune

// raceEnabled: see race_on_test.go.
const raceEnabled = false
