package sip

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Header is one header line as received: its name as written (long or
// compact form, any case) and its value with surrounding space trimmed.
type Header struct {
	Name, Value string
}

// Msg is one parsed SIP message. Every string in it is a substring of Raw,
// so a message costs one copy of the datagram; Parse reuses the header
// slice of the Msg it is given. Nothing here outlives the request unless a
// caller clones it (the registrar clones what it keeps).
type Msg struct {
	Raw     string
	Request bool
	// Request line.
	Method, URI string
	// Status line.
	Status int
	Reason string
	// Version is the SIP-Version token ("SIP/2.0"); Parse accepts any
	// SIP/x.y so that a request of another version can get its 505.
	Version string
	Headers []Header
	Body    string
}

// MaxHeaders bounds the header lines of one message.
const MaxHeaders = 96

// ParseError is a message that cannot be understood; Why is short and
// free of the message's own bytes, so it can be logged as is.
type ParseError struct{ Why string }

func (e *ParseError) Error() string { return "sip: " + e.Why }

func perr(why string) error { return &ParseError{Why: why} }

// compact maps the compact header forms of RFC 3261 7.3.3 (and the
// extensions phones use) to their long names.
func compact(c byte) string {
	switch c | 0x20 {
	case 'v':
		return "via"
	case 'f':
		return "from"
	case 't':
		return "to"
	case 'i':
		return "call-id"
	case 'm':
		return "contact"
	case 'l':
		return "content-length"
	case 'c':
		return "content-type"
	case 'k':
		return "supported"
	case 's':
		return "subject"
	case 'e':
		return "content-encoding"
	case 'o':
		return "event"
	case 'r':
		return "refer-to"
	case 'u':
		return "allow-events"
	case 'x':
		return "session-expires"
	case 'b':
		return "referred-by"
	}
	return ""
}

// Is reports whether a header named as received is the header whose long
// lowercase name is name.
func (h Header) Is(name string) bool {
	if len(h.Name) == 1 {
		return compact(h.Name[0]) == name
	}
	return strings.EqualFold(h.Name, name)
}

// Parse reads one message from raw into m (reusing m's header slice). A
// body longer than Content-Length is cut to it; a shorter one is an error
// (RFC 3261 18.3), as are a Content-Length that is not a number of at
// most 9 digits and repeated ones that disagree (see bodyLength). Errors
// never panic and never quote the input.
func Parse(raw string, m *Msg) error {
	hdrs := m.Headers[:0]
	*m = Msg{Raw: raw, Headers: hdrs}
	line, rest, ok := cutLine(raw)
	if !ok {
		return perr("no complete start line")
	}
	if err := m.startLine(line); err != nil {
		return err
	}
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return perr("header section not terminated by an empty line")
		}
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' { // folded continuation (RFC 3261 7.3.1)
			if len(m.Headers) == 0 {
				return perr("continuation line before any header")
			}
			h := &m.Headers[len(m.Headers)-1]
			h.Value = strings.TrimSpace(h.Value + " " + strings.TrimSpace(line))
			continue
		}
		name, value, found := strings.Cut(line, ":")
		name = strings.TrimRight(name, " \t")
		if !found || !isToken(name) {
			return perr("malformed header line")
		}
		if len(m.Headers) >= MaxHeaders {
			return perr("too many header lines")
		}
		m.Headers = append(m.Headers, Header{Name: name, Value: strings.TrimSpace(value)})
	}
	m.Body = rest
	var cl bodyLength
	for _, h := range m.Headers {
		if h.Is("content-length") {
			if err := cl.add(h.Value); err != nil {
				return err
			}
		}
	}
	if cl.seen {
		if cl.n > len(rest) {
			return perr("body shorter than Content-Length")
		}
		m.Body = rest[:cl.n]
	}
	return nil
}

