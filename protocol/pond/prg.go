package pond

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"

	"github.com/shareflow/shareflow/internal/le"
	"github.com/shareflow/shareflow/ops"
)

// SeedSize is the size of a seed in bytes.
const SeedSize = 32

// Seed is the key of a mask stream. Seeds are drawn fresh for every mask
// from a cryptographic source and are secret.
type Seed [SeedSize]byte

// Purpose separates the mask streams drawn for different steps.
type Purpose uint8

// The purposes of mask streams.
const (
	PurposeInput      Purpose = 1 // masks of private inputs
	PurposeTruncation Purpose = 2 // the mask server0 adds before truncation
	PurposeRerandom   Purpose = 3 // fresh shares after truncation
)

// Domain binds a mask stream to its place in a run, so that no stream is
// reused even when a seed were: session, iteration, tensor, purpose and,
// for the inputs of a cohort's members, the member all enter the stream's
// key. PRG selects how the stream is derived; the zero value means
// DefaultMaskPRG. A session builds its domains with Protocol.Domain, which
// sets PRG to the configuration's.
type Domain struct {
	Session   string
	Iteration uint64
	Tensor    uint64
	Purpose   Purpose
	PRG       MaskPRG
	// Ring is the ring of the elements the stream masks: Ring64 (or zero)
	// takes 8 bytes of keystream an element, Ring32 takes 4, under keys
	// of its own (the labels end in "/z32"). Protocol.Domain sets it.
	Ring int
	// Member names the member of a cohort whose input the stream masks,
	// so that no two members of a round share a stream. "" for the inputs
	// of fixed owners and every other stream, whose keys are as they were
	// before members existed; a domain with a member is keyed under labels
	// of its own ("shareflow/pond/member-mask/v1\x00", .../v2), with the
	// length-prefixed member after the session.
	Member string
}

// MaskPRG is a version of the mask derivation: how a seed and a domain
// become a mask stream. Both servers and every input owner must use the
// same one, so it is part of Config and so of a plan's fingerprint.
type MaskPRG uint8

// The mask derivations. README.md says why each is safe.
const (
	// MaskAES256 (v1) is AES-256 in counter mode from a zero counter,
	// keyed by SHA-256("shareflow/pond/mask/v1\x00" ‖ seed ‖ domain).
	MaskAES256 MaskPRG = 1
	// MaskAES128 (v2) is AES-128 in counter mode. SHA-256 over
	// "shareflow/pond/mask/v2\x00" ‖ seed ‖ domain gives 32 bytes: the
	// first 16 are the key, the last 16 the initial counter block
	// (big-endian, incremented by one per block mod 2^128). Its keystream
	// costs 10 AES rounds a block instead of 14.
	MaskAES128 MaskPRG = 2
	// DefaultMaskPRG is the derivation a zero Config or Domain means.
	DefaultMaskPRG = MaskAES128
)

// String names the derivation.
func (m MaskPRG) String() string {
	switch m {
	case MaskAES256:
		return "aes256-ctr/v1"
	case MaskAES128:
		return "aes128-ctr/v2"
	}
	return fmt.Sprintf("MaskPRG(%d)", uint8(m))
}

// resolve returns the derivation m stands for: the default for zero.
func (m MaskPRG) resolve() MaskPRG {
	if m == 0 {
		return DefaultMaskPRG
	}
	return m
}

// NewSeed reads a fresh seed from rng, which must be cryptographic
// (crypto/rand.Reader) outside tests.
func NewSeed(rng io.Reader) (Seed, error) {
	var s Seed
	if _, err := io.ReadFull(rng, s[:]); err != nil {
		return s, fmt.Errorf("pond: drawing a seed: %w", err)
	}
	return s, nil
}

