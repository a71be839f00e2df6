// Package broker implements ubusd's side of the ubus protocol: HELLO,
// LOOKUP, ADD/REMOVE_OBJECT, INVOKE routing with USER/GROUP, DATA/STATUS
// relay, errors as ubusd gives them, events (object 1), SUBSCRIBE/NOTIFY,
// monitor (object 3), PING, and cleanup when a client goes away.
//
// It exists for tests and for running phonebookd on a development host
// where ubusd cannot be installed; it is not installed on routers. The
// captures of the real ubusd in the shared vectors keep it honest.
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/ubus"
)

// Monitor record attribute ids (UBUS_MONITOR_*).
const (
	monClient = 0
	monPeer   = 1
	monSend   = 2
	monSeq    = 3
	monType   = 4
	monData   = 5
)

// queueLen bounds a client's unsent messages; a client that stops reading
// past it is dropped, as ubusd drops one whose transmit queue overflows.
const queueLen = 8192

// Broker is a running ubusd stand-in listening on a unix socket.
type Broker struct {
	log  *slog.Logger
	ln   *net.UnixListener
	path string
	wg   sync.WaitGroup

	mu          sync.Mutex
	closed      bool
	clients     map[uint32]*client
	objects     map[uint32]*object
	paths       map[string]*object
	types       map[uint32]*objType
	patterns    []*pattern
	eventSeq    uint16
	objEventSeq uint64
	monitors    []*monitor
}

type client struct {
	id          uint32
	conn        *net.UnixConn
	uid, gid    uint32
	user, group string
	objects     []*object
	out         chan *ubus.Message
	gone        bool
}

type objType struct {
	id      uint32
	refs    int
	methods []byte // the signature's method tables, verbatim
}

type object struct {
	id          uint32
	path        string
	typ         *objType
	client      *client
	subscribers []*subscription // subscriptions to this object, newest first
	targets     []*subscription // subscriptions this object holds
	invokeSeq   uint16
	eventSeen   uint64
}

type subscription struct{ subscriber, target *object }

type pattern struct {
	key     string
	partial bool
	obj     *object
}

type monitor struct {
	cl  *client
	seq uint16
}

// Start listens on path (a stale socket file is replaced) and serves until
// Close.
func Start(path string, log *slog.Logger) (*Broker, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("broker: remove stale socket %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("broker: listen %s: %w", path, err)
	}
	b := &Broker{
		log: log, ln: ln, path: path,
		clients: map[uint32]*client{}, objects: map[uint32]*object{},
		paths: map[string]*object{}, types: map[uint32]*objType{},
	}
	b.objects[ubus.ObjectEvent] = &object{id: ubus.ObjectEvent}
	b.objects[ubus.ObjectMonitor] = &object{id: ubus.ObjectMonitor}
	b.wg.Add(1)
	go b.accept()
	return b, nil
}

// Path is the socket the broker listens on.
func (b *Broker) Path() string { return b.path }

// Close stops listening and disconnects every client.
func (b *Broker) Close() error {
	b.mu.Lock()
	b.closed = true
	var conns []*net.UnixConn
	for _, cl := range b.clients {
		conns = append(conns, cl.conn)
	}
	b.mu.Unlock()
	err := b.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	b.wg.Wait()
	os.Remove(b.path)
	return err
}

func (b *Broker) accept() {
	defer b.wg.Done()
	for {
		conn, err := b.ln.AcceptUnix()
		if err != nil {
			return
		}
		b.wg.Add(1)
		go b.serveClient(conn)
	}
}

func (b *Broker) newID(taken func(uint32) bool) uint32 {
	for {
		id := rand.Uint32()
		if id >= ubus.SystemObjectMax && !taken(id) {
			return id
		}
	}
}

