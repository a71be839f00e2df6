package ubus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// DefaultSocket is ubusd's socket on OpenWrt.
const DefaultSocket = "/var/run/ubus/ubus.sock"

// Conn is one connection to ubusd. Many requests may be in flight at once
// from any number of goroutines; incoming calls to served objects are
// dispatched concurrently.
type Conn struct {
	c   *net.UnixConn
	id  uint32
	log *slog.Logger

	wmu  sync.Mutex // serialises writes
	wbuf []byte     // reused for every message written

	mu      sync.Mutex
	seq     uint16
	pending map[uint16]*pending
	objects map[uint32]*Object
	err     error

	done     chan struct{}
	serveCtx context.Context
	stop     context.CancelFunc
	handlers sync.WaitGroup
}

type pending struct {
	data   []*Message
	status chan *Message
}

// Reply is what a request got back: the DATA messages and the status.
type Reply struct {
	Data   []*Message
	Status Status
	FD     *os.File
}

// Dial connects to ubusd at path and waits for its HELLO.
func Dial(ctx context.Context, path string, log *slog.Logger) (*Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to ubus at %s: %w", path, err)
	}
	uc := nc.(*net.UnixConn)
	if dl, ok := ctx.Deadline(); ok {
		uc.SetReadDeadline(dl)
	} else {
		uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	}
	hello, err := ReadMessage(uc)
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("connect to ubus at %s: read hello: %w", path, err)
	}
	if hello.Type != MsgHello {
		uc.Close()
		return nil, fmt.Errorf("connect to ubus at %s: got message type %d, want hello", path, hello.Type)
	}
	uc.SetReadDeadline(time.Time{})
	sctx, stop := context.WithCancel(context.Background())
	c := &Conn{
		c: uc, id: hello.Peer, log: log,
		pending: map[uint16]*pending{}, objects: map[uint32]*Object{},
		done: make(chan struct{}), serveCtx: sctx, stop: stop,
	}
	go c.readLoop()
	return c, nil
}

// ID is the client id ubusd gave this connection.
func (c *Conn) ID() uint32 { return c.id }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the connection ended (nil while it is up).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection and waits for running handlers to return.
func (c *Conn) Close() error {
	err := c.c.Close()
	<-c.done
	c.handlers.Wait()
	return err
}

func (c *Conn) write(m *Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = m.AppendTo(c.wbuf[:0])
	if cap(c.wbuf) > 64<<10 {
		defer func() { c.wbuf = nil }() // do not keep a rare large buffer
	}
	if err := writeMessage(c.c, m, c.wbuf); err != nil {
		return fmt.Errorf("ubus write: %w", err)
	}
	return nil
}

func (c *Conn) readLoop() {
	var err error
	for {
		var m *Message
		m, err = ReadMessage(c.c)
		if err != nil {
			break
		}
		c.dispatch(m)
	}
	c.stop()
	c.mu.Lock()
	c.err = fmt.Errorf("ubus connection lost: %w", err)
	for seq, p := range c.pending {
		close(p.status)
		delete(c.pending, seq)
	}
	c.mu.Unlock()
	c.c.Close()
	close(c.done)
}

func (c *Conn) dispatch(m *Message) {
	switch m.Type {
	case MsgData, MsgStatus:
		c.mu.Lock()
		p := c.pending[m.Seq]
		if p != nil {
			if m.Type == MsgData {
				p.data = append(p.data, m)
			} else {
				delete(c.pending, m.Seq)
				p.status <- m
			}
		}
		c.mu.Unlock()
		if p == nil && m.FD != nil {
			m.FD.Close()
		}
	case MsgInvoke:
		c.handlers.Add(1)
		go func() {
			defer c.handlers.Done()
			c.serve(m)
		}()
	case MsgNotify:
		// ubusd tells an object owner whether it has subscribers.
		id, _ := m.U32(AttrObjID)
		a, ok := m.Attr(AttrActive)
		c.mu.Lock()
		o := c.objects[id]
		c.mu.Unlock()
		if o != nil && ok {
			v, _ := a.U8()
			o.subscribers.Store(v != 0)
			if o.OnSubscribers != nil {
				o.OnSubscribers(v != 0)
			}
		}
	default:
		c.log.Debug("ubus: ignoring message", "type", m.Type)
	}
}

// serve answers an INVOKE for one of our objects, generating
// METHOD_NOT_FOUND and INVALID_ARGUMENT here, as libubus does.
func (c *Conn) serve(m *Message) {
	if m.FD != nil {
		m.FD.Close()
	}
	id, _ := m.U32(AttrObjID)
	method, _ := m.Str(AttrMethod)
	noReply := false
	if a, ok := m.Attr(AttrNoReply); ok {
		v, _ := a.U8()
		noReply = v != 0
	}
	c.mu.Lock()
	o := c.objects[id]
	c.mu.Unlock()

	var reply []byte
	status := StatusOK
	raw, err := m.Values(AttrData)
	switch {
	case o == nil:
		status = StatusNotFound
	case err != nil:
		status = StatusInvalidArgument
	case o.catchAll != nil:
		status = o.catchAll(c.serveCtx, method, raw)
	default:
		reply, status = c.call(o, method, raw, m)
	}
	if noReply {
		return
	}
	if reply != nil {
		c.write(&Message{Type: MsgData, Seq: m.Seq, Peer: m.Peer, Attrs: []Attr{
			U32Attr(AttrObjID, id), NestedAttr(AttrData, reply),
		}})
	}
	c.write(&Message{Type: MsgStatus, Seq: m.Seq, Peer: m.Peer, Attrs: []Attr{
		U32Attr(AttrStatus, uint32(status)), U32Attr(AttrObjID, id),
	}})
}

