package main

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/protocol/pond"
)

// chebyshevSum evaluates 1/2 + Σ 2·A[j]·T_{2j+1}(z/R) directly, with
// T_n(cos θ) = cos(nθ): an independent check of evalSigmoid's recurrence.
func chebyshevSum(p sigmoidApprox, z float64) float64 {
	theta := math.Acos(z / p.R)
	s := 0.5
	for j, a := range p.A {
		s += 2 * a * math.Cos(float64(2*j+1)*theta)
	}
	return s
}

func TestSigmoidRecurrenceMatchesChebyshevSum(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, degree := range []int{1, 3, 5, 7, 19, 31} {
		p, err := fitSigmoid(8, degree)
		require.NoError(t, err)
		for range 200 {
			z := p.R * (2*r.Float64() - 1)
			assert.InDelta(t, chebyshevSum(p, z), p.Eval(z), 1e-12, "degree %d at z = %g", degree, z)
		}
	}
}

func TestFitSigmoidInterpolates(t *testing.T) {
	for _, degree := range []int{3, 9, 19} {
		p, err := fitSigmoid(14, degree)
		require.NoError(t, err)
		n := degree + 1
		for i := range n {
			z := p.R * math.Cos(math.Pi*(float64(i)+0.5)/float64(n))
			assert.InDelta(t, sigmoid(z), p.Eval(z), 1e-12, "degree %d equals σ at node %d (z = %g)", degree, i, z)
		}
		for _, z := range []float64{0.3, 2, 7.5, 13} {
			assert.InDelta(t, 1, p.Eval(z)+p.Eval(-z), 1e-12, "odd around 1/2 at %g", z)
		}
	}
}

func TestSigmoidErrorFallsWithDegree(t *testing.T) {
	prev := math.Inf(1)
	for degree := 3; degree <= 25; degree += 2 {
		p, err := fitSigmoid(14, degree)
		require.NoError(t, err)
		e, _ := p.maxError(20000)
		assert.Less(t, e, prev, "degree %d", degree)
		prev = e
	}
}

func TestFitSigmoidRefuses(t *testing.T) {
	for _, tt := range []struct {
		r      float64
		degree int
		want   string
	}{
		{0, 5, "half-width 0"},
		{math.Inf(1), 5, "half-width +Inf"},
		{math.NaN(), 5, "half-width NaN"},
		{8, 4, "degree 4"},
		{8, -1, "degree -1"},
		{8, 65, "degree 65"},
	} {
		_, err := fitSigmoid(tt.r, tt.degree)
		assert.ErrorContains(t, err, tt.want)
	}
}

// TestPredictionSigmoid checks the README's statements about the chosen
// polynomial: its error on the interval, its cost, and that Pond encodes
// its constants and keeps its intermediate values small.
func TestPredictionSigmoid(t *testing.T) {
	p := predictionSigmoid()
	assert.Equal(t, sigmoidDegree, p.Degree())
	assert.Equal(t, 10, p.Products(), "the square, 8 steps of the recurrence and the final product")

	maxErr, _ := p.maxError(100000)
	assert.Less(t, maxErr, 7.1e-3, "README: max error 7.07e-3")
	r := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		z := p.R * (2*r.Float64() - 1)
		require.LessOrEqual(t, math.Abs(p.Eval(z)-sigmoid(z)), maxErr*1.001, "at z = %g, between the grid's points", z)
	}

	proto, err := pond.New(pond.Config{})
	require.NoError(t, err)
	require.NoError(t, p.checkConstants(proto))
	// Every value of a fixed-point evaluation stays far inside the range.
	a := newFixedArith(proto)
	for i := 0; i <= 10000; i++ {
		z := p.R * (2*float64(i)/10000 - 1)
		e, err := a.encode(z)
		require.NoError(t, err)
		got := decode(evalSigmoid(p, arith[int64](a), e), a.frac)
		assert.InDelta(t, p.Eval(z), got, 2e-4, "fixed point at z = %g", z)
	}
	require.NoError(t, a.err)
	assert.Less(t, a.peak, 4.01, "largest intermediate value of the polynomial: v² ≤ 4")
}

func TestCheckConstants(t *testing.T) {
	proto, err := pond.New(pond.Config{})
	require.NoError(t, err)
	tiny, err := fitSigmoid(1e-4, 3)
	require.NoError(t, err)
	assert.ErrorContains(t, tiny.checkConstants(proto), "outside the fixed-point range")
	// On [−0.01, 0.01] σ is a straight line: the cubic term encodes to zero.
	flat, err := fitSigmoid(0.01, 3)
	require.NoError(t, err)
	assert.ErrorContains(t, flat.checkConstants(proto), "would encode to zero")
	assert.ErrorContains(t, sigmoidApprox{R: 1}.checkConstants(proto), "0 coefficients")
}
