// Package poll waits, in tests, for something another goroutine does:
// a condition checked every few milliseconds until it holds or a bound
// passes (then the test fails, saying what it waited for).
package poll

import (
	"testing"
	"time"
)

// Until waits up to 10 s for cond.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
