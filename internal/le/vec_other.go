//go:build !amd64 || purego

package le

// useAVX2 is false: the vector kernels are written for amd64 only.
var useAVX2 = false

func low32sAVX2(dst *uint32, src *uint64, n int) { panic("le: no vector kernels on this platform") }

func widen32sAVX2(dst *uint64, src *uint32, n int, add bool) {
	panic("le: no vector kernels on this platform")
}

func add32sAVX2(dst, src *uint32, n int, sub bool) { panic("le: no vector kernels on this platform") }