func (m *Msg) startLine(line string) error {
	a, rest, ok1 := strings.Cut(line, " ")
	b, c, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || a == "" || b == "" {
		return perr("malformed start line")
	}
	if strings.HasPrefix(a, "SIP/") { // status line
		if !isVersion(a) {
			return perr("malformed SIP version")
		}
		code, err := strconv.Atoi(b)
		if err != nil || len(b) != 3 || code < 100 || code > 699 {
			return perr("malformed status code")
		}
		m.Version, m.Status, m.Reason = a, code, c
		return nil
	}
	if !isToken(a) || strings.ContainsAny(b, " \t") || !isVersion(c) {
		return perr("malformed request line")
	}
	m.Request, m.Method, m.URI, m.Version = true, a, b, c
	return nil
}

func isVersion(s string) bool {
	v, ok := strings.CutPrefix(s, "SIP/")
	if !ok {
		return false
	}
	maj, min, ok := strings.Cut(v, ".")
	return ok && isDigits(maj) && isDigits(min)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// cutLine splits off one line ended by CRLF or a bare LF.
func cutLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return "", s, false
	}
	line = s[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, s[i+1:], true
}

// isToken: RFC 3261 25.1 token characters.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.!%*_+`'~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Get returns the first value of a header (long lowercase name), "" if
// absent.
func (m *Msg) Get(name string) string {
	for _, h := range m.Headers {
		if h.Is(name) {
			return h.Value
		}
	}
	return ""
}

// Has reports whether a header is present.
func (m *Msg) Has(name string) bool {
	for _, h := range m.Headers {
		if h.Is(name) {
			return true
		}
	}
	return false
}

// Count returns how many header lines carry name.
func (m *Msg) Count(name string) int {
	n := 0
	for _, h := range m.Headers {
		if h.Is(name) {
			n++
		}
	}
	return n
}

// listIter walks the elements of a comma-separated header across all its
// lines without allocating: for it := m.iter("contact"); it.next(); {}.
type listIter struct {
	m    *Msg
	name string
	i    int    // next header line to look at
	rest string // what is left of the current line
	val  string
}

func (m *Msg) iter(name string) listIter { return listIter{m: m, name: name} }

func (it *listIter) next() bool {
	for {
		for it.rest != "" {
			it.val, it.rest = splitComma(it.rest)
			if it.val != "" {
				return true
			}
		}
		for it.i < len(it.m.Headers) && !it.m.Headers[it.i].Is(it.name) {
			it.i++
		}
		if it.i >= len(it.m.Headers) {
			return false
		}
		it.rest = it.m.Headers[it.i].Value
		it.i++
	}
}

// Each calls fn for every element of a comma-separated header (Via,
// Contact, Route, ...) across all its lines, in order, until fn returns
// false.
func (m *Msg) Each(name string, fn func(v string) bool) {
	for it := m.iter(name); it.next(); {
		if !fn(it.val) {
			return
		}
	}
}

// splitComma cuts the first element of a comma-separated list, ignoring
// commas inside quotes and angle brackets.
func splitComma(s string) (first, rest string) {
	quoted, angle := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == '<' && !quoted:
			angle = true
		case c == '>' && !quoted:
			angle = false
		case c == ',' && !quoted && !angle:
			return strings.TrimSpace(s[:i]), s[i+1:]
		}
	}
	return strings.TrimSpace(s), ""
}

// CSeq is the parsed CSeq header.
type CSeq struct {
	Num    uint32
	Method string
}

// CSeq parses the CSeq header.
func (m *Msg) CSeq() (CSeq, error) {
	v := m.Get("cseq")
	n, meth, ok := strings.Cut(v, " ")
	meth = strings.TrimSpace(meth)
	num, err := strconv.ParseUint(strings.TrimSpace(n), 10, 32)
	if !ok || err != nil || !isToken(meth) {
		return CSeq{}, perr("malformed CSeq")
	}
	return CSeq{Num: uint32(num), Method: meth}, nil
}

// ErrCSeqMethod: the CSeq's method is not the request's (RFC 3261 8.1.1.5).
var ErrCSeqMethod = perr("CSeq method differs from the request method")

