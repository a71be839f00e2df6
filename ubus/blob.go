// Package ubus speaks OpenWrt's ubus wire protocol natively: the blob and
// blobmsg TLV codec, client connections to ubusd that call, look up, listen
// and serve objects (with method signatures, argument policies, events and
// subscriptions), a reconnecting bus for daemons, and the JSON forms of the
// ubus command-line tool. Package broker beside it implements ubusd's side
// for tests and development hosts.
//
// No Go library can register ubus objects; this package does it the way
// libubus does, held to the bytes of the real ubusd by the shared vectors.
package ubus

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Attr is one blob attribute: an id, the extended flag (set for blobmsg
// attributes) and its payload, without header or padding.
type Attr struct {
	ID   uint8
	Ext  bool
	Data []byte
}

// blob_attr header: big-endian u32, bit 31 extended, bits 30-24 id,
// bits 23-0 length including the 4-byte header.
const (
	attrHdrLen   = 4
	attrLenMask  = 0x00ffffff
	attrIDShift  = 24
	attrIDMask   = 0x7f
	attrExtended = 0x80000000
)

func pad4(n int) int { return (n + 3) &^ 3 }

// ErrTruncated reports an attribute or message whose lengths overrun the
// bytes that hold it.
var ErrTruncated = errors.New("ubus: truncated or overlong attribute")

// ParseAttrs splits a sequence of blob attributes. Every length is checked
// against the buffer; the error names the first offending offset.
func ParseAttrs(b []byte) ([]Attr, error) {
	var out []Attr
	for off := 0; off < len(b); {
		if len(b)-off < attrHdrLen {
			return nil, fmt.Errorf("attribute at %d: %d bytes left for a 4-byte header: %w", off, len(b)-off, ErrTruncated)
		}
		h := binary.BigEndian.Uint32(b[off:])
		n := int(h & attrLenMask)
		if n < attrHdrLen || n > len(b)-off {
			return nil, fmt.Errorf("attribute at %d: length %d with %d bytes left: %w", off, n, len(b)-off, ErrTruncated)
		}
		out = append(out, Attr{
			ID:   uint8(h >> attrIDShift & attrIDMask),
			Ext:  h&attrExtended != 0,
			Data: b[off+attrHdrLen : off+n],
		})
		off += pad4(n)
	}
	return out, nil
}

// AppendAttr appends one attribute with its header and zero padding.
func AppendAttr(dst []byte, a Attr) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0) // the header, written by finishAttr
	return finishAttr(append(dst, a.Data...), start, a.ID, a.Ext)
}

// finishAttr completes the attribute that starts at start, whose data
// follows a 4-byte placeholder: it writes the header (id, extended flag,
// length) and pads to 4 bytes. Encoders append data in place with it.
func finishAttr(dst []byte, start int, id uint8, ext bool) []byte {
	h := uint32(id&attrIDMask)<<attrIDShift | uint32(len(dst)-start)
	if ext {
		h |= attrExtended
	}
	binary.BigEndian.PutUint32(dst[start:], h)
	for (len(dst)-start)%4 != 0 {
		dst = append(dst, 0)
	}
	return dst
}

// AppendAttrs appends a sequence of attributes.
func AppendAttrs(dst []byte, attrs []Attr) []byte {
	for _, a := range attrs {
		dst = AppendAttr(dst, a)
	}
	return dst
}

// attrsLen is the encoded size of a sequence, padding included.
func attrsLen(attrs []Attr) int {
	n := 0
	for _, a := range attrs {
		n += pad4(attrHdrLen + len(a.Data))
	}
	return n
}

// U32Attr is an attribute holding a big-endian u32 (ids, status codes).
func U32Attr(id uint8, v uint32) Attr {
	return Attr{ID: id, Data: binary.BigEndian.AppendUint32(nil, v)}
}

// U8Attr is an attribute holding one byte (ACTIVE, NO_REPLY).
func U8Attr(id uint8, v uint8) Attr { return Attr{ID: id, Data: []byte{v}} }

// StringAttr is an attribute holding a NUL-terminated string.
func StringAttr(id uint8, s string) Attr {
	return Attr{ID: id, Data: append([]byte(s), 0)}
}

// NestedAttr holds encoded attributes (a blobmsg table body, a signature).
func NestedAttr(id uint8, body []byte) Attr { return Attr{ID: id, Data: body} }

// U32 reads an attribute as u32.
func (a Attr) U32() (uint32, error) {
	if len(a.Data) != 4 {
		return 0, fmt.Errorf("attribute %d: %d bytes for a u32", a.ID, len(a.Data))
	}
	return binary.BigEndian.Uint32(a.Data), nil
}

// U8 reads an attribute as one byte.
func (a Attr) U8() (uint8, error) {
	if len(a.Data) != 1 {
		return 0, fmt.Errorf("attribute %d: %d bytes for a u8", a.ID, len(a.Data))
	}
	return a.Data[0], nil
}

// String reads a NUL-terminated string attribute.
func (a Attr) String() (string, error) {
	if len(a.Data) == 0 || a.Data[len(a.Data)-1] != 0 {
		return "", fmt.Errorf("attribute %d: string without NUL terminator", a.ID)
	}
	return string(a.Data[:len(a.Data)-1]), nil
}
