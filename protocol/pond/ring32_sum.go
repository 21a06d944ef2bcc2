package pond

import (
	"fmt"

	"github.com/shareflow/shareflow/internal/le"
	"github.com/shareflow/shareflow/ops"
)

// SumWordsAt is a server's sum in Z_2^32 kept in wire form: dst holds the
// 4-byte words (PutWords) of elements [off, off+len(dst)/4) of a running
// sum, and the same elements of each of words (whole shares in wire form,
// as SumAt takes them) and of the streams of seeded are added to it in one
// pass over cache-sized blocks. A server that keeps its sums as the
// messages it will send neither widens what it adds nor packs its result,
// and its sums take 4 bytes an element. Calls on disjoint ranges together
// make the whole sum, so a caller may split it across cores. off must be
// a multiple of 4 (an AES block's elements); the protocol must be Ring32.
func (p *Protocol) SumWordsAt(dst []byte, words [][]byte, seeded []SeededShare, off int) {
	p.sumWordsAt("SumWordsAt", dst, words, seeded, off, false)
}

// SubStreamsWordsAt subtracts from dst, as SumWordsAt holds a sum, the
// streams of seeded from element off on: a server takes back the streams
// of members it added who did not survive.
func (p *Protocol) SubStreamsWordsAt(dst []byte, seeded []SeededShare, off int) {
	p.sumWordsAt("SubStreamsWordsAt", dst, nil, seeded, off, true)
}

func (p *Protocol) sumWordsAt(step string, dst []byte, words [][]byte, seeded []SeededShare, off int, sub bool) {
	if !p.ring32 || len(dst)%4 != 0 {
		panic(fmt.Sprintf("pond: %s: %d bytes in Z_2^%d, want 4-byte words of Z_2^32", step, len(dst), p.cfg.Ring))
	}
	rows := make([][]byte, len(words)) // the shares' bytes of dst's range
	for i, w := range words {
		if len(w) < 4*off+len(dst) {
			panic(fmt.Sprintf("pond: %s: share %d has %d bytes, too few for elements [%d, %d)", step, i, len(w), off, off+len(dst)/4))
		}
		rows[i] = w[4*off : 4*off+len(dst)]
	}
	streams := make([]maskStream, len(seeded))
	for i, s := range seeded {
		p.checkDomain(step, s.Domain)
		s.Domain.Purpose = PurposeInput
		streams[i] = newMaskStreamAt(s.Seed, s.Domain, off)
	}
	var buf [4 * maskChunk]byte // a stream's chunk, added while in the L1 cache
	const block = 4 * ops.SumBlock
	for lo := 0; lo < len(dst); lo += block {
		d := dst[lo:min(lo+block, len(dst))]
		for _, w := range rows {
			le.AddWords32(d, w[lo:lo+len(d)])
		}
		for _, m := range streams {
			for c := 0; c < len(d); c += len(buf) {
				dc := d[c:min(c+len(buf), len(d))]
				k := buf[:len(dc)]
				m.keystream(k)
				if sub {
					le.SubWords32(dc, k)
				} else {
					le.AddWords32(dc, k)
				}
			}
		}
	}
}
