package ops

import "fmt"

// ReduceSum sums the m×n row-major matrix a mod 2^64 along one axis, as
// TF Encrypted's reduce_sum: along axis 0 dst has n elements, the sums of
// the columns; along axis 1 dst has m elements, the sums of the rows. A
// whole tensor sums to one element as a 1×len(a) matrix along axis 1.
// dst must not overlap a.
func ReduceSum(dst, a []uint64, m, n, axis int) {
	if m < 0 || n < 0 || !isProduct(len(a), m, n) {
		panic(fmt.Sprintf("ops: ReduceSum: a has %d elements, want %d×%d", len(a), m, n))
	}
	if overlap(dst, a) {
		panic("ops: ReduceSum: dst overlaps a")
	}
	switch axis {
	case 0:
		if len(dst) != n {
			panic(fmt.Sprintf("ops: ReduceSum: along axis 0 dst has %d elements, want %d", len(dst), n))
		}
		clear(dst)
		for i := range m {
			AddTo(dst, a[i*n:i*n+n])
		}
	case 1:
		if len(dst) != m {
			panic(fmt.Sprintf("ops: ReduceSum: along axis 1 dst has %d elements, want %d", len(dst), m))
		}
		for i := range m {
			var s uint64
			for _, v := range a[i*n : i*n+n] {
				s += v
			}
			dst[i] = s
		}
	default:
		panic(fmt.Sprintf("ops: ReduceSum: axis %d of a matrix, want 0 or 1", axis))
	}
}
