package sip

import (
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/aredn/phonebookd/config"
)

// resident counts the pages of b in memory (mincore).
func resident(t *testing.T, b []byte) int {
	t.Helper()
	page := unix.Getpagesize()
	vec := make([]byte, (len(b)+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// TestUDPLargeDatagramReadWholeAndGivenBack: the UDP reader's buffer is
// sip.max_message_size of address space of which only the first page
// stays resident. A datagram of three pages is read whole (answered
// 200, not 513 or 400) and the pages it touched past the first are given
// back; a datagram past sip.max_message_size is refused (513) and
// counted as shed for its size, never parsed cut short.
func TestUDPLargeDatagramReadWholeAndGivenBack(t *testing.T) {
	page := unix.Getpagesize()
	s, addr := serve(t, func(c *config.SIP) { c.MaxMessageSize = 60000 })
	var r *reader
	within(t, 5*time.Second, "the UDP reader", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.readers) > 0 {
			r = s.readers[0]
		}
		return r != nil
	})
	if r.ubuf == nil || !r.ubuf.mapped {
		t.Fatal("the UDP reader's buffer is not a mapping")
	}
	ph := newPhone(t, "127.0.0.1")
	if ans := ph.roundTrip(addr, options("small")); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("small OPTIONS: %q", status(ans))
	}
	pad := "Subject: " + strings.Repeat("x", 3*page) + "\r\n"
	big := strings.Replace(options("big"), "Content-Length: 0", pad+"Content-Length: 0", 1)
	if ans := ph.roundTrip(addr, big); !strings.HasPrefix(ans, "SIP/2.0 200") {
		t.Fatalf("OPTIONS of %d bytes: %q", len(big), status(ans))
	}
	within(t, 5*time.Second, "the large datagram's pages given back", func() bool { return resident(t, r.ubuf.b) <= 1 })

	shed := s.Shed()["message_size"]
	huge := strings.Replace(options("huge"), "Content-Length: 0", "Subject: "+strings.Repeat("x", 61000)+"\r\nContent-Length: 0", 1)
	if ans := ph.roundTrip(addr, huge); !strings.HasPrefix(ans, "SIP/2.0 513") {
		t.Fatalf("datagram of %d bytes past sip.max_message_size: %q", len(huge), status(ans))
	}
	if got := s.Shed()["message_size"]; got != shed+1 {
		t.Errorf("shed message_size %d, want %d", got, shed+1)
	}
	within(t, 5*time.Second, "the refused datagram's pages given back", func() bool { return resident(t, r.ubuf.b) <= 1 })
	outcomesAddUp(t, s)
}
