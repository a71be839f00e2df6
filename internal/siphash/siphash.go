// Package siphash is SipHash-2-4 (Aumasson and Bernstein, "SipHash: a
// fast short-input PRF", 2012): a keyed function of a message to a 64-bit
// tag, meant for short inputs, written from the paper's specification.
//
// The SIP proxy keys it with a secret drawn at start to sign the branches
// it creates (a response whose branch does not verify was never caused by
// this proxy). It replaces HMAC-SHA256 there: for a 64-bit tag over some
// hundred bytes it is what the paper designed SipHash for, and it keeps
// crypto/* (about 85 KB of the router's binary) out of the build.
package siphash

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"golang.org/x/sys/unix"
)

// Key is the 128-bit key, k0 then k1 as the paper's byte order (little
// endian) reads them.
type Key [16]byte

// Sum64 is SipHash-2-4 of msg under key: two compression rounds per
// 8-byte word, four finalization rounds.
func Sum64(key *Key, msg []byte) uint64 {
	k0 := binary.LittleEndian.Uint64(key[:8])
	k1 := binary.LittleEndian.Uint64(key[8:])
	// Initialization: the key XORed into "somepseudorandomlygeneratedbytes".
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	// Compression: each little-endian word m (the last holds the
	// remaining bytes and the length mod 256 in its top byte) is XORed
	// into v3, two SipRounds, XORed into v0. The rounds are written out,
	// not called: the router build compiles this package without
	// inlining (scripts/router-build.sh), and there a round as a closure made
	// Sum64 about three times slower (BenchmarkSum64, 200 bytes).
	n := len(msg)
	for done := false; !done; {
		var m uint64
		if len(msg) >= 8 {
			m = binary.LittleEndian.Uint64(msg)
			msg = msg[8:]
		} else {
			m = uint64(n) << 56
			for i, c := range msg {
				m |= uint64(c) << (8 * i)
			}
			done = true
		}
		v3 ^= m
		for r := 0; r < 2; r++ {
			v0 += v1
			v1 = bits.RotateLeft64(v1, 13)
			v1 ^= v0
			v0 = bits.RotateLeft64(v0, 32)
			v2 += v3
			v3 = bits.RotateLeft64(v3, 16)
			v3 ^= v2
			v0 += v3
			v3 = bits.RotateLeft64(v3, 21)
			v3 ^= v0
			v2 += v1
			v1 = bits.RotateLeft64(v1, 17)
			v1 ^= v2
			v2 = bits.RotateLeft64(v2, 32)
		}
		v0 ^= m
	}
	// Finalization: 0xff into v2, four SipRounds.
	v2 ^= 0xff
	for r := 0; r < 4; r++ {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	return v0 ^ v1 ^ v2 ^ v3
}

// RandomKey is a new key from the kernel's random source (getrandom(2),
// which waits at early boot until the kernel's generator is seeded), for
// a secret that lives as long as the process. It fails only where the
// kernel cannot give random bytes at all.
func RandomKey() (Key, error) {
	var k Key
	for n := 0; n < len(k); {
		m, err := unix.Getrandom(k[n:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return Key{}, fmt.Errorf("siphash: random key: getrandom: %w", err)
		}
		n += m
	}
	return k, nil
}
