package ops

import (
	"fmt"
	"math/bits"
	"unsafe"
)

// The tiles of MatMulAdd: a tile of b of mmTileK rows and mmTileN columns
// (256 KiB) stays in the L2 cache while every row of a passes over it, and
// the mmTileN words of a row of dst it adds into (2 KiB) stay in L1.
const (
	mmTileK = 128
	mmTileN = 256
)

// MatMul sets dst = a · b mod 2^64, the matrix product of a (m×k) and b
// (k×n), all stored row-major: element (i, j) of dst is dst[i·n+j]. dst
// must not overlap a or b. Shapes that do not fit the lengths panic.
//
// The work is split by rows of dst: the product of rows lo to hi is
// MatMul(dst[lo·n:hi·n], a[lo·k:hi·k], b, hi−lo, k, n), so a caller may
// spread it over cores.
func MatMul(dst, a, b []uint64, m, k, n int) {
	checkMatMul("MatMul", dst, a, b, m, k, n)
	clear(dst)
	matMulAdd(dst, a, b, m, k, n)
}

// MatMulAdd sets dst = dst + a · b mod 2^64, with the shapes and storage
// of MatMul. It is the step of a sum of products: dst = c + e·b + a·f is
// a copy and two calls, with no temporary.
func MatMulAdd(dst, a, b []uint64, m, k, n int) {
	checkMatMul("MatMulAdd", dst, a, b, m, k, n)
	matMulAdd(dst, a, b, m, k, n)
}

func checkMatMul(op string, dst, a, b []uint64, m, k, n int) {
	if m < 0 || k < 0 || n < 0 {
		panic(fmt.Sprintf("ops: %s: negative dimension in %d×%d · %d×%d", op, m, k, k, n))
	}
	switch {
	case !isProduct(len(a), m, k):
		panic(fmt.Sprintf("ops: %s: a has %d elements, want %d×%d", op, len(a), m, k))
	case !isProduct(len(b), k, n):
		panic(fmt.Sprintf("ops: %s: b has %d elements, want %d×%d", op, len(b), k, n))
	case !isProduct(len(dst), m, n):
		panic(fmt.Sprintf("ops: %s: dst has %d elements, want %d×%d", op, len(dst), m, n))
	case overlap(dst, a) || overlap(dst, b):
		panic(fmt.Sprintf("ops: %s: dst overlaps an operand", op))
	}
}

// isProduct reports whether l = r·c, without overflow; r and c are not
// negative.
func isProduct(l, r, c int) bool {
	hi, lo := bits.Mul64(uint64(r), uint64(c))
	return hi == 0 && lo == uint64(l)
}

// overlap reports whether x and y share memory.
func overlap(x, y []uint64) bool {
	if len(x) == 0 || len(y) == 0 {
		return false
	}
	xs, ys := uintptr(unsafe.Pointer(&x[0])), uintptr(unsafe.Pointer(&y[0]))
	return xs < ys+8*uintptr(len(y)) && ys < xs+8*uintptr(len(x))
}

// matMulAdd is MatMulAdd without the checks: i-k-j order over tiles of
// b, four rows of b at a time so that each word of dst is loaded and
// stored once for four multiply-adds. It is generic so that the
// benchmarks can run the very same loop on float64, the plaintext cost
// the ring kernel is compared with; each element type gets its own
// compiled copy.
func matMulAdd[T uint64 | float64](dst, a, b []T, m, k, n int) {
	for j0 := 0; j0 < n; j0 += mmTileN {
		j1 := min(j0+mmTileN, n)
		w := j1 - j0
		for l0 := 0; l0 < k; l0 += mmTileK {
			l1 := min(l0+mmTileK, k)
			for i := range m {
				d := dst[i*n+j0 : i*n+j1]
				ar := a[i*k : i*k+k]
				l := l0
				for ; l+4 <= l1; l += 4 {
					a0, a1, a2, a3 := ar[l], ar[l+1], ar[l+2], ar[l+3]
					b0 := b[l*n+j0:][:w]
					b1 := b[(l+1)*n+j0:][:w]
					b2 := b[(l+2)*n+j0:][:w]
					b3 := b[(l+3)*n+j0:][:w]
					for j := range d {
						d[j] += a0*b0[j] + a1*b1[j] + a2*b2[j] + a3*b3[j]
					}
				}
				for ; l < l1; l++ {
					al := ar[l]
					bl := b[l*n+j0:][:w]
					for j := range d {
						d[j] += al * bl[j]
					}
				}
			}
		}
	}
}
