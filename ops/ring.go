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
// The sum is formed a block of dst at a time (SumBlock words), adding four
// operands at once, so each operand is read once in long runs and each
// word of dst is written once per four operands while it is in the cache,
// whatever the number of operands. dst may be one of xs (the same slice),
// but must not otherwise overlap any.
func AddN(dst []uint64, xs ...[]uint64) {
	checkLen("AddN", dst, xs...)
	if len(xs) == 0 {
		clear(dst)
		return
	}
	// The first four operands are read before dst is written, element by
	// element: dst may be one of them, so move an operand it is to the
	// front.
	for j := 4; j < len(xs); j++ {
		if len(dst) > 0 && &xs[j][0] == &dst[0] {
			xs = append([][]uint64{xs[j]}, append(xs[:j:j], xs[j+1:]...)...)
			break
		}
	}
	for lo := 0; lo < len(dst); lo += SumBlock {
		hi := min(lo+SumBlock, len(dst))
		sumInto(dst[lo:hi], xs, lo, hi, true)
	}
}

// AddNTo adds the sum of xs to dst mod 2^64: dst += xs[0] + xs[1] + ….
// It works a block at a time as AddN does. dst must not overlap any
// operand.
func AddNTo(dst []uint64, xs ...[]uint64) {
	checkLen("AddNTo", dst, xs...)
	for _, x := range xs {
		if overlap(dst, x) {
			panic("ops: AddNTo: dst overlaps an operand")
		}
	}
	for lo := 0; lo < len(dst); lo += SumBlock {
		hi := min(lo+SumBlock, len(dst))
		sumInto(dst[lo:hi], xs, lo, hi, false)
	}
}

// SumBlock is the number of words of a sum that AddN and AddNTo form at a
// time: 32 KiB, which stays in the L1 or L2 cache while every operand's
// words are added to it. Callers that block a sum of their own (package
// pond adds mask streams to it) use it too.
const SumBlock = 4096

// sumInto sets d (set) or adds to it the sum of elements [lo, hi) of
// every operand, four operands at a time: one load and store of d per four
// operands. With set, element i of the first four operands is read before
// d[i] is written, so d may be one of them.
func sumInto(d []uint64, xs [][]uint64, lo, hi int, set bool) {
	k := 0
	if set {
		switch len(xs) {
		case 0:
			clear(d)
		case 1:
			copy(d, xs[0][lo:hi])
			k = 1
		case 2:
			a, b := xs[0][lo:hi], xs[1][lo:hi]
			a, b = a[:len(d)], b[:len(d)]
			for i := range d {
				d[i] = a[i] + b[i]
			}
			k = 2
		case 3:
			a, b, c := xs[0][lo:hi], xs[1][lo:hi], xs[2][lo:hi]
			a, b, c = a[:len(d)], b[:len(d)], c[:len(d)]
			for i := range d {
				d[i] = a[i] + b[i] + c[i]
			}
			k = 3
		default:
			a, b, c, e := xs[0][lo:hi], xs[1][lo:hi], xs[2][lo:hi], xs[3][lo:hi]
			a, b, c, e = a[:len(d)], b[:len(d)], c[:len(d)], e[:len(d)]
			for i := range d {
				d[i] = a[i] + b[i] + c[i] + e[i]
			}
			k = 4
		}
	}
	for ; k+4 <= len(xs); k += 4 {
		a, b, c, e := xs[k][lo:hi], xs[k+1][lo:hi], xs[k+2][lo:hi], xs[k+3][lo:hi]
		a, b, c, e = a[:len(d)], b[:len(d)], c[:len(d)], e[:len(d)]
		for i := range d {
			d[i] += a[i] + b[i] + c[i] + e[i]
		}
	}
	switch len(xs) - k {
	case 1:
		a := xs[k][lo:hi][:len(d)]
		for i := range d {
			d[i] += a[i]
		}
	case 2:
		a, b := xs[k][lo:hi], xs[k+1][lo:hi]
		a, b = a[:len(d)], b[:len(d)]
		for i := range d {
			d[i] += a[i] + b[i]
		}
	case 3:
		a, b, c := xs[k][lo:hi], xs[k+1][lo:hi], xs[k+2][lo:hi]
		a, b, c = a[:len(d)], b[:len(d)], c[:len(d)]
		for i := range d {
			d[i] += a[i] + b[i] + c[i]
		}
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
