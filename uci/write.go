package uci

import (
	"bytes"
	"fmt"
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
