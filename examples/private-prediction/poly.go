package main

import (
	"fmt"
	"math"

	"github.com/shareflow/shareflow/protocol/pond"
)

// sigmoidApprox approximates the logistic function σ on [−R, R] by an odd
// polynomial of degree 2·len(A) − 1 around 1/2, written in Chebyshev
// polynomials of the scaled variable u = z/R:
//
//	σ(z) ≈ 1/2 + Σ_j a_j·T_{2j+1}(u),  u = z/R,  a_j = 2·A[j]
//
// σ − 1/2 is odd, so only odd terms appear, as in TF Encrypted's
// approximation. Two choices keep a private evaluation inside Pond's
// fixed-point range and precision (16 fractional bits, |x| < 1024):
//
//   - Scaling z to u keeps every power of the order of one. In z, a
//     degree-17 fit on [−14, 14] has a coefficient of z^17 of about
//     10^-20, far below the resolution 2^-16, while z^17 itself is about
//     10^19.
//   - The Chebyshev form, summed by Clenshaw's recurrence, keeps every
//     intermediate value below Σ|a_j|·(2k−1) or so, where the monomial
//     form's coefficients grow like 2.4^degree and cancel each other, each
//     carrying its own rounding error.
//
// Outside [−R, R] the polynomial grows like T_{2k−1}(u), fast: the
// interval must cover every pre-activation the network produces.
type sigmoidApprox struct {
	// R is the half-width of the interval.
	R float64
	// A holds half of the odd Chebyshev coefficients: A[j] = a_j / 2.
	// Halving folds the factor 1/2 of u = v/2 into the coefficients
	// (see evalSigmoid).
	A []float64
}

// Degree returns the polynomial's degree.
func (p sigmoidApprox) Degree() int { return 2*len(p.A) - 1 }

// Products returns the number of products of two private values that a
// private evaluation of p takes: the square of v, one per step of the
// recurrence after the second, and v times the sum.
func (p sigmoidApprox) Products() int {
	if len(p.A) == 1 {
		return 0
	}
	return len(p.A)
}

// fitSigmoid returns the Chebyshev interpolant of σ on [−r, r] of the
// given odd degree: the polynomial that equals σ at the degree+1 Chebyshev
// nodes r·cos(π(i + 1/2)/(degree+1)). Its error is within a small factor
// of the best possible (minimax) polynomial of that degree; maxError
// measures it.
func fitSigmoid(r float64, degree int) (sigmoidApprox, error) {
	if !(r > 0) || math.IsInf(r, 0) {
		return sigmoidApprox{}, fmt.Errorf("sigmoid fit: interval half-width %v, want a positive finite number", r)
	}
	if degree < 1 || degree > 63 || degree%2 == 0 {
		return sigmoidApprox{}, fmt.Errorf("sigmoid fit: degree %d, want an odd number from 1 to 63", degree)
	}
	n := degree + 1
	p := sigmoidApprox{R: r, A: make([]float64, n/2)}
	for j := range p.A {
		m := float64(2*j + 1)
		var s float64
		for i := range n {
			theta := math.Pi * (float64(i) + 0.5) / float64(n)
			s += (sigmoid(r*math.Cos(theta)) - 0.5) * math.Cos(m*theta)
		}
		p.A[j] = s / float64(n) // a_j = 2s/n, halved
	}
	return p, nil
}

// Eval returns the approximation of σ(z), in float64, by the steps a
// private evaluation takes.
func (p sigmoidApprox) Eval(z float64) float64 {
	return evalSigmoid(p, floatArith{}, z)
}

// maxError returns the largest |p(z) − σ(z)| over n+1 equally spaced
// points of [−R, R], and the point where it occurs.
func (p sigmoidApprox) maxError(n int) (maxErr, at float64) {
	for i := 0; i <= n; i++ {
		z := p.R * (2*float64(i)/float64(n) - 1)
		if e := math.Abs(p.Eval(z) - sigmoid(z)); e > maxErr {
			maxErr, at = e, z
		}
	}
	return maxErr, at
}

// arith is the arithmetic a polynomial evaluation needs, on values of
// type T: float64 for the plaintext reference, fixed-point numbers to
// emulate Pond, graph nodes for a private evaluation.
type arith[T any] interface {
	mulConst(x T, c float64) T // x·c for a public c
	addConst(x T, c float64) T // x + c for a public c
	square(x T) T              // x², a private product
	mul(x, y T) T              // x·y, a private product
	sub(x, y T) T              // x − y
}