// streamKey hashes a version label, the seed and the length-prefixed
// domain with SHA-256: the key material of a mask stream.
func streamKey(label string, seed Seed, d Domain) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(seed[:])
	var b [8 + 8 + 8 + 1]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(len(d.Session)))
	binary.LittleEndian.PutUint64(b[8:], d.Iteration)
	binary.LittleEndian.PutUint64(b[16:], d.Tensor)
	b[24] = byte(d.Purpose)
	h.Write(b[:])
	h.Write([]byte(d.Session))
	if d.Member != "" {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(d.Member)))
		h.Write(n[:])
		h.Write([]byte(d.Member))
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// maskLabel is the label a derivation of the given version hashes first:
// one of its own for a member's domain, and for Z_2^32's 4-byte elements.
func maskLabel(version string, d Domain) string {
	l := "shareflow/pond/mask/" + version
	if d.Member != "" {
		l = "shareflow/pond/member-mask/" + version
	}
	if d.word32() {
		l += "/z32"
	}
	return l + "\x00"
}

// word32 reports whether the domain's streams are read as 4-byte
// elements (Z_2^32).
func (d Domain) word32() bool { return d.Ring == Ring32 }

// perBlock returns how many elements of the domain's streams an AES block
// holds.
func (d Domain) perBlock() int {
	if d.word32() {
		return 4
	}
	return 2
}

// newMaskStreamAt returns the mask stream of seed in domain d from element
// off on, which must start an AES block: even in Z_2^64 (two 8-byte
// elements a block), a multiple of 4 in Z_2^32 (four 4-byte elements).
// The domain's PRG derives the key and the first counter block; the
// counter, a big-endian 128-bit integer, starts that many blocks further,
// with the carry, as counter mode increments it. An unknown PRG is a bug:
// Config refuses it.
func newMaskStreamAt(seed Seed, d Domain, off int) maskStream {
	per := d.perBlock()
	if off%per != 0 || off < 0 {
		panic(fmt.Sprintf("pond: mask stream at element %d, want a multiple of %d (an AES block's elements)", off, per))
	}
	var key []byte
	var ctr [aes.BlockSize]byte
	switch d.PRG.resolve() {
	case MaskAES256:
		k := streamKey(maskLabel("v1", d), seed, d)
		key = k[:]
	case MaskAES128:
		k := streamKey(maskLabel("v2", d), seed, d)
		key = k[:16]
		copy(ctr[:], k[16:])
	default:
		panic(fmt.Sprintf("pond: mask stream with unknown %v", d.PRG))
	}
	lo, carry := bits.Add64(binary.BigEndian.Uint64(ctr[8:]), uint64(off/per), 0)
	binary.BigEndian.PutUint64(ctr[8:], lo)
	binary.BigEndian.PutUint64(ctr[:8], binary.BigEndian.Uint64(ctr[:8])+carry)
	if len(key) == 16 && useVAES {
		return maskStream{fast: newVAESStream((*[16]byte)(key), ctr), word32: d.word32()}
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("pond: aes.NewCipher with a derived key: " + err.Error())
	}
	return maskStream{s: cipher.NewCTR(block, ctr[:]), word32: d.word32()}
}

// maskStream is the keystream of one seed and domain, read in order:
// crypto/aes in counter mode, or for v2 where the processor has vector
// AES the vaesCTR kernel, which gives the same words. Its elements are
// the keystream's little-endian 8-byte words, or in Z_2^32 (word32) its
// 4-byte words, zero-extended where they are read into 8-byte words.
// Copies share their position.
type maskStream struct {
	s      cipher.Stream
	fast   *vaesStream
	word32 bool
}

// keystream sets dst to the next len(dst) bytes of the keystream: in
// Z_2^32, the wire form (PutWords) of the next len(dst)/4 elements.
func (m maskStream) keystream(dst []byte) {
	if m.fast != nil {
		m.fast.bytes(dst)
		return
	}
	for len(dst) > 0 {
		n := min(len(dst), len(zeros))
		m.s.XORKeyStream(dst[:n], zeros[:n])
		dst = dst[n:]
	}
}

func newMaskStream(seed Seed, d Domain) maskStream { return newMaskStreamAt(seed, d, 0) }

// maskChunk is how many words of a mask stream are produced at a time:
// 16 KiB, small enough to stay in the L1 cache while the words are used.
const maskChunk = 2048

