//go:build amd64 && !purego

package pond

import "golang.org/x/sys/cpu"

// hasVAES reports whether this processor runs vaesCTR: AES-NI for the key
// schedule, and AVX-512 with its vector AES instructions (VAES) and byte
// shuffles (BW) for the keystream, four blocks to a register.
var hasVAES = cpu.X86.HasAES && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VAES

// vaesExpandKey sets rk to the eleven round keys of AES-128 under key.
//
//go:noescape
func vaesExpandKey(key *[16]byte, rk *[vaesKeySchedule]byte)

// vaesCTR sets (add false) or adds to (add true) the 2·blocks words at dst
// the AES-128 counter-mode keystream under the round keys rk, from the
// counter block whose big-endian halves are hi and lo, read as
// little-endian words. The counter's low half must not wrap within the
// call.
//
//go:noescape
func vaesCTR(rk *[vaesKeySchedule]byte, dst *uint64, blocks int, lo, hi uint64, add bool)
