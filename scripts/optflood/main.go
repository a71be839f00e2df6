// Command optflood sends SIP OPTIONS over UDP from many source addresses
// in 127.0.0.0/8, round robin, at a set rate, and counts the answers:
// the "100k OPTIONS from 1,000 sources" step of scripts/footprint.sh,
// which sipp (one source address per instance) cannot do in one process.
//
//	optflood [-n 100000] [-sources 1000] [-rate 10000] 127.0.0.1:5060
//
// Sources are 127.1.x.y (the whole of 127.0.0.0/8 is local on Linux); it
// prints "sent N answered M" when the last answer has had a second to
// come back.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 100000, "OPTIONS to send in all")
	sources := flag.Int("sources", 1000, "source addresses (127.1.x.y), at most 62500")
	rate := flag.Int("rate", 10000, "OPTIONS per second (0: as fast as possible)")
	flag.Parse()
	if flag.NArg() != 1 || *sources < 1 || *sources > 62500 || *n < 1 {
		fmt.Fprintln(os.Stderr, "usage: optflood [-n N] [-sources S (1-62500)] [-rate R] HOST:PORT")
		os.Exit(2)
	}
	dst, err := netip.ParseAddrPort(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "optflood: target:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sent, answered, err := flood(ctx, dst, *n, *sources, *rate)
	fmt.Printf("sent %d answered %d\n", sent, answered)
	if err != nil {
		fmt.Fprintln(os.Stderr, "optflood:", err)
		os.Exit(1)
	}
}

// source is the i-th source address: 127.1.0.1, 127.1.0.2, ...
func source(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, byte(1 + i/62500), byte(i / 250 % 250), byte(1 + i%250)})
}

// flood binds every source, sends n OPTIONS round robin across them at
// rate per second, and counts the datagrams that come back to them.
func flood(ctx context.Context, dst netip.AddrPort, n, sources, rate int) (sent, answered int64, err error) {
	conns := make([]*net.UDPConn, 0, sources)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var got atomic.Int64
	var readers sync.WaitGroup
	for i := range sources {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(source(i), 0)))
		if err != nil {
			return 0, 0, fmt.Errorf("bind source %d (%s): %w", i, source(i), err)
		}
		conns = append(conns, c)
		readers.Add(1)
		go func() {
			defer readers.Done()
			buf := make([]byte, 2048)
			for {
				if _, _, err := c.ReadFromUDP(buf); err != nil {
					return // closed at the end
				}
				got.Add(1)
			}
		}()
	}
	to := net.UDPAddrFromAddrPort(dst)
	start := time.Now()
	for k := range n {
		if ctx.Err() != nil {
			break
		}
		if rate > 0 && k%100 == 0 {
			// paced in steps of 100: sleep until the k-th is due
			if d := time.Until(start.Add(time.Duration(k) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
		}
		c := conns[k%sources]
		if _, err := c.WriteToUDP(message(c.LocalAddr().String(), k), to); err == nil {
			sent++
		}
	}
	time.Sleep(time.Second) // the last answers
	for _, c := range conns {
		c.Close()
	}
	readers.Wait()
	conns = nil
	return sent, got.Load(), ctx.Err()
}

// message is one OPTIONS request from local with a unique branch and
// Call-ID.
func message(local string, k int) []byte {
	return fmt.Appendf(nil, "OPTIONS sip:phonebook SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKof%d;rport\r\nFrom: <sip:flood@%s>;tag=of%d\r\nTo: <sip:phonebook>\r\nCall-ID: of%d@optflood\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		local, k, local, k, k)
}