// mandatory request headers (RFC 3261 8.1.1); Max-Forwards is added when
// missing, as lenient proxies do.
var mandatory = [...]string{"via", "from", "to", "call-id", "cseq"}

// CheckRequest validates what every request needs before it is handled:
// the mandatory headers, one of each singleton, a CSeq whose method is the
// request's (RFC 3261 8.2.2 and 16.3).
func (m *Msg) CheckRequest() error {
	for _, name := range mandatory {
		if !m.Has(name) {
			return perr("missing " + name + " header")
		}
	}
	for _, name := range [...]string{"from", "to", "call-id", "cseq", "max-forwards"} {
		if m.Count(name) > 1 {
			return perr("more than one " + name + " header")
		}
	}
	for _, name := range [...]string{"from", "to", "contact"} {
		for _, h := range m.Headers {
			if h.Is(name) && !balancedQuotes(h.Value) {
				return perr("unterminated quoted string in " + name) // RFC 4475 3.1.2.6
			}
		}
	}
	for _, name := range [...]string{"from", "to", "contact"} {
		for it := m.iter(name); it.next(); {
			if addrSpecWithHeaders(it.val) {
				return perr("URI with headers not in <> in " + name) // RFC 4475 3.1.2.13
			}
		}
	}
	for _, name := range [...]string{"via", "contact"} {
		for _, h := range m.Headers {
			if h.Is(name) && emptyElement(h.Value) {
				return perr("empty element or parameter in " + name) // RFC 4475 3.1.2.1
			}
		}
	}
	cs, err := m.CSeq()
	if err != nil {
		return err
	}
	if cs.Method != m.Method {
		return ErrCSeqMethod
	}
	if _, err := m.MaxForwards(); err != nil {
		return err
	}
	return nil
}

// addrSpecWithHeaders reports a URI written without angle brackets that
// has a "?": RFC 3261 20 requires the brackets then, since without them
// what belongs to the URI and what to the header is ambiguous.
func addrSpecWithHeaders(v string) bool {
	return strings.IndexByte(v, '<') < 0 && strings.IndexByte(v, '?') >= 0
}

// balancedQuotes reports whether every quoted string in a header value
// is closed (a backslash escapes the next character inside quotes).
func balancedQuotes(v string) bool {
	quoted := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		}
	}
	return !quoted
}

// emptyElement reports a comma-separated list with an empty element
// ("a,,b", ",a") or a parameter list with an empty parameter (";;"),
// outside quotes and angle brackets: RFC 3261 25.1 allows neither in Via
// or Contact (RFC 4475 3.1.2.1). One separator at the very end is let
// pass: phones that send it mean nothing by it.
func emptyElement(v string) bool {
	quoted, angle := false, false
	empty := true    // nothing but white space since the last separator
	content := false // anything but separators and white space at all
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case quoted:
			if c == '\\' {
				i++
			} else if c == '"' {
				quoted = false
			}
			continue
		case c == '"':
			quoted = true
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case angle:
		case c == ',' || c == ';':
			if empty {
				return true
			}
			empty = true
			continue
		case c == ' ' || c == '\t':
			continue
		}
		empty, content = false, true
	}
	return !content
}

// MaxForwards returns the Max-Forwards value, -1 when absent.
func (m *Msg) MaxForwards() (int, error) {
	v := m.Get("max-forwards")
	if v == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 255 {
		return 0, perr("malformed Max-Forwards")
	}
	return n, nil
}

// Via is one parsed Via element.
type Via struct {
	Transport string // UDP, TCP
	Host      string // without brackets for IPv6
	Port      int    // 0 when absent
	Params    string // ";branch=...;rport", raw
}

// Branch returns the branch parameter.
func (v Via) Branch() string { p, _ := param(v.Params, "branch"); return p }

