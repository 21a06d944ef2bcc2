package pond

import (
	"bytes"
	"crypto/rand"
	"encoding"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/ops"
)

// Test configurations: the default, a wide range, and a fine resolution
// with a narrow range. They are insecure only in that the tests draw all
// randomness from seeded streams.
var beaverConfigs = []Config{{}, {FracBits: 12}, {FracBits: 20, StatGap: 16}}

// forEachMode runs f under every test configuration in both truncation
// modes, each with its own reproducible randomness.
func forEachMode(t *testing.T, f func(t *testing.T, p *Protocol, r *mrand.Rand, rng io.Reader)) {
	for _, mode := range []Truncation{Interactive, Local} {
		for _, cfg := range beaverConfigs {
			cfg.Truncation = mode
			p := newProtocol(t, cfg)
			t.Run(fmt.Sprintf("%v/f=%d", mode, p.Config().FracBits), func(t *testing.T) {
				seed := byte(16*int(mode) + cfg.FracBits)
				f(t, p, mrand.New(mrand.NewPCG(uint64(seed), 1)), newTestRand(seed))
			})
		}
	}
}

// shareFloat encodes x and shares it: server0 holds the seed's stream,
// server1 the masked values.
func shareFloat(t testing.TB, p *Protocol, rng io.Reader, d Domain, x []float64) (s0, s1 Share) {
	s1 = make(Share, len(x))
	seed, err := p.EncodeAndShare(rng, d, s1, x)
	require.NoError(t, err)
	s0 = make(Share, len(x))
	SeedShare(s0, seed, d)
	return s0, s1
}

// wire sends one message through its wire form, checking its size.
func wire(t testing.TB, from encoding.BinaryMarshaler, to encoding.BinaryUnmarshaler, size int, what string) {
	b, err := from.MarshalBinary()
	require.NoError(t, err)
	require.Len(t, b, size, "bytes of %s", what)
	require.NoError(t, to.UnmarshalBinary(b), what)
}

// beaverProduct runs the three players of one private product of shape s
// on the shares of x and y, every message through its wire form, and
// returns the servers' shares of the untruncated product.
func beaverProduct(t testing.TB, rng io.Reader, d Domain, s TripleShape, x0, x1, y0, y1 Share) (z0, z1 Product) {
	// server2
	var producer Producer
	var to0 TripleMessage0
	var to1 TripleMessage1
	require.NoError(t, producer.Triple(rng, d, s, &to0, &to1))

	// server0 and server1
	var got0 TripleMessage0
	var got1 TripleMessage1
	wire(t, &to0, &got0, s.Triple0Size(), "triple to server0")
	wire(t, &to1, &got1, s.Triple1Size(), "triple to server1")
	var t0, t1 TripleShare
	require.NoError(t, got0.Expand(&t0, d, s))
	require.NoError(t, got1.Expand(&t1, d, s))
	assert.Equal(t, Server0, t0.Party())
	assert.Equal(t, Server1, t1.Party())

	var open0, open1, in0, in1 Opening
	require.NoError(t, t0.Open(&open0, x0, y0))
	require.NoError(t, t1.Open(&open1, x1, y1))
	wire(t, &open0, &in1, s.OpeningSize(), "opening to server1")
	wire(t, &open1, &in0, s.OpeningSize(), "opening to server0")

	z0, z1 = make(Product, s.ZLen()), make(Product, s.ZLen())
	require.NoError(t, t0.Finish(z0, &open0, &in0))
	require.NoError(t, t1.Finish(z1, &open1, &in1))
	return z0, z1
}

// truncateReveal truncates the shared product z0 + z1 in the configured
// mode and reveals it.
func truncateReveal(t testing.TB, p *Protocol, rng io.Reader, d Domain, z0, z1 Product) []float64 {
	t0, t1 := make(Share, len(z0)), make(Share, len(z1))
	switch p.Config().Truncation {
	case Interactive:
		var msg, got TruncationMessage
		require.NoError(t, p.TruncateSend(rng, d, t0, z0, &msg))
		wire(t, &msg, &got, SeedSize+8+8*len(z0), "truncation message")
		require.NoError(t, p.TruncateReceive(d, t1, z1, &got))
	case Local:
		p.TruncateLocal(0, t0, z0)
		p.TruncateLocal(1, t1, z1)
	}
	out := make([]float64, len(z0))
	require.NoError(t, p.Reveal(out, t0, t1))
	return out
}