func (c *Conn) call(o *Object, name string, raw []Value, m *Message) (reply []byte, status Status) {
	meth := o.method(name)
	if meth == nil {
		return nil, StatusMethodNotFound
	}
	args, err := meth.parseArgs(raw)
	if err != nil {
		return nil, StatusInvalidArgument
	}
	req := &Request{Method: name, Args: args, Raw: raw}
	req.User, _ = m.Str(AttrUser)
	req.Group, _ = m.Str(AttrGroup)
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("ubus: handler panicked", "object", o.Path, "method", name, "panic", r)
			reply, status = nil, StatusUnknownError
		}
	}()
	if meth.Encoded != nil {
		reply, err = meth.Encoded(c.serveCtx, req)
	} else {
		var vs []Value
		vs, err = meth.Handler(c.serveCtx, req)
		if vs != nil {
			reply = AppendValues(make([]byte, 0, 256), vs)
		}
	}
	if err != nil {
		var st Status
		if errors.As(err, &st) {
			return nil, st
		}
		c.log.Warn("ubus: method failed", "object", o.Path, "method", name, "err", err)
		return nil, StatusUnknownError
	}
	return reply, StatusOK
}

// Request sends a message and waits for its STATUS, collecting DATA.
func (c *Conn) Request(ctx context.Context, m *Message) (*Reply, error) {
	p := &pending{status: make(chan *Message, 1)}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	for {
		c.seq++
		if _, busy := c.pending[c.seq]; !busy && c.seq != 0 {
			break
		}
	}
	m.Seq = c.seq
	c.pending[m.Seq] = p
	c.mu.Unlock()

	if err := c.write(m); err != nil {
		c.forget(m.Seq)
		return nil, err
	}
	select {
	case st, ok := <-p.status:
		if !ok {
			return nil, c.Err()
		}
		c.mu.Lock()
		data := p.data
		c.mu.Unlock()
		code, _ := st.U32(AttrStatus)
		return &Reply{Data: data, Status: Status(code), FD: st.FD}, nil
	case <-ctx.Done():
		c.forget(m.Seq)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, StatusTimeout
		}
		return nil, ctx.Err()
	}
}

func (c *Conn) forget(seq uint16) {
	c.mu.Lock()
	delete(c.pending, seq)
	c.mu.Unlock()
}

// ObjectInfo describes an object found by Lookup.
type ObjectInfo struct {
	Path      string
	ID        uint32
	TypeID    uint32
	Signature []Value // one table per method: argument name -> type
}

// Lookup lists objects: all ("" ), one path, or a prefix ending in '*'.
func (c *Conn) Lookup(ctx context.Context, path string) ([]ObjectInfo, error) {
	m := &Message{Type: MsgLookup}
	if path != "" {
		m.Attrs = []Attr{StringAttr(AttrObjPath, path)}
	}
	r, err := c.Request(ctx, m)
	if err != nil {
		return nil, err
	}
	if r.Status != StatusOK {
		return nil, r.Status
	}
	var out []ObjectInfo
	for _, d := range r.Data {
		var oi ObjectInfo
		oi.Path, _ = d.Str(AttrObjPath)
		oi.ID, _ = d.U32(AttrObjID)
		oi.TypeID, _ = d.U32(AttrObjType)
		if sig, ok := d.Attr(AttrSignature); ok {
			if oi.Signature, err = DecodeValues(sig.Data); err != nil {
				return nil, fmt.Errorf("lookup %s: signature: %w", oi.Path, err)
			}
		}
		out = append(out, oi)
	}
	return out, nil
}

// LookupID resolves a path to an object id.
func (c *Conn) LookupID(ctx context.Context, path string) (uint32, error) {
	objs, err := c.Lookup(ctx, path)
	if err != nil {
		return 0, err
	}
	if len(objs) == 0 {
		return 0, StatusNotFound
	}
	return objs[0].ID, nil
}

// Invoke calls a method of an object by id and returns the reply tables.
// A status other than OK is returned as a Status error.
func (c *Conn) Invoke(ctx context.Context, id uint32, method string, args []Value) ([][]Value, error) {
	r, err := c.Request(ctx, &Message{Type: MsgInvoke, Peer: id, Attrs: []Attr{
		U32Attr(AttrObjID, id), StringAttr(AttrMethod, method), NestedAttr(AttrData, AppendValues(nil, args)),
	}})
	if err != nil {
		return nil, err
	}
	if r.FD != nil {
		r.FD.Close()
	}
	var out [][]Value
	for _, d := range r.Data {
		vs, err := d.Values(AttrData)
		if err != nil {
			return nil, fmt.Errorf("invoke %s: reply: %w", method, err)
		}
		out = append(out, vs)
	}
	if r.Status != StatusOK {
		return out, r.Status
	}
	return out, nil
}

