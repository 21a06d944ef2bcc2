package pond

import (
	"io"

	"github.com/shareflow/shareflow/ops"
)

// Split runs f on disjoint ranges [lo, hi) that together cover [0, n),
// and returns once every call has returned; it may make the calls at the
// same time. work is the cost of one unit of the range in word
// operations (a multiply-add, a word of a mask stream), so that the
// caller can tell when splitting pays: a row of an m×k·k×n matrix
// product costs k·n.
//
// Package pond starts no goroutine. The steps of private products worth
// spreading over cores (Producer.TripleSplit, TripleShare.FinishSplit)
// describe their work as ranges and hand them to a Split that the caller
// provides: package session, which owns goroutines, spreads them over
// cores; Serial runs them on the calling goroutine. The ranges a step
// asks for are its own business (rows of a matrix product, pairs of
// words of a mask stream), so a Split need not know what they mean.
type Split func(n, work int, f func(lo, hi int))

// Serial is the Split that calls f(0, n) on the calling goroutine.
func Serial(n, work int, f func(lo, hi int)) { f(0, n) }

// streamWork is the cost of one word of a mask stream (AES-256 in counter
// mode, half a block) in word operations, roughly.
const streamWork = 8

// splitEven runs f through split on ranges of [0, n) that start at even
// offsets, as mask streams need (two words to an AES block).
func splitEven(split Split, n, work int, f func(lo, hi int)) {
	split((n+1)/2, 2*work, func(lo, hi int) { f(2*lo, min(2*hi, n)) })
}

// TripleSplit is Triple with its work handed to split: the mask streams of
// a, b and c0 by ranges of words, and the product a·b by ranges of rows
// (of elements for an element-wise product, drawn, multiplied and masked
// a range at a time). Every Split gives the same triple as Serial for the
// same seeds, so the result depends on rng and d alone.
func (p *Producer) TripleSplit(rng io.Reader, d Domain, s TripleShape, to0 *TripleMessage0, to1 *TripleMessage1, split Split) error {
	if err := s.Validate(); err != nil {
		return err
	}
	seed0, err := NewSeed(rng)
	if err != nil {
		return err
	}
	seed1, err := NewSeed(rng)
	if err != nil {
		return err
	}
	p.a = resize(p.a, s.XLen())
	p.b = resize(p.b, s.YLen())
	p.c0 = resize(p.c0, s.ZLen())
	a, b, c0 := p.a, p.b, p.c0
	c1 := resize(to1.C, s.ZLen())
	dc := d
	dc.Purpose = purposeTriple0C
	switch s.Kind {
	case ProductMul, ProductSquare:
		perWord := 3 * streamWork
		if s.Kind == ProductMul {
			perWord += 2 * streamWork
		}
		splitEven(split, s.N, perWord, func(lo, hi int) {
			expandSumAt(a[lo:hi], seed0, seed1, d, purposeTriple0A, purposeTriple1A, lo)
			if s.Kind == ProductMul {
				expandSumAt(b[lo:hi], seed0, seed1, d, purposeTriple0B, purposeTriple1B, lo)
				ops.Mul(c1[lo:hi], a[lo:hi], b[lo:hi])
			} else {
				ops.Mul(c1[lo:hi], a[lo:hi], a[lo:hi])
			}
			ExpandAt(c0[lo:hi], seed0, dc, lo)
			ops.Sub(c1[lo:hi], c1[lo:hi], c0[lo:hi])
		})
	case ProductMatMul:
		splitEven(split, len(a), 2*streamWork, func(lo, hi int) {
			expandSumAt(a[lo:hi], seed0, seed1, d, purposeTriple0A, purposeTriple1A, lo)
		})
		splitEven(split, len(b), 2*streamWork, func(lo, hi int) {
			expandSumAt(b[lo:hi], seed0, seed1, d, purposeTriple0B, purposeTriple1B, lo)
		})
		m, k, n := s.M, s.K, s.N
		split(m, k*n, func(lo, hi int) {
			ops.MatMul(c1[lo*n:hi*n], a[lo*k:hi*k], b, hi-lo, k, n)
		})
		splitEven(split, len(c1), streamWork+1, func(lo, hi int) {
			ExpandAt(c0[lo:hi], seed0, dc, lo)
			ops.Sub(c1[lo:hi], c1[lo:hi], c0[lo:hi])
		})
	}
	to0.Seed = seed0
	to1.Seed, to1.C = seed1, c1
	return nil
}

