package ubus

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// MsgType is the type byte of a ubus message header.
type MsgType uint8

// Message types (UBUS_MSG_*).
const (
	MsgHello        MsgType = 0
	MsgStatus       MsgType = 1
	MsgData         MsgType = 2
	MsgPing         MsgType = 3
	MsgLookup       MsgType = 4
	MsgInvoke       MsgType = 5
	MsgAddObject    MsgType = 6
	MsgRemoveObject MsgType = 7
	MsgSubscribe    MsgType = 8
	MsgUnsubscribe  MsgType = 9
	MsgNotify       MsgType = 10
	MsgMonitor      MsgType = 11
)

// Message attribute ids (UBUS_ATTR_*).
const (
	AttrStatus      uint8 = 1
	AttrObjPath     uint8 = 2
	AttrObjID       uint8 = 3
	AttrMethod      uint8 = 4
	AttrObjType     uint8 = 5
	AttrSignature   uint8 = 6
	AttrData        uint8 = 7
	AttrTarget      uint8 = 8
	AttrActive      uint8 = 9
	AttrNoReply     uint8 = 10
	AttrSubscribers uint8 = 11
	AttrUser        uint8 = 12
	AttrGroup       uint8 = 13
)

// Well-known object ids inside ubusd.
const (
	ObjectEvent   uint32 = 1
	ObjectACL     uint32 = 2
	ObjectMonitor uint32 = 3
	// SystemObjectMax: ids below it are ubusd's own.
	SystemObjectMax uint32 = 1024
)

// Status is a ubus status code; as an error it reads like ubus_strerror.
type Status uint32

// Status codes (UBUS_STATUS_*).
const (
	StatusOK               Status = 0
	StatusInvalidCommand   Status = 1
	StatusInvalidArgument  Status = 2
	StatusMethodNotFound   Status = 3
	StatusNotFound         Status = 4
	StatusNoData           Status = 5
	StatusPermissionDenied Status = 6
	StatusTimeout          Status = 7
	StatusNotSupported     Status = 8
	StatusUnknownError     Status = 9
	StatusConnectionFailed Status = 10
	StatusNoMemory         Status = 11
	StatusParseError       Status = 12
	StatusSystemError      Status = 13
)

var statusText = [...]string{
	"Success", "Invalid command", "Invalid argument", "Method not found",
	"Not found", "No response", "Permission denied", "Request timed out",
	"Operation not supported", "Unknown error", "Connection failed",
	"Out of memory", "Parsing message data failed", "System error",
}

func (s Status) Error() string {
	if int(s) < len(statusText) {
		return statusText[s]
	}
	return "Unknown error"
}

// HeaderLen is the fixed message header: version, type, seq, peer.
const HeaderLen = 8

// MaxMessageLen is ubusd's limit on one message.
const MaxMessageLen = 1 << 20

// Message is one ubus message: the header and the attributes of its
// container blob. FD is a file descriptor passed along (SCM_RIGHTS), if any.
type Message struct {
	Version uint8
	Type    MsgType
	Seq     uint16
	Peer    uint32
	Attrs   []Attr
	FD      *os.File
}

// Marshal encodes the message.
func (m *Message) Marshal() []byte {
	return m.AppendTo(make([]byte, 0, HeaderLen+attrHdrLen+attrsLen(m.Attrs)))
}

// AppendTo appends the encoded message to b (a reused buffer).
func (m *Message) AppendTo(b []byte) []byte {
	n := attrsLen(m.Attrs)
	b = append(b, m.Version, byte(m.Type))
	b = binary.BigEndian.AppendUint16(b, m.Seq)
	b = binary.BigEndian.AppendUint32(b, m.Peer)
	b = binary.BigEndian.AppendUint32(b, uint32(attrHdrLen+n))
	return AppendAttrs(b, m.Attrs)
}

