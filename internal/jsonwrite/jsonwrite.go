// Package jsonwrite appends the JSON the daemon writes on its own paths
// (the binding table, the crash marker, the history copy) without
// encoding/json: those files are written while the daemon is otherwise
// idle, and encoding/json's reflection would bring its code pages back
// each time after the start-up page-out (issue 19). Documents that
// fronts answer with stay with encoding/json.
package jsonwrite

import "unicode/utf8"

// AppendString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 as U+FFFD, byte for byte as
// encoding/json writes it except that <, > and & are left as they are
// (encoding/json escapes them for HTML; s may come from the network).
func AppendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\f':
				b = append(b, '\\', 'f')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			// JSON allows them raw; encoding/json escapes them (for
			// JavaScript), and so does this.
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
