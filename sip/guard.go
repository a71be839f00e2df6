package sip

import (
	"bytes"
	"net"
	"strings"

	gosip "github.com/emiago/sipgo/sip"
)

// guardConn is the UDP socket as sipgo sees it. Each datagram is checked
// first: a request sipgo could not parse, or one missing a header every
// request needs, is answered 400 here and counted as a SIP error (sipgo
// would only log it, and the phone would retransmit forever).
type guardConn struct {
	net.PacketConn
	s      *Server
	parser *gosip.Parser
}

// mandatory headers of every request (RFC 3261 8.1.1), long and compact.
var mandatory = [][2]string{{"via", "v"}, {"from", "f"}, {"to", "t"}, {"call-id", "i"}, {"cseq", ""}}

func (g *guardConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if g.parser == nil {
		g.parser = gosip.NewParser()
	}
	for {
		n, addr, err := g.PacketConn.ReadFrom(b)
		if err != nil || n <= 4 { // errors, and CRLF keep-alives, go on to sipgo
			return n, addr, err
		}
		data := b[:n]
		reason := ""
		msg, perr := g.parser.ParseSIP(data)
		if perr != nil {
			reason = "unparsable: " + perr.Error()
		} else if missing := missingHeader(data); missing != "" {
			reason = "missing " + missing
		}
		if reason == "" {
			if req, ok := msg.(*gosip.Request); ok && req.Method == gosip.REGISTER {
				// Answered here, statelessly, to the sender.
				g.PacketConn.WriteTo([]byte(g.s.register(req).String()), addr)
				continue
			}
			return n, addr, nil
		}
		g.s.malformed.Add(1)
		g.s.sipError("malformed request: " + reason)
		if resp := BadRequest(data); resp != nil {
			g.PacketConn.WriteTo(resp, addr)
		}
	}
}

// headerLines splits a raw SIP message's header section into lines,
// joining folded continuation lines.
func headerLines(raw []byte) (start string, lines []string) {
	head := raw
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		head = raw[:i]
	} else if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
		head = raw[:i]
	}
	for i, l := range strings.Split(strings.ReplaceAll(string(head), "\r\n", "\n"), "\n") {
		if i == 0 {
			start = strings.TrimSpace(l)
			continue
		}
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(lines) > 0 {
			lines[len(lines)-1] += " " + strings.TrimSpace(l)
			continue
		}
		lines = append(lines, strings.TrimRight(l, " \t"))
	}
	return start, lines
}

func headerName(line string) string {
	name, _, ok := strings.Cut(line, ":")
	if !ok {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(name))
}

func isRequestLine(start string) bool {
	f := strings.Fields(start)
	return len(f) == 3 && f[2] == "SIP/2.0" && !strings.HasPrefix(start, "SIP/")
}

// missingHeader names a mandatory header a request lacks ("" if none, or
// if the message is not a request).
func missingHeader(raw []byte) string {
	start, lines := headerLines(raw)
	if !isRequestLine(start) {
		return ""
	}
	have := map[string]bool{}
	for _, l := range lines {
		have[headerName(l)] = true
	}
	for _, m := range mandatory {
		if !have[m[0]] && (m[1] == "" || !have[m[1]]) {
			return m[0]
		}
	}
	return ""
}

// BadRequest builds a 400 answer to a malformed request from what can be
// read of it (Via, From, To, Call-ID, CSeq copied); nil for something that
// is not a request (responses are never answered).
func BadRequest(raw []byte) []byte {
	start, lines := headerLines(raw)
	if !isRequestLine(start) {
		return nil
	}
	var b strings.Builder
	b.WriteString("SIP/2.0 400 Bad Request\r\n")
	for _, l := range lines {
		switch headerName(l) {
		case "via", "v", "from", "f", "call-id", "i", "cseq":
			b.WriteString(l + "\r\n")
		case "to", "t":
			if strings.Contains(strings.ToLower(l), ";tag=") {
				b.WriteString(l + "\r\n")
			} else {
				b.WriteString(l + ";tag=pb400\r\n")
			}
		}
	}
	b.WriteString("Server: phonebookd\r\nContent-Length: 0\r\n\r\n")
	return []byte(b.String())
}
