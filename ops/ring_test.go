package ops

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestKernels(t *testing.T) {
	a := []uint64{1, math.MaxUint64, 5, 1 << 63}
	b := []uint64{2, 3, math.MaxUint64, 1 << 63}
	dst := make([]uint64, len(a))

	Add(dst, a, b)
	assert.Equal(t, []uint64{3, 2, 4, 0}, dst, "Add wraps mod 2^64")
	Sub(dst, a, b)
	assert.Equal(t, []uint64{math.MaxUint64, math.MaxUint64 - 3, 6, 0}, dst)
	Neg(dst, a)
	assert.Equal(t, []uint64{math.MaxUint64, 1, math.MaxUint64 - 4, 1 << 63}, dst)
	Scale(dst, a, 3)
	assert.Equal(t, []uint64{3, math.MaxUint64 - 2, 15, 1 << 63}, dst)
	AddConst(dst, a, 1)
	assert.Equal(t, []uint64{2, 0, 6, 1<<63 + 1}, dst)
	AddN(dst, a, b, a)
	assert.Equal(t, []uint64{4, 1, 9, 1 << 63}, dst)
	AddN(dst)
	assert.Equal(t, []uint64{0, 0, 0, 0}, dst, "AddN of nothing is zero")

	neg := uint64(math.MaxUint64 - 15) // -16
	ShiftRightArith(dst[:1], []uint64{neg}, 2)
	assert.Equal(t, uint64(math.MaxUint64-3), dst[0], "-16 >> 2 is -4")
	ShiftRightLogical(dst[:1], []uint64{neg}, 60)
	assert.Equal(t, uint64(15), dst[0])
}

func TestKernelsAlias(t *testing.T) {
	a := []uint64{1, 2, 3}
	Add(a, a, a)
	assert.Equal(t, []uint64{2, 4, 6}, a)
	AddTo(a, a)
	assert.Equal(t, []uint64{4, 8, 12}, a)
}

// AddN works a block at a time: check lengths around the block size, and
// dst aliasing an operand other than the first.
func TestAddNBlocks(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 511, 512, 513, 1500} {
		a, b, c := make([]uint64, n), make([]uint64, n), make([]uint64, n)
		for i := range a {
			a[i], b[i], c[i] = r.Uint64(), r.Uint64(), r.Uint64()
		}
		want := make([]uint64, n)
		for i := range want {
			want[i] = a[i] + b[i] + c[i]
		}
		dst := make([]uint64, n)
		AddN(dst, a, b, c)
		assert.Equal(t, want, dst, "%d elements", n)
		AddN(c, a, b, c)
		assert.Equal(t, want, c, "%d elements, dst is the last operand", n)
	}
}

func TestLengthMismatchPanics(t *testing.T) {
	assert.PanicsWithValue(t, "ops: Add: length mismatch: dst has 2 elements, operand has 3", func() {
		Add(make([]uint64, 2), make([]uint64, 3), make([]uint64, 2))
	})
}

func BenchmarkAddN(b *testing.B) {
	const n = 407050
	r := rand.New(rand.NewPCG(1, 2))
	xs := make([][]uint64, 3)
	for k := range xs {
		xs[k] = make([]uint64, n)
		for i := range xs[k] {
			xs[k][i] = r.Uint64()
		}
	}
	dst := make([]uint64, n)
	b.SetBytes(8 * n * int64(len(xs)))
	b.ReportAllocs()
	for b.Loop() {
		AddN(dst, xs...)
	}
}

func BenchmarkAdd(b *testing.B) {
	const n = 407050 // the example model's parameter count
	r := rand.New(rand.NewPCG(1, 2))
	x, y, dst := make([]uint64, n), make([]uint64, n), make([]uint64, n)
	for i := range x {
		x[i], y[i] = r.Uint64(), r.Uint64()
	}
	b.SetBytes(8 * n)
	b.ReportAllocs()
	for b.Loop() {
		Add(dst, x, y)
	}
}
