// Package directory is the phonebook: CSV rows fetched from mesh servers
// (First,Name,Callsign,Telephone), parsed forgivingly, and published as the
// Yealink XML directory that the phones load. Bad rows are skipped and
// counted, never fatal; files are written atomically and only when their
// content changed, so flash is not worn by an unchanged phonebook.
package directory

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Entry is one phone.
type Entry struct {
	First, Last, Callsign, Telephone string
}

// DisplayName is what the phone shows: "First Last (CALLSIGN)".
func (e Entry) DisplayName() string {
	name := strings.TrimSpace(e.First + " " + e.Last)
	if e.Callsign != "" {
		if name != "" {
			name += " "
		}
		name += "(" + e.Callsign + ")"
	}
	return name
}

// Stats counts what parsing skipped.
type Stats struct {
	Rows       int // data rows seen (header and blank lines excluded)
	Entries    int
	Bad        int // wrong field count, missing or invalid number, oversized field
	Duplicates int // a telephone number already listed
	Reasons    []string
}

// MaxField bounds a field; longer ones make the row bad.
const MaxField = 128

// MaxReasons bounds the reasons kept for the log.
const MaxReasons = 20

// Parse reads a phonebook CSV. It never fails on a bad row; it fails only
// when the input is not CSV text at all.
func Parse(data []byte) ([]Entry, Stats, error) {
	var st Stats
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		data = []byte(strings.ToValidUTF8(string(data), "\uFFFD"))
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.LazyQuotes = true
	r.ReuseRecord = true
	bad := func(line int, why string) {
		st.Bad++
		if len(st.Reasons) < MaxReasons {
			st.Reasons = append(st.Reasons, fmt.Sprintf("line %d: %s", line, why))
		}
	}
	seen := map[string]bool{}
	var out []Entry
	first := true
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				st.Rows++
				bad(pe.Line, pe.Err.Error())
				continue
			}
			return nil, st, fmt.Errorf("parse phonebook: %w", err)
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if first {
			first = false
			if isHeader(rec) {
				continue
			}
		}
		st.Rows++
		if len(rec) != 4 {
			bad(line, fmt.Sprintf("%d fields, want 4", len(rec)))
			continue
		}
		for i := range rec {
			rec[i] = clean(rec[i])
		}
		e := Entry{First: rec[0], Last: rec[1], Callsign: strings.ToUpper(rec[2]), Telephone: rec[3]}
		switch {
		case e.Telephone == "":
			bad(line, "no telephone number")
			continue
		case !digits(e.Telephone):
			bad(line, fmt.Sprintf("telephone %q is not a number", e.Telephone))
			continue
		case len(e.First) > MaxField || len(e.Last) > MaxField || len(e.Callsign) > MaxField || len(e.Telephone) > 32:
			bad(line, "field too long")
			continue
		case e.DisplayName() == "":
			bad(line, "no name")
			continue
		}
		if seen[e.Telephone] {
			st.Duplicates++
			continue
		}
		seen[e.Telephone] = true
		out = append(out, e)
	}
	st.Entries = len(out)
	return out, st, nil
}

func isHeader(rec []string) bool {
	if len(rec) < 4 {
		return false
	}
	want := []string{"first", "name", "callsign", "telephone"}
	for i, w := range want {
		if strings.ToLower(strings.TrimSpace(rec[i])) != w {
			return false
		}
	}
	return true
}

// clean trims a field, turns control characters (tabs, stray CR) into
// spaces and drops the characters XML 1.0 does not allow (xmlChar), so
// that an entry reads the same in memory and in the published XML.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		if !xmlChar(r) {
			return -1
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// xmlChar reports whether r may appear in an XML 1.0 document that every
// parser on a phone accepts: the Char production (tab, LF, CR,
// U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF) without the
// noncharacters (U+FDD0-U+FDEF, and U+xFFFE and U+xFFFF in every plane),
// which XML 1.0 discourages and expat rejects (U+FFFE, U+FFFF: "invalid
// token"). Invalid UTF-8 and lone surrogates never get here: Parse turns
// them into U+FFFD, and ranging over a string yields U+FFFD for them.
func xmlChar(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return true
	case r < 0x20:
		return false
	case r >= 0xD800 && r <= 0xDFFF:
		return false
	case r >= 0xFDD0 && r <= 0xFDEF:
		return false
	case r&0xFFFE == 0xFFFE: // U+xFFFE, U+xFFFF
		return false
	case r > unicode.MaxRune:
		return false
	}
	return true
}

func digits(s string) bool {
	if strings.HasPrefix(s, "+") {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Sort orders entries by display name (case-insensitively), then number,
// so that the published file is deterministic.
func Sort(es []Entry) {
	keys := make([]string, len(es))
	idx := make([]int, len(es))
	for i, e := range es {
		keys[i], idx[i] = strings.ToLower(e.DisplayName()), i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		i, j := idx[a], idx[b]
		if keys[i] != keys[j] {
			return keys[i] < keys[j]
		}
		return es[i].Telephone < es[j].Telephone
	})
	sorted := make([]Entry, len(es))
	for k, i := range idx {
		sorted[k] = es[i]
	}
	copy(es, sorted)
}

// YealinkXML renders the directory phones load
// (<YealinkIPPhoneDirectory><DirectoryEntry><Name/><Telephone/>...).
func YealinkXML(es []Entry) []byte {
	sorted := append([]Entry(nil), es...)
	Sort(sorted)
	var b bytes.Buffer
	b.WriteString("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<YealinkIPPhoneDirectory>\n")
	for _, e := range sorted {
		b.WriteString("<DirectoryEntry><Name>")
		xmlEscape(&b, e.DisplayName())
		b.WriteString("</Name><Telephone>")
		xmlEscape(&b, e.Telephone)
		b.WriteString("</Telephone></DirectoryEntry>\n")
	}
	b.WriteString("</YealinkIPPhoneDirectory>\n")
	return b.Bytes()
}

// xmlEscape writes s as XML character data: markup escaped, characters
// XML does not allow dropped (entries from Parse have none; YealinkXML
// takes entries from anywhere).
func xmlEscape(b *bytes.Buffer, s string) {
	for _, r := range s {
		if !xmlChar(r) {
			continue
		}
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '"':
			b.WriteString("&quot;")
		case '\'':
			b.WriteString("&apos;")
		default:
			b.WriteRune(r)
		}
	}
}
