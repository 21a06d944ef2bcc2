package ops

import "fmt"

func checkLen(op string, dst []uint64, srcs ...[]uint64) {
	for _, s := range srcs {
		if len(s) != len(dst) {
			panic(fmt.Sprintf("ops: %s: length mismatch: dst has %d elements, operand has %d", op, len(dst), len(s)))
		}
	}
}

// Add sets dst = a + b mod 2^64.
func Add(dst, a, b []uint64) {
	checkLen("Add", dst, a, b)
	for i := range dst {
		dst[i] = a[i] + b[i]
	}
}

// AddTo sets dst = dst + a mod 2^64.
func AddTo(dst, a []uint64) {
	checkLen("AddTo", dst, a)
	for i := range dst {
		dst[i] += a[i]
	}
}

// Sub sets dst = a - b mod 2^64.
func Sub(dst, a, b []uint64) {
	checkLen("Sub", dst, a, b)
	for i := range dst {
		dst[i] = a[i] - b[i]
	}
}

// Neg sets dst = -a mod 2^64.
func Neg(dst, a []uint64) {
	checkLen("Neg", dst, a)
	for i := range dst {
		dst[i] = -a[i]
	}
}

// AddN sets dst to the sum of xs mod 2^64. With no operands dst is zeroed.
//
// The sum is formed a block at a time in a small buffer that stays in the
// L1 cache, so each operand is read once and dst written once, whatever
// the number of operands, and dst may alias any of them.
func AddN(dst []uint64, xs ...[]uint64) {
	checkLen("AddN", dst, xs...)
	if len(xs) == 0 {
		clear(dst)
		return
	}
	const block = 512
	var acc [block]uint64
	for off := 0; off < len(dst); off += block {
		a := acc[:min(block, len(dst)-off)]
		copy(a, xs[0][off:])
		for _, x := range xs[1:] {
			x = x[off : off+len(a)]
			for i := range a {
				a[i] += x[i]
			}
		}
		copy(dst[off:], a)
	}
}

// Scale sets dst = c * a mod 2^64, for a public ring element c.
func Scale(dst, a []uint64, c uint64) {
	checkLen("Scale", dst, a)
	for i := range dst {
		dst[i] = a[i] * c
	}
}

// AddConst sets dst = a + c mod 2^64, for a public ring element c.
func AddConst(dst, a []uint64, c uint64) {
	checkLen("AddConst", dst, a)
	for i := range dst {
		dst[i] = a[i] + c
	}
}

// ShiftRightArith sets dst to a shifted right by n bits, each element read
// as a signed (two's complement) integer, so the sign is kept.
func ShiftRightArith(dst, a []uint64, n uint) {
	checkLen("ShiftRightArith", dst, a)
	for i := range dst {
		dst[i] = uint64(int64(a[i]) >> n)
	}
}

// ShiftRightLogical sets dst to a shifted right by n bits, each element
// read as an unsigned integer.
func ShiftRightLogical(dst, a []uint64, n uint) {
	checkLen("ShiftRightLogical", dst, a)
	for i := range dst {
		dst[i] = a[i] >> n
	}
}
