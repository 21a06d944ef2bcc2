package ops

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

// AddN and AddNTo work a block at a time, four operands at once: check
// lengths around the block size, every number of operands up to three
// groups and a remainder, and dst being each of the operands in turn.
func TestAddNBlocks(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 511, SumBlock - 1, SumBlock, SumBlock + 1, 2*SumBlock + 3} {
		for ops := range 11 {
			xs := make([][]uint64, ops)
			want := make([]uint64, n)
			for k := range xs {
				xs[k] = make([]uint64, n)
				for i := range xs[k] {
					xs[k][i] = r.Uint64()
					want[i] += xs[k][i]
				}
			}
			dst := make([]uint64, n)
			for i := range dst {
				dst[i] = r.Uint64()
			}
			base := append([]uint64(nil), dst...)
			AddNTo(dst, xs...)
			for i := range dst {
				require.Equal(t, base[i]+want[i], dst[i], "AddNTo, %d operands of %d elements, element %d", ops, n, i)
			}
			AddN(dst, xs...)
			assert.Equal(t, want, dst, "AddN, %d operands of %d elements", ops, n)
			for j := range xs {
				args := make([][]uint64, ops)
				for k := range xs {
					args[k] = make([]uint64, n)
					copy(args[k], xs[k])
				}
				orig := append([][]uint64(nil), args...)
				AddN(args[j], args...)
				assert.Equal(t, want, args[j], "%d operands of %d elements, dst is operand %d", ops, n, j)
				assert.Equal(t, orig, args, "the caller's operand list is left alone")
			}
		}
	}
	x := make([]uint64, 8)
	assert.PanicsWithValue(t, "ops: AddNTo: dst overlaps an operand", func() { AddNTo(x[:4], x[2:6]) })
	assert.PanicsWithValue(t, "ops: AddNTo: length mismatch: dst has 4 elements, operand has 5", func() { AddNTo(x[:4], x[:5]) })
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
