package sip

import "strings"

// Framing: where a message ends. A datagram is one message (RFC 3261
// 18.3: its Content-Length, when present, must not exceed what the
// datagram holds); on a stream the header section ends at the first empty
// line and Content-Length says how much body follows. Both transports
// read Content-Length through bodyLength, which refuses a value before
// any arithmetic is done with it, so that no header can make an offset
// overflow or a slice run past its buffer.

// maxLengthDigits bounds the digits of a Content-Length value: nine
// digits (under 10^9) fit an int on every target, 32-bit MIPS included,
// and exceed any sip.max_message_size, so that a longer value is refused
// as absurd without being converted.
const maxLengthDigits = 9

// Content-Length errors: short, free of the message's bytes.
var (
	errLengthSyntax   = perr("Content-Length is not a decimal number")
	errLengthAbsurd   = perr("Content-Length has more than 9 digits")
	errLengthConflict = perr("Content-Length headers disagree")
)

// bodyLength reads the Content-Length headers of one message. Every one
// must be a plain decimal number of at most maxLengthDigits digits, and
// repeated ones must agree (RFC 4475 3.3.9: a receiver cannot know which
// to believe).
type bodyLength struct {
	n    int
	seen bool
}

// add takes one Content-Length value.
func (b *bodyLength) add(value string) error {
	v := strings.Trim(value, " \t")
	if v == "" {
		return errLengthSyntax
	}
	// Leading zeros are legal (1*DIGIT) and carry no value: skip them so
	// that "0000000000005" is not refused as absurd.
	digits := strings.TrimLeft(v, "0")
	if len(digits) > maxLengthDigits {
		if !isDigits(digits) {
			return errLengthSyntax
		}
		return errLengthAbsurd
	}
	n := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return errLengthSyntax
		}
		n = n*10 + int(c-'0') // at most 9 significant digits: no overflow
	}
	if b.seen && n != b.n {
		return errLengthConflict
	}
	b.n, b.seen = n, true
	return nil
}

// headerLength reads the declared body length from a raw header section
// (a stream's message before its body is read): 0 when no Content-Length
// is present. Folded continuation lines are joined to their header, as
// Parse joins them.
func headerLength(head []byte) (int, error) {
	var b bodyLength
	s := string(head)    // one copy of the header section, as Parse's caller makes
	_, s, _ = cutLine(s) // the start line
	var value string
	inCL := false
	flush := func() error {
		if inCL {
			inCL = false
			return b.add(value)
		}
		return nil
	}
	for {
		line, rest, ok := cutLine(s)
		if !ok || line == "" {
			break
		}
		s = rest
		if line[0] == ' ' || line[0] == '\t' {
			if inCL {
				value += " " + strings.Trim(line, " \t")
			}
			continue
		}
		if err := flush(); err != nil {
			return 0, err
		}
		name, v, found := strings.Cut(line, ":")
		if !found {
			continue // Parse refuses it once the message is whole
		}
		if (Header{Name: strings.TrimRight(name, " \t")}).Is("content-length") {
			inCL, value = true, v
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return b.n, nil
}