func (b *Broker) serveClient(conn *net.UnixConn) {
	defer b.wg.Done()
	cl := &client{conn: conn, out: make(chan *ubus.Message, queueLen)}
	cl.uid, cl.gid, cl.user, cl.group = peerCred(conn)

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		conn.Close()
		return
	}
	cl.id = b.newID(func(id uint32) bool { return b.clients[id] != nil })
	b.clients[cl.id] = cl
	b.send(cl, &ubus.Message{Type: ubus.MsgHello, Peer: cl.id})
	b.mu.Unlock()

	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range cl.out {
			if err := ubus.WriteMessage(conn, m); err != nil {
				conn.Close()
			}
			if m.FD != nil {
				m.FD.Close()
			}
		}
	}()
	for {
		m, err := ubus.ReadMessage(conn)
		if err != nil {
			break
		}
		b.mu.Lock()
		b.monitorMessage(cl, m, false)
		b.receive(cl, m)
		b.mu.Unlock()
	}
	b.mu.Lock()
	b.freeClient(cl)
	b.mu.Unlock()
	<-done
	conn.Close()
}

// peerCred names the connecting process's user and group, as ubusd puts
// them into every forwarded INVOKE.
func peerCred(conn *net.UnixConn) (uid, gid uint32, uname, gname string) {
	uid, gid = ^uint32(0), ^uint32(0)
	raw, err := conn.SyscallConn()
	if err == nil {
		raw.Control(func(fd uintptr) {
			if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
				uid, gid = cred.Uid, cred.Gid
			}
		})
	}
	uname, gname = strconv.FormatUint(uint64(uid), 10), strconv.FormatUint(uint64(gid), 10)
	if u, err := user.LookupId(uname); err == nil {
		uname = u.Username
	}
	if g, err := user.LookupGroupId(gname); err == nil {
		gname = g.Name
	}
	return uid, gid, uname, gname
}

// send queues a message for a client (ubus_msg_send), recording it for
// monitors first.
func (b *Broker) send(cl *client, m *ubus.Message) {
	if cl == nil || cl.gone {
		if m.FD != nil {
			m.FD.Close()
		}
		return
	}
	if m.Type != ubus.MsgMonitor {
		b.monitorMessage(cl, m, true)
	}
	select {
	case cl.out <- m:
	default:
		b.log.Warn("broker: client not reading; dropping it", "client", fmt.Sprintf("%08x", cl.id))
		cl.conn.Close()
	}
}

func (b *Broker) monitorMessage(cl *client, m *ubus.Message, sent bool) {
	if len(b.monitors) == 0 {
		return
	}
	var s uint8
	if sent {
		s = 1
	}
	attrs := []ubus.Attr{
		ubus.U32Attr(monClient, cl.id), ubus.U32Attr(monPeer, m.Peer),
		ubus.U32Attr(monSeq, uint32(m.Seq)), ubus.U32Attr(monType, uint32(m.Type)),
		ubus.U8Attr(monSend, s), ubus.NestedAttr(monData, ubus.AppendAttrs(nil, m.Attrs)),
	}
	for _, mon := range b.monitors {
		mon.seq++
		b.send(mon.cl, &ubus.Message{Type: ubus.MsgMonitor, Seq: mon.seq, Attrs: attrs})
	}
}

// reply builds a message from the broker with the request's seq and peer.
func reply(req *ubus.Message, typ ubus.MsgType, attrs ...ubus.Attr) *ubus.Message {
	return &ubus.Message{Type: typ, Seq: req.Seq, Peer: req.Peer, Attrs: attrs}
}

// noReply is a handler result that sends no STATUS.
const noReply = -1

func (b *Broker) receive(cl *client, m *ubus.Message) {
	if m.Type != ubus.MsgStatus && m.Type != ubus.MsgInvoke && m.FD != nil {
		m.FD.Close()
		m.FD = nil
	}
	var ret int
	switch m.Type {
	case ubus.MsgPing:
		echo := *m
		echo.Type = ubus.MsgData
		b.send(cl, &echo)
	case ubus.MsgAddObject:
		ret = b.addObject(cl, m)
	case ubus.MsgRemoveObject:
		ret = b.removeObject(cl, m)
	case ubus.MsgLookup:
		ret = b.lookup(cl, m)
	case ubus.MsgInvoke:
		ret = b.invoke(cl, m)
	case ubus.MsgStatus, ubus.MsgData:
		b.response(cl, m)
		ret = noReply
	case ubus.MsgSubscribe:
		ret = b.subscribe(cl, m)
	case ubus.MsgUnsubscribe:
		ret = b.unsubscribe(cl, m)
	case ubus.MsgNotify:
		ret = b.notify(cl, m)
	default:
		ret = int(ubus.StatusInvalidCommand)
	}
	if ret == noReply {
		return
	}
	b.send(cl, reply(m, ubus.MsgStatus, ubus.U32Attr(ubus.AttrStatus, uint32(ret))))
}

