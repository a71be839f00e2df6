// Package shared locates the project's shared ground-truth material (the
// real ubusd and uci transcripts, fixtures) that lives beside the checkout
// in ../shared, for tests.
package shared

import (
	"os"
	"path/filepath"
	"testing"
)

// Dir returns the shared directory: $PHONEBOOK_SHARED if set, else
// ../shared next to the module root. A missing directory fails the test:
// the vectors are the proof, a test that skips them proves nothing.
func Dir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("PHONEBOOK_SHARED"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("module root not found above the working directory")
		}
		dir = parent
	}
	d := filepath.Join(dir, "..", "shared")
	if _, err := os.Stat(d); err != nil {
		t.Fatalf("shared material missing: %v (set PHONEBOOK_SHARED)", err)
	}
	return d
}

// Path returns a file inside the shared directory.
func Path(t testing.TB, elem ...string) string {
	return filepath.Join(append([]string{Dir(t)}, elem...)...)
}