// zeros is the plaintext a mask stream encrypts: in counter mode the
// keystream is the encryption of zeros.
var zeros [8 * maskChunk]byte

// widen passes the next len(dst) 4-byte elements of the stream to put
// (le.Uint32sTo64 sets dst, le.AddUint32sTo64 adds to it) a chunk at a
// time, each drawn into a buffer that stays in the L1 cache.
func (m maskStream) widen(dst []uint64, put func(dst []uint64, src []byte)) {
	var buf [4 * maskChunk]byte
	for len(dst) > 0 {
		n := min(len(dst), maskChunk)
		m.keystream(buf[:4*n])
		put(dst[:n], buf[:4*n])
		dst = dst[n:]
	}
}

// read sets dst to the next len(dst) elements of the stream.
func (m maskStream) read(dst []uint64) {
	if m.word32 {
		m.widen(dst, le.Uint32sTo64)
		return
	}
	if m.fast != nil {
		m.fast.words(dst, false)
		return
	}
	if b, ok := le.Bytes(dst); ok {
		for len(b) > 0 {
			n := min(len(b), len(zeros))
			m.s.XORKeyStream(b[:n], zeros[:n])
			b = b[n:]
		}
		return
	}
	var buf [4096]byte
	for len(dst) > 0 {
		n := min(len(dst), len(buf)/8)
		b := buf[:8*n]
		m.s.XORKeyStream(b, zeros[:len(b)])
		for i := range n {
			dst[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
		dst = dst[n:]
	}
}

// Expand fills dst with the mask stream of seed in domain d: AES in
// counter mode under a key derived from both by the domain's PRG (see
// MaskPRG), read as little-endian uint64s. The same seed and domain always
// give the same stream.
func Expand(dst []uint64, seed Seed, d Domain) { ExpandAt(dst, seed, d, 0) }

// ExpandAt fills dst with words [off, off+len(dst)) of the mask stream of
// seed in domain d. Calls on disjoint ranges together fill what one
// Expand of the whole tensor fills, so a caller may split a large tensor
// across cores. off must be even (an AES block holds two words).
func ExpandAt(dst []uint64, seed Seed, d Domain, off int) {
	newMaskStreamAt(seed, d, off).read(dst)
}

// AddExpand adds the mask stream of seed in domain d to dst, word by word
// mod 2^64: dst + Expand(seed, d) without materializing the stream, which
// is produced a cache-sized chunk at a time.
func AddExpand(dst []uint64, seed Seed, d Domain) { AddExpandAt(dst, seed, d, 0) }

// AddExpandAt adds words [off, off+len(dst)) of the mask stream of seed in
// domain d to dst, as AddExpand does for a whole tensor. off must be even.
func AddExpandAt(dst []uint64, seed Seed, d Domain, off int) {
	newMaskStreamAt(seed, d, off).addTo(dst)
}

// SubExpandAt subtracts words [off, off+len(dst)) of the mask stream of
// seed in domain d from dst, word by word mod 2^64: the inverse of
// AddExpandAt. off must be even.
func SubExpandAt(dst []uint64, seed Seed, d Domain, off int) {
	m := newMaskStreamAt(seed, d, off)
	chunk := make([]uint64, min(len(dst), maskChunk)) // used while in the L1 cache
	for len(dst) > 0 {
		c := chunk[:min(len(dst), len(chunk))]
		m.read(c)
		for i, w := range c {
			dst[i] -= w
		}
		dst = dst[len(c):]
	}
}

// addTo adds the next len(dst) words of the stream to dst: straight from
// the registers with the vector kernel, else a cache-sized chunk at a
// time.
func (m maskStream) addTo(dst []uint64) {
	if m.word32 {
		m.widen(dst, le.AddUint32sTo64)
		return
	}
	if m.fast != nil {
		m.fast.words(dst, true)
		return
	}
	chunk := make([]uint64, min(len(dst), maskChunk)) // used while in the L1 cache
	for len(dst) > 0 {
		c := chunk[:min(len(dst), len(chunk))]
		m.read(c)
		ops.AddTo(dst[:len(c)], c)
		dst = dst[len(c):]
	}
}
