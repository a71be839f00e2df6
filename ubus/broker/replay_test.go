package broker

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aredn/phonebookd/internal/shared"
	"github.com/aredn/phonebookd/ubus"
)

// startBroker starts a broker on a short socket path (unix socket paths are
// limited to 108 bytes) and stops it when the test ends.
func startBroker(t testing.TB) *Broker {
	t.Helper()
	dir, err := os.MkdirTemp("", "ubus")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := Start(filepath.Join(dir, "ubus.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// ids unifies the ids of a capture with the ids the broker hands out:
// client, object and type ids are random in ubusd, so a captured id must
// stand for the same live id throughout, and for no other.
type ids struct {
	fwd, rev map[uint32]uint32
	seq      map[uint16]uint16 // event delivery sequence numbers
}

func newIDs() *ids {
	return &ids{fwd: map[uint32]uint32{}, rev: map[uint32]uint32{}, seq: map[uint16]uint16{}}
}

func (m *ids) unify(capt, act uint32) error {
	if capt < ubus.SystemObjectMax || act < ubus.SystemObjectMax {
		if capt != act {
			return fmt.Errorf("value %#x, want %#x", act, capt)
		}
		return nil
	}
	if a, ok := m.fwd[capt]; ok {
		if a != act {
			return fmt.Errorf("id %#x stands for %#x, got %#x", capt, a, act)
		}
		return nil
	}
	if c, ok := m.rev[act]; ok {
		return fmt.Errorf("id %#x already stands for %#x, now %#x", act, c, capt)
	}
	m.fwd[capt], m.rev[act] = act, capt
	return nil
}

func (m *ids) to(capt uint32) uint32 {
	if a, ok := m.fwd[capt]; ok {
		return a
	}
	return capt
}

var idAttrs = map[uint8]bool{ubus.AttrObjID: true, ubus.AttrObjType: true, ubus.AttrTarget: true}

// idNames are blobmsg members that carry object ids.
var idNames = map[string]bool{"object": true, "id": true}

func (m *ids) compareValues(want, got []ubus.Value) error {
	if len(want) != len(got) {
		return fmt.Errorf("%d members, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Name != g.Name || w.Kind != g.Kind {
			return fmt.Errorf("member %d is %q (%s), want %q (%s)", i, g.Name, g.Kind, w.Name, w.Kind)
		}
		switch {
		case w.Kind == ubus.Int32 && idNames[w.Name]:
			if err := m.unify(uint32(w.Int), uint32(g.Int)); err != nil {
				return fmt.Errorf("%s: %w", w.Name, err)
			}
		case w.Kind == ubus.Table || w.Kind == ubus.Array:
			if err := m.compareValues(w.List, g.List); err != nil {
				return fmt.Errorf("%s: %w", w.Name, err)
			}
		default:
			if !bytes.Equal(ubus.AppendValue(nil, w), ubus.AppendValue(nil, g)) {
				return fmt.Errorf("%q is %+v, want %+v", w.Name, g, w)
			}
		}
	}
	return nil
}

func (m *ids) compareAttrs(monitorRecord bool, want, got []ubus.Attr) error {
	if len(want) != len(got) {
		return fmt.Errorf("%d attributes, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.ID != g.ID || w.Ext != g.Ext {
			return fmt.Errorf("attribute %d has id %d, want %d", i, g.ID, w.ID)
		}
		var err error
		switch {
		case monitorRecord && (w.ID == monClient || w.ID == monPeer):
			wv, _ := w.U32()
			gv, _ := g.U32()
			err = m.unify(wv, gv)
		case monitorRecord && w.ID == monData:
			err = m.compareNested(w.Data, g.Data)
		case monitorRecord:
			if !bytes.Equal(w.Data, g.Data) {
				err = fmt.Errorf("%x, want %x", g.Data, w.Data)
			}
		case idAttrs[w.ID]:
			wv, _ := w.U32()
			gv, _ := g.U32()
			err = m.unify(wv, gv)
		case w.ID == ubus.AttrSubscribers:
			err = m.compareNested(w.Data, g.Data)
		case w.ID == ubus.AttrUser || w.ID == ubus.AttrGroup:
			if os.Getuid() == 0 && !bytes.Equal(w.Data, g.Data) {
				err = fmt.Errorf("%q, want %q", g.Data, w.Data)
			}
		case w.ID == ubus.AttrData:
			wv, werr := ubus.DecodeValues(w.Data)
			gv, gerr := ubus.DecodeValues(g.Data)
			if werr != nil || gerr != nil {
				if !bytes.Equal(w.Data, g.Data) {
					err = fmt.Errorf("raw %x, want %x", g.Data, w.Data)
				}
			} else {
				err = m.compareValues(wv, gv)
			}
		default:
			if !bytes.Equal(w.Data, g.Data) {
				err = fmt.Errorf("%x, want %x", g.Data, w.Data)
			}
		}
		if err != nil {
			return fmt.Errorf("attribute %d: %w", w.ID, err)
		}
	}
	return nil
}

// compareNested compares attribute lists whose u32 members may be ids.
func (m *ids) compareNested(want, got []byte) error {
	wa, err1 := ubus.ParseAttrs(want)
	ga, err2 := ubus.ParseAttrs(got)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("nested: %v %v", err1, err2)
	}
	if len(wa) != len(ga) {
		return fmt.Errorf("%d nested attributes, want %d", len(ga), len(wa))
	}
	allU32 := true
	for _, a := range wa {
		if len(a.Data) != 4 || a.ID != 0 {
			allU32 = false
		}
	}
	if allU32 {
		for i := range wa {
			wv, _ := wa[i].U32()
			gv, _ := ga[i].U32()
			if err := m.unify(wv, gv); err != nil {
				return err
			}
		}
		return nil
	}
	return m.compareAttrs(false, wa, ga)
}

func (m *ids) compare(want, got *ubus.Message) error {
	if want.Version != got.Version || want.Type != got.Type {
		return fmt.Errorf("version/type %d/%d, want %d/%d", got.Version, got.Type, want.Version, want.Type)
	}
	if want.Type == ubus.MsgInvoke && want.Peer == 0 {
		if s, ok := m.seq[want.Seq]; ok && s != got.Seq {
			return fmt.Errorf("event seq %d stands for %d, got %d", want.Seq, s, got.Seq)
		}
		m.seq[want.Seq] = got.Seq
	} else if want.Seq != got.Seq {
		return fmt.Errorf("seq %d, want %d", got.Seq, want.Seq)
	}
	if err := m.unify(want.Peer, got.Peer); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	if (want.FD != nil) != (got.FD != nil) {
		return fmt.Errorf("fd passed: %v, want %v", got.FD != nil, want.FD != nil)
	}
	return m.compareAttrs(want.Type == ubus.MsgMonitor, want.Attrs, got.Attrs)
}

// translate rewrites a captured client message with the live ids.
func (m *ids) translate(msg *ubus.Message) {
	msg.Peer = m.to(msg.Peer)
	if msg.Peer == 0 && (msg.Type == ubus.MsgStatus || msg.Type == ubus.MsgData) {
		if s, ok := m.seq[msg.Seq]; ok {
			msg.Seq = s
		}
	}
	for i, a := range msg.Attrs {
		switch {
		case idAttrs[a.ID] && len(a.Data) == 4:
			v, _ := a.U32()
			msg.Attrs[i] = ubus.U32Attr(a.ID, m.to(v))
		case a.ID == ubus.AttrData:
			vs, err := ubus.DecodeValues(a.Data)
			if err == nil {
				m.translateValues(vs)
				msg.Attrs[i].Data = ubus.AppendValues(nil, vs)
			}
		}
	}
}

func (m *ids) translateValues(vs []ubus.Value) {
	for i := range vs {
		if vs[i].Kind == ubus.Int32 && idNames[vs[i].Name] {
			vs[i].Int = int64(int32(m.to(uint32(vs[i].Int))))
		}
		m.translateValues(vs[i].List)
	}
}

type answer struct {
	data   []ubus.Value
	status ubus.Status
}

// scriptObjects registers, on a connection of their own, stand-ins for the
// objects a capture looks up but whose servers it did not record: each
// method answers with what the real server answered, in order.
func scriptObjects(t *testing.T, b *Broker, events []shared.Event) {
	added := map[string]bool{}
	lookedUp := map[string]ubus.ObjectInfo{}
	var order []string
	for _, ev := range events {
		if ev.Dir == "close" {
			continue
		}
		m, _ := ubus.Unmarshal(ev.Bytes)
		if path, ok := m.Str(ubus.AttrObjPath); ok {
			switch {
			case m.Type == ubus.MsgAddObject:
				added[path] = true
			case m.Type == ubus.MsgData && ev.Dir == "D>C":
				if _, seen := lookedUp[path]; !seen {
					oi := ubus.ObjectInfo{Path: path}
					oi.ID, _ = m.U32(ubus.AttrObjID)
					sig, _ := m.Attr(ubus.AttrSignature)
					oi.Signature, _ = ubus.DecodeValues(sig.Data)
					lookedUp[path] = oi
					order = append(order, path)
				}
			}
		}
	}
	// Recorded answers: per captured object id and method, the DATA and
	// STATUS that followed each INVOKE on the caller's connection.
	answers := map[string][]answer{}
	for i, ev := range events {
		m, _ := ubus.Unmarshal(ev.Bytes)
		if ev.Dir != "C>D" || m.Type != ubus.MsgInvoke {
			continue
		}
		id, _ := m.U32(ubus.AttrObjID)
		method, _ := m.Str(ubus.AttrMethod)
		var a answer
		for _, r := range events[i+1:] {
			rm, _ := ubus.Unmarshal(r.Bytes)
			if r.Conn != ev.Conn || r.Dir != "D>C" || rm.Seq != m.Seq || rm.Type == ubus.MsgInvoke {
				continue
			}
			if rm.Type == ubus.MsgData {
				a.data, _ = rm.Values(ubus.AttrData)
				continue
			}
			st, _ := rm.U32(ubus.AttrStatus)
			a.status = ubus.Status(st)
			break
		}
		key := fmt.Sprintf("%08x/%s", id, method)
		answers[key] = append(answers[key], a)
	}
	var objs []*ubus.Object
	for _, path := range order {
		if added[path] {
			continue
		}
		oi := lookedUp[path]
		o := &ubus.Object{Path: path}
		for _, sig := range oi.Signature {
			meth := ubus.Method{Name: sig.Name}
			for _, p := range sig.List {
				meth.Params = append(meth.Params, ubus.Param{Name: p.Name, Kind: ubus.Kind(p.Int)})
			}
			key := fmt.Sprintf("%08x/%s", oi.ID, sig.Name)
			meth.Handler = func(context.Context, *ubus.Request) ([]ubus.Value, error) {
				q := answers[key]
				if len(q) == 0 {
					return nil, ubus.StatusNotSupported
				}
				a := q[0]
				answers[key] = q[1:]
				if a.status != ubus.StatusOK {
					return nil, a.status
				}
				return a.data, nil
			}
			o.Methods = append(o.Methods, meth)
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ubus.Dial(ctx, b.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, o := range objs {
		if err := c.AddObject(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

type replayer struct {
	t     *testing.T
	b     *Broker
	ids   *ids
	conns map[int]*net.UnixConn
	// clients rebuilt from monitor records, by live client id
	synth map[uint32]*net.UnixConn
}

func (r *replayer) dial() *net.UnixConn {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: r.b.Path(), Net: "unix"})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

func (r *replayer) conn(n int) *net.UnixConn {
	if c := r.conns[n]; c != nil {
		return c
	}
	c := r.dial()
	r.conns[n] = c
	return c
}

func (r *replayer) read(c *net.UnixConn) *ubus.Message {
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	m, err := ubus.ReadMessage(c)
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	if m.FD != nil {
		m.FD.Close()
		m.FD = os.Stdin // only its presence is compared
	}
	return m
}

func (r *replayer) write(c *net.UnixConn, m *ubus.Message, fds int) {
	if fds > 0 {
		pr, pw, err := os.Pipe()
		if err != nil {
			r.t.Fatal(err)
		}
		defer pr.Close()
		defer pw.Close()
		m.FD = pr
	}
	if err := ubus.WriteMessage(c, m); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// beforeMonitorRecord acts out, on a rebuilt client, what a monitor record
// says another client did: connect (its HELLO is recorded) or send.
func (r *replayer) beforeMonitorRecord(want *ubus.Message) {
	attr := func(id uint8) []byte {
		for _, a := range want.Attrs {
			if a.ID == id {
				return a.Data
			}
		}
		return nil
	}
	u32 := func(id uint8) uint32 { a := ubus.Attr{Data: attr(id)}; v, _ := a.U32(); return v }
	client, typ, sent := u32(monClient), ubus.MsgType(u32(monType)), attr(monSend)
	if _, known := r.ids.fwd[client]; !known && typ == ubus.MsgHello && len(sent) == 1 && sent[0] == 1 {
		r.synthClient()
		return
	}
	c := r.synth[r.ids.to(client)]
	if c == nil || len(sent) != 1 || sent[0] != 0 {
		return
	}
	attrs, err := ubus.ParseAttrs(attr(monData))
	if err != nil {
		r.t.Fatal(err)
	}
	m := &ubus.Message{Type: typ, Seq: uint16(u32(monSeq)), Peer: u32(monPeer), Attrs: attrs}
	r.ids.translate(m)
	r.write(c, m, 0)
}

// actCaller makes the call that a capture shows arriving at an object from
// a client it did not record, from a client of our own.
func (r *replayer) actCaller(want *ubus.Message) {
	c := r.synthClient()
	m := &ubus.Message{Type: ubus.MsgInvoke, Seq: want.Seq}
	for _, a := range want.Attrs {
		if a.ID == ubus.AttrObjID || a.ID == ubus.AttrMethod || a.ID == ubus.AttrData {
			m.Attrs = append(m.Attrs, a)
		}
		if a.ID == ubus.AttrObjID {
			m.Peer, _ = a.U32()
		}
	}
	r.ids.translate(m)
	r.write(c, m, 0)
}

// synthClient connects a client that ignores whatever it is sent.
func (r *replayer) synthClient() *net.UnixConn {
	c := r.dial()
	hello := r.read(c)
	r.synth[hello.Peer] = c
	go func() {
		for {
			if _, err := ubus.ReadMessage(c); err != nil {
				return
			}
		}
	}()
	return c
}

func replay(t *testing.T, name string) {
	events := shared.Capture(t, name)
	b := startBroker(t)
	scriptObjects(t, b, events)
	r := &replayer{t: t, b: b, ids: newIDs(), conns: map[int]*net.UnixConn{}, synth: map[uint32]*net.UnixConn{}}
	for i, ev := range events {
		switch ev.Dir {
		case "close":
			if c := r.conns[ev.Conn]; c != nil {
				c.Close()
			}
		case "C>D":
			m, err := ubus.Unmarshal(ev.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			r.ids.translate(m)
			r.write(r.conn(ev.Conn), m, ev.FDs)
		case "D>C":
			want, err := ubus.Unmarshal(ev.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if ev.FDs > 0 {
				want.FD = os.Stdin
			}
			if want.Type == ubus.MsgMonitor {
				r.beforeMonitorRecord(want)
			}
			if _, known := r.ids.fwd[want.Peer]; want.Type == ubus.MsgInvoke && want.Peer >= ubus.SystemObjectMax && !known {
				r.actCaller(want)
			}
			got := r.read(r.conn(ev.Conn))
			if err := r.ids.compare(want, got); err != nil {
				t.Fatalf("event %d (conn %d D>C type %d seq %d): %v\n got %x\nwant %x", i, ev.Conn, want.Type, want.Seq, err, got.Marshal(), ev.Bytes)
			}
		}
	}
}

// TestReplayCaptures replays the client side of every capture of the real
// ubusd against the broker and expects what ubusd answered, byte for byte
// but for the random client, object and type ids.
func TestReplayCaptures(t *testing.T) {
	for _, name := range shared.CaptureNames(t) {
		t.Run(name, func(t *testing.T) {
			if name == "09-monitor" && os.Getuid() != 0 {
				t.Skip("ubusd lets only root monitor; the capture was made as root")
			}
			replay(t, name)
		})
	}
}
