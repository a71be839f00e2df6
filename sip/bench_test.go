package sip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/supervisor"
)

type noAlerts struct{}

func (noAlerts) SetUnhealthy(*health.Descriptor, string, health.Args) {}
func (noAlerts) SetHealthy(*health.Descriptor, string)                {}

// startServer runs the registrar under a supervisor on a loopback port.
func startServer(tb testing.TB, maxBindings int) (*Server, string) {
	cfg := config.Defaults().SIP
	cfg.Listen, cfg.MaxBindings = "127.0.0.1:0", maxBindings
	s := New(cfg, nil, health.NewRates(health.SystemClock{}), noAlerts{})
	sup := supervisor.New(supervisor.Options{MaxRestarts: 1, Window: time.Hour})
	sup.Add(supervisor.Spec{Name: "main", Period: 10 * time.Second, Run: s.Run})
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(func() { cancel(); sup.Wait(context.Background()) })
	sup.Start(ctx)
	return s, s.Addr()
}

// dialServer starts a server and returns a UDP client socket to it and
// the client's own address (for Via and Contact).
func dialServer(b *testing.B, maxBindings int) (net.Conn, string) {
	_, addr := startServer(b, maxBindings)
	c, err := net.Dial("udp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, c.LocalAddr().String()
}

// BenchmarkRegister: one REGISTER of a new phone over UDP loopback and its
// 200 OK, one at a time.
func BenchmarkRegister(b *testing.B) {
	c, local := dialServer(b, 1<<30)
	buf := make([]byte, 2048)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		msg := fmt.Sprintf("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-b%d\r\nFrom: <sip:%d@127.0.0.1>;tag=%d\r\nTo: <sip:%d@127.0.0.1>\r\nCall-ID: b%d@bench\r\nCSeq: 1 REGISTER\r\nContact: <sip:%d@%s>\r\nExpires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			local, i, i, i, i, i, i, local)
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil || string(buf[:12]) != "SIP/2.0 200 " {
			b.Fatalf("reply %d: %q %v", i, buf[:n], err)
		}
	}
}

// BenchmarkOptionsRTT: OPTIONS round trips over UDP loopback (a
// closed-loop client, as the C daemon was measured); reports the median
// and 99th percentile.
func BenchmarkOptionsRTT(b *testing.B) {
	c, local := dialServer(b, 10)
	buf := make([]byte, 2048)
	var rtts []time.Duration
	i := 0
	for b.Loop() {
		i++
		msg := fmt.Sprintf("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-o%d\r\nFrom: <sip:probe@127.0.0.1>;tag=%d\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o%d@bench\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", local, i, i, i)
		t0 := time.Now()
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); err != nil || string(buf[:12]) != "SIP/2.0 200 " {
			b.Fatalf("reply %d: %v", i, err)
		}
		rtts = append(rtts, time.Since(t0))
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(rtts[len(rtts)*99/100].Microseconds()), "p99-us")
}

// handlerBench runs a server and returns a reader and a peer for driving
// handle directly: the CPU and allocations of one request, without the
// client's share or the loopback round trip.
func handlerBench(b *testing.B) (*reader, peer) {
	s, _ := serve(b, func(c *config.SIP) { c.MaxBindings = 1 << 20 })
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sink.Close() })
	go func() { // drain the answers
		buf := make([]byte, 4096)
		for {
			if _, _, err := sink.ReadFromUDP(buf); err != nil {
				return
			}
		}
	}()
	from := peer{addr: sink.LocalAddr().(*net.UDPAddr).AddrPort(), local: netip.MustParseAddr("127.0.0.1")}
	return newReader(s, 8192), from
}

// BenchmarkHandleOptions: one OPTIONS parsed and answered by the handler.
func BenchmarkHandleOptions(b *testing.B) {
	r, from := handlerBench(b)
	msg := []byte(strings.ReplaceAll(options("bench"), "{me}", from.addr.String()))
	b.ReportAllocs()
	for b.Loop() {
		r.handle(msg, from)
	}
}

// BenchmarkHandleRegister: one REGISTER (a binding refreshed) parsed,
// applied and answered by the handler.
func BenchmarkHandleRegister(b *testing.B) {
	r, from := handlerBench(b)
	msgs := make([][]byte, 1000)
	for i := range msgs {
		m := fmt.Sprintf("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-b%d;rport\r\nFrom: <sip:%d@127.0.0.1>;tag=%d\r\nTo: <sip:%d@127.0.0.1>\r\nCall-ID: b%d@bench\r\nCSeq: 1 REGISTER\r\nContact: <sip:%d@%s>\r\nExpires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			from.addr, i, i, i, i, i, i, from.addr)
		msgs[i] = []byte(m)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.handle(msgs[i%len(msgs)], from)
		i++
	}
}

func options(branch string) string {
	return "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK" + branch + ";rport\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: " + branch + "\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// BenchmarkHandleRegisterNew: a REGISTER of a phone not yet registered
// (the sipp rate run registers 20,000 distinct users).
func BenchmarkHandleRegisterNew(b *testing.B) {
	r, from := handlerBench(b)
	const n = 20000
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = []byte(fmt.Sprintf("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-n%d;rport\r\nFrom: <sip:%d@127.0.0.1>;tag=%d\r\nTo: <sip:%d@127.0.0.1>\r\nCall-ID: n%d@bench\r\nCSeq: 1 REGISTER\r\nContact: <sip:%d@%s>\r\nExpires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			from.addr, i, 100000+i, i, 100000+i, i, 100000+i, from.addr))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == n { // start again with an empty registrar
			b.StopTimer()
			r.s.mu.Lock()
			r.s.aors = map[string]*aor{}
			r.s.mu.Unlock()
			b.StartTimer()
			i = 0
		}
		r.handle(msgs[i], from)
		i++
	}
}