// evalSigmoid evaluates p at z with the operations of a. With v = 2u =
// 2z/R and t = v² − 2 = 2·T_2(u), the third-kind Chebyshev polynomials
// V_j(T_2(u)) = T_{2j+1}(u)/u obey V_{j+1} = t·V_j − V_{j−1}, so
// Clenshaw's recurrence
//
//	b_{k−1} = A[k−1],  b_{k−2} = A[k−2] + t·A[k−1],
//	b_j = A[j] + t·b_{j+1} − b_{j+2}   (j = k−3 … 0)
//
// gives Σ A[j]·V_j = b_0 − b_1, and σ(z) ≈ 1/2 + v·(b_0 − b_1). With
// k = len(A) ≥ 2 that is k private products (v², k − 2 steps, v times
// the sum) in a chain of k, plus two products by public constants.
func evalSigmoid[T any](p sigmoidApprox, a arith[T], z T) T {
	k := len(p.A)
	v := a.mulConst(z, 2/p.R)
	if k == 1 {
		return a.addConst(a.mulConst(v, p.A[0]), 0.5)
	}
	t := a.addConst(a.square(v), -2)
	b1 := a.addConst(a.mulConst(t, p.A[k-1]), p.A[k-2]) // b_{k−2}
	var b2 T                                            // b_{k−1}, a public constant until the next step
	first := true
	for j := k - 3; j >= 0; j-- {
		next := a.mul(t, b1)
		if first {
			next = a.addConst(next, p.A[j]-p.A[k-1])
		} else {
			next = a.addConst(a.sub(next, b2), p.A[j])
		}
		b1, b2, first = next, b1, false
	}
	var sum T // b_0 − b_1
	if first {
		sum = a.addConst(b1, -p.A[k-1])
	} else {
		sum = a.sub(b1, b2)
	}
	return a.addConst(a.mul(v, sum), 0.5)
}

// floatArith is arith in float64: the plaintext reference.
type floatArith struct{}

func (floatArith) mulConst(x, c float64) float64 { return x * c }
func (floatArith) addConst(x, c float64) float64 { return x + c }
func (floatArith) square(x float64) float64      { return x * x }
func (floatArith) mul(x, y float64) float64      { return x * y }
func (floatArith) sub(x, y float64) float64      { return x - y }

// constArith is arith that only records the public constants an
// evaluation multiplies by and adds, to check them before a run.
type constArith struct{ factors, added []float64 }

func (a *constArith) mulConst(_ struct{}, c float64) struct{} {
	a.factors = append(a.factors, c)
	return struct{}{}
}
func (a *constArith) addConst(_ struct{}, c float64) struct{} {
	a.added = append(a.added, c)
	return struct{}{}
}
func (a *constArith) square(struct{}) struct{}   { return struct{}{} }
func (a *constArith) mul(_, _ struct{}) struct{} { return struct{}{} }
func (a *constArith) sub(_, _ struct{}) struct{} { return struct{}{} }

// checkConstants checks that Pond can encode every public constant a
// private evaluation of p uses: a factor must be in range and not so
// small that it encodes to zero (pond.Protocol.EncodeConstant), an added
// constant must be in range.
func (p sigmoidApprox) checkConstants(proto *pond.Protocol) error {
	if len(p.A) == 0 || !(p.R > 0) {
		return fmt.Errorf("sigmoid polynomial on [−%v, %v] with %d coefficients", p.R, p.R, len(p.A))
	}
	var a constArith
	evalSigmoid(p, arith[struct{}](&a), struct{}{})
	for _, c := range a.factors {
		if _, err := proto.EncodeConstant(c); err != nil {
			return fmt.Errorf("sigmoid polynomial of degree %d on [−%g, %g]: factor: %w", p.Degree(), p.R, p.R, err)
		}
	}
	var e [1]uint64
	for _, c := range a.added {
		if err := proto.Encode(e[:], []float64{c}); err != nil {
			return fmt.Errorf("sigmoid polynomial of degree %d on [−%g, %g]: added constant: %w", p.Degree(), p.R, p.R, err)
		}
	}
	return nil
}
