package ubus

import (
	"context"
	"fmt"
	"sync/atomic"
)

// Param is one argument of a method's policy: its name and blobmsg type
// (advertised in the signature that `ubus -v list` shows) and whether the
// call is rejected with INVALID_ARGUMENT without it.
type Param struct {
	Name     string
	Kind     Kind
	Required bool
}

// Handler serves one method call. It returns the reply table (nil for no
// DATA) and an error: a Status travels as that status code, any other error
// as UNKNOWN_ERROR.
type Handler func(ctx context.Context, req *Request) ([]Value, error)

// Method is one method of an object: its policy right beside its handler,
// the same table advertising and validating arguments.
type Method struct {
	Name    string
	Params  []Param
	Handler Handler
	// Encoded, instead of Handler, returns the reply table already
	// encoded as a blobmsg body (a snapshot served without re-encoding).
	Encoded func(ctx context.Context, req *Request) ([]byte, error)
}

// Request is one incoming call.
type Request struct {
	Method string
	// Args holds the arguments that match the policy's name and type;
	// Raw all of them, including unknown extras such as uhttpd's
	// ubus_rpc_session, which are accepted and ignored.
	Args  map[string]Value
	Raw   []Value
	User  string
	Group string
}

// String returns a string argument of the policy.
func (r *Request) String(name string) (string, bool) {
	v, ok := r.Args[name]
	return v.Str, ok
}

// Object is a ubus object served by this process.
type Object struct {
	Path    string
	Methods []Method
	// OnSubscribers, if set, is told when the object gains its first
	// subscriber or loses its last (ubusd's ACTIVE notification).
	OnSubscribers func(active bool)

	id          atomic.Uint32
	typeID      atomic.Uint32
	subscribers atomic.Bool
	// catchAll serves anonymous objects (event listeners, subscribers).
	catchAll func(ctx context.Context, method string, data []Value) Status
}

// ID is the object's id on the bus it is registered with (0 when not).
func (o *Object) ID() uint32 { return o.id.Load() }

// HasSubscribers reports whether anyone is subscribed to the object.
func (o *Object) HasSubscribers() bool { return o.subscribers.Load() }

func (o *Object) method(name string) *Method {
	for i := range o.Methods {
		if o.Methods[i].Name == name {
			return &o.Methods[i]
		}
	}
	return nil
}

// signature encodes the methods' policies as ADD_OBJECT's SIGNATURE.
func (o *Object) signature() []byte {
	var b []byte
	for _, m := range o.Methods {
		t := Tbl(m.Name)
		for _, p := range m.Params {
			t.List = append(t.List, I32(p.Name, int32(p.Kind)))
		}
		b = AppendValue(b, t)
	}
	return b
}

// parseArgs applies a policy the way blobmsg_parse does (a member of the
// wrong type counts as absent) and rejects a call missing a required one.
func (m *Method) parseArgs(raw []Value) (map[string]Value, error) {
	args := make(map[string]Value, len(m.Params))
	for _, p := range m.Params {
		for _, v := range raw {
			if v.Name == p.Name && v.Kind == p.Kind {
				args[p.Name] = v
				break
			}
		}
		if _, ok := args[p.Name]; !ok && p.Required {
			return nil, fmt.Errorf("argument %q (%s) missing: %w", p.Name, p.Kind, StatusInvalidArgument)
		}
	}
	return args, nil
}
