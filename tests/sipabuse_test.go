package tests

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sipCounters reads the sip counters every message ends in.
type sipCounters struct{ messages, handled, malformed, panics, tooLarge int64 }

func readSIPCounters(t *testing.T, sock string) sipCounters {
	t.Helper()
	st := call(t, sock, "phonebook", "status", "")
	n := func(path ...string) int64 { return int64(num(get(st, path...))) }
	return sipCounters{messages: n("sip", "messages_total"), handled: n("sip", "handled_total"),
		malformed: n("sip", "malformed_total"), panics: n("sip", "handler_panics"), tooLarge: n("sip", "shed", "message_size")}
}

// abuseSeeds are the messages the fuzz-made ones are mutated from: a
// registration, a call's requests and responses, an unknown method, a
// few RFC 4475 torture messages, with {me} the sender's address.
func abuseSeeds(t *testing.T, server string) []string {
	seeds := []string{
		"REGISTER sip:{s} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-r{n};rport\r\nFrom: <sip:7{n}@{s}>;tag=r{n}\r\nTo: <sip:7{n}@{s}>\r\nCall-ID: r{n}\r\nCSeq: 1 REGISTER\r\nContact: <sip:7{n}@{me}>;expires=600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"INVITE sip:7{n}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-i{n};rport\r\nFrom: <sip:200@{s}>;tag=c{n}\r\nTo: <sip:7{n}@{s}>\r\nCall-ID: c{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:200@{me}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: 24\r\n\r\nv=0\r\nm=audio 4000 RTP/AVP 0",
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {s};branch=z9hG4bKpb0.{n}\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-i{n};rport\r\nFrom: <sip:200@{s}>;tag=c{n}\r\nTo: <sip:7{n}@{s}>;tag=a{n}\r\nCall-ID: c{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
		"ACK sip:7{n}@{me} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-a{n};rport\r\nRoute: <sip:{s};lr>\r\nFrom: <sip:200@{s}>;tag=c{n}\r\nTo: <sip:7{n}@{s}>;tag=a{n}\r\nCall-ID: c{n}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"BYE sip:7{n}@{me} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-b{n};rport\r\nFrom: <sip:200@{s}>;tag=c{n}\r\nTo: <sip:7{n}@{s}>;tag=a{n}\r\nCall-ID: c{n}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"CANCEL sip:7{n}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-i{n};rport\r\nFrom: <sip:200@{s}>;tag=c{n}\r\nTo: <sip:7{n}@{s}>\r\nCall-ID: c{n}\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"OPTIONS sip:{s} SIP/2.0\r\nv: SIP/2.0/UDP {me};branch=z9hG4bK-o{n}\r\nf: <sip:a@{s}>;tag=o{n}\r\nt: <sip:{s}>\r\ni: o{n}\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n",
		"MESSAGE sip:7{n}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-m{n}\r\nFrom: <sip:a@{s}>;tag=m{n}\r\nTo: <sip:7{n}@{s}>\r\nCall-ID: m{n}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 5\r\n\r\nhello",
	}
	for _, name := range []string{"wsinv", "esc01", "mcl01", "ncl", "clerr", "multi01", "bext01", "inv2543", "longreq", "scalar02"} {
		b, err := os.ReadFile(filepath.Join("..", "sip", "testdata", "rfc4475", name+".dat"))
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, string(b))
	}
	for i := range seeds {
		seeds[i] = strings.ReplaceAll(seeds[i], "{s}", server)
	}
	return seeds
}

// interestingLengths are Content-Length values that have broken parsers.
var interestingLengths = []string{"9223372036854775807", "18446744073709551616", "-1", "2147483648", "999999999", "0x10", "", "1 1", "00000000000000000000001", "65536", "4294967295"}

// mutate makes a deterministic pseudo-random variant of a seed message:
// one to three byte, line and Content-Length mutations. It never returns
// an empty or keep-alive-only message (those are not messages).
func mutate(rng *rand.Rand, seed string) []byte {
	b := []byte(seed)
	for range 1 + rng.IntN(3) {
		if len(b) == 0 {
			b = []byte(seed)
		}
		i := rng.IntN(len(b))
		switch rng.IntN(10) {
		case 0: // a random byte
			b[i] = byte(rng.IntN(256))
		case 1: // random bytes inserted
			ins := make([]byte, 1+rng.IntN(8))
			for k := range ins {
				ins[k] = byte(rng.IntN(256))
			}
			b = append(b[:i], append(ins, b[i:]...)...)
		case 2: // a range deleted
			j := min(len(b), i+1+rng.IntN(32))
			b = append(b[:i], b[j:]...)
		case 3, 4: // a line duplicated or dropped
			lines := bytes.SplitAfter(b, []byte("\n"))
			k := rng.IntN(len(lines))
			if rng.IntN(2) == 0 {
				lines = append(lines[:k], append([][]byte{bytes.Clone(lines[k])}, lines[k:]...)...)
			} else {
				lines = append(lines[:k], lines[k+1:]...)
			}
			b = bytes.Join(lines, nil)
		case 5, 6: // the Content-Length replaced, or a second one added
			v := interestingLengths[rng.IntN(len(interestingLengths))]
			if k := bytes.Index(b, []byte("Content-Length: ")); k >= 0 && rng.IntN(2) == 0 {
				end := k + bytes.IndexByte(b[k:], '\r')
				if end > k {
					b = append(b[:k], append([]byte("Content-Length: "+v), b[end:]...)...)
					break
				}
			}
			if k := bytes.Index(b, []byte("\r\n")); k >= 0 {
				b = append(b[:k+2], append([]byte("l: "+v+"\r\n"), b[k+2:]...)...)
			}
		case 7: // cut short
			b = b[:i]
		case 8: // two lines swapped
			lines := bytes.SplitAfter(b, []byte("\n"))
			x, y := rng.IntN(len(lines)), rng.IntN(len(lines))
			lines[x], lines[y] = lines[y], lines[x]
			b = bytes.Join(lines, nil)
		case 9: // a line break inserted
			b = append(b[:i], append([]byte("\r\n"), b[i:]...)...)
		}
	}
	if len(bytes.Trim(b, "\r\n")) == 0 {
		b = []byte(seed)
	}
	return b
}

// TestSIPAbuseNeverEndsTheProcess: one TCP message with Content-Length
// 2^63-1 (on main it made head+cl overflow and the slice panic: the
// process died), then 1,000 fuzz-made messages, half over UDP and half
// over TCP. The process stays alive and answers a fresh OPTIONS over
// both; every message is counted, and handled + malformed + too large +
// recovered panics add up to the messages counted.
func TestSIPAbuseNeverEndsTheProcess(t *testing.T) {
	e := newFaultEnv(t, nil)
	p := e.tr.start(t, bins.daemon)
	host, port := sipAddr(t, e.sock)
	target := net.JoinHostPort(host, strconv.Itoa(port))
	alive := func(after string) {
		t.Helper()
		if p.exited() {
			t.Fatalf("the daemon exited (%d) after %s", p.wait(time.Second), after)
		}
	}

	// 1. The message that ended the process.
	c, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK-huge\r\nFrom: <sip:a@%[1]s>;tag=1\r\nTo: <sip:%[1]s>\r\nCall-ID: huge\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 9223372036854775807\r\n\r\n", target, c.LocalAddr())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	ans, _ := io.ReadAll(c)
	c.Close()
	// The answer or the daemon's end comes first; give the latter a moment.
	time.Sleep(200 * time.Millisecond)
	alive("one TCP message with Content-Length 2^63-1")
	if !strings.HasPrefix(string(ans), "SIP/2.0 400") {
		t.Errorf("Content-Length 2^63-1 answered %q, want 400 and a closed connection", firstLine(string(ans)))
	}

	seeds := abuseSeeds(t, target)
	rng := rand.New(rand.NewPCG(4475, 3261))
	const perTransport = 500

	// 2. UDP: a barrier OPTIONS after every 50 makes sure the reader has
	// caught up (one reader handles datagrams in order), so that none
	// is lost to a full socket buffer and all can be counted.
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(target))
	me := u.LocalAddr().String()
	before := readSIPCounters(t, e.sock)
	t0 := time.Now()
	sent := 0
	barrier := func(k int) {
		t.Helper()
		id := fmt.Sprintf("barrier-%d", k)
		msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s\r\nFrom: <sip:b@%[1]s>;tag=b\r\nTo: <sip:%[1]s>\r\nCall-ID: %[3]s\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", target, me, id)
		u.WriteToUDP([]byte(msg), dst)
		sent++
		buf := make([]byte, 65536)
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
			u.SetReadDeadline(end)
			n, _, err := u.ReadFromUDP(buf)
			if err != nil {
				break
			}
			if a := string(buf[:n]); strings.HasPrefix(a, "SIP/2.0 200") && strings.Contains(a, id) {
				return
			}
		}
		alive(fmt.Sprintf("%d fuzz-made UDP messages", sent))
		t.Fatalf("no answer to %s", id)
	}
	for i := range perTransport {
		seed := strings.NewReplacer("{me}", me, "{n}", strconv.Itoa(i)).Replace(seeds[rng.IntN(len(seeds))])
		if _, err := u.WriteToUDP(mutate(rng, seed), dst); err != nil {
			t.Fatal(err)
		}
		sent++
		if i%50 == 49 {
			barrier(i)
		}
	}
	alive("the fuzz-made UDP messages")
	mid := readSIPCounters(t, e.sock)
	// The heartbeat's self-probe is a message too: at most one a period
	// (sip.Period, 2 s) besides those sent.
	probes := int64(time.Since(t0)/sipPeriod) + 2
	if got := mid.messages - before.messages; got < int64(sent) || got > int64(sent)+probes {
		t.Errorf("UDP: %d messages sent, %d counted (self-probes at most %d)", sent, got, probes)
	}

	// 3. TCP: each message on its own connection, ended by the sender's
	// close, so that one message's lost framing cannot hide the next.
	for i := range perTransport {
		c, err := net.Dial("tcp", target)
		if err != nil {
			alive(fmt.Sprintf("%d fuzz-made TCP messages", i))
			t.Fatal(err)
		}
		seed := strings.NewReplacer("{me}", c.LocalAddr().String(), "{n}", strconv.Itoa(1000+i), "SIP/2.0/UDP", "SIP/2.0/TCP").Replace(seeds[rng.IntN(len(seeds))])
		c.Write(mutate(rng, seed))
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("TCP message %d: the daemon kept the connection after the sender closed: %v", i, err)
		}
		c.Close()
	}
	alive("the fuzz-made TCP messages")
	if ans := rawSIP(t, target, "OPTIONS sip:"+target+" SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-fresh\r\nFrom: <sip:a@"+target+">;tag=1\r\nTo: <sip:"+target+">\r\nCall-ID: fresh\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("a fresh OPTIONS after the abuse: %q", firstLine(ans))
	}
	c, err = net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK-fresh-tcp\r\nFrom: <sip:a@%[1]s>;tag=1\r\nTo: <sip:%[1]s>\r\nCall-ID: fresh-tcp\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", target, c.LocalAddr())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, _ := c.Read(buf)
	c.Close()
	if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
		t.Fatalf("a fresh OPTIONS over TCP after the abuse: %q", firstLine(string(buf[:n])))
	}

	after := readSIPCounters(t, e.sock)
	if got := after.messages - mid.messages; got < perTransport {
		t.Errorf("TCP: %d connections each with a message, %d counted", perTransport, got)
	}
	if sum := after.handled + after.malformed + after.tooLarge + after.panics; sum != after.messages {
		t.Errorf("messages_total %d, but handled %d + malformed %d + too large %d + panics %d = %d",
			after.messages, after.handled, after.malformed, after.tooLarge, after.panics, sum)
	}
	if after.panics != 0 {
		t.Errorf("%d messages made a handler panic (recovered, but each is a bug)", after.panics)
	}
	t.Logf("counted %d messages: %d handled, %d malformed, %d too large, %d panics",
		after.messages, after.handled, after.malformed, after.tooLarge, after.panics)
}

// firstLine is a message's start line.
func firstLine(m string) string {
	if i := strings.Index(m, "\r\n"); i > 0 {
		return m[:i]
	}
	return m
}
