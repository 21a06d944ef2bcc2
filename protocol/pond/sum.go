package pond

import (
	"fmt"

	"github.com/shareflow/shareflow/ops"
)

// SumShares is a server's step of a private sum (add_n) of inputs, some
// of whose shares it holds as tensors (the masked inputs it received) and
// some as seeds: it sets dst to the sum of shares and of the streams of
// seeded, in one pass. dst may be one of shares (the same slice), but must
// not otherwise overlap any.
//
// The sum is formed a block of dst at a time (ops.SumBlock words, which
// stay in the cache): each share's words of the block are added, four
// shares at a time, then each seed's stream for the block is drawn and
// added while it is in the L1 cache. Each word of dst is written to memory
// once, each share read once, and no stream is ever written out whole.
func SumShares(dst Share, shares []Share, seeded []SeededShare) {
	SumSharesAt(dst, shares, seeded, 0)
}

// SumSharesAt is the work of SumShares on elements [off, off+len(dst)) of
// the tensors: shares holds each share's elements of that range (as many
// as dst has), and seeded the whole inputs held as seeds, whose streams it
// reads from element off on. Calls on disjoint ranges together make one
// SumShares, so a caller may split a large sum across cores. off must be
// even.
func SumSharesAt(dst Share, shares []Share, seeded []SeededShare, off int) {
	sumAt(dst, shares, seeded, off, nil)
}

// SumAt is SumSharesAt with, besides, shares in their wire form: words
// holds each whole share as the WordSize-byte words it was received in
// (PutWords), and its elements of each block are added with the rest
// while the block is in the cache, so that a server adds the masked
// tensors it received without widening them first (4 bytes an element
// read in Z_2^32). Calls on disjoint ranges together make the whole sum.
// off must be even.
func (p *Protocol) SumAt(dst Share, shares []Share, words [][]byte, seeded []SeededShare, off int) {
	ws := p.WordSize()
	for i, w := range words {
		if len(w) < ws*(off+len(dst)) {
			panic(fmt.Sprintf("pond: SumAt: share %d has %d bytes, too few for elements [%d, %d)", i, len(w), off, off+len(dst)))
		}
	}
	var addWords func(d []uint64, lo, hi int)
	if len(words) > 0 {
		addWords = func(d []uint64, lo, hi int) {
			for _, w := range words {
				p.AddWords(d, w[ws*(off+lo):ws*(off+hi)])
			}
		}
	}
	sumAt(dst, shares, seeded, off, addWords)
}

// sumAt is the one pass of SumSharesAt and SumAt: addWords, when not nil,
// adds the elements [lo, hi) of dst's range of the shares in wire form to
// the block d.
func sumAt(dst Share, shares []Share, seeded []SeededShare, off int, addWords func(d []uint64, lo, hi int)) {
	for i, s := range shares {
		if len(s) != len(dst) {
			panic(fmt.Sprintf("pond: SumSharesAt: share %d has %d elements, dst has %d", i, len(s), len(dst)))
		}
	}
	streams := make([]maskStream, len(seeded))
	var buf *sumBuffer // for streams drawn from crypto/aes
	for i, s := range seeded {
		s.Domain.Purpose = PurposeInput
		streams[i] = newMaskStreamAt(s.Seed, s.Domain, off)
		if streams[i].fast == nil && !streams[i].word32 && buf == nil {
			buf = new(sumBuffer)
		}
	}
	rows := make([][]uint64, len(shares)) // the shares' words of one block
	for lo := 0; lo < len(dst); lo += ops.SumBlock {
		hi := min(lo+ops.SumBlock, len(dst))
		d := dst[lo:hi]
		next := streams
		if len(rows) > 0 {
			for i, s := range shares {
				rows[i] = s[lo:hi]
			}
			ops.AddN(d, rows...)
		} else if len(next) > 0 {
			next[0].read(d)
			next = next[1:]
		} else {
			clear(d)
		}
		buf.addStreams(d, next)
		if addWords != nil {
			addWords(d, lo, hi)
		}
	}
}

// sumChunk is how many words of a stream SumSharesAt draws at a time
// from crypto/aes: two streams' chunks (16 KiB) stay in the L1 cache with
// the words of the sum they are added to.
const sumChunk = 1024

// sumBuffer holds the streams' words drawn from crypto/aes while they are
// added.
type sumBuffer [2][sumChunk]uint64

// addStreams adds the next len(d) words of every stream to d. The vector
// kernel adds its stream straight from the registers; a stream of 4-byte
// elements (Z_2^32) is drawn a chunk at a time and widened as it is
// added; the others are drawn into the buffer and added two streams at a
// time, so that d is loaded and stored once per two streams. b may be nil
// when every stream has the kernel or 4-byte elements.
func (b *sumBuffer) addStreams(d []uint64, streams []maskStream) {
	var pending *maskStream // a stream waiting for a second
	for i := range streams {
		switch {
		case streams[i].word32:
			streams[i].addTo(d)
		case streams[i].fast != nil:
			streams[i].fast.words(d, true)
		case pending == nil:
			pending = &streams[i]
		default:
			b.addPair(d, *pending, streams[i])
			pending = nil
		}
	}
	if pending != nil {
		for c := 0; c < len(d); c += sumChunk {
			dc := d[c:min(c+sumChunk, len(d))]
			k := b[0][:len(dc)]
			pending.read(k)
			ops.AddTo(dc, k)
		}
	}
}

func (b *sumBuffer) addPair(d []uint64, s0, s1 maskStream) {
	for c := 0; c < len(d); c += sumChunk {
		dc := d[c:min(c+sumChunk, len(d))]
		k0, k1 := b[0][:len(dc)], b[1][:len(dc)]
		s0.read(k0)
		s1.read(k1)
		for i := range dc {
			dc[i] += k0[i] + k1[i]
		}
	}
}