// secure multiplies x and y privately (y is nil for a square), then
// applies reduce to each server's product share (nil for none), truncates
// and reveals.
func secure(t testing.TB, p *Protocol, rng io.Reader, s TripleShape, x, y []float64, reduce func(z Product) Product) []float64 {
	d := Domain{Session: "beaver", Iteration: 1}
	d.Tensor = 1
	x0, x1 := shareFloat(t, p, rng, d, x)
	d.Tensor = 2
	y0, y1 := shareFloat(t, p, rng, d, y)
	d.Tensor = 3
	z0, z1 := beaverProduct(t, rng, d, s, x0, x1, y0, y1)
	if reduce != nil {
		z0, z1 = reduce(z0), reduce(z1)
	}
	return truncateReveal(t, p, rng, d, z0, z1)
}

// The documented error bounds, with ulp = 2^-FracBits. Each input is
// encoded within ulp/2, so x̃ỹ − xy = x·δy + y·δx + δx·δy; the ring
// computes x̃ỹ exactly; truncation adds less than one ulp. A sum of K
// products truncated once adds the K encoding errors and one truncation.
// slack covers the float64 rounding of the reference itself.
func productBound(ulp, x, y float64) float64 {
	return (math.Abs(x)+math.Abs(y))*ulp/2 + ulp*ulp/4
}

func slack(bound float64, terms int) float64 { return float64(terms) * bound * 0x1p-50 }

func sign(r *mrand.Rand) float64 {
	if r.IntN(2) == 0 {
		return -1
	}
	return 1
}

// mulInputs draws n pairs whose products stay in the range (−bound,
// bound): factors at the input range's edge, products at its edge,
// tiny, moderate and lopsided ones, of both signs.
func mulInputs(r *mrand.Rand, n int, bound float64) (x, y []float64) {
	x, y = make([]float64, n), make([]float64, n)
	root := math.Sqrt(bound)
	for i := range n {
		u, v := r.Float64(), r.Float64()
		switch i % 5 {
		case 0: // x at the edge of the input range, |y| < 1
			x[i], y[i] = sign(r)*bound*(0.999+0.0009*u), (2*v-1)*0.999
		case 1: // the product at the edge of the range
			x[i], y[i] = sign(r)*root*(0.99+0.0099*u), sign(r)*root*(0.99+0.0099*v)
		case 2:
			x[i], y[i] = (2*u-1)*1e-3, (2*v-1)*1e-3
		case 3:
			m := min(10, root/2)
			x[i], y[i] = (2*u-1)*m, (2*v-1)*m
		default:
			x[i], y[i] = (2*u-1)*bound/16, (2*v-1)*15.8
		}
	}
	return x, y
}

func TestSecureMul(t *testing.T) {
	forEachMode(t, func(t *testing.T, p *Protocol, r *mrand.Rand, rng io.Reader) {
		ulp, bound := p.Config().Resolution(), p.Config().Bound()
		for _, n := range []int{1, 7, 1000} {
			x, y := mulInputs(r, n, bound)
			got := secure(t, p, rng, MulShape(n), x, y, nil)
			for i := range x {
				want := x[i] * y[i]
				tol := productBound(ulp, x[i], y[i]) + ulp + slack(bound, 1)
				require.InDelta(t, want, got[i], tol, "%v·%v, element %d of %d", x[i], y[i], i, n)
			}
		}
	})
}

func TestSecureSquare(t *testing.T) {
	forEachMode(t, func(t *testing.T, p *Protocol, r *mrand.Rand, rng io.Reader) {
		ulp, bound := p.Config().Resolution(), p.Config().Bound()
		root := math.Sqrt(bound)
		for _, n := range []int{1, 9, 1000} {
			x := make([]float64, n)
			for i := range x {
				switch u := r.Float64(); i % 3 {
				case 0: // the square at the edge of the range
					x[i] = sign(r) * root * (0.999 + 0.00099*u)
				case 1:
					x[i] = (2*u - 1) * 1e-3
				default:
					x[i] = (2*u - 1) * root
				}
			}
			got := secure(t, p, rng, SquareShape(n), x, nil, nil)
			for i := range x {
				tol := productBound(ulp, x[i], x[i]) + ulp + slack(bound, 1)
				require.InDelta(t, x[i]*x[i], got[i], tol, "%v², element %d of %d", x[i], i, n)
			}
		}
	})
}

