package le

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMatchesEncodingBinary checks the fast path against the portable one
// on both byte orders of the fallback.
func TestMatchesEncodingBinary(t *testing.T) {
	words := []uint64{0, 1, math.MaxUint64, 0x0102030405060708}
	floats := []float64{0, -0.0, 1.5, math.Inf(-1), math.SmallestNonzeroFloat64}
	for _, fast := range []bool{true, false} {
		saved := native
		native = native && fast
		b := make([]byte, 8*len(words))
		PutUint64s(b, words)
		for i, w := range words {
			assert.Equal(t, w, binary.LittleEndian.Uint64(b[8*i:]))
		}
		got := make([]uint64, len(words))
		Uint64s(got, b)
		assert.Equal(t, words, got)

		fb := make([]byte, 8*len(floats))
		PutFloat64s(fb, floats)
		for i, f := range floats {
			assert.Equal(t, math.Float64bits(f), binary.LittleEndian.Uint64(fb[8*i:]))
		}
		gotF := make([]float64, len(floats))
		Float64s(gotF, fb)
		for i := range floats {
			assert.Equal(t, math.Float64bits(floats[i]), math.Float64bits(gotF[i]))
		}
		native = saved
	}
	PutUint64s(nil, nil)
	Uint64s(nil, nil)
	assert.Panics(t, func() { Uint64s(make([]uint64, 2), make([]byte, 15)) }, "short source")
}

func TestViews(t *testing.T) {
	words := []uint64{0x0102030405060708, 9}
	b, ok := Bytes(words)
	if !native {
		assert.False(t, ok)
		return
	}
	assert.True(t, ok)
	assert.Equal(t, byte(8), b[0], "little-endian view")
	w, ok := Words(b)
	assert.True(t, ok)
	assert.Equal(t, words, w)
	w[1] = 10
	assert.Equal(t, uint64(10), words[1], "views share memory")
	_, ok = Words(b[1:9])
	assert.False(t, ok, "unaligned")
	_, ok = Words(b[:7])
	assert.False(t, ok, "not whole words")
}

// TestWords32 checks the conversions between 64-bit words and 32-bit wire
// words, and the sums and differences of 32-bit words, with the vector
// kernels and with the portable loops, on lengths around the kernels'
// blocks of eight, on aligned and unaligned bytes, and packing in place.
func TestWords32(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, vector := range []bool{true, false} {
		saved := useAVX2
		useAVX2 = useAVX2 && vector
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 1001} {
			src := make([]uint64, n)
			for i := range src {
				src[i] = rng.Uint64()
			}
			for _, shift := range []int{0, 1, 4} { // 1: unaligned, the portable loop
				buf := make([]byte, 4*n+shift)
				b := buf[shift:]
				PutLow32s(b, src)
				for i, v := range src {
					require.Equal(t, uint32(v), binary.LittleEndian.Uint32(b[4*i:]), "PutLow32s n=%d shift=%d element %d", n, shift, i)
				}
				got := make([]uint64, n)
				Uint32sTo64(got, b)
				sum := slices.Clone(src)
				AddUint32sTo64(sum, b)
				for i, v := range src {
					require.Equal(t, uint64(uint32(v)), got[i], "Uint32sTo64 n=%d shift=%d element %d", n, shift, i)
					require.Equal(t, v+uint64(uint32(v)), sum[i], "AddUint32sTo64 n=%d shift=%d element %d", n, shift, i)
				}
			}
			for _, shift := range []int{0, 1} {
				a := make([]byte, 4*n+shift)[shift:]
				b := make([]byte, 4*n+shift)[shift:]
				for i := range a {
					a[i], b[i] = byte(rng.Uint32()), byte(rng.Uint32())
				}
				sum, diff := slices.Clone(a), slices.Clone(a)
				AddWords32(sum, b)
				SubWords32(diff, b)
				for i := 0; i < 4*n; i += 4 {
					x, y := binary.LittleEndian.Uint32(a[i:]), binary.LittleEndian.Uint32(b[i:])
					require.Equal(t, x+y, binary.LittleEndian.Uint32(sum[i:]), "AddWords32 n=%d shift=%d word %d", n, shift, i/4)
					require.Equal(t, x-y, binary.LittleEndian.Uint32(diff[i:]), "SubWords32 n=%d shift=%d word %d", n, shift, i/4)
				}
			}
			inPlace := slices.Clone(src)
			b, ok := Bytes(inPlace)
			if !ok {
				continue
			}
			PutLow32s(b, inPlace)
			for i, v := range src {
				require.Equal(t, uint32(v), binary.LittleEndian.Uint32(b[4*i:]), "in place n=%d element %d", n, i)
			}
		}
		useAVX2 = saved
	}
}
