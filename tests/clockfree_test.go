package tests

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoWallClockAssertions: no test of the module decides pass or fail on
// a duration measured with this machine's clock (time.Since or
// time.Until in an if's condition): on a shared 2-core machine such a
// test fails for the machine's load, not for the daemon. Timing logic is
// tested on the fake clock (internal/clock) in its package; here a wait
// has a generous bound (waitFor) and the assertion is on what happened.
// Before: the SIGTERM stops, a ubus call in a broker gap and a health
// timestamp were timed against the wall clock.
func TestNoWallClockAssertions(t *testing.T) {
	var files []string
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "run" || d.Name() == "dist" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, "_test.go") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil || len(files) < 30 {
		t.Fatalf("test files: %d %v", len(files), err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			ifs, ok := n.(*ast.IfStmt)
			if !ok {
				return true
			}
			for _, part := range []ast.Node{ifs.Init, ifs.Cond} {
				if part == nil {
					continue
				}
				ast.Inspect(part, func(m ast.Node) bool {
					call, ok := m.(*ast.CallExpr)
					if !ok {
						return true
					}
					if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
						if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "time" && (sel.Sel.Name == "Since" || sel.Sel.Name == "Until") {
							t.Errorf("%s: a pass or fail decided on time.%s", fset.Position(call.Pos()), sel.Sel.Name)
						}
					}
					return true
				})
			}
			return true
		})
	}
}
