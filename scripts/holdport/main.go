// Command holdport holds a UDP and a TCP port (127.0.0.1:5060 unless an
// address is given) until it is stopped, to prove that the test suite
// takes free ports and never the SIP port: .ci/run runs `make test` under
// it. It answers nothing: UDP datagrams are read and dropped, TCP
// connections accepted and closed. "holding <addr>" on stdout says both
// are bound.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	addr := "127.0.0.1:5060"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := hold(ctx, addr); err != nil {
		fmt.Fprintln(os.Stderr, "holdport:", err)
		os.Exit(1)
	}
}

// hold binds addr over UDP and TCP and keeps both until ctx ends.
func hold(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("udp %s: %w", addr, err)
	}
	defer pc.Close()
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp %s: %w", addr, err)
	}
	defer ln.Close()
	fmt.Println("holding", addr)
	go func() {
		<-ctx.Done()
		pc.Close()
		ln.Close()
	}()
	go func() {
		b := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(b); errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}()
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err == nil {
			c.Close()
		}
	}
}
