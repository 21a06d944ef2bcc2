package pond

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/internal/par"
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
// however it is read, it is the one AES-CTR stream.
func TestMaskStreamChunking(t *testing.T) {
	seed := Seed{1, 2, 3}
	d := Domain{Session: "chunks", Iteration: 2, Tensor: 5, Purpose: PurposeInput}
	// The last length is split across cores (see par.For).
	for _, n := range []int{0, 1, 3, maskChunk - 1, maskChunk, maskChunk + 1, 3*maskChunk + 5, 2*par.Min + 3} {
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
	}
}

// EncodeAndShare works chunk by chunk, and on large tensors on several
// cores; a bad element past the first chunk is still named by its index in
// the whole tensor, the first of several is the one named, and the
// half-written share is cleared.
func TestEncodeAndShareAcrossChunks(t *testing.T) {
	p := newProtocol(t, Config{})
	n := 2*par.Min + 7
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
}
