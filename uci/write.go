package uci

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// quote renders a value in single quotes, a quote inside as '\”.
func quote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// bareOrQuoted writes a section type bare, as uci does, unless it holds a
// character that would not read back as a bare word (uci writes those bare
// too, and then cannot parse its own file; we quote them instead).
func bareOrQuoted(t string) string {
	if strings.ContainsAny(t, "'\"\\#;") {
		return quote(t)
	}
	return t
}

// Export renders a package in the uci tool's format: the bytes `uci commit`
// writes (header false) or `uci export` prints (header true).
func Export(p *Package, header bool) []byte {
	var b bytes.Buffer
	if header {
		fmt.Fprintf(&b, "package %s\n", strings.ReplaceAll(p.Name, "'", `'\''`))
	}
	for _, s := range p.Sections {
		fmt.Fprintf(&b, "\nconfig %s", bareOrQuoted(s.Type))
		if !s.Anonymous {
			fmt.Fprintf(&b, " %s", quote(s.Name))
		}
		b.WriteByte('\n')
		for _, o := range s.Options {
			if o.IsList {
				for _, v := range o.Values {
					fmt.Fprintf(&b, "\tlist %s %s\n", o.Name, quote(v))
				}
				continue
			}
			fmt.Fprintf(&b, "\toption %s %s\n", o.Name, quote(o.Value))
		}
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// WriteFileAtomic replaces path with data so that a crash at any moment
// leaves either the old or the new contents: a temporary file in the same
// directory, fsync, rename, then fsync of the directory. The file keeps the
// mode of the one it replaces (perm when there is none).
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if st, err := os.Stat(path); err == nil {
		perm = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Chmod(perm); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		// Best effort: some filesystems refuse fsync on a directory.
		_ = d.Sync()
		d.Close()
	}
	return nil
}