// matMulInputs draws x (m×k) and y (k×n) whose products stay in range:
// entries up to √(bound/k), with row 0 of x all large and positive, row 1
// all large and negative, and column 0 of y all large, so that the
// product's first column reaches the range's edge on both sides.
func matMulInputs(r *mrand.Rand, m, k, n int, bound float64) (x, y []float64) {
	lim := math.Sqrt(bound/float64(k)) * 0.999
	x, y = make([]float64, m*k), make([]float64, k*n)
	for i := range x {
		x[i] = (2*r.Float64() - 1) * lim
	}
	for i := range y {
		y[i] = (2*r.Float64() - 1) * lim
	}
	for l := range k {
		x[l] = lim * (0.999 + 0.001*r.Float64())
		if m > 1 {
			x[k+l] = -lim * (0.999 + 0.001*r.Float64())
		}
		y[l*n] = lim * (0.999 + 0.001*r.Float64())
	}
	return x, y
}

// checkMatMul compares got with x·y, element by element, within the
// documented bound of a matrix product.
func checkMatMul(t *testing.T, p *Protocol, x, y, got []float64, m, k, n int, what string) {
	ulp, bound := p.Config().Resolution(), p.Config().Bound()
	for i := range m {
		for j := range n {
			var want, tol float64
			for l := range k {
				want += x[i*k+l] * y[l*n+j]
				tol += productBound(ulp, x[i*k+l], y[l*n+j])
			}
			tol += ulp + slack(bound, k)
			require.InDelta(t, want, got[i*n+j], tol, "%s %d×%d·%d×%d, element (%d, %d)", what, m, k, k, n, i, j)
			require.Less(t, math.Abs(want), bound, "the test keeps products in range")
		}
	}
}

func TestSecureMatMul(t *testing.T) {
	forEachMode(t, func(t *testing.T, p *Protocol, r *mrand.Rand, rng io.Reader) {
		bound := p.Config().Bound()
		// Shapes cross the kernel's tiles of 128 rows and 256 columns.
		for _, s := range [][3]int{{1, 1, 1}, {3, 5, 2}, {17, 33, 9}, {5, 130, 260}} {
			m, k, n := s[0], s[1], s[2]
			x, y := matMulInputs(r, m, k, n, bound)
			got := secure(t, p, rng, MatMulShape(m, k, n), x, y, nil)
			checkMatMul(t, p, x, y, got, m, k, n, "matmul")
		}
		// An outer product of factors at the input range's edge with
		// factors below one.
		x := []float64{bound * 0.9999, -bound * 0.9999, 3}
		y := []float64{0.999, -0.5, 1e-3, -0.999}
		got := secure(t, p, rng, MatMulShape(3, 1, 4), x, y, nil)
		checkMatMul(t, p, x, y, got, 3, 1, 4, "outer product")
	})
}