func status(s ubus.Status) int { return int(s) }

func (b *Broker) addObject(cl *client, m *ubus.Message) int {
	obj := &object{}
	if tid, ok := m.U32(ubus.AttrObjType); ok {
		if t := b.types[tid]; t != nil {
			t.refs++
			obj.typ = t
		}
	} else if sig, ok := m.Attr(ubus.AttrSignature); ok {
		obj.typ = b.newType(sig.Data)
	}
	obj.id = b.newID(func(id uint32) bool { return b.objects[id] != nil })
	b.objects[obj.id] = obj
	if path, ok := m.Str(ubus.AttrObjPath); ok {
		if b.paths[path] != nil {
			b.freeObject(obj)
			return status(ubus.StatusInvalidArgument)
		}
		obj.path = path
		b.paths[path] = obj
		b.objectEvent(obj, true)
	}
	obj.client = cl
	cl.objects = append([]*object{obj}, cl.objects...)

	attrs := []ubus.Attr{ubus.U32Attr(ubus.AttrObjID, obj.id)}
	if _, ok := m.Attr(ubus.AttrSignature); ok && obj.typ != nil {
		attrs = append(attrs, ubus.U32Attr(ubus.AttrObjType, obj.typ.id))
	}
	b.send(cl, reply(m, ubus.MsgData, attrs...))
	return 0
}

// newType records a signature; one that is not a list of blobmsg tables
// gives an object without a type, as in ubusd (it is then not listed).
func (b *Broker) newType(sig []byte) *objType {
	attrs, err := ubus.ParseAttrs(sig)
	if err != nil {
		return nil
	}
	for _, a := range attrs {
		if _, err := ubus.DecodeValue(a); err != nil {
			return nil
		}
	}
	t := &objType{refs: 1, methods: append([]byte(nil), sig...)}
	t.id = b.newID(func(id uint32) bool { return b.types[id] != nil })
	b.types[t.id] = t
	return t
}

func (b *Broker) removeObject(cl *client, m *ubus.Message) int {
	id, ok := m.U32(ubus.AttrObjID)
	if !ok {
		return status(ubus.StatusInvalidArgument)
	}
	obj := b.objects[id]
	if obj == nil || id < ubus.SystemObjectMax {
		return status(ubus.StatusNotFound)
	}
	if obj.client != cl {
		return status(ubus.StatusPermissionDenied)
	}
	attrs := []ubus.Attr{ubus.U32Attr(ubus.AttrObjID, obj.id)}
	if obj.typ != nil && obj.typ.refs == 1 {
		attrs = append(attrs, ubus.U32Attr(ubus.AttrObjType, obj.typ.id))
	}
	b.send(cl, reply(m, ubus.MsgData, attrs...))
	b.freeObject(obj)
	return 0
}

func (b *Broker) sendObject(cl *client, req *ubus.Message, obj *object) {
	if obj.typ == nil {
		return
	}
	b.send(cl, reply(req, ubus.MsgData,
		ubus.StringAttr(ubus.AttrObjPath, obj.path),
		ubus.U32Attr(ubus.AttrObjID, obj.id),
		ubus.U32Attr(ubus.AttrObjType, obj.typ.id),
		ubus.NestedAttr(ubus.AttrSignature, obj.typ.methods)))
}

