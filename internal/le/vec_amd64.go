//go:build amd64 && !purego

package le

import "golang.org/x/sys/cpu"

// useAVX2 selects the AVX2 kernels for the 32-bit word conversions. Tests
// switch it off to check the kernels against the portable loops.
var useAVX2 = cpu.X86.HasAVX2

// low32sAVX2 sets dst[i] to the low half of src[i] for i < n, which must
// be a multiple of 8. dst may be src's memory: each group of eight words is
// read before its 32 bytes are written.
//
//go:noescape
func low32sAVX2(dst *uint32, src *uint64, n int)

// widen32sAVX2 sets (add false) or adds to (add true) dst[i] the
// zero-extended src[i] for i < n, which must be a multiple of 8.
//
//go:noescape
func widen32sAVX2(dst *uint64, src *uint32, n int, add bool)

// add32sAVX2 sets dst[i] to dst[i] + src[i] (sub false) or dst[i] − src[i]
// (sub true), mod 2^32, for i < n, which must be a multiple of 8.
//
//go:noescape
func add32sAVX2(dst, src *uint32, n int, sub bool)