// A product's shares can be summed on each server before the one
// truncation, along either axis (TF Encrypted's reduce_sum of a mul).
func TestSecureMulReduceSum(t *testing.T) {
	forEachMode(t, func(t *testing.T, p *Protocol, r *mrand.Rand, rng io.Reader) {
		ulp, bound := p.Config().Resolution(), p.Config().Bound()
		const rows, cols = 6, 40
		// Sums of up to 40 products: entries up to √(bound/40), row 0 of
		// both factors large and positive, so its sum nears the edge.
		lim := math.Sqrt(bound/cols) * 0.999
		x, y := make([]float64, rows*cols), make([]float64, rows*cols)
		for i := range x {
			x[i], y[i] = (2*r.Float64()-1)*lim, (2*r.Float64()-1)*lim
			if i < cols {
				x[i], y[i] = lim*(0.999+0.001*r.Float64()), -lim*(0.999+0.001*r.Float64())
			}
		}
		for _, axis := range []int{0, 1} {
			outLen := map[int]int{0: cols, 1: rows}[axis]
			got := secure(t, p, rng, MulShape(rows*cols), x, y, func(z Product) Product {
				sum := make(Product, outLen)
				ops.ReduceSum(sum, z, rows, cols, axis)
				return sum
			})
			require.Len(t, got, outLen)
			for o := range outLen {
				var want, tol float64
				terms := map[int]int{0: rows, 1: cols}[axis]
				for q := range terms {
					i := o*cols + q // along axis 1: row o
					if axis == 0 {
						i = q*cols + o // along axis 0: column o
					}
					want += x[i] * y[i]
					tol += productBound(ulp, x[i], y[i])
				}
				tol += ulp + slack(bound, terms)
				require.InDelta(t, want, got[o], tol, "sum along axis %d, element %d", axis, o)
			}
		}
	})
}

// A dot product two ways: an element-wise product summed on each server,
// or a 1×n·n×1 matrix product, whose triple sends one element of c
// instead of n.
func TestSecureDot(t *testing.T) {
	forEachMode(t, func(t *testing.T, p *Protocol, r *mrand.Rand, rng io.Reader) {
		ulp, bound := p.Config().Resolution(), p.Config().Bound()
		for _, n := range []int{1, 50, 300} {
			x, y := matMulInputs(r, 1, n, 1, bound)
			if r.IntN(2) == 0 {
				for i := range y {
					y[i] = -y[i]
				}
			}
			var want, tol float64
			for i := range x {
				want += x[i] * y[i]
				tol += productBound(ulp, x[i], y[i])
			}
			tol += ulp + slack(bound, n)

			viaMul := secure(t, p, rng, MulShape(n), x, y, func(z Product) Product {
				sum := make(Product, 1)
				ops.ReduceSum(sum, z, 1, n, 1)
				return sum
			})
			viaMatMul := secure(t, p, rng, MatMulShape(1, n, 1), x, y, nil)
			require.InDelta(t, want, viaMul[0], tol, "dot of %d as mul and sum", n)
			require.InDelta(t, want, viaMatMul[0], tol, "dot of %d as matmul", n)
		}
		assert.Equal(t, SeedSize+8+8, MatMulShape(1, 300, 1).Triple1Size())
		assert.Equal(t, SeedSize+8+8*300, MulShape(300).Triple1Size())
	})
}

// What server2 sends depends on no input: by construction, the producer
// takes a shape, randomness and a domain, nothing else; and the same
// randomness gives the same messages, which serve any inputs.
func TestProducerSeesNoInput(t *testing.T) {
	var _ func(*Producer, io.Reader, Domain, TripleShape, *TripleMessage0, *TripleMessage1) error = (*Producer).Triple

	p := newProtocol(t, Config{})
	s := MatMulShape(2, 3, 2)
	d := Domain{Session: "blind", Tensor: 7}
	draw := func() (b0, b1 []byte) {
		var producer Producer
		var to0 TripleMessage0
		var to1 TripleMessage1
		require.NoError(t, producer.Triple(newTestRand(42), d, s, &to0, &to1))
		b0, _ = to0.MarshalBinary()
		b1, _ = to1.MarshalBinary()
		return b0, b1
	}
	first0, first1 := draw()
	for _, x := range [][]float64{{1, 2, 3, 4, 5, 6}, {-500, 0, 0.25, 7, -1e-3, 30}} {
		y := []float64{1, -1, 2, 0.5, -3, 0}
		b0, b1 := draw()
		assert.Equal(t, first0, b0)
		assert.Equal(t, first1, b1)

		// The same randomness serves these inputs: the product is right.
		d.Tensor = 1
		x0, x1 := shareFloat(t, p, rand.Reader, d, x)
		d.Tensor = 2
		y0, y1 := shareFloat(t, p, rand.Reader, d, y)
		d.Tensor = 7
		z0, z1 := beaverProduct(t, newTestRand(42), d, s, x0, x1, y0, y1)
		got := truncateReveal(t, p, rand.Reader, d, z0, z1)
		checkMatMul(t, p, x, y, got, 2, 3, 2, "with the fixed triple")
	}
}

