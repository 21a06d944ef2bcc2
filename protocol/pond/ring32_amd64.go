//go:build amd64 && !purego

package pond

import "golang.org/x/sys/cpu"

// hasAVX2 reports whether this processor runs the AVX2 kernels of the
// 32-bit ring's encoding and reveal.
var hasAVX2 = cpu.X86.HasAVX2

// encodeSub32AVX2 sets dst[i] to the low 32 bits of round(x[i]·scale) −
// dst[i], rounding half to even, for i < n, a multiple of 4, four elements
// at a time. It stops before the first group of four that holds an
// element with |x| ≥ bound or NaN, and returns how many elements it did.
// |x·scale| must fit in an int32 when |x| < bound.
//
//go:noescape
func encodeSub32AVX2(dst *uint32, x *float64, n int, scale, bound float64) int

// reveal32AVX2 sets dst[i] to float64(int32(a[i]+b[i])) / div for i < n,
// a multiple of 4.
//
//go:noescape
func reveal32AVX2(dst *float64, a, b *uint32, n int, div float64)