// Call looks up path and invokes method on it.
func (c *Conn) Call(ctx context.Context, path, method string, args []Value) ([][]Value, error) {
	id, err := c.LookupID(ctx, path)
	if err != nil {
		return nil, err
	}
	return c.Invoke(ctx, id, method, args)
}

// Ping checks that ubusd answers.
func (c *Conn) Ping(ctx context.Context) error {
	r, err := c.Request(ctx, &Message{Type: MsgPing})
	if err != nil {
		return err
	}
	if r.Status != StatusOK {
		return r.Status
	}
	return nil
}

// AddObject registers an object; its methods' policies become its
// signature. Objects without a path are anonymous (event listeners).
func (c *Conn) AddObject(ctx context.Context, o *Object) error {
	m := &Message{Type: MsgAddObject}
	if o.Path != "" {
		m.Attrs = append(m.Attrs, StringAttr(AttrObjPath, o.Path), NestedAttr(AttrSignature, o.signature()))
	}
	r, err := c.Request(ctx, m)
	if err != nil {
		return fmt.Errorf("add object %q: %w", o.Path, err)
	}
	if r.Status != StatusOK {
		return fmt.Errorf("add object %q: %w", o.Path, r.Status)
	}
	if len(r.Data) == 0 {
		return fmt.Errorf("add object %q: no object id in reply", o.Path)
	}
	id, _ := r.Data[0].U32(AttrObjID)
	typ, _ := r.Data[0].U32(AttrObjType)
	o.id.Store(id)
	o.typeID.Store(typ)
	o.subscribers.Store(false)
	c.mu.Lock()
	c.objects[id] = o
	c.mu.Unlock()
	return nil
}

// RemoveObject withdraws an object from the bus.
func (c *Conn) RemoveObject(ctx context.Context, o *Object) error {
	id := o.ID()
	r, err := c.Request(ctx, &Message{Type: MsgRemoveObject, Attrs: []Attr{U32Attr(AttrObjID, id)}})
	c.mu.Lock()
	delete(c.objects, id)
	c.mu.Unlock()
	o.id.Store(0)
	if err != nil {
		return fmt.Errorf("remove object %q: %w", o.Path, err)
	}
	if r.Status != StatusOK {
		return fmt.Errorf("remove object %q: %w", o.Path, r.Status)
	}
	return nil
}

// Send broadcasts an event, as `ubus send`.
func (c *Conn) Send(ctx context.Context, event string, data []Value) error {
	_, err := c.Invoke(ctx, ObjectEvent, "send", []Value{Str("id", event), Tbl("data", data...)})
	if err != nil {
		return fmt.Errorf("send event %s: %w", event, err)
	}
	return nil
}

// EventHandler receives an event's name and data.
type EventHandler func(event string, data []Value)

// Listen receives events matching pattern (exact, or a prefix ending in
// '*'), as `ubus listen`.
func (c *Conn) Listen(ctx context.Context, pattern string, fn EventHandler) error {
	o := &Object{catchAll: func(_ context.Context, ev string, data []Value) Status {
		fn(ev, data)
		return StatusOK
	}}
	if err := c.AddObject(ctx, o); err != nil {
		return fmt.Errorf("listen %s: %w", pattern, err)
	}
	_, err := c.Invoke(ctx, ObjectEvent, "register", []Value{I32("object", int32(o.ID())), Str("pattern", pattern)})
	if err != nil {
		return fmt.Errorf("listen %s: %w", pattern, err)
	}
	return nil
}

// Subscribe receives the notifications of the object at path.
func (c *Conn) Subscribe(ctx context.Context, path string, fn EventHandler) error {
	target, err := c.LookupID(ctx, path)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", path, err)
	}
	o := &Object{catchAll: func(_ context.Context, typ string, data []Value) Status {
		fn(typ, data)
		return StatusOK
	}}
	if err := c.AddObject(ctx, o); err != nil {
		return fmt.Errorf("subscribe %s: %w", path, err)
	}
	r, err := c.Request(ctx, &Message{Type: MsgSubscribe, Attrs: []Attr{U32Attr(AttrObjID, o.ID()), U32Attr(AttrTarget, target)}})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", path, err)
	}
	if r.Status != StatusOK {
		return fmt.Errorf("subscribe %s: %w", path, r.Status)
	}
	return nil
}

// Notify sends a notification to the object's subscribers without waiting
// for their answers.
func (c *Conn) Notify(o *Object, typ string, data []Value) error {
	return c.write(&Message{Type: MsgNotify, Peer: o.ID(), Attrs: []Attr{
		U32Attr(AttrObjID, o.ID()), StringAttr(AttrMethod, typ), U8Attr(AttrNoReply, 1),
		NestedAttr(AttrData, AppendValues(nil, data)),
	}})
}