// TestOpeningIsUniform shares secrets many times and checks that what
// each server receives in the online step, the other's share of e and f,
// and what they learn together, e and f themselves, are spread uniformly
// whatever the secret: the top byte of each falls evenly in 256 buckets
// (chi-square, 255 degrees of freedom, critical value about 370 at
// p = 1e-6), as for input shares in TestServerViewIsUniform.
func TestOpeningIsUniform(t *testing.T) {
	p := newProtocol(t, Config{})
	const trials = 700 // of 64 elements each: 44,800 samples per histogram
	for _, s := range []TripleShape{MulShape(64), SquareShape(64), MatMulShape(8, 8, 8)} {
		for _, secret := range []float64{0, 1000, -0.25} {
			x := make([]float64, s.XLen())
			y := make([]float64, s.YLen())
			for i := range x {
				x[i] = secret
			}
			for i := range y {
				y[i] = -secret / 2
			}
			hists := map[string]*[256]int{}
			count := func(name string, v []uint64) {
				h := hists[name]
				if h == nil {
					h = new([256]int)
					hists[name] = h
				}
				for _, w := range v {
					h[w>>56]++
				}
			}
			for i := range trials {
				d := Domain{Session: "uniform", Iteration: uint64(i), Tensor: 1}
				x0, x1 := shareFloat(t, p, rand.Reader, d, x)
				d.Tensor = 2
				y0, y1 := shareFloat(t, p, rand.Reader, d, y)
				d.Tensor = 3
				var producer Producer
				var to0 TripleMessage0
				var to1 TripleMessage1
				require.NoError(t, producer.Triple(rand.Reader, d, s, &to0, &to1))
				var t0, t1 TripleShare
				require.NoError(t, to0.Expand(&t0, d, s))
				require.NoError(t, to1.Expand(&t1, d, s))
				var o0, o1 Opening
				require.NoError(t, t0.Open(&o0, x0, y0))
				require.NoError(t, t1.Open(&o1, x1, y1))

				count("e from server0", o0.E)
				count("e from server1", o1.E)
				e := make([]uint64, len(o0.E))
				ops.Add(e, o0.E, o1.E)
				count("opened e", e)
				if s.YLen() > 0 {
					count("f from server0", o0.F)
					count("f from server1", o1.F)
					f := make([]uint64, len(o0.F))
					ops.Add(f, o0.F, o1.F)
					count("opened f", f)
				}
			}
			for name, h := range hists {
				assert.Less(t, chiSquare(h[:], trials*s.XLen()), 370.0, "%v: %s, secret %v", s, name, secret)
			}
		}
	}
}

// The bytes of every message of one Mul and one MatMul, against the
// formulas of the README.
func TestBeaverWireBytes(t *testing.T) {
	p := newProtocol(t, Config{})
	const n = 1000
	const m, k, nn = 3, 5, 2
	for _, tc := range []struct {
		s                         TripleShape
		triple0, triple1, opening int
		truncation                int
	}{
		// Mul of n: 32 | 32 + 8 + 8n | 2·(8 + 8n) | 32 + 8 + 8n
		{MulShape(n), 32, 32 + 8 + 8*n, 2 * (8 + 8*n), 32 + 8 + 8*n},
		// MatMul m×k·k×n: 32 | 32 + 8 + 8mn | 8 + 8mk + 8 + 8kn | 32 + 8 + 8mn
		{MatMulShape(m, k, nn), 32, 32 + 8 + 8*m*nn, 8 + 8*m*k + 8 + 8*k*nn, 32 + 8 + 8*m*nn},
		// Square of n: no f
		{SquareShape(n), 32, 32 + 8 + 8*n, 8 + 8*n + 8, 32 + 8 + 8*n},
	} {
		s := tc.s
		assert.Equal(t, tc.triple0, s.Triple0Size(), "%v", s)
		assert.Equal(t, tc.triple1, s.Triple1Size(), "%v", s)
		assert.Equal(t, tc.opening, s.OpeningSize(), "%v", s)

		// The real messages have these sizes (wire checks each).
		x := make([]float64, s.XLen())
		y := make([]float64, s.YLen())
		for i := range x {
			x[i] = float64(i%7) - 3
		}
		d := Domain{Session: "bytes", Tensor: 1}
		x0, x1 := shareFloat(t, p, rand.Reader, d, x)
		d.Tensor = 2
		y0, y1 := shareFloat(t, p, rand.Reader, d, y)
		d.Tensor = 3
		z0, _ := beaverProduct(t, rand.Reader, d, s, x0, x1, y0, y1)
		var msg TruncationMessage
		require.NoError(t, p.TruncateSend(rand.Reader, d, make(Share, len(z0)), z0, &msg))
		b, err := msg.MarshalBinary()
		require.NoError(t, err)
		assert.Len(t, b, tc.truncation, "%v: truncation message", s)
	}
}