// expandSumAt sets dst to words [off, off+len(dst)) of the sum of the
// streams of seed0 and seed1 in domain d with the purposes p0 and p1. off
// must be even.
func expandSumAt(dst []uint64, seed0, seed1 Seed, d Domain, p0, p1 Purpose, off int) {
	d.Purpose = p0
	ExpandAt(dst, seed0, d, off)
	d.Purpose = p1
	AddExpandAt(dst, seed1, d, off)
}

// FinishSplit is Finish with its work handed to split: element-wise
// products by ranges of elements; a matrix product by ranges of elements
// to sum the openings, then by ranges of rows for its two matrix
// products. It checks what Finish checks, before any work, and gives the
// same result whatever the Split.
func (t *TripleShare) FinishSplit(dst Product, mine, theirs *Opening, split Split) error {
	if err := t.checkFinish(dst, mine, theirs); err != nil {
		return err
	}
	t.state = tripleUsed
	s, server0 := t.shape, t.party == Server0
	a, b, c := t.a, t.b, t.c
	switch s.Kind {
	case ProductMul:
		e, f, me, mf := theirs.E, theirs.F, mine.E, mine.F
		split(len(dst), 6, func(lo, hi int) {
			finishMul(server0, dst[lo:hi], a[lo:hi], b[lo:hi], c[lo:hi], e[lo:hi], f[lo:hi], me[lo:hi], mf[lo:hi])
		})
	case ProductSquare:
		e, me := theirs.E, mine.E
		split(len(dst), 4, func(lo, hi int) {
			finishSquare(server0, dst[lo:hi], a[lo:hi], c[lo:hi], e[lo:hi], me[lo:hi])
		})
	case ProductMatMul:
		e, f := theirs.E, theirs.F
		split(len(e), 1, func(lo, hi int) { ops.AddTo(e[lo:hi], mine.E[lo:hi]) })
		split(len(f), 2, func(lo, hi int) {
			ops.AddTo(f[lo:hi], mine.F[lo:hi])
			if server0 {
				ops.AddTo(b[lo:hi], f[lo:hi]) // e·b0 + e·f = e·(b0 + f): one product fewer
			}
		})
		m, k, n := s.M, s.K, s.N
		split(m, 2*k*n, func(lo, hi int) {
			rows := dst[lo*n : hi*n]
			copy(rows, c[lo*n:hi*n])
			ops.MatMulAdd(rows, e[lo*k:hi*k], b, hi-lo, k, n)
			ops.MatMulAdd(rows, a[lo*k:hi*k], f, hi-lo, k, n)
		})
	}
	return nil
}

// finishMul sets dst to c + e·b + a·f, plus e·f on server0, with
// e = e1 + e2 and f = f1 + f2, element by element.
func finishMul(server0 bool, dst Product, a, b, c, e1, f1, e2, f2 []uint64) {
	a, b, c = a[:len(dst)], b[:len(dst)], c[:len(dst)]
	e1, f1, e2, f2 = e1[:len(dst)], f1[:len(dst)], e2[:len(dst)], f2[:len(dst)]
	if server0 {
		for i := range dst {
			ei, fi := e1[i]+e2[i], f1[i]+f2[i]
			dst[i] = c[i] + ei*(b[i]+fi) + a[i]*fi
		}
		return
	}
	for i := range dst {
		ei, fi := e1[i]+e2[i], f1[i]+f2[i]
		dst[i] = c[i] + ei*b[i] + a[i]*fi
	}
}

// finishSquare sets dst to c + 2·e·a, plus e² on server0, with
// e = e1 + e2, element by element.
func finishSquare(server0 bool, dst Product, a, c, e1, e2 []uint64) {
	a, c, e1, e2 = a[:len(dst)], c[:len(dst)], e1[:len(dst)], e2[:len(dst)]
	if server0 {
		for i := range dst {
			ei := e1[i] + e2[i]
			dst[i] = c[i] + ei*(2*a[i]+ei)
		}
		return
	}
	for i := range dst {
		dst[i] = c[i] + 2*(e1[i]+e2[i])*a[i]
	}
}
