//go:build !amd64 || purego

package pond

// hasVAES is false: the vector AES kernel is written for amd64 only, and
// the purego build tag leaves it out. Mask streams use crypto/aes.
const hasVAES = false

func vaesExpandKey(key *[16]byte, rk *[vaesKeySchedule]byte) {
	panic("pond: no vector AES kernel on this platform")
}

func vaesCTR(rk *[vaesKeySchedule]byte, dst *uint64, blocks int, lo, hi uint64, add bool) {
	panic("pond: no vector AES kernel on this platform")
}
