// Command sipflood sends SIP OPTIONS as fast as it can from several
// senders to one SIP server on this host: the flood of scripts/flood.sh
// and of the whole-daemon overload test. It sends from, and to, loopback
// addresses (127.0.0.0/8) only, so that it can never flood a network.
//
//	sipflood -target 127.0.0.1:5060 [-senders 4] [-duration 90s | -count N]
//
// With -count each sender sends N messages (a bounded flood, as tests
// use); with -duration it sends until the time is up; with both, until
// the first. It prints what it sent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	target := flag.String("target", "", "the SIP server, IP:port on loopback")
	senders := flag.Int("senders", 4, "senders, each on its own address 127.0.0.(10+i)")
	duration := flag.Duration("duration", 0, "how long to send (0: until -count)")
	count := flag.Int("count", 0, "messages per sender (0: until -duration)")
	flag.Parse()
	if err := run(*target, *senders, *duration, *count); err != nil {
		fmt.Fprintln(os.Stderr, "sipflood:", err)
		os.Exit(1)
	}
}

func run(target string, senders int, duration time.Duration, count int) error {
	dst, err := netip.ParseAddrPort(target)
	switch {
	case err != nil:
		return fmt.Errorf("-target: %w", err)
	case !dst.Addr().Unmap().Is4() || !dst.Addr().IsLoopback():
		return fmt.Errorf("-target %s: not on 127.0.0.0/8 (sipflood floods this host only)", target)
	case senders < 1 || senders > 200:
		return errors.New("-senders: from 1 to 200")
	case duration <= 0 && count <= 0:
		return errors.New("give -duration or -count")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	t0 := time.Now()
	for i := range senders {
		src := netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)})
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		if err != nil {
			return fmt.Errorf("sender on %s: %w", src, err)
		}
		defer c.Close()
		c.SetReadBuffer(4096) // the answers are not read: let the kernel drop them here
		wg.Go(func() {
			n, err := send(ctx, c, dst, i, count)
			sent.Add(n)
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	took := time.Since(t0)
	fmt.Printf("sent %d OPTIONS from %d senders to %s in %s (%.0f/s)\n", sent.Load(), senders, dst, took.Round(time.Millisecond), float64(sent.Load())/took.Seconds())
	return <-errs
}

// send floods from one socket: a new branch and Call-ID for every
// message, built in place.
func send(ctx context.Context, c *net.UDPConn, dst netip.AddrPort, sender, count int) (int64, error) {
	me := c.LocalAddr().String()
	head := []byte("OPTIONS sip:" + dst.String() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + me + ";branch=z9hG4bKflood" + strconv.Itoa(sender) + "-")
	tail := "\r\nFrom: <sip:flood@" + me + ">;tag=flood\r\nTo: <sip:" + dst.String() + ">\r\nCall-ID: flood" + strconv.Itoa(sender) +
		"\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	buf := make([]byte, 0, len(head)+len(tail)+20)
	var n int64
	for i := 0; count == 0 || i < count; i++ {
		if i%1024 == 0 && ctx.Err() != nil {
			break
		}
		buf = append(strconv.AppendInt(append(buf[:0], head...), int64(i), 10), tail...)
		if _, err := c.WriteToUDPAddrPort(buf, dst); err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) && (errno == syscall.ENOBUFS || errno == syscall.EAGAIN || errno == syscall.ECONNREFUSED) {
				continue // the kernel's own shedding, or the ICMP of a daemon that went away
			}
			return n, fmt.Errorf("send: %w", err)
		}
		n++
	}
	return n, nil
}
