package pond

import (
	"fmt"
	"math"

	"github.com/shareflow/shareflow/internal/le"
)

// EncodeAndSubtractWordsAt is EncodeAndSubtractAt writing its result in
// wire form: it sets dst, WordSize·len(x) bytes, to the words (PutWords)
// of encode(x) − mask for elements [off, off+len(x)): the mask's words,
// then encode(x) − mask over them (EncodeAndSubtractFromWordsAt), so a
// caller gives it a cache-sized range at a time (EncodeAndMaskWordsAt
// does). In Z_2^32 it writes 4 bytes an element. dst must not overlap x
// or mask. It refuses the first bad element of its range with a
// *RangeError whose Index counts from the start of the tensor, and leaves
// dst unspecified.
func (p *Protocol) EncodeAndSubtractWordsAt(dst []byte, x []float64, mask Share, off int) error {
	if len(mask) != len(x) || len(dst) != p.WordSize()*len(x) {
		panic(fmt.Sprintf("pond: EncodeAndSubtractWordsAt: dst has %d bytes, x %d elements, mask %d", len(dst), len(x), len(mask)))
	}
	p.PutWords(dst, mask)
	return p.EncodeAndSubtractFromWordsAt(dst, x, off)
}

// useAVX2 says whether the 32-bit ring's encoding and reveal run the AVX2
// kernels; tests switch it off to check them against the loops.
var useAVX2 = hasAVX2

// encodeSub32 sets d32[i] to encode(x[i]) − d32[i] in Z_2^32, refusing
// the first element out of range with a *RangeError at off+i.
func (p *Protocol) encodeSub32(d32 []uint32, x []float64, off int) error {
	scale, bound := p.scale, p.bound
	i := 0
	if n := len(x) &^ 3; useAVX2 && n > 0 {
		// It stops at the first group of four with a bad element, which
		// the loop below then finds.
		i = encodeSub32AVX2(&d32[0], &x[0], n, scale, bound)
	}
	for ; i < len(x); i++ {
		v := x[i]
		// The negated comparison also catches NaN.
		if !(math.Abs(v) < bound) {
			return &RangeError{Index: off + i, Value: v, Bound: bound}
		}
		d32[i] = uint32(int64(math.RoundToEven(v*scale))) - d32[i]
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
	if n := len(dst) &^ 3; useAVX2 && n > 0 {
		reveal32AVX2(&dst[0], &a[0], &b[0], n, div)
		dst, a, b = dst[n:], a[n:], b[n:]
	}
	for i := range dst {
		dst[i] = float64(int32(a[i]+b[i])) / div
	}
	return nil
}

// EncodeAndMaskWordsAt is EncodeAndMaskAt writing its result in wire form:
// it sets dst, WordSize·len(x) bytes, to the words (PutWords) of
// encode(x) − r for elements [off, off+len(x)) of the input mask r of seed
// in domain d. The mask is drawn a chunk at a time into a buffer in the
// L1 cache, so in Z_2^32 each element costs a read of x and a 4-byte
// write. dst must not overlap x. Calls on disjoint ranges with one seed
// together make the whole tensor, so a caller may split it across cores.
// It refuses the first bad element of its range with a *RangeError whose
// Index counts from the start of the tensor, and leaves dst unspecified.
// off must be even.
func (p *Protocol) EncodeAndMaskWordsAt(dst []byte, x []float64, seed Seed, d Domain, off int) error {
	if len(dst) != p.WordSize()*len(x) {
		panic(fmt.Sprintf("pond: EncodeAndMaskWordsAt: dst has %d bytes, x has %d elements", len(dst), len(x)))
	}
	p.checkDomain("EncodeAndMaskWordsAt", d)
	d.Purpose = PurposeInput
	stream := newMaskStreamAt(seed, d, off)
	if d32, ok := le.Uint32View(dst); ok && p.ring32 {
		// The mask's wire form is the keystream itself: drawn into dst a
		// chunk at a time, then the masked tensor written over it.
		for lo := 0; lo < len(x); lo += maskChunk {
			hi := min(lo+maskChunk, len(x))
			stream.keystream(dst[4*lo : 4*hi])
			if err := p.encodeSub32(d32[lo:hi], x[lo:hi], off+lo); err != nil {
				return err
			}
		}
		return nil
	}
	var mask [maskChunk]uint64
	ws := p.WordSize()
	for lo := 0; lo < len(x); lo += maskChunk {
		hi := min(lo+maskChunk, len(x))
		m := mask[:hi-lo]
		stream.read(m)
		if err := p.EncodeAndSubtractWordsAt(dst[ws*lo:ws*hi], x[lo:hi], m, off+lo); err != nil {
			return err
		}
	}
	return nil
}

// ExpandWordsAt sets dst, WordSize·n bytes, to the wire form (PutWords)
// of elements [off, off+n) of the share s: an input owner draws its mask
// ahead straight into the message that will carry its masked tensor, 4
// bytes an element in Z_2^32 (see EncodeAndSubtractFromWordsAt). Calls on
// disjoint ranges together write the whole share. off must be even.
func (p *Protocol) ExpandWordsAt(dst []byte, s SeededShare, off int) {
	ws := p.WordSize()
	if len(dst)%ws != 0 {
		panic(fmt.Sprintf("pond: ExpandWordsAt: %d bytes is no whole number of %d-byte words", len(dst), ws))
	}
	p.checkDomain("ExpandWordsAt", s.Domain)
	s.Domain.Purpose = PurposeInput
	stream := newMaskStreamAt(s.Seed, s.Domain, off)
	if p.ring32 {
		stream.keystream(dst) // 4-byte elements: the keystream is the wire form
		return
	}
	var buf [maskChunk]uint64
	n := len(dst) / ws
	for lo := 0; lo < n; lo += maskChunk {
		hi := min(lo+maskChunk, n)
		b := buf[:hi-lo]
		stream.read(b)
		p.PutWords(dst[ws*lo:ws*hi], b)
	}
}

// EncodeAndSubtractFromWordsAt is EncodeAndSubtractWordsAt in place: dst
// holds, on entry, the wire form of elements [off, off+len(x)) of the
// input mask r (ExpandWordsAt), and on return that of encode(x) − r, each
// word read before it is written. Ranges may run in parallel. It refuses
// the first bad element of its range with a *RangeError whose Index
// counts from the start of the tensor, and leaves dst unspecified.
func (p *Protocol) EncodeAndSubtractFromWordsAt(dst []byte, x []float64, off int) error {
	if len(dst) != p.WordSize()*len(x) {
		panic(fmt.Sprintf("pond: EncodeAndSubtractFromWordsAt: dst has %d bytes, x has %d elements", len(dst), len(x)))
	}
	d32, ok := le.Uint32View(dst)
	if !p.ring32 || !ok {
		// A chunk at a time through a buffer in the L1 cache: the mask's
		// words in, encode(x) − mask over them, the words back out.
		var buf [maskChunk]uint64
		ws := p.WordSize()
		for lo := 0; lo < len(x); lo += maskChunk {
			hi := min(lo+maskChunk, len(x))
			m := buf[:hi-lo]
			p.Words(m, dst[ws*lo:ws*hi])
			if err := p.EncodeAndSubtractAt(m, x[lo:hi], m, off+lo); err != nil {
				return err
			}
			p.PutWords(dst[ws*lo:ws*hi], m)
		}
		return nil
	}
	return p.encodeSub32(d32[:len(x)], x, off)
}
