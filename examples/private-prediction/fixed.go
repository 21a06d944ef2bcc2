package main

import (
	"fmt"
	"math"

	"github.com/shareflow/shareflow/protocol/pond"
)

// fixedArith emulates Pond's fixed-point arithmetic in the clear, one
// value at a time: a value x is the ring element round(x·2^f) held as an
// int64 (Go's int64 arithmetic wraps as Z_2^64 does), a product of two
// values has 2f fractional bits and is truncated by an arithmetic shift,
// as pond.TruncateLocal does and within one unit of what interactive
// truncation gives. It records the largest magnitude any value or
// untruncated product reaches, which must stay below 2^IntBits for the
// secure computation to be right.
//
// A fixedArith is not safe for concurrent use.
type fixedArith struct {
	proto *pond.Protocol
	frac  uint
	peak  float64 // largest magnitude seen, in real units
	err   error   // the first constant that could not be encoded
}

func newFixedArith(proto *pond.Protocol) *fixedArith {
	return &fixedArith{proto: proto, frac: uint(proto.Config().FracBits)}
}

// encode returns the fixed-point encoding of v, as Pond encodes inputs
// and constants (rounding to nearest). A value out of range is an error.
func (a *fixedArith) encode(v float64) (int64, error) {
	var e [1]uint64
	if err := a.proto.Encode(e[:], []float64{v}); err != nil {
		return 0, err
	}
	return int64(e[0]), nil
}

// constant encodes a public constant. fixedLogits checks every constant
// of the polynomial first (sigmoidApprox.checkConstants), so this cannot
// fail there; an error is kept, and the value taken as zero.
func (a *fixedArith) constant(c float64) int64 {
	e, err := a.encode(c)
	if err != nil && a.err == nil {
		a.err = fmt.Errorf("constant %g: %w", c, err)
	}
	return e
}

// decode returns the value of a fixed-point number with frac fractional
// bits.
func decode(x int64, frac uint) float64 { return math.Ldexp(float64(x), -int(frac)) }

// see records the magnitude of x, which has frac fractional bits.
func (a *fixedArith) see(x int64, frac uint) {
	a.peak = max(a.peak, math.Abs(decode(x, frac)))
}

// truncate scales a product (2f fractional bits) back to f.
func (a *fixedArith) truncate(p int64) int64 {
	a.see(p, 2*a.frac)
	r := p >> a.frac
	a.see(r, a.frac)
	return r
}

func (a *fixedArith) mulConst(x int64, c float64) int64 { return a.truncate(x * a.constant(c)) }
func (a *fixedArith) square(x int64) int64              { return a.truncate(x * x) }
func (a *fixedArith) mul(x, y int64) int64              { return a.truncate(x * y) }

func (a *fixedArith) addConst(x int64, c float64) int64 {
	r := x + a.constant(c)
	a.see(r, a.frac)
	return r
}

func (a *fixedArith) sub(x, y int64) int64 {
	r := x - y
	a.see(r, a.frac)
	return r
}

// fixedPrediction is what the fixed-point emulation of a private
// prediction gives.
type fixedPrediction struct {
	// Logits holds Classes values per image, decoded.
	Logits []float64
	// Peak is the largest magnitude of any value or untruncated product
	// of the computation, weights and inputs included.
	Peak float64
}

// fixedLogits computes the network's logits for the images in x as a
// private prediction does, step by step in Pond's fixed-point arithmetic:
// the client's standardized pixels and the model owner's weights encoded,
// z = x·W1 truncated once plus b1, the polynomial p evaluated by
// evalSigmoid, logits = h·W2 truncated once plus b2. A secure run gives
// the same numbers but for one unit in the last place per truncation
// (interactive truncation rounds up or down) and the encodings' rounding,
// which are the same. It fails if a value leaves the fixed-point range.
func (c *classifier) fixedLogits(x []float32, p sigmoidApprox, proto *pond.Protocol) (fixedPrediction, error) {
	n, err := c.checkImages(x)
	if err != nil {
		return fixedPrediction{}, err
	}
	if err := p.checkConstants(proto); err != nil {
		return fixedPrediction{}, err
	}
	a := newFixedArith(proto)
	enc := func(name string, v []float64) ([]int64, error) {
		out := make([]int64, len(v))
		for i, f := range v {
			e, err := a.encode(f)
			if err != nil {
				return nil, fmt.Errorf("%s element %d: %w", name, i, err)
			}
			a.see(e, a.frac)
			out[i] = e
		}
		return out, nil
	}
	w1, err := enc("W1", c.w1)
	if err != nil {
		return fixedPrediction{}, err
	}
	b1, err := enc("b1", c.b1)
	if err != nil {
		return fixedPrediction{}, err
	}
	w2, err := enc("W2", c.w2)
	if err != nil {
		return fixedPrediction{}, err
	}
	b2, err := enc("b2", c.b2)
	if err != nil {
		return fixedPrediction{}, err
	}

	in, hid, cls := c.arch.Inputs, c.arch.Hidden, c.arch.Classes
	xs := make([]float64, in)
	xe := make([]int64, in)
	z := make([]int64, hid)
	out := make([]float64, n*cls)
	for i := range n {
		for k, v := range x[i*in : (i+1)*in] {
			xs[k] = standardize(v)
		}
		if xe, err = enc(fmt.Sprintf("standardized image %d", i), xs); err != nil {
			return fixedPrediction{}, err
		}
		clear(z)
		for k, v := range xe {
			for j, w := range w1[k*hid : (k+1)*hid] {
				z[j] += v * w
			}
		}
		for j := range z {
			z[j] = evalSigmoid(p, arith[int64](a), a.truncate(z[j])+b1[j])
		}
		for o := range cls {
			var s int64
			for j, h := range z {
				s += h * w2[j*cls+o]
			}
			l := a.truncate(s) + b2[o]
			a.see(l, a.frac)
			out[i*cls+o] = decode(l, a.frac)
		}
	}
	if a.err != nil {
		return fixedPrediction{}, a.err
	}
	res := fixedPrediction{Logits: out, Peak: a.peak}
	if bound := proto.Config().Bound(); !(a.peak < bound) {
		return res, fmt.Errorf("a value of magnitude %g leaves the fixed-point range (−%g, %g)", a.peak, bound, bound)
	}
	return res, nil
}