func (b *Broker) sortedPaths() []string {
	ps := make([]string, 0, len(b.paths))
	for p := range b.paths {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

func (b *Broker) lookup(cl *client, m *ubus.Message) int {
	a, has := m.Attr(ubus.AttrObjPath)
	if !has {
		for _, p := range b.sortedPaths() {
			b.sendObject(cl, m, b.paths[p])
		}
		return 0
	}
	path, err := a.String()
	if err != nil || path == "" {
		return status(ubus.StatusInvalidArgument)
	}
	if !strings.HasSuffix(path, "*") {
		obj := b.paths[path]
		if obj == nil {
			return status(ubus.StatusNotFound)
		}
		b.sendObject(cl, m, obj)
		return 0
	}
	prefix := strings.TrimSuffix(path, "*")
	found := false
	for _, p := range b.sortedPaths() {
		if strings.HasPrefix(p, prefix) {
			found = true
			b.sendObject(cl, m, b.paths[p])
		}
	}
	if !found {
		return status(ubus.StatusNotFound)
	}
	return 0
}

// forward sends an INVOKE to an object's owner with the caller's identity.
func (b *Broker) forward(from *client, to *object, method string, m *ubus.Message, pre ...ubus.Attr) {
	attrs := append(pre, ubus.U32Attr(ubus.AttrObjID, to.id), ubus.StringAttr(ubus.AttrMethod, method),
		ubus.StringAttr(ubus.AttrUser, from.user), ubus.StringAttr(ubus.AttrGroup, from.group))
	if d, ok := m.Attr(ubus.AttrData); ok {
		attrs = append(attrs, ubus.NestedAttr(ubus.AttrData, d.Data))
	}
	b.send(to.client, &ubus.Message{Type: ubus.MsgInvoke, Seq: m.Seq, Peer: m.Peer, Attrs: attrs, FD: m.FD})
}

func (b *Broker) invoke(cl *client, m *ubus.Message) int {
	method, okM := m.Str(ubus.AttrMethod)
	id, okID := m.U32(ubus.AttrObjID)
	if !okM || !okID {
		b.closeFD(m)
		return status(ubus.StatusInvalidArgument)
	}
	obj := b.objects[id]
	if obj == nil {
		b.closeFD(m)
		return status(ubus.StatusNotFound)
	}
	if obj.client == nil {
		b.closeFD(m)
		switch id {
		case ubus.ObjectEvent:
			return status(b.eventRecv(cl, method, m))
		case ubus.ObjectMonitor:
			return status(b.monitorRecv(cl, method))
		}
		return status(ubus.StatusNotFound)
	}
	m.Peer = cl.id
	b.forward(cl, obj, method, m)
	return noReply
}

func (b *Broker) closeFD(m *ubus.Message) {
	if m.FD != nil {
		m.FD.Close()
		m.FD = nil
	}
}

// response relays an object owner's DATA or STATUS to the caller, whose id
// is in the header's peer; the peer becomes the object id.
func (b *Broker) response(cl *client, m *ubus.Message) {
	id, ok := m.U32(ubus.AttrObjID)
	_, hasStatus := m.Attr(ubus.AttrStatus)
	_, hasData := m.Attr(ubus.AttrData)
	obj := b.objects[id]
	to := b.clients[m.Peer]
	if !ok || (m.Type == ubus.MsgStatus && !hasStatus) || (m.Type == ubus.MsgData && !hasData) ||
		obj == nil || obj.client != cl || to == nil {
		b.closeFD(m)
		return
	}
	m.Peer = id
	b.send(to, m)
}

// watchArgs checks a SUBSCRIBE or UNSUBSCRIBE: the subscriber object must
// exist and belong to the sender; it returns the object and target id,
// or the status to answer.
func (b *Broker) watchArgs(cl *client, m *ubus.Message) (*object, uint32, int) {
	id, ok1 := m.U32(ubus.AttrObjID)
	tid, ok2 := m.U32(ubus.AttrTarget)
	if !ok1 || !ok2 {
		return nil, 0, status(ubus.StatusInvalidArgument)
	}
	obj := b.objects[id]
	if obj == nil {
		return nil, 0, status(ubus.StatusNotFound)
	}
	if obj.client != cl {
		return nil, 0, status(ubus.StatusInvalidArgument)
	}
	return obj, tid, 0
}

func (b *Broker) subscribe(cl *client, m *ubus.Message) int {
	obj, tid, st := b.watchArgs(cl, m)
	if obj == nil {
		return st
	}
	target := b.objects[tid]
	if target == nil || target.client == nil {
		return status(ubus.StatusNotFound)
	}
	if target.client == cl {
		return status(ubus.StatusInvalidArgument)
	}
	s := &subscription{subscriber: obj, target: target}
	first := len(target.subscribers) == 0
	target.subscribers = append([]*subscription{s}, target.subscribers...)
	obj.targets = append([]*subscription{s}, obj.targets...)
	if first {
		b.notifySubscription(target)
	}
	return 0
}

func (b *Broker) unsubscribe(cl *client, m *ubus.Message) int {
	obj, tid, st := b.watchArgs(cl, m)
	if obj == nil {
		return st
	}
	for _, s := range obj.targets {
		if s.target.id == tid {
			b.dropSubscription(s)
			return 0
		}
	}
	return status(ubus.StatusNotFound)
}

func without(list []*subscription, s *subscription) []*subscription {
	for i, x := range list {
		if x == s {
			return append(list[:i:i], list[i+1:]...)
		}
	}
	return list
}

func (b *Broker) dropSubscription(s *subscription) {
	s.target.subscribers = without(s.target.subscribers, s)
	s.subscriber.targets = without(s.subscriber.targets, s)
	if len(s.target.subscribers) == 0 {
		b.notifySubscription(s.target)
	}
}

// notifySubscription tells an object's owner whether it has subscribers.
func (b *Broker) notifySubscription(obj *object) {
	var active uint8
	if len(obj.subscribers) > 0 {
		active = 1
	}
	obj.invokeSeq++
	b.send(obj.client, &ubus.Message{Type: ubus.MsgNotify, Seq: obj.invokeSeq, Attrs: []ubus.Attr{
		ubus.U32Attr(ubus.AttrObjID, obj.id), ubus.U8Attr(ubus.AttrActive, active),
	}})
}

func (b *Broker) notify(cl *client, m *ubus.Message) int {
	method, okM := m.Str(ubus.AttrMethod)
	id, okID := m.U32(ubus.AttrObjID)
	if !okM || !okID {
		return status(ubus.StatusInvalidArgument)
	}
	noRep := false
	if a, ok := m.Attr(ubus.AttrNoReply); ok && len(a.Data) == 1 {
		noRep = a.Data[0] != 0
	}
	obj := b.objects[id]
	if obj == nil {
		return status(ubus.StatusNotFound)
	}
	if obj.client != cl {
		return status(ubus.StatusPermissionDenied)
	}
	if !noRep {
		var subs []byte
		for _, s := range obj.subscribers {
			subs = ubus.AppendAttr(subs, ubus.U32Attr(0, s.subscriber.id))
		}
		b.send(cl, reply(m, ubus.MsgStatus, ubus.U32Attr(ubus.AttrObjID, id),
			ubus.NestedAttr(ubus.AttrSubscribers, subs), ubus.U32Attr(ubus.AttrStatus, 0)))
	}
	m.Peer = cl.id
	for _, s := range obj.subscribers {
		var pre []ubus.Attr
		if noRep {
			pre = append(pre, ubus.U8Attr(ubus.AttrNoReply, 1))
		}
		b.forward(cl, s.subscriber, method, m, pre...)
	}
	return noReply
}

// eventRecv serves object 1: "register" a listener, "send" an event.
func (b *Broker) eventRecv(cl *client, method string, m *ubus.Message) ubus.Status {
	data, err := m.Values(ubus.AttrData)
	if err != nil {
		return ubus.StatusInvalidArgument
	}
	switch method {
	case "register":
		objv, ok := ubus.Get(data, "object")
		if !ok || objv.Kind != ubus.Int32 {
			return ubus.StatusInvalidArgument
		}
		id := uint32(objv.Int)
		if id < ubus.SystemObjectMax {
			return ubus.StatusPermissionDenied
		}
		obj := b.objects[id]
		if obj == nil {
			return ubus.StatusNotFound
		}
		if obj.client != cl {
			return ubus.StatusPermissionDenied
		}
		pv, ok := ubus.Get(data, "pattern")
		if !ok || pv.Kind != ubus.String || pv.Str == "" {
			return ubus.StatusInvalidArgument
		}
		p := &pattern{key: pv.Str, obj: obj}
		if strings.HasSuffix(p.key, "*") {
			p.key, p.partial = strings.TrimSuffix(p.key, "*"), true
		}
		i := sort.Search(len(b.patterns), func(i int) bool { return b.patterns[i].key > p.key })
		b.patterns = append(b.patterns[:i], append([]*pattern{p}, b.patterns[i:]...)...)
		return ubus.StatusOK
	case "send":
		idv, ok1 := ubus.Get(data, "id")
		dv, ok2 := ubus.Get(data, "data")
		if !ok1 || !ok2 || idv.Kind != ubus.String || dv.Kind != ubus.Table {
			return ubus.StatusInvalidArgument
		}
		if strings.HasPrefix(idv.Str, "ubus.") {
			return ubus.StatusPermissionDenied
		}
		b.sendEvent(cl, idv.Str, ubus.AppendValues(nil, dv.List))
		return ubus.StatusOK
	}
	return ubus.StatusInvalidCommand
}

// sendEvent delivers an event to every matching listener once, never back
// to the sender.
func (b *Broker) sendEvent(from *client, id string, data []byte) {
	b.objEventSeq++
	for _, p := range b.patterns {
		match := p.key == id || (p.partial && strings.HasPrefix(id, p.key))
		if !match || p.obj.client == from || p.obj.eventSeen == b.objEventSeq {
			continue
		}
		p.obj.eventSeen = b.objEventSeq
		b.eventSeq++
		b.send(p.obj.client, &ubus.Message{Type: ubus.MsgInvoke, Seq: b.eventSeq, Attrs: []ubus.Attr{
			ubus.U32Attr(ubus.AttrObjID, p.obj.id), ubus.StringAttr(ubus.AttrMethod, id), ubus.NestedAttr(ubus.AttrData, data),
		}})
	}
}

func (b *Broker) objectEvent(obj *object, added bool) {
	name := "ubus.object.remove"
	if added {
		name = "ubus.object.add"
	}
	b.sendEvent(nil, name, ubus.AppendValues(nil, []ubus.Value{ubus.I32("id", int32(obj.id)), ubus.Str("path", obj.path)}))
}

// monitorRecv serves object 3: "add" and "remove" a monitor (root only).
func (b *Broker) monitorRecv(cl *client, method string) ubus.Status {
	if cl.uid != 0 || cl.gid != 0 {
		return ubus.StatusPermissionDenied
	}
	switch method {
	case "add":
		b.dropMonitor(cl)
		b.monitors = append(b.monitors, &monitor{cl: cl})
		return ubus.StatusOK
	case "remove":
		b.dropMonitor(cl)
		return ubus.StatusOK
	}
	return ubus.StatusMethodNotFound
}

func (b *Broker) dropMonitor(cl *client) {
	for i, m := range b.monitors {
		if m.cl == cl {
			b.monitors = append(b.monitors[:i], b.monitors[i+1:]...)
			return
		}
	}
}

func (b *Broker) freeObject(obj *object) {
	for len(obj.targets) > 0 {
		b.dropSubscription(obj.targets[0])
	}
	for len(obj.subscribers) > 0 {
		s := obj.subscribers[0]
		s.subscriber.invokeSeq++
		b.send(s.subscriber.client, &ubus.Message{Type: ubus.MsgUnsubscribe, Seq: s.subscriber.invokeSeq, Attrs: []ubus.Attr{
			ubus.U32Attr(ubus.AttrObjID, s.subscriber.id), ubus.U32Attr(ubus.AttrTarget, obj.id),
		}})
		b.dropSubscription(s)
	}
	delete(b.objects, obj.id)
	if obj.path != "" {
		b.objectEvent(obj, false)
		delete(b.paths, obj.path)
	}
	if obj.client != nil {
		for i, o := range obj.client.objects {
			if o == obj {
				obj.client.objects = append(obj.client.objects[:i], obj.client.objects[i+1:]...)
				break
			}
		}
	}
	kept := b.patterns[:0]
	for _, p := range b.patterns {
		if p.obj != obj {
			kept = append(kept, p)
		}
	}
	b.patterns = kept
	if obj.typ != nil {
		obj.typ.refs--
		if obj.typ.refs == 0 {
			delete(b.types, obj.typ.id)
		}
	}
}

func (b *Broker) freeClient(cl *client) {
	for len(cl.objects) > 0 {
		b.freeObject(cl.objects[0])
	}
	b.dropMonitor(cl)
	delete(b.clients, cl.id)
	cl.gone = true
	close(cl.out)
}
