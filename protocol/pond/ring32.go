package pond

import (
	"fmt"
	"math"

	"github.com/shareflow/shareflow/internal/le"
)

// EncodeAndSubtractWordsAt is EncodeAndSubtractAt writing its result in
// wire form: it sets dst, WordSize·len(x) bytes, to the words (PutWords)
// of encode(x) − mask for elements [off, off+len(x)), in one pass. In
// Z_2^32 it writes 4 bytes an element where EncodeAndSubtractAt and then
// PutWords would write 8, read them back and write 4. dst must not
// overlap x or mask. It refuses the first bad element of its range with a
// *RangeError whose Index counts from the start of the tensor, and leaves
// dst unspecified.
func (p *Protocol) EncodeAndSubtractWordsAt(dst []byte, x []float64, mask Share, off int) error {
	if len(mask) != len(x) || len(dst) != p.WordSize()*len(x) {
		panic(fmt.Sprintf("pond: EncodeAndSubtractWordsAt: dst has %d bytes, x %d elements, mask %d", len(dst), len(x), len(mask)))
	}
	d32, ok := le.Uint32View(dst)
	if !p.ring32 || !ok {
		// A chunk at a time through a buffer in the L1 cache.
		var buf [maskChunk]uint64
		ws := p.WordSize()
		for lo := 0; lo < len(x); lo += maskChunk {
			hi := min(lo+maskChunk, len(x))
			b := buf[:hi-lo]
			if err := p.EncodeAndSubtractAt(b, x[lo:hi], mask[lo:hi], off+lo); err != nil {
				return err
			}
			p.PutWords(dst[ws*lo:ws*hi], b)
		}
		return nil
	}
	scale, bound := p.scale, p.bound
	for i, v := range x {
		// The negated comparison also catches NaN.
		if !(math.Abs(v) < bound) {
			return &RangeError{Index: off + i, Value: v, Bound: bound}
		}
		d32[i] = uint32(int64(math.RoundToEven(v*scale))) - uint32(mask[i])
	}
	return nil
}

// RevealWordsQuotient is RevealQuotient from the two servers' shares in
// wire form (PutWords: WordSize bytes an element, as many elements as
// dst has): dst = decode(s0 + s1) / d, without decoding the shares into
// words first. It works element by element, so a caller may split a
// tensor into ranges freely.
func (p *Protocol) RevealWordsQuotient(dst []float64, w0, w1 []byte, d float64) error {
	if n := p.WordSize() * len(dst); len(w0) != n || len(w1) != n {
		return fmt.Errorf("pond: reveal: shares have %d and %d bytes, want %d", len(w0), len(w1), n)
	}
	if d == 0 || math.IsNaN(d) || math.IsInf(d, 0) {
		return fmt.Errorf("pond: reveal: divisor %v must be a finite non-zero number", d)
	}
	a, okA := le.Uint32View(w0)
	b, okB := le.Uint32View(w1)
	if !p.ring32 || !okA || !okB {
		var s0, s1 [maskChunk]uint64
		ws := p.WordSize()
		for lo := 0; lo < len(dst); lo += maskChunk {
			hi := min(lo+maskChunk, len(dst))
			p.Words(s0[:hi-lo], w0[ws*lo:ws*hi])
			p.Words(s1[:hi-lo], w1[ws*lo:ws*hi])
			if err := p.RevealQuotient(dst[lo:hi], s0[:hi-lo], s1[:hi-lo], d); err != nil {
				return err
			}
		}
		return nil
	}
	div := p.scale * d
	a, b = a[:len(dst)], b[:len(dst)]
	for i := range dst {
		dst[i] = float64(int32(a[i]+b[i])) / div
	}
	return nil
}
