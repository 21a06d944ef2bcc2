package ops

// Mul sets dst = a · b mod 2^64, element by element.
func Mul(dst, a, b []uint64) {
	checkLen("Mul", dst, a, b)
	for i := range dst {
		dst[i] = a[i] * b[i]
	}
}
