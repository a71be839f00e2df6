package broker

import (
	"context"
	"testing"

	"github.com/aredn/phonebookd/ubus"
)

// BenchmarkCallRoundTrip: one INVOKE from a client through the broker to
// a served object and its DATA+STATUS back, over real unix sockets.
func BenchmarkCallRoundTrip(b *testing.B) {
	br := startBroker(b)
	ctx := context.Background()
	srv, err := ubus.Dial(ctx, br.Path(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	obj := &ubus.Object{Path: "bench", Methods: []ubus.Method{{Name: "echo",
		Handler: func(_ context.Context, r *ubus.Request) ([]ubus.Value, error) { return r.Raw, nil }}}}
	if err := srv.AddObject(ctx, obj); err != nil {
		b.Fatal(err)
	}
	cli, err := ubus.Dial(ctx, br.Path(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	args := []ubus.Value{ubus.Str("name", "fetcher"), ubus.I32("n", 7)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cli.Invoke(ctx, obj.ID(), "echo", args); err != nil {
			b.Fatal(err)
		}
	}
}