func TestTripleShapeValidate(t *testing.T) {
	for _, s := range []TripleShape{MulShape(1), SquareShape(5), MatMulShape(1, 1, 1), MatMulShape(100, 784, 512),
		MulShape(MaxTripleElements), MatMulShape(1<<15, 1<<15, 1)} {
		assert.NoError(t, s.Validate(), "%v", s)
	}
	for _, s := range []TripleShape{
		{}, MulShape(0), SquareShape(-1), MatMulShape(0, 3, 3), MatMulShape(3, 3, -1),
		{Kind: ProductMul, M: 2, N: 3}, {Kind: 9, N: 1},
		MulShape(MaxTripleElements + 1), MatMulShape(1<<16, 1<<15, 1), MatMulShape(1, 1<<20, 1<<20),
		MatMulShape(math.MaxInt, math.MaxInt, math.MaxInt),
	} {
		assert.ErrorIs(t, s.Validate(), ErrShape, "%+v", s)
	}
	s := MatMulShape(2, 3, 4)
	assert.Equal(t, "matmul[2×3·3×4]", s.String())
	assert.Equal(t, [3]int{6, 12, 8}, [3]int{s.XLen(), s.YLen(), s.ZLen()})
	s = SquareShape(5)
	assert.Equal(t, "square[5]", s.String())
	assert.Equal(t, [3]int{5, 0, 5}, [3]int{s.XLen(), s.YLen(), s.ZLen()})
	assert.Equal(t, "mul[5]", MulShape(5).String())
	assert.Equal(t, "ProductKind(9)", ProductKind(9).String())

	var producer Producer
	assert.ErrorIs(t, producer.Triple(rand.Reader, Domain{}, MulShape(0), &TripleMessage0{}, &TripleMessage1{}), ErrShape)
	var ts TripleShare
	assert.ErrorIs(t, (&TripleMessage0{}).Expand(&ts, Domain{}, SquareShape(0)), ErrShape)
	assert.ErrorIs(t, (&TripleMessage1{}).Expand(&ts, Domain{}, MatMulShape(0, 1, 1)), ErrShape)
}