// ParseVia parses "SIP/2.0/UDP host[:port][;params]", with the linear
// white space RFC 3261 25.1 allows around each "/" (RFC 4475 3.1.1.1).
func ParseVia(s string) (Via, error) {
	name, rest, ok1 := strings.Cut(strings.TrimLeft(s, " \t"), "/")
	ver, rest, ok2 := strings.Cut(rest, "/")
	rest = strings.TrimLeft(rest, " \t")
	i := strings.IndexAny(rest, " \t")
	if !ok1 || !ok2 || i <= 0 || !strings.EqualFold(strings.TrimRight(name, " \t"), "SIP") || !isToken(strings.Trim(ver, " \t")) {
		return Via{}, perr("malformed Via")
	}
	transport := rest[:i]
	rest = strings.TrimLeft(rest[i:], " \t")
	if !isToken(transport) {
		return Via{}, perr("malformed Via")
	}
	var v Via
	v.Transport = transport // compared case-insensitively
	sentBy := rest
	if i := strings.IndexByte(rest, ';'); i >= 0 {
		sentBy, v.Params = strings.TrimSpace(rest[:i]), rest[i:]
	}
	host, port, err := splitHostPort(sentBy)
	if err != nil {
		return Via{}, perr("malformed Via sent-by")
	}
	v.Host, v.Port = host, port
	return v, nil
}

// TopVia parses the first Via element.
func (m *Msg) TopVia() (Via, error) {
	it := m.iter("via")
	if !it.next() {
		return Via{}, perr("missing via header")
	}
	return ParseVia(it.val)
}

// splitHostPort splits host[:port], host an IPv6 reference in brackets,
// an IPv4 address or a host name.
func splitHostPort(s string) (string, int, error) {
	host, portStr := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, errors.New("unclosed [")
		}
		host, portStr = s[1:end], s[end+1:]
		if portStr != "" {
			if portStr[0] != ':' {
				return "", 0, errors.New("junk after ]")
			}
			portStr = portStr[1:]
		}
	} else if i := strings.IndexByte(s, ':'); i >= 0 {
		host, portStr = s[:i], s[i+1:]
	}
	if host == "" || !validHost(host) {
		return "", 0, errors.New("bad host")
	}
	port := 0
	if portStr != "" {
		p, err := strconv.Atoi(portStr)
		if err != nil || p < 1 || p > 65535 {
			return "", 0, errors.New("bad port")
		}
		port = p
	}
	return host, port, nil
}

func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.' || c == '-' || c == ':' || c == '_':
		default:
			return false
		}
	}
	return true
}

// param finds ";name" or ";name=value" in a parameter list (case
// insensitive names); present reports a valueless parameter too.
func param(params, name string) (value string, present bool) {
	for params != "" {
		params = strings.TrimLeft(params, " \t;")
		var p string
		if i := strings.IndexByte(params, ';'); i >= 0 {
			p, params = params[:i], params[i:]
		} else {
			p, params = params, ""
		}
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.Trim(strings.TrimSpace(v), "\""), true
		}
	}
	return "", false
}

// URI is a parsed sip:, sips: or tel: URI.
type URI struct {
	Scheme string // lowercase
	User   string
	Host   string // without brackets
	Port   int    // 0 when absent
	Params string // ";transport=udp;lr", raw
	// Headers is the "?name=value&..." part, raw: never used, and not
	// allowed in a Request-URI (RFC 3261 19.1.1).
	Headers string
}

// ErrScheme is a URI of a scheme other than sip, sips and tel (416).
var ErrScheme = errors.New("sip: unsupported URI scheme")

