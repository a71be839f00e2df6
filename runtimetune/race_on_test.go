//go:build race

package runtimetune

// raceEnabled: the race detector's shadow memory is anonymous memory
// outside the heap that grows with every allocation.
const raceEnabled = true
