package sip

import (
	"sync"

	"golang.org/x/sys/unix"
)

// Read buffers, sized to the traffic rather than to the largest message
// (issue 19): most SIP messages are under 1.5 KB, sip.max_message_size
// may be 64 KB, and a buffer the size of the largest message kept per
// reader or per connection is memory the router never gets back.
//
// The UDP reader receives into one mapping of sip.max_message_size outside
// the Go heap (udpBuf): the kernel writes only the bytes a datagram has,
// so only the pages traffic touches are resident, and after a datagram
// larger than the first page those pages are given back at once
// (MADV_DONTNEED). A datagram is still read whole up to
// sip.max_message_size, in one recvmsg, and a larger one is still refused
// by MSG_TRUNC and counted (udpSock.read).
//
// A TCP connection holds a buffer only while a message on it is
// incomplete: readers read into a buffer of their own, and only the
// unfinished rest of a message is kept, in a chunk from a bounded free
// list (chunkPool) or, for a message larger than a chunk, in a slice sized
// to it and dropped once the message is handled.

// chunkSize is a pooled read buffer's size: one Ethernet MTU's worth of
// SIP with room to spare, so that nearly every message fits one.
const chunkSize = 2048

// maxPooledChunks bounds the free list: at most this many idle chunks
// (32 KB) are kept for reuse; more are left to the collector.
const maxPooledChunks = 16

// chunkPool is a bounded free list of chunkSize buffers. Unlike a
// sync.Pool it keeps its few buffers across collections, so that the
// steady state allocates nothing, and it never holds more than
// maxPooledChunks.
type chunkPool struct {
	mu   sync.Mutex
	free [][]byte
}

// get returns an empty buffer of capacity chunkSize.
func (p *chunkPool) get() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		return b
	}
	return make([]byte, 0, chunkSize)
}

// put gives a buffer back; one that is not a chunk (a large message's)
// or one past the bound is dropped.
func (p *chunkPool) put(b []byte) {
	if cap(b) != chunkSize {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) < maxPooledChunks {
		p.free = append(p.free, b[:0])
	}
}

// idle is how many buffers the free list holds (for tests).
func (p *chunkPool) idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// udpBuf is the UDP reader's receive buffer: sip.max_message_size bytes
// of anonymous memory mapped outside the Go heap, so that untouched pages
// cost nothing and touched ones can be given back to the kernel without
// waiting for a collection.
type udpBuf struct {
	b      []byte // the whole mapping, page-rounded
	page   int
	mapped bool // false: a heap slice (the mapping failed)
}

// newUDPBuf maps a buffer of size bytes; if the kernel refuses the
// mapping, a heap slice serves (correct, only not given back).
func newUDPBuf(size int) *udpBuf {
	page := unix.Getpagesize()
	n := (size + page - 1) / page * page
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return &udpBuf{b: make([]byte, n), page: page}
	}
	return &udpBuf{b: b, page: page, mapped: true}
}

// giveBack returns the pages past the first that a datagram of n bytes
// touched (MADV_DONTNEED: they read as zeros and are resident again only
// when written). Called after the datagram was handled: whatever outlives
// a handler was cloned from the buffer.
func (u *udpBuf) giveBack(n int) {
	if !u.mapped || n <= u.page {
		return
	}
	end := min((n+u.page-1)/u.page*u.page, len(u.b))
	unix.Madvise(u.b[u.page:end], unix.MADV_DONTNEED) // advice: a failure leaves the pages resident, nothing worse
}

// udpBufs keeps the server's UDP receive mappings across reader restarts
// (a rebind starts the new endpoint's reader while the old one ends).
// A mapping is never unmapped: should anything alias a message it
// handled, it reads zeros, not an unmapped page that would end the
// process. At most maxUDPBufs exist (one per reader, old and new).
type udpBufs struct {
	mu   sync.Mutex
	free []*udpBuf
	made int
}

// maxUDPBufs bounds the mappings: the running reader's and, during a
// rebind, the old endpoint's.
const maxUDPBufs = 2

// get returns a free mapping of at least size bytes, or maps a new one;
// past the bound a heap buffer serves.
func (p *udpBufs) get(size int) *udpBuf {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, u := range p.free {
		if len(u.b) >= size {
			p.free = append(p.free[:i], p.free[i+1:]...)
			return u
		}
	}
	if p.made >= maxUDPBufs {
		page := unix.Getpagesize()
		return &udpBuf{b: make([]byte, (size+page-1)/page*page), page: page}
	}
	p.made++
	return newUDPBuf(size)
}

// put gives a reader's mapping back once the reader has ended; all its
// pages are released.
func (p *udpBufs) put(u *udpBuf) {
	if !u.mapped {
		return
	}
	unix.Madvise(u.b, unix.MADV_DONTNEED)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free = append(p.free, u)
}
