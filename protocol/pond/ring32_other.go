//go:build !amd64 || purego

package pond

// hasAVX2 is false: the 32-bit ring's vector kernels are written for
// amd64 only, and the purego build tag leaves them out.
const hasAVX2 = false

func encodeSub32AVX2(dst *uint32, x *float64, n int, scale, bound float64) int {
	panic("pond: no AVX2 kernel on this platform")
}

func reveal32AVX2(dst *float64, a, b *uint32, n int, div float64) {
	panic("pond: no AVX2 kernel on this platform")
}
