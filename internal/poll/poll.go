// Package poll waits, in tests, for something another goroutine or
// process does: a condition checked every few milliseconds until it holds
// or a bound passes (then the test fails, saying what it waited for).
package poll

import (
	"testing"
	"time"
)

// Within waits up to timeout for cond.
func Within(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	// 1 ms doubling to 20 ms: a condition that soon holds is seen at
	// once, one that takes long (checked by starting a process) is not
	// asked hundreds of times a second.
	for pause := time.Millisecond; !cond(); pause = min(2*pause, 20*time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(pause)
	}
}

// Until waits up to 10 s for cond.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, 10*time.Second, what, cond)
}