// Unmarshal decodes one complete message. Errors name what is wrong.
func Unmarshal(b []byte) (*Message, error) {
	if len(b) < HeaderLen+attrHdrLen {
		return nil, fmt.Errorf("message of %d bytes, shorter than its headers: %w", len(b), ErrTruncated)
	}
	m := &Message{
		Version: b[0],
		Type:    MsgType(b[1]),
		Seq:     binary.BigEndian.Uint16(b[2:]),
		Peer:    binary.BigEndian.Uint32(b[4:]),
	}
	h := binary.BigEndian.Uint32(b[HeaderLen:])
	n := int(h & attrLenMask)
	if h&^attrLenMask != 0 {
		return nil, fmt.Errorf("container blob with id or extended flag set (0x%08x)", h)
	}
	if n < attrHdrLen || HeaderLen+n != len(b) {
		return nil, fmt.Errorf("container length %d does not match message of %d bytes: %w", n, len(b), ErrTruncated)
	}
	attrs, err := ParseAttrs(b[HeaderLen+attrHdrLen:])
	if err != nil {
		return nil, err
	}
	m.Attrs = attrs
	return m, nil
}

// Attr returns the first attribute with the given id.
func (m *Message) Attr(id uint8) (Attr, bool) {
	for _, a := range m.Attrs {
		if a.ID == id && !a.Ext {
			return a, true
		}
	}
	return Attr{}, false
}

// U32 returns a u32 attribute; ok is false when absent or malformed.
func (m *Message) U32(id uint8) (uint32, bool) {
	a, ok := m.Attr(id)
	if !ok {
		return 0, false
	}
	v, err := a.U32()
	return v, err == nil
}

// Str returns a string attribute; ok is false when absent or malformed.
func (m *Message) Str(id uint8) (string, bool) {
	a, ok := m.Attr(id)
	if !ok {
		return "", false
	}
	s, err := a.String()
	return s, err == nil
}

// Values decodes a blobmsg-table attribute (DATA).
func (m *Message) Values(id uint8) ([]Value, error) {
	a, ok := m.Attr(id)
	if !ok {
		return nil, nil
	}
	return DecodeValues(a.Data)
}

// ReadMessage reads one message from a unix stream socket, with any file
// descriptor that came with it.
func ReadMessage(c *net.UnixConn) (*Message, error) {
	var fds []int
	hdr := make([]byte, HeaderLen+attrHdrLen)
	if err := readFull(c, hdr, &fds); err != nil {
		closeFDs(fds)
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[HeaderLen:]) & attrLenMask)
	if n < attrHdrLen || HeaderLen+n > MaxMessageLen {
		closeFDs(fds)
		return nil, fmt.Errorf("message length %d out of range: %w", HeaderLen+n, ErrTruncated)
	}
	buf := make([]byte, HeaderLen+n)
	copy(buf, hdr)
	if err := readFull(c, buf[len(hdr):], &fds); err != nil {
		closeFDs(fds)
		return nil, err
	}
	m, err := Unmarshal(buf)
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	if len(fds) > 0 {
		m.FD = os.NewFile(uintptr(fds[0]), "ubus-fd")
		closeFDs(fds[1:])
	}
	return m, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

func readFull(c *net.UnixConn, b []byte, fds *[]int) error {
	oob := make([]byte, syscall.CmsgSpace(4*4))
	for len(b) > 0 {
		n, oobn, _, _, err := c.ReadMsgUnix(b, oob)
		n, oobn = max(n, 0), max(oobn, 0)
		if oobn > 0 {
			if msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, cm := range msgs {
					if got, rerr := syscall.ParseUnixRights(&cm); rerr == nil {
						*fds = append(*fds, got...)
					}
				}
			}
		}
		b = b[n:]
		if err != nil {
			return err
		}
		if n == 0 && oobn == 0 {
			return io.ErrUnexpectedEOF
		}
	}
	return nil
}

// WriteMessage writes a message, passing its FD along if set.
func WriteMessage(c *net.UnixConn, m *Message) error {
	return writeMessage(c, m, m.Marshal())
}

// writeMessage writes the encoded message b.
func writeMessage(c *net.UnixConn, m *Message, b []byte) error {
	var oob []byte
	if m.FD != nil {
		oob = syscall.UnixRights(int(m.FD.Fd()))
	}
	n, _, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return err
	}
	if n < len(b) {
		_, err = c.Write(b[n:])
	}
	return err
}
