package pond

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withoutVAES runs f with v2 streams drawn by crypto/aes.
func withoutVAES(f func()) {
	old := useVAES
	useVAES = false
	defer func() { useVAES = old }()
	f()
}

// ctrWords is AES-128-CTR from the counter block ctr as crypto/aes computes
// it, as little-endian words, after skip words.
func ctrWords(t testing.TB, key [16]byte, ctr [16]byte, skip, n int) []uint64 {
	block, err := aes.NewCipher(key[:])
	require.NoError(t, err)
	b := make([]byte, 8*(skip+n))
	cipher.NewCTR(block, ctr[:]).XORKeyStream(b, b)
	w := make([]uint64, n)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(b[8*(skip+i):])
	}
	return w
}

// checkVAES reads a vaesStream of key from ctr in pieces of the given
// sizes, alternately set and added onto known words, and compares every
// word with crypto/aes.
func checkVAES(t testing.TB, key [16]byte, ctr [16]byte, pieces []int) {
	total := 0
	for _, p := range pieces {
		total += p
	}
	want := ctrWords(t, key, ctr, 0, total)
	s := newVAESStream(&key, ctr)
	off := 0
	for i, p := range pieces {
		got := make([]uint64, p)
		add := i%2 == 1
		for j := range got {
			got[j] = uint64(j) * 0x9e3779b97f4a7c15
		}
		s.words(got, add)
		for j := range got {
			w := want[off+j]
			if add {
				w += uint64(j) * 0x9e3779b97f4a7c15
			}
			if got[j] != w {
				t.Fatalf("key %x, counter %x, pieces %v: piece %d (add %v) word %d is %#x, want %#x", key, ctr, pieces, i, add, j, got[j], w)
			}
		}
		off += p
	}
}

// The vector kernel gives crypto/aes's AES-128-CTR words: in sixteens,
// fours and the masked tail of one to three blocks, read in pieces of odd
// and even lengths, set and added, and across the wrap of the counter's
// low half, where the carry goes into the high half.
func TestVAESMatchesCryptoAES(t *testing.T) {
	if !hasVAES {
		t.Skip("no AVX-512 vector AES on this processor: mask streams use crypto/aes")
	}
	key := [16]byte{0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c}
	var ctr [16]byte
	for i := range ctr {
		ctr[i] = byte(0xf0 + i)
	}
	for n := range 80 {
		checkVAES(t, key, ctr, []int{n})
	}
	checkVAES(t, key, ctr, []int{1, 1, 3, 2, 5, 33, 32, 31, 64, 7, 1000, 2048, 1})

	// Counters whose low half wraps within a call, at every position of
	// the sixteen-block loop and of the tail.
	for before := range 40 {
		binary.BigEndian.PutUint64(ctr[8:], math.MaxUint64-uint64(before))
		checkVAES(t, key, ctr, []int{2 * 40})
		checkVAES(t, key, ctr, []int{1, 2*before + 1, 6})
	}
	binary.BigEndian.PutUint64(ctr[:8], math.MaxUint64)
	binary.BigEndian.PutUint64(ctr[8:], math.MaxUint64-3)
	checkVAES(t, key, ctr, []int{40}) // the whole counter wraps to zero, as crypto/aes wraps it
}

// FIPS 197, appendix C.1: the kernel's key schedule and rounds encrypt
// the standard's plaintext to its ciphertext. Counter mode encrypts the
// counter block, so the plaintext is the counter.
func TestVAESKnownAnswer(t *testing.T) {
	if !hasVAES {
		t.Skip("no AVX-512 vector AES on this processor")
	}
	var key, pt [16]byte
	for i := range key {
		key[i] = byte(i)
		pt[i] = byte(i<<4 | i)
	}
	got := make([]uint64, 2)
	newVAESStream(&key, pt).words(got, false)
	var ct [16]byte
	binary.LittleEndian.PutUint64(ct[:8], got[0])
	binary.LittleEndian.PutUint64(ct[8:], got[1])
	assert.Equal(t, [16]byte{0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5, 0x5a}, ct)
}

// Mask streams, sums and input sharing give the same words with the
// vector kernel as with crypto/aes.
func TestVAESStreamsAsCryptoAES(t *testing.T) {
	if !hasVAES {
		t.Skip("no AVX-512 vector AES on this processor")
	}
	d := Domain{Session: "vaes", Iteration: 1, Tensor: 2, Purpose: PurposeInput, PRG: MaskAES128}
	n := 3*4096 + 77
	fast, slow := make([]uint64, n), make([]uint64, n)
	Expand(fast, Seed{9}, d)
	withoutVAES(func() { Expand(slow, Seed{9}, d) })
	require.Equal(t, slow, fast)

	shares, seeded := sumCase(rand.New(rand.NewPCG(7, 8)), n, 3, 5, MaskAES128, Ring64)
	fastSum, slowSum := make(Share, n), make(Share, n)
	SumShares(fastSum, shares, seeded)
	withoutVAES(func() { SumShares(slowSum, shares, seeded) })
	require.Equal(t, slowSum, fastSum)

	// Streams from the kernel and from crypto/aes in one sum: the latter
	// are paired around the former.
	for i := range seeded {
		if i%3 != 1 {
			seeded[i].Domain.PRG = MaskAES256
		}
	}
	SumShares(fastSum, shares, seeded)
	require.Equal(t, plainSum(t, n, shares, seeded), fastSum)
}

func FuzzVAES(f *testing.F) {
	f.Add(make([]byte, 16), make([]byte, 16), uint16(33), uint16(7))
	f.Add([]byte("0123456789abcdef"), []byte{15: 0xff, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xfe}, uint16(9), uint16(100))
	f.Fuzz(func(t *testing.T, k, c []byte, a, b uint16) {
		if !hasVAES {
			t.Skip("no AVX-512 vector AES on this processor")
		}
		if len(k) != 16 || len(c) != 16 {
			return
		}
		checkVAES(t, [16]byte(k), [16]byte(c), []int{int(a % 600), int(b % 600), 3})
	})
}
