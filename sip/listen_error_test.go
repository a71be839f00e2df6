package sip

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
)

// TestListenErrorSaysItOnce: a SIP address in use gives an error that
// names the address once ("sip: listen udp X: bind: address already in
// use"), still EADDRINUSE underneath. On main Run wrapped listenUDP's
// "listen udp X" in another "listen udp X", and the bind error in a
// net.OpError that said "listen udp" a third time; the app page and the
// worker_blocked alert showed all three.
func TestListenErrorSaysItOnce(t *testing.T) {
	held, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := config.Defaults().SIP
	cfg.Listen = held.LocalAddr().String()
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), noAlerts{})
	err = s.Run(context.Background(), nil) // the bind fails before the worker is used
	if err == nil {
		t.Fatal("Run bound an address in use")
	}
	want := "sip: listen udp " + cfg.Listen + ": bind: address already in use"
	if err.Error() != want || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %q (EADDRINUSE %v), want %q", err, errors.Is(err, syscall.EADDRINUSE), want)
	}
	if n := strings.Count(err.Error(), "listen udp"); n != 1 {
		t.Errorf("%q says listen udp %d times", err, n)
	}
}

// TestListenTCPErrorSaysItOnce: the same for the TCP listener beside it.
func TestListenTCPErrorSaysItOnce(t *testing.T) {
	held, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := config.Defaults().SIP
	cfg.Listen = held.Addr().String() // the UDP port of that number is free, or the test sees EADDRINUSE from UDP
	if cfg.TCPMaxConnections == 0 {
		cfg.TCPMaxConnections = 4
	}
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), noAlerts{})
	err = s.Run(context.Background(), nil)
	if err == nil {
		t.Fatal("Run bound an address in use")
	}
	if n := strings.Count(err.Error(), cfg.Listen); n != 1 || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("%q names the address %d times (EADDRINUSE %v)", err, n, errors.Is(err, syscall.EADDRINUSE))
	}
}
