package pond

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// referenceStream is the mask stream as specified, computed the plain way:
// AES-256-CTR with a zero IV under streamKey, over zeros, as little-endian
// words.
func referenceStream(t *testing.T, n int, seed Seed, d Domain) []uint64 {
	key := streamKey(seed, d)
	block, err := aes.NewCipher(key[:])
	require.NoError(t, err)
	b := make([]byte, 8*n)
	cipher.NewCTR(block, make([]byte, aes.BlockSize)).XORKeyStream(b, b)
	w := make([]uint64, n)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return w
}

// The mask stream is produced a chunk at a time; whatever the length and
// however it is read or split into ranges, it is the one AES-CTR stream.
func TestMaskStreamChunking(t *testing.T) {
	seed := Seed{1, 2, 3}
	d := Domain{Session: "chunks", Iteration: 2, Tensor: 5, Purpose: PurposeInput}
	for _, n := range []int{0, 1, 3, maskChunk - 1, maskChunk, maskChunk + 1, 3*maskChunk + 5} {
		want := referenceStream(t, n, seed, d)

		got := make([]uint64, n)
		Expand(got, seed, d)
		assert.Equal(t, want, got, "Expand, %d words", n)

		// read in uneven pieces
		m := newMaskStream(seed, d)
		pieces := make([]uint64, n)
		for off, step := 0, 1; off < n; off, step = off+step, step*3+1 {
			m.read(pieces[off:min(off+step, n)])
		}
		assert.Equal(t, want, pieces, "read in pieces, %d words", n)

		base := make([]uint64, n)
		for i := range base {
			base[i] = math.MaxUint64 - uint64(i)
		}
		sum := append([]uint64(nil), base...)
		AddExpand(sum, seed, d)
		for i := range sum {
			require.Equal(t, base[i]+want[i], sum[i], "AddExpand, word %d of %d", i, n)
		}

		// in ranges at even offsets, as a caller splitting across cores does
		ranged := make([]uint64, n)
		rangedSum := append([]uint64(nil), base...)
		for _, r := range evenRanges(n) {
			ExpandAt(ranged[r[0]:r[1]], seed, d, r[0])
			AddExpandAt(rangedSum[r[0]:r[1]], seed, d, r[0])
		}
		assert.Equal(t, want, ranged, "ExpandAt in ranges, %d words", n)
		assert.Equal(t, sum, rangedSum, "AddExpandAt in ranges, %d words", n)
	}
	assert.Panics(t, func() { ExpandAt(make([]uint64, 2), seed, d, 3) }, "an odd offset is not on a block")
}

// evenRanges splits [0, n) into uneven ranges that start at even offsets.
func evenRanges(n int) [][2]int {
	var out [][2]int
	for lo, size := 0, 2; lo < n; lo, size = lo+size, size*5 {
		out = append(out, [2]int{lo, min(lo+size, n)})
	}
	return out
}

// EncodeAndShare works chunk by chunk; split into ranges with one seed,
// EncodeAndMaskAt computes the same share, a bad element past the first
// chunk or range is named by its index in the whole tensor, and a failed
// EncodeAndShare clears the half-written share.
func TestEncodeAndShareAcrossChunks(t *testing.T) {
	p := newProtocol(t, Config{})
	n := 5*maskChunk + 7
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(i%97) - 48.25
	}
	d := Domain{Session: "s", Tensor: 1}
	masked := make(Share, n)
	seed, err := p.EncodeAndShare(newTestRand(3), d, masked, x)
	require.NoError(t, err)

	sum := append(Share(nil), masked...)
	AddSeedShare(sum, seed, d)
	got := make([]float64, n)
	p.Decode(got, sum)
	assert.Equal(t, x, got, "masked + seed share decodes to x (all values exact in 16 fractional bits)")

	ranged := make(Share, n)
	for _, r := range evenRanges(n) {
		require.NoError(t, p.EncodeAndMaskAt(ranged[r[0]:r[1]], x[r[0]:r[1]], seed, d, r[0]))
	}
	assert.Equal(t, masked, ranged, "ranges with one seed make one share")

	x[n-2] = math.NaN()
	x[maskChunk+3] = math.Inf(-1)
	_, err = p.EncodeAndShare(newTestRand(4), d, masked, x)
	var re *RangeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, maskChunk+3, re.Index)
	assert.Equal(t, make(Share, n), masked, "no part of the mask is left behind")

	x[maskChunk+3] = 0
	_, err = p.EncodeAndShare(newTestRand(5), d, masked, x)
	require.ErrorAs(t, err, &re)
	assert.Equal(t, n-2, re.Index)

	lo := (n - 10) &^ 1 // an even offset
	require.ErrorAs(t, p.EncodeAndMaskAt(masked[lo:], x[lo:], seed, d, lo), &re)
	assert.Equal(t, n-2, re.Index, "an index in the whole tensor, not in the range")
}

// TestStreamKeyKnownAnswers pins the keys of mask streams: a domain
// without a member keys its stream exactly as before members existed (the
// value was computed before), and the member enters the key of the others.
func TestStreamKeyKnownAnswers(t *testing.T) {
	seed := Seed{9, 8, 7}
	d := Domain{Session: "s", Iteration: 3, Tensor: 7<<32 | 1, Purpose: PurposeInput}
	k := streamKey(seed, d)
	assert.Equal(t, "ebd8ff903e77936eab9299d6e2a132876470321e4b4ecc88e171d57f883e41a8", hex.EncodeToString(k[:]))
	w := make([]uint64, 2)
	Expand(w, seed, d)
	assert.Equal(t, []uint64{0x6088ee54d59d4e93, 0x3e998ee09947ce1e}, w)

	seen := map[[32]byte]string{k: "no member"}
	for _, m := range []string{"data-owner-1", "data-owner-2", "s"} {
		dm := d
		dm.Member = m
		km := streamKey(seed, dm)
		_, dup := seen[km]
		assert.False(t, dup, "member %q keys a stream of its own", m)
		seen[km] = m
	}
	// The member is length-prefixed: moving bytes between the session and
	// the member gives another key.
	a := streamKey(seed, Domain{Session: "ab", Member: "c"})
	b := streamKey(seed, Domain{Session: "a", Member: "bc"})
	assert.NotEqual(t, a, b)
}
