package sip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpSock is the server's UDP socket, read by blocking recvmsg calls on
// the readers' own threads: the kernel wakes the one thread a datagram
// is for, with no poller round trip and no hand-off between threads (at
// 5,000 REGISTERs/s that path cost more CPU than the handler itself), and
// the thread's CPU time is the reader's work, all of it.
//
// With IP_PKTINFO (IPV6_RECVPKTINFO) every datagram tells the local
// address it arrived on, so that a wildcard listener answers from, and
// advertises, the address of the interface the phone used (LAN, mesh, WAN
// or tunnel), following address changes without a restart.
type udpSock struct {
	fd     int
	v6     bool
	local  netip.AddrPort
	closed atomic.Bool
	mu     sync.RWMutex // held for reading by every send; Close takes it to release the fd
}

// listenUDP binds addr (IP:port; a wildcard IP listens on every
// interface).
func listenUDP(addr string) (*udpSock, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	s := &udpSock{v6: ap.Addr().Is6() && !ap.Addr().Is4In6()}
	family := unix.AF_INET
	if s.v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	fail := func(what string, err error) (*udpSock, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("listen udp %s: %s: %w", addr, what, err)
	}
	if s.v6 && ap.Addr().IsUnspecified() {
		// "[::]" is dual-stack whatever net.ipv6.bindv6only says, as the
		// TCP listener (listenTCP) is.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return fail("dual stack", err)
		}
	}
	if s.v6 {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}
	if err != nil {
		return fail("packet info", err)
	}
	// [::] is dual-stack whatever net.ipv6.bindv6only says, as the TCP
	// listener on it is: IPv4 phones reach it too.
	if s.v6 && ap.Addr().IsUnspecified() {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return fail("dual stack", err)
		}
	}
	// A blocked reader wakes at least once a second to see a stop.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return fail("receive timeout", err)
	}
	var sa unix.Sockaddr
	if s.v6 {
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	} else {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		s.local = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		s.local = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	s.fd = fd
	return s, nil
}

// LocalAddr is the bound address.
func (s *udpSock) LocalAddr() netip.AddrPort { return s.local }

// errTruncated: the datagram was larger than the buffer.
var errTruncated = errors.New("datagram larger than sip.max_message_size")

// rawName holds a peer's address for recvmsg and sendmsg; each reader has
// its own, so neither allocates.
type rawName struct {
	sa  unix.RawSockaddrInet6 // large enough for either family
	msg unix.Msghdr
	iov unix.Iovec
}

func (r *rawName) addrPort() netip.AddrPort {
	switch r.sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:]))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(r.sa.Addr).Unmap(), binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&r.sa.Port))[:]))
	}
	return netip.AddrPort{}
}

func (r *rawName) setAddrPort(v6 bool, a netip.AddrPort) uint32 {
	r.sa = unix.RawSockaddrInet6{}
	if !v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.sa))
		sa4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], a.Port())
		sa4.Addr = a.Addr().Unmap().As4()
		return unix.SizeofSockaddrInet4
	}
	r.sa.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&r.sa.Port))[:], a.Port())
	r.sa.Addr = a.Addr().As16()
	return unix.SizeofSockaddrInet6
}