// A triple serves one product: a second opening, a finish before the
// opening or a second finish are refused; so are openings and triple
// messages whose sizes do not fit the shape. A TripleShare expanded again
// serves the next product.
func TestTripleServesOneProduct(t *testing.T) {
	s := MulShape(3)
	d := Domain{Session: "once"}
	var producer Producer
	var to0 TripleMessage0
	var to1 TripleMessage1
	require.NoError(t, producer.Triple(rand.Reader, d, s, &to0, &to1))

	var t0, t1 TripleShare
	var o0, o1 Opening
	assert.ErrorContains(t, t0.Open(&o0, Share{1, 2, 3}, Share{4, 5, 6}), "never expanded")

	short := TripleMessage1{Seed: to1.Seed, C: to1.C[:2]}
	assert.ErrorIs(t, short.Expand(&t1, d, s), ErrWire)
	assert.ErrorIs(t, to1.Expand(&t1, d, MulShape(4)), ErrWire, "a triple for another shape")

	require.NoError(t, to0.Expand(&t0, d, s))
	require.NoError(t, to1.Expand(&t1, d, s))
	z := make(Product, 3)
	assert.ErrorIs(t, t0.Finish(z, &o0, &o1), ErrTripleUsed, "finish before open")
	require.NoError(t, t0.Open(&o0, Share{1, 2, 3}, Share{4, 5, 6}))
	assert.ErrorIs(t, t0.Open(&o0, Share{1, 2, 4}, Share{4, 5, 6}), ErrTripleUsed, "second opening")
	assert.Panics(t, func() { _ = t1.Open(&o1, Share{1, 2}, Share{4, 5, 6}) }, "own share of the wrong size")
	require.NoError(t, t1.Open(&o1, Share{7, 8, 9}, Share{1, 1, 1}))

	bad := Opening{E: o1.E, F: o1.F[:1]}
	err := t0.Finish(z, &o0, &bad)
	assert.ErrorIs(t, err, ErrWire)
	assert.ErrorContains(t, err, "from server1")
	in0 := Opening{E: append(Share(nil), o1.E...), F: append(Share(nil), o1.F...)}
	require.NoError(t, t0.Finish(z, &o0, &in0))
	assert.ErrorIs(t, t0.Finish(z, &o0, &in0), ErrTripleUsed, "second finish")
	assert.ErrorIs(t, t0.Open(&o0, Share{1, 2, 3}, Share{4, 5, 6}), ErrTripleUsed, "open after finish")

	// Expanding the next triple into t0 makes it ready again.
	require.NoError(t, producer.Triple(rand.Reader, d, SquareShape(2), &to0, &to1))
	require.NoError(t, to0.Expand(&t0, d, SquareShape(2)))
	assert.NoError(t, t0.Open(&o0, Share{1, 2}, nil))
	assert.Empty(t, o0.F)
}

// Triple streams are apart from the streams of inputs and truncation, and
// server0's from server1's: no purpose is used twice.
func TestTriplePurposesAreDistinct(t *testing.T) {
	seen := map[Purpose]string{}
	for name, p := range map[string]Purpose{
		"input": PurposeInput, "truncation": PurposeTruncation, "rerandom": PurposeRerandom,
		"a0": purposeTriple0A, "b0": purposeTriple0B, "c0": purposeTriple0C,
		"a1": purposeTriple1A, "b1": purposeTriple1B,
	} {
		other, dup := seen[p]
		require.False(t, dup, "purpose %d is both %s and %s", p, name, other)
		seen[p] = name
	}
}

func TestBeaverWireRoundTrip(t *testing.T) {
	m0 := TripleMessage0{Seed: Seed{1, 2, 3, 31: 4}}
	var g0 TripleMessage0
	wire(t, &m0, &g0, SeedSize, "triple to server0")
	assert.Equal(t, m0, g0)
	assert.ErrorIs(t, g0.UnmarshalBinary(make([]byte, SeedSize+1)), ErrWire)
	assert.ErrorIs(t, g0.UnmarshalBinary(nil), ErrWire)

	m1 := TripleMessage1{Seed: Seed{9, 31: 8}, C: Share{1, math.MaxUint64, 0}}
	var g1 TripleMessage1
	wire(t, &m1, &g1, SeedSize+8+24, "triple to server1")
	assert.Equal(t, m1, g1)
	b, _ := m1.MarshalBinary()
	assert.ErrorIs(t, g1.UnmarshalBinary(b[:SeedSize-1]), ErrWire)
	assert.ErrorIs(t, g1.UnmarshalBinary(b[:len(b)-1]), ErrWire, "truncated c")
	assert.ErrorIs(t, g1.UnmarshalBinary(append(bytes.Clone(b), 0)), ErrWire, "trailing byte")

	o := Opening{E: Share{5, 6}, F: Share{7}}
	var g Opening
	wire(t, &o, &g, 16+24, "opening")
	assert.Equal(t, o, g)
	b, _ = o.MarshalBinary()
	assert.ErrorIs(t, g.UnmarshalBinary(b[:7]), ErrWire)
	assert.ErrorIs(t, g.UnmarshalBinary(b[:len(b)-1]), ErrWire, "truncated f")
	assert.ErrorIs(t, g.UnmarshalBinary(append(bytes.Clone(b), 1)), ErrWire, "trailing byte")
	huge := bytes.Clone(b)
	huge[7] = 0x80 // e announces 2^63 + 2 elements
	assert.ErrorIs(t, g.UnmarshalBinary(huge), ErrWire)
	assert.ErrorContains(t, g.UnmarshalBinary(huge), "opening, e")

	sq := Opening{E: Share{5}}
	wire(t, &sq, &g, 16+8, "opening of a square")
	assert.Equal(t, Share{5}, g.E)
	assert.Empty(t, g.F)
}

