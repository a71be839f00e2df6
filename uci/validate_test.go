package uci

import "testing"

// TestLibuciValidationRules: what phonebookd's uci accepts and rejects,
// rule by rule as libuci's util.c judges it (uci_validate_str,
// uci_validate_text, uci_parse_ptr). Characters are judged in the C
// locale: bytes above 126 are not letters.
func TestLibuciValidationRules(t *testing.T) {
	for _, c := range []struct {
		rule, what, in string
		ok             bool
	}{
		// uci_validate_name: section and option names are [A-Za-z0-9_]+.
		{"name: letters, digits, underscore", "name", "max_bindings2", true},
		{"name: empty", "name", "", false},
		{"name: dash", "name", "max-bindings", false},
		{"name: dot", "name", "a.b", false},
		{"name: space", "name", "a b", false},
		{"name: non-ASCII letter", "name", "caf\xc3\xa9", false},
		// uci_validate_type: printable ASCII 33-126, not empty.
		{"type: punctuation allowed", "type", "software-health.v2@x", true},
		{"type: space", "type", "a b", false},
		{"type: tab", "type", "a\tb", false},
		{"type: DEL (127)", "type", "a\x7f", false},
		{"type: byte above 126", "type", "caf\xc3\xa9", false},
		{"type: empty", "type", "", false},
		// uci_validate_package: as a type (the '-' newer libuci spells out is printable).
		{"package: dash", "package", "phone-book", true},
		{"package: plus", "package", "phone+book", true},
		{"package: space", "package", "phone book", false},
		// uci_validate_text: values given on the command line.
		{"text: anything printable", "text", "http://server.local.mesh/pb.csv?x=1&y='2'", true},
		{"text: tab", "text", "a\tb", true},
		{"text: empty", "text", "", true},
		{"text: UTF-8", "text", "Zürich", true},
		{"text: newline", "text", "a\nb", true},
		{"text: carriage return", "text", "a\rb", true},
		{"text: CRLF and a trailing newline", "text", "a\r\nb\n", true},
		{"text: DEL (127)", "text", "a\x7fb", true},
		{"text: other control", "text", "a\x01b", false},
		{"text: unit separator (31)", "text", "a\x1fb", false},
	} {
		var got bool
		switch c.what {
		case "name":
			got = validName(c.in, false)
		case "type":
			got = validType(c.in)
		case "package":
			got = validName(c.in, true)
		case "text":
			got = validText(c.in)
		}
		if got != c.ok {
			t.Errorf("%s: %q accepted=%v, libuci %v", c.rule, c.in, got, c.ok)
		}
	}
}

// TestLibuciPointerRules: uci_parse_ptr: at most package.section.option,
// an invalid option or value is an error, a section that is not a name is
// an extended reference (@type[n]) looked up rather than refused.
func TestLibuciPointerRules(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"phonebook.sip.listen=0.0.0.0:5060", true},
		{"phonebook.@sip[0].listen=x", true},
		{"phonebook.@sip[-1].listen", true},
		{"phone-book.sip", true},
		{"phonebook.sip.max-bindings=1", false},
		{"phonebook.sip.listen=a\nb", true},
		{"phonebook.sip.listen=a\x01b", false},
		{"phonebook.sip.listen.extra", false},
		{"phone book.sip", false},
	} {
		_, err := ParsePtr(c.in)
		if (err == nil) != c.ok {
			t.Errorf("%q: %v, libuci accepts: %v", c.in, err, c.ok)
		}
	}
}