// read receives one datagram and the local address it was sent to (not
// valid when the kernel gave none). It returns net.ErrClosed once the
// socket is closed.
func (s *udpSock) read(name *rawName, b, oob []byte) (n int, from netip.AddrPort, local netip.Addr, err error) {
	for {
		// The read lock keeps the descriptor from being closed (and its
		// number reused) under a blocked reader; Close wakes it first.
		s.mu.RLock()
		if s.closed.Load() {
			s.mu.RUnlock()
			return 0, from, local, net.ErrClosed
		}
		name.iov.Base = &b[0]
		name.iov.SetLen(len(b))
		name.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&name.sa)), Namelen: unix.SizeofSockaddrInet6,
			Iov: &name.iov, Iovlen: 1, Control: &oob[0]}
		name.msg.SetControllen(len(oob))
		r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&name.msg)), 0)
		s.mu.RUnlock()
		if e == unix.EAGAIN || e == unix.EINTR { // the receive timeout: look for a stop
			continue
		}
		if s.closed.Load() {
			return 0, from, local, net.ErrClosed
		}
		if e != 0 {
			return 0, from, local, e
		}
		n = int(r)
		from = name.addrPort()
		rest := oob[:name.msg.Controllen]
		for len(rest) > 0 {
			hdr, data, remainder, perr := unix.ParseOneSocketControlMessage(rest)
			if perr != nil {
				break
			}
			rest = remainder
			switch {
			case hdr.Level == unix.IPPROTO_IP && hdr.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
				// struct in_pktinfo: ifindex (4), spec_dst (4), addr (4)
				local = netip.AddrFrom4([4]byte(data[8:12]))
			case hdr.Level == unix.IPPROTO_IPV6 && hdr.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
				local = netip.AddrFrom16([16]byte(data[:16])).Unmap()
			}
		}
		if name.msg.Flags&unix.MSG_TRUNC != 0 {
			return n, from, local, errTruncated
		}
		return n, from, local, nil
	}
}

// oobCache holds the control message that sends from one local address,
// rebuilt only when the address changes (most traffic uses one), and the
// reader's own address buffers for sendmsg.
type oobCache struct {
	addr netip.Addr
	oob  []byte
	name rawName
}

func (o *oobCache) forAddr(v6 bool, a netip.Addr) []byte {
	if !a.IsValid() || a.IsUnspecified() {
		return nil
	}
	if a == o.addr && o.oob != nil {
		return o.oob
	}
	o.addr = a
	if v6 {
		o.oob = unix.PktInfo6(&unix.Inet6Pktinfo{Addr: a.As16()})
	} else if a.Is4() {
		o.oob = unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: a.As4()})
	} else {
		o.oob = nil
	}
	return o.oob
}

// write sends b to to, from local when valid (else the kernel chooses).
func (s *udpSock) write(b []byte, to netip.AddrPort, local netip.Addr, cache *oobCache) error {
	if len(b) == 0 {
		return nil
	}
	if !s.v6 {
		to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
		if !to.Addr().Is4() {
			return fmt.Errorf("send to %s: not an IPv4 address", to)
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return net.ErrClosed
	}
	oob := cache.forAddr(s.v6, local)
	n := &cache.name
	namelen := n.setAddrPort(s.v6, to)
	n.iov.Base = &b[0]
	n.iov.SetLen(len(b))
	n.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&n.sa)), Namelen: namelen, Iov: &n.iov, Iovlen: 1}
	if len(oob) > 0 {
		n.msg.Control = &oob[0]
		n.msg.SetControllen(len(oob))
	}
	if _, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&n.msg)), 0); e != 0 {
		return &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(to), Err: e}
	}
	return nil
}

// Close stops the readers (a shutdown wakes a blocked recvmsg; the
// receive timeout is the backstop) and releases the socket once no send
// is using it.
func (s *udpSock) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	unix.Shutdown(s.fd, unix.SHUT_RDWR)
	s.mu.Lock()
	defer s.mu.Unlock()
	return unix.Close(s.fd)
}

// drops is the kernel's count of datagrams dropped at this socket because
// its receive queue was full (SO_MEMINFO's SK_MEMINFO_DROPS, Linux 4.7
// and later); ok is false where the kernel cannot tell.
func (s *udpSock) drops() (n uint32, ok bool) {
	var info [unix.SK_MEMINFO_VARS]uint32
	size := uint32(unsafe.Sizeof(info))
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return 0, false
	}
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 || size < 4*(unix.SK_MEMINFO_DROPS+1) {
		return 0, false
	}
	return info[unix.SK_MEMINFO_DROPS], true
}