func FuzzTripleMessage0Unmarshal(f *testing.F) {
	f.Add(make([]byte, SeedSize))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var m TripleMessage0
		if m.UnmarshalBinary(data) == nil {
			out, err := m.MarshalBinary()
			require.NoError(t, err)
			assert.Equal(t, data, out)
		}
	})
}

func FuzzTripleMessage1Unmarshal(f *testing.F) {
	m := TripleMessage1{C: Share{5, 6}}
	b, _ := m.MarshalBinary()
	f.Add(b)
	f.Add(b[:SeedSize+8])
	f.Fuzz(func(t *testing.T, data []byte) {
		var m TripleMessage1
		if m.UnmarshalBinary(data) == nil {
			out, err := m.MarshalBinary()
			require.NoError(t, err)
			assert.Equal(t, data, out)
		}
	})
}

func FuzzOpeningUnmarshal(f *testing.F) {
	o := Opening{E: Share{1, 2}, F: Share{3}}
	b, _ := o.MarshalBinary()
	f.Add(b)
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, data []byte) {
		var o Opening
		if o.UnmarshalBinary(data) == nil {
			out, err := o.MarshalBinary()
			require.NoError(t, err)
			assert.Equal(t, data, out)
		}
	})
}

// BenchmarkSecureMatMul is the private product of a batch of 100 MNIST
// images and the first layer's weights, 100×784·784×512, in its phases:
// the crypto producer's triple, the servers' expansion of their triple
// messages, and the online step of both servers (openings, their receipt
// as a copy, the products and interactive truncation). Compare with
// ops.BenchmarkMatMul/float64, the plaintext product with the same loops.
func BenchmarkSecureMatMul(b *testing.B) {
	const m, k, n = 100, 784, 512
	p := newProtocol(b, Config{})
	s := MatMulShape(m, k, n)
	d := Domain{Session: "bench"}
	rng := newTestRand(9)
	var producer Producer
	var to0 TripleMessage0
	var to1 TripleMessage1
	b.Run("triple", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := producer.Triple(rng, d, s, &to0, &to1); err != nil {
				b.Fatal(err)
			}
		}
	})
	var t0, t1 TripleShare
	b.Run("expand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := to0.Expand(&t0, d, s); err != nil {
				b.Fatal(err)
			}
			if err := to1.Expand(&t1, d, s); err != nil {
				b.Fatal(err)
			}
		}
	})
	x0, x1, y0, y1 := make(Share, m*k), make(Share, m*k), make(Share, k*n), make(Share, k*n)
	for _, v := range []Share{x0, x1, y0, y1} {
		Expand(v, Seed{byte(len(v))}, d)
	}
	var o0, o1, in0, in1 Opening
	z0, z1, r0, r1 := make(Product, m*n), make(Product, m*n), make(Share, m*n), make(Share, m*n)
	var trunc TruncationMessage
	b.Run("online", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			if err := to0.Expand(&t0, d, s); err != nil {
				b.Fatal(err)
			}
			if err := to1.Expand(&t1, d, s); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			_ = t0.Open(&o0, x0, y0)
			_ = t1.Open(&o1, x1, y1)
			in0.E, in0.F = append(in0.E[:0], o1.E...), append(in0.F[:0], o1.F...)
			in1.E, in1.F = append(in1.E[:0], o0.E...), append(in1.F[:0], o0.F...)
			if err := t0.Finish(z0, &o0, &in0); err != nil {
				b.Fatal(err)
			}
			if err := t1.Finish(z1, &o1, &in1); err != nil {
				b.Fatal(err)
			}
			if err := p.TruncateSend(rng, d, r0, z0, &trunc); err != nil {
				b.Fatal(err)
			}
			if err := p.TruncateReceive(d, r1, z1, &trunc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
