package pond

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/shareflow/shareflow/internal/le"
)

// vaesKeySchedule is the size of AES-128's round keys: eleven blocks.
const vaesKeySchedule = 11 * 16

// useVAES says whether v2 mask streams are drawn with the vector AES
// kernel (vaesCTR) where the processor has one; tests turn it off to check
// the kernel against crypto/aes. It is set once, before any stream is
// drawn.
var useVAES = hasVAES

// vaesStream is a v2 (AES-128-CTR) mask stream drawn with the vector AES
// kernel: the same words as crypto/aes in counter mode gives, four
// 16-byte blocks to a 512-bit register, added straight into a sum when
// one is formed. It reads words in order and is not safe for concurrent
// use.
type vaesStream struct {
	rk     [vaesKeySchedule]byte
	lo, hi uint64 // the next counter block, big-endian halves
	spare  uint64 // the second word of the last block, when its first was read alone
	split  bool   // whether spare holds a word
	// part holds the last block drawn by bytes, of which the last npart
	// bytes are still to be read. A stream is read by words or by
	// bytes, never both.
	part  [16]byte
	npart int
}

// bytes sets dst to the next len(dst) bytes of the stream: whole blocks
// straight into dst where it is aligned for words, through a buffer in
// the L1 cache where it is not.
func (s *vaesStream) bytes(dst []byte) {
	if s.npart > 0 {
		n := copy(dst, s.part[16-s.npart:])
		s.npart -= n
		dst = dst[n:]
	}
	whole := len(dst) &^ 15
	if w, ok := le.Words(dst[:whole]); ok {
		s.blocks(w, false)
	} else {
		var buf [maskChunk]uint64
		for b := dst[:whole]; len(b) > 0; {
			n := min(len(b), 8*len(buf))
			s.blocks(buf[:n/8], false)
			le.PutUint64s(b[:n], buf[:n/8])
			b = b[n:]
		}
	}
	if dst = dst[whole:]; len(dst) > 0 {
		var last [2]uint64
		s.blocks(last[:], false)
		le.PutUint64s(s.part[:], last[:])
		s.npart = 16 - copy(dst, s.part[:])
	}
}

// newVAESStream returns the stream of key from the counter block ctr.
func newVAESStream(key *[16]byte, ctr [16]byte) *vaesStream {
	s := &vaesStream{hi: binary.BigEndian.Uint64(ctr[:8]), lo: binary.BigEndian.Uint64(ctr[8:])}
	vaesExpandKey(key, &s.rk)
	return s
}

// words sets (add false) or adds to (add true) dst the next len(dst) words
// of the stream.
func (s *vaesStream) words(dst []uint64, add bool) {
	if len(dst) == 0 {
		return
	}
	if s.split {
		if add {
			dst[0] += s.spare
		} else {
			dst[0] = s.spare
		}
		s.split, s.spare = false, 0
		dst = dst[1:]
	}
	s.blocks(dst[:len(dst)&^1], add)
	if len(dst)%2 == 1 {
		var last [2]uint64
		s.blocks(last[:], false)
		if add {
			dst[len(dst)-1] += last[0]
		} else {
			dst[len(dst)-1] = last[0]
		}
		s.spare, s.split = last[1], true
	}
}

// blocks sets or adds to dst, of even length, the next len(dst)/2 blocks,
// splitting the work where the counter's low half wraps: the counter is
// a 128-bit integer, and the kernel adds to its low half only.
func (s *vaesStream) blocks(dst []uint64, add bool) {
	for len(dst) > 0 {
		n := uint64(len(dst) / 2)
		if room := math.MaxUint64 - s.lo; room < n-1 {
			n = room + 1 // up to and including the block at lo = 2^64 − 1
		}
		vaesCTR(&s.rk, &dst[0], int(n), s.lo, s.hi, add)
		dst = dst[2*n:]
		var carry uint64
		s.lo, carry = bits.Add64(s.lo, n, 0)
		s.hi += carry
	}
}
