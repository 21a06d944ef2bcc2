package pond

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

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
// key.
type Domain struct {
	Session   string
	Iteration uint64
	Tensor    uint64
	Purpose   Purpose
	// Member names the member of a cohort whose input the stream masks,
	// so that no two members of a round share a stream; "" for the inputs
	// of fixed owners and every other stream, whose keys are as they were
	// before members existed.
	Member string
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

// streamKey derives the AES-256 key of a mask stream: SHA-256 over a
// version label, the seed and the length-prefixed domain. A domain with a
// member has a label of its own and the length-prefixed member after the
// session, so that no domain with a member hashes as one without.
func streamKey(seed Seed, d Domain) [32]byte {
	h := sha256.New()
	if d.Member == "" {
		h.Write([]byte("shareflow/pond/mask/v1\x00"))
	} else {
		h.Write([]byte("shareflow/pond/member-mask/v1\x00"))
	}
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
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// maskChunk is how many words of a mask stream are produced at a time:
// 16 KiB, small enough to stay in the L1 cache while the words are used.
const maskChunk = 2048

// zeros is the plaintext a mask stream encrypts: in counter mode the
// keystream is the encryption of zeros.
var zeros [8 * maskChunk]byte

// maskStream is the keystream of one seed and domain, read in order.
type maskStream struct{ s cipher.Stream }

func newMaskStream(seed Seed, d Domain) maskStream { return newMaskStreamAt(seed, d, 0) }

// newMaskStreamAt returns the stream from word off on, which must be even:
// two words per AES block, and the counter starts at zero.
func newMaskStreamAt(seed Seed, d Domain, off int) maskStream {
	if off%2 != 0 || off < 0 {
		panic(fmt.Sprintf("pond: mask stream at word %d, want an even offset", off))
	}
	key := streamKey(seed, d)
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic("pond: aes.NewCipher with a 32-byte key: " + err.Error())
	}
	var iv [aes.BlockSize]byte
	binary.BigEndian.PutUint64(iv[8:], uint64(off/2))
	return maskStream{cipher.NewCTR(block, iv[:])}
}

// read sets dst to the next len(dst) words of the stream, little-endian.
func (m maskStream) read(dst []uint64) {
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

// Expand fills dst with the mask stream of seed in domain d: AES-256 in
// counter mode under a key derived from both, read as little-endian
// uint64s. The same seed and domain always give the same stream.
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
	m := newMaskStreamAt(seed, d, off)
	chunk := make([]uint64, min(len(dst), maskChunk)) // used while in the L1 cache
	for len(dst) > 0 {
		c := chunk[:min(len(dst), len(chunk))]
		m.read(c)
		ops.AddTo(dst[:len(c)], c)
		dst = dst[len(c):]
	}
}
