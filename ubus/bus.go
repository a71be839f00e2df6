package ubus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ErrNotConnected is returned at once by calls made while ubusd is away.
var ErrNotConnected = errors.New("ubus: not connected (ubusd unreachable, reconnecting)")

// Reconnect backoff, as procd's ubus.c: 50 ms doubling to 1 s.
const (
	backoffMin = 50 * time.Millisecond
	backoffMax = time.Second
)

// Bus is a daemon's lasting presence on ubus: it owns the connection,
// reconnects with backoff when ubusd restarts, and registers every object
// and event listener again, so the daemon itself never restarts for it.
type Bus struct {
	path string
	log  *slog.Logger

	mu        sync.Mutex
	conn      *Conn
	objects   []*Object
	listeners []listener
	changed   chan struct{} // closed and replaced on every (dis)connect
}

type listener struct {
	pattern string
	fn      EventHandler
}

// NewBus prepares a bus on the ubusd socket at path; Run connects it.
func NewBus(path string, log *slog.Logger) *Bus {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Bus{path: path, log: log, changed: make(chan struct{})}
}

// Register adds an object, served now if connected and after every
// reconnect.
func (b *Bus) Register(ctx context.Context, o *Object) error {
	b.mu.Lock()
	b.objects = append(b.objects, o)
	c := b.conn
	b.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.AddObject(ctx, o)
}

// Listen adds an event listener, kept across reconnects.
func (b *Bus) Listen(ctx context.Context, pattern string, fn EventHandler) error {
	b.mu.Lock()
	b.listeners = append(b.listeners, listener{pattern, fn})
	c := b.conn
	b.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Listen(ctx, pattern, fn)
}

// Conn returns the live connection or ErrNotConnected.
func (b *Bus) Conn() (*Conn, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return nil, ErrNotConnected
	}
	return b.conn, nil
}

// Connected reports whether ubusd is reachable now.
func (b *Bus) Connected() bool {
	_, err := b.Conn()
	return err == nil
}

// Changed returns a channel closed at the next connect or disconnect.
func (b *Bus) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// Call looks up and invokes a method; it fails fast while disconnected.
func (b *Bus) Call(ctx context.Context, path, method string, args []Value) ([][]Value, error) {
	c, err := b.Conn()
	if err != nil {
		return nil, err
	}
	return c.Call(ctx, path, method, args)
}

// Send broadcasts an event; it fails fast while disconnected.
func (b *Bus) Send(ctx context.Context, event string, data []Value) error {
	c, err := b.Conn()
	if err != nil {
		return err
	}
	return c.Send(ctx, event, data)
}

// Notify notifies an object's subscribers; it fails fast while
// disconnected and does nothing when there are none.
func (b *Bus) Notify(o *Object, typ string, data []Value) error {
	c, err := b.Conn()
	if err != nil {
		return err
	}
	if !o.HasSubscribers() {
		return nil
	}
	return c.Notify(o, typ, data)
}

func (b *Bus) setConn(c *Conn) {
	b.mu.Lock()
	b.conn = c
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// Run keeps the bus connected until ctx ends, then withdraws the objects
// and closes the connection.
func (b *Bus) Run(ctx context.Context) {
	delay := backoffMin
	reported := false
	for ctx.Err() == nil {
		c, err := b.connect(ctx)
		if err != nil {
			if !reported {
				b.log.Warn("ubus unreachable; retrying", "socket", b.path, "err", err)
				reported = true
			}
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
			delay = min(2*delay, backoffMax)
			continue
		}
		b.log.Info("ubus connected", "socket", b.path, "client", fmt.Sprintf("%08x", c.ID()))
		reported, delay = false, backoffMin
		b.setConn(c)
		select {
		case <-ctx.Done():
			b.shutdown(c)
			b.setConn(nil)
			return
		case <-c.Done():
			b.setConn(nil)
			b.log.Warn("ubus connection lost; reconnecting", "err", c.Err())
		}
	}
}

// connect dials and registers everything; a registration failure drops the
// connection so that the next attempt starts clean.
func (b *Bus) connect(ctx context.Context) (*Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := Dial(dctx, b.path, b.log)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	objs := append([]*Object(nil), b.objects...)
	ls := append([]listener(nil), b.listeners...)
	b.mu.Unlock()
	for _, o := range objs {
		if err := c.AddObject(dctx, o); err != nil {
			c.Close()
			return nil, err
		}
	}
	for _, l := range ls {
		if err := c.Listen(dctx, l.pattern, l.fn); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (b *Bus) shutdown(c *Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	b.mu.Lock()
	objs := append([]*Object(nil), b.objects...)
	b.mu.Unlock()
	for _, o := range objs {
		if o.ID() != 0 {
			if err := c.RemoveObject(ctx, o); err != nil {
				b.log.Debug("ubus: remove on shutdown", "object", o.Path, "err", err)
			}
		}
	}
	c.Close()
}
