package sip

import (
	"net/netip"
	"strconv"
	"strings"
)

// fnv64 hashes strings with FNV-1a, separated so that ("ab","c") and
// ("a","bc") differ. Used for stateless To tags, branches and loop
// detection: no allocation, the same input always the same value.
func fnv64(parts ...string) uint64 {
	h := uint64(14695981039346656037)
	for _, p := range parts {
		for i := 0; i < len(p); i++ {
			h ^= uint64(p[i])
			h *= 1099511628211
		}
		h ^= 0xff
		h *= 1099511628211
	}
	return h
}

func appendHex(dst []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for i := 60; i >= 0; i -= 4 {
		dst = append(dst, digits[(v>>uint(i))&0xf])
	}
	return dst
}

// appendAddrHost writes an address as a SIP host (IPv6 in brackets).
func appendAddrHost(dst []byte, a netip.Addr) []byte {
	a = a.Unmap()
	if a.Is6() {
		dst = append(dst, '[')
		dst = a.AppendTo(dst)
		return append(dst, ']')
	}
	return a.AppendTo(dst)
}

// appendTopVia writes the top Via element as received, with received=
// when the sent-by host is not the packet's source and rport= filled
// when the client asked for it (RFC 3261 18.2.1, RFC 3581).
func appendTopVia(dst []byte, elem string, src netip.AddrPort) []byte {
	v, err := ParseVia(elem)
	if err != nil || !src.IsValid() {
		return append(dst, elem...)
	}
	head := elem[:len(elem)-len(v.Params)]
	dst = append(dst, strings.TrimRight(head, " ")...)
	params := v.Params
	for params != "" {
		params = params[1:] // the ';'
		p := params
		if i := strings.IndexByte(params, ';'); i >= 0 {
			p, params = params[:i], params[i:]
		} else {
			params = ""
		}
		name, _, hasValue := strings.Cut(p, "=")
		name = strings.TrimSpace(name)
		switch {
		case strings.EqualFold(name, "rport") && !hasValue:
			dst = append(dst, ";rport="...)
			dst = strconv.AppendInt(dst, int64(src.Port()), 10)
		case strings.EqualFold(name, "received"):
			// ours to set, never the sender's
		default:
			dst = append(dst, ';')
			dst = append(dst, p...)
		}
	}
	if host, err := netip.ParseAddr(v.Host); err != nil || host.Unmap() != src.Addr().Unmap() {
		dst = append(dst, ";received="...)
		dst = src.Addr().Unmap().AppendTo(dst)
	}
	return dst
}

// appendVias copies every Via of a request, the top one with
// received/rport (src invalid: unchanged).
func appendVias(dst []byte, m *Msg, src netip.AddrPort) []byte {
	first := true
	for _, h := range m.Headers {
		if !h.Is("via") {
			continue
		}
		dst = append(dst, "Via: "...)
		if first {
			first = false
			top, rest := splitComma(h.Value)
			dst = appendTopVia(dst, top, src)
			if rest = strings.TrimSpace(rest); rest != "" {
				dst = append(dst, ", "...)
				dst = append(dst, rest...)
			}
		} else {
			dst = append(dst, h.Value...)
		}
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// toTag is the tag this server puts in the To of its own answers: derived
// from the request, so a retransmission gets the same tag without any
// state (RFC 3261 8.2.6.2 and 16.11).
func toTag(m *Msg) uint64 {
	var branch string
	if v, err := m.TopVia(); err == nil {
		branch = v.Branch()
	}
	return fnv64(m.Get("call-id"), m.Tag("from"), branch)
}

// appendResponse writes this server's own answer to a request: the
// Vias (top one with received/rport), From, To with a tag, Call-ID, CSeq,
// then extra header lines (each ending in CRLF) and an empty body.
func appendResponse(dst []byte, m *Msg, code int, reason string, src netip.AddrPort, extra []byte) []byte {
	dst = append(dst, "SIP/2.0 "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	dst = append(dst, reason...)
	dst = append(dst, "\r\n"...)
	dst = appendVias(dst, m, src)
	for _, h := range m.Headers {
		switch {
		case h.Is("from"):
			dst = append(dst, "From: "...)
			dst = append(dst, h.Value...)
		case h.Is("to"):
			dst = append(dst, "To: "...)
			dst = append(dst, h.Value...)
			if code > 100 && m.Tag("to") == "" {
				dst = append(dst, ";tag=pb"...)
				dst = appendHex(dst, toTag(m))
			}
		case h.Is("call-id"):
			dst = append(dst, "Call-ID: "...)
			dst = append(dst, h.Value...)
		case h.Is("cseq"):
			dst = append(dst, "CSeq: "...)
			dst = append(dst, h.Value...)
		default:
			continue
		}
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, extra...)
	return append(dst, "Server: phonebookd\r\nContent-Length: 0\r\n\r\n"...)
}

// badRequest answers a message that failed to parse, from whatever of its
// header lines can be read (nil when it is not a request or has no Via,
// since then there is nowhere to send an answer). Used before Parse
// succeeded, so it works on the raw text line by line.
func badRequest(dst []byte, raw string, code int, reason string, src netip.AddrPort) []byte {
	line, rest, ok := cutLine(raw)
	f := strings.Fields(line)
	// Any request line, however malformed between its method and its
	// version (white space inside the Request-URI, RFC 4475 3.1.2.8).
	if !ok || len(f) < 3 || strings.HasPrefix(line, "SIP/") || !isToken(f[0]) || !strings.HasPrefix(f[len(f)-1], "SIP/") {
		return nil
	}
	var m Msg
	m.Request = true
	for {
		line, rest, ok = cutLine(rest)
		if !ok || line == "" || len(m.Headers) >= MaxHeaders {
			break
		}
		name, value, found := strings.Cut(line, ":")
		if !found || !isToken(strings.TrimSpace(name)) {
			continue
		}
		m.Headers = append(m.Headers, Header{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)})
	}
	if !m.Has("via") {
		return nil
	}
	return appendResponse(dst, &m, code, reason, src, nil)
}
