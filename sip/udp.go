package sip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// udpSock is the server's UDP socket. With IP_PKTINFO (IPV6_RECVPKTINFO)
// every datagram tells the local address it arrived on, so that a
// wildcard listener answers from, and advertises, the address of the
// interface the phone used (LAN, mesh, WAN or tunnel), following address
// changes without a restart.
type udpSock struct {
	c  *net.UDPConn
	v6 bool
}

// listenUDP binds addr (host:port; a wildcard host listens on every
// interface).
func listenUDP(addr string) (*udpSock, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	network := "udp4"
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	s := &udpSock{c: c, v6: network == "udp6"}
	raw, err := c.SyscallConn()
	if err == nil {
		cerr := raw.Control(func(fd uintptr) {
			if s.v6 {
				err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
			} else {
				err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			}
		})
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("listen udp %s: packet info: %w", addr, err)
	}
	return s, nil
}

// LocalAddr is the bound address.
func (s *udpSock) LocalAddr() netip.AddrPort { return s.c.LocalAddr().(*net.UDPAddr).AddrPort() }

// errTruncated: the datagram was larger than the buffer.
var errTruncated = errors.New("datagram larger than sip.max_message_size")

// read receives one datagram and the local address it was sent to (not
// valid when the kernel gave none).
func (s *udpSock) read(b, oob []byte) (n int, from netip.AddrPort, local netip.Addr, err error) {
	n, oobn, flags, from, err := s.c.ReadMsgUDPAddrPort(b, oob)
	if err != nil {
		return 0, from, local, err
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	rest := oob[:oobn]
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
	if flags&unix.MSG_TRUNC != 0 {
		return n, from, local, errTruncated
	}
	return n, from, local, nil
}

// oobCache holds the control message that sends from one local address,
// rebuilt only when the address changes (most traffic uses one).
type oobCache struct {
	addr netip.Addr
	oob  []byte
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
	if !s.v6 {
		to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
		if !to.Addr().Is4() {
			return fmt.Errorf("send to %s: not an IPv4 address", to)
		}
	}
	_, _, err := s.c.WriteMsgUDPAddrPort(b, cache.forAddr(s.v6, local), to)
	return err
}

// Close closes the socket.
func (s *udpSock) Close() error { return s.c.Close() }