// ParseURI parses a URI; a scheme other than sip/sips/tel is ErrScheme.
func ParseURI(s string) (URI, error) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || !isToken(scheme) {
		return URI{}, perr("malformed URI")
	}
	var u URI
	u.Scheme = strings.ToLower(scheme)
	switch u.Scheme {
	case "sip", "sips":
	case "tel":
		num, params, _ := strings.Cut(rest, ";")
		if num == "" {
			return URI{}, perr("malformed tel URI")
		}
		u.User = num
		if params != "" {
			u.Params = ";" + params
		}
		return u, nil
	default:
		return URI{}, ErrScheme
	}
	// The user part may hold "?" and ";" but never an "@" (it would be
	// escaped), so the first "@" ends it (RFC 4475 3.1.1.2).
	if at := strings.IndexByte(rest, '@'); at >= 0 {
		u.User, rest = rest[:at], rest[at+1:]
		if i := strings.IndexByte(u.User, ':'); i >= 0 { // user:password
			u.User = u.User[:i]
		}
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest, u.Headers = rest[:i], rest[i:]
	}
	hostport := rest
	if i := strings.IndexByte(rest, ';'); i >= 0 {
		hostport, u.Params = rest[:i], rest[i:]
	}
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return URI{}, perr("malformed URI host")
	}
	u.Host, u.Port = host, port
	return u, nil
}

// Param returns a URI parameter.
func (u URI) Param(name string) (string, bool) { return param(u.Params, name) }

// HostPort is host:port with the SIP default port 5060 when absent.
func (u URI) HostPort() string {
	p := u.Port
	if p == 0 {
		p = 5060
	}
	h := u.Host
	if strings.IndexByte(h, ':') >= 0 {
		h = "[" + h + "]"
	}
	return h + ":" + strconv.Itoa(p)
}

// String renders the URI.
func (u URI) String() string {
	var b strings.Builder
	b.WriteString(u.Scheme)
	b.WriteByte(':')
	if u.User != "" {
		b.WriteString(u.User)
		if u.Scheme == "tel" {
			b.WriteString(u.Params)
			return b.String()
		}
		b.WriteByte('@')
	}
	if strings.IndexByte(u.Host, ':') >= 0 {
		b.WriteString("[" + u.Host + "]")
	} else {
		b.WriteString(u.Host)
	}
	if u.Port != 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(u.Port))
	}
	b.WriteString(u.Params)
	return b.String()
}

// Addr is a name-addr or addr-spec (From, To, Contact, Route): the URI
// text and the header parameters after it.
type Addr struct {
	Display string
	URI     string
	Params  string // ";tag=...;expires=..."
}

// Param returns a header parameter (tag, expires, ...).
func (a Addr) Param(name string) (string, bool) { return param(a.Params, name) }

// ParseAddr parses `"Name" <uri>;params`, `<uri>;params` or `uri;params`
// (where, as RFC 3261 20 says, parameters after an addr-spec belong to the
// header, not the URI).
func ParseAddr(s string) (Addr, error) {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '<'); i >= 0 {
		j := strings.IndexByte(s[i:], '>')
		if j < 0 {
			return Addr{}, perr("unclosed <")
		}
		a := Addr{Display: strings.Trim(strings.TrimSpace(s[:i]), "\""), URI: s[i+1 : i+j], Params: strings.TrimSpace(s[i+j+1:])}
		if a.URI == "" || (a.Params != "" && a.Params[0] != ';') {
			return Addr{}, perr("malformed name-addr")
		}
		return a, nil
	}
	if s == "" {
		return Addr{}, perr("empty address")
	}
	a := Addr{URI: s}
	if i := strings.IndexByte(s, ';'); i >= 0 {
		a.URI, a.Params = strings.TrimSpace(s[:i]), s[i:]
	}
	return a, nil
}

// Tag returns the tag parameter of From or To.
func (m *Msg) Tag(header string) string {
	a, err := ParseAddr(m.Get(header))
	if err != nil {
		return ""
	}
	t, _ := a.Param("tag")
	return t
}

// Describe is a short, loggable description of a message: method or
// status and the Call-ID cut to 40 bytes; never the whole message.
func (m *Msg) Describe() string {
	id := m.Get("call-id")
	if len(id) > 40 {
		id = id[:40] + "..."
	}
	id = strconv.Quote(id)
	if m.Request {
		return fmt.Sprintf("%.16s call-id %s", m.Method, id)
	}
	return fmt.Sprintf("%d call-id %s", m.Status, id)
}
