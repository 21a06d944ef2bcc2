package ops

import (
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func randomWords(r *rand.Rand, n int) []uint64 {
	w := make([]uint64, n)
	for i := range w {
		w[i] = r.Uint64()
	}
	return w
}

// naiveMatMul is the product by its definition, the reference for the
// tiled kernel.
func naiveMatMul(a, b []uint64, m, k, n int) []uint64 {
	c := make([]uint64, m*n)
	for i := range m {
		for j := range n {
			var s uint64
			for l := range k {
				s += a[i*k+l] * b[l*n+j]
			}
			c[i*n+j] = s
		}
	}
	return c
}

// The tiled kernel equals the definition on shapes that fall on, just
// short of and just past the tile edges and the four-row unrolling, and on
// degenerate ones.
func TestMatMulMatchesDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	shapes := [][3]int{
		{1, 1, 1}, {0, 3, 2}, {2, 0, 3}, {3, 2, 0}, {1, 5, 1}, {5, 1, 5}, {3, 4, 5},
		{2, mmTileK - 1, mmTileN + 1}, {3, mmTileK, mmTileN}, {2, mmTileK + 3, 2*mmTileN + 7},
		{7, 2*mmTileK + 2, 9}, {1, 300, 1},
	}
	for _, s := range shapes {
		m, k, n := s[0], s[1], s[2]
		a, b := randomWords(r, m*k), randomWords(r, k*n)
		want := naiveMatMul(a, b, m, k, n)

		dst := randomWords(r, m*n) // stale contents are overwritten
		MatMul(dst, a, b, m, k, n)
		require.Equal(t, want, dst, "MatMul %d×%d · %d×%d", m, k, k, n)

		base := randomWords(r, m*n)
		acc := append([]uint64(nil), base...)
		MatMulAdd(acc, a, b, m, k, n)
		for i := range acc {
			require.Equal(t, base[i]+want[i], acc[i], "MatMulAdd %v element %d", s, i)
		}
	}
}

func TestMatMulRefusesBadShapes(t *testing.T) {
	a, b, dst := make([]uint64, 6), make([]uint64, 12), make([]uint64, 8)
	assert.NotPanics(t, func() { MatMul(dst, a, b, 2, 3, 4) })
	assert.PanicsWithValue(t, "ops: MatMul: a has 6 elements, want 4×2", func() { MatMul(dst, a, b, 4, 2, 4) })
	assert.PanicsWithValue(t, "ops: MatMul: b has 12 elements, want 3×5", func() { MatMul(dst[:2], a, b, 2, 3, 5) })
	assert.PanicsWithValue(t, "ops: MatMulAdd: dst has 7 elements, want 2×4", func() { MatMulAdd(dst[:7], a, b, 2, 3, 4) })
	assert.Panics(t, func() { MatMul(dst, a, b, -2, -3, 4) })
	// 2^32 · 2^32 wraps to 0 in 64 bits; it must not pass for empty slices.
	const half = 1 << (bits.UintSize / 2)
	assert.Panics(t, func() { MatMul(nil, nil, nil, half, half, 0) })

	big := make([]uint64, 16)
	assert.PanicsWithValue(t, "ops: MatMul: dst overlaps an operand", func() { MatMul(big[:4], big[2:6], b[:4], 2, 2, 2) })
	assert.PanicsWithValue(t, "ops: MatMul: dst overlaps an operand", func() { MatMul(big[8:12], a[:4], big[11:15], 2, 2, 2) })
	assert.NotPanics(t, func() { MatMul(big[:4], big[4:8], big[8:12], 2, 2, 2) }, "adjacent is not overlapping")
}

func TestMulAndReduceSum(t *testing.T) {
	a := []uint64{1, 2, 3, 1 << 63, 5, ^uint64(0)} // 2×3
	b := []uint64{7, 11, 13, 2, 1, 3}
	dst := make([]uint64, 6)
	Mul(dst, a, b)
	assert.Equal(t, []uint64{7, 22, 39, 0, 5, ^uint64(2)}, dst, "Mul wraps mod 2^64")

	cols := make([]uint64, 3)
	ReduceSum(cols, a, 2, 3, 0)
	assert.Equal(t, []uint64{1 + 1<<63, 7, 2}, cols)
	rows := make([]uint64, 2)
	ReduceSum(rows, a, 2, 3, 1)
	assert.Equal(t, []uint64{6, 1<<63 + 4}, rows)
	all := make([]uint64, 1)
	ReduceSum(all, a, 1, 6, 1)
	assert.Equal(t, []uint64{1<<63 + 10}, all)

	assert.Panics(t, func() { ReduceSum(rows, a, 3, 3, 1) })
	assert.Panics(t, func() { ReduceSum(rows, a, 2, 3, 0) })
	assert.Panics(t, func() { ReduceSum(rows, a, 2, 3, 2) })
	assert.Panics(t, func() { ReduceSum(a[:2], a, 2, 3, 1) })
}

// BenchmarkMatMul multiplies a batch of 100 MNIST images by the first
// layer's weights, 100×784 · 784×512, in the ring and in float64 with the
// same loops.
func BenchmarkMatMul(b *testing.B) {
	const m, k, n = 100, 784, 512
	r := rand.New(rand.NewPCG(5, 6))
	b.Run("ring", func(b *testing.B) {
		x, y, z := randomWords(r, m*k), randomWords(r, k*n), make([]uint64, m*n)
		b.ReportAllocs()
		for b.Loop() {
			MatMul(z, x, y, m, k, n)
		}
	})
	b.Run("float64", func(b *testing.B) {
		x, y, z := make([]float64, m*k), make([]float64, k*n), make([]float64, m*n)
		for i := range x {
			x[i] = r.Float64()
		}
		for i := range y {
			y[i] = r.NormFloat64()
		}
		b.ReportAllocs()
		for b.Loop() {
			clear(z)
			matMulAdd(z, x, y, m, k, n)
		}
	})
}
