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

func TestLengthMismatchPanics(t *testing.T) {
	assert.PanicsWithValue(t, "ops: Add: length mismatch: dst has 2 elements, operand has 3", func() {
		Add(make([]uint64, 2), make([]uint64, 3), make([]uint64, 2))
	})
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
