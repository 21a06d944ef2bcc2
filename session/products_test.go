package session

import (
	"context"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/internal/par"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
)

// shaped returns an input function producing one tensor of the given
// shape and values.
func shaped(shape graph.Shape, v []float64) graph.Func {
	return func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
		return []*tensor.Dense{tensor.New(tensor.WithShape(shapeOf(shape)...), tensor.WithBacking(slices.Clone(v)))}, nil
	}
}

// edgeValues draws n values in (−bound, bound) of both signs: a quarter
// within 0.1% of ±bound, a quarter small, the rest anywhere.
func edgeValues(r *mrand.Rand, n int, bound float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		sign := 1.0
		if r.IntN(2) == 0 {
			sign = -1
		}
		switch i % 4 {
		case 0:
			v[i] = sign * bound * (1 - 1e-3*r.Float64())
		case 1:
			v[i] = sign * bound * 1e-3 * r.Float64()
		default:
			v[i] = sign * bound * r.Float64()
		}
	}
	return v
}

// verbCase is one verb under test: its operands' shapes (a public operand
// is held by the model owner, a private one by its own data owner), the
// bound of every operand's values given the range 2^IntBits, how to build
// it, and its float64 reference with the error bound pond's README
// documents for each element.
type verbCase struct {
	name   string
	shapes []graph.Shape
	public []bool // by operand; nil: all private
	bound  func(rangeBound float64) float64
	build  func(g *graph.Graph, in []any, rangeBound float64) *graph.Private
	ref    func(in [][]float64, ulp, rangeBound float64) (want, tol []float64)
}

func priv(x any) *graph.Private { return x.(*graph.Private) }
func pub(x any) *graph.Public   { return x.(*graph.Public) }

// The documented bounds (protocol/pond/README.md, "Error bounds"), with
// ulp = 2^-FracBits: each operand is encoded within ulp/2, the ring
// computes on the encodings exactly, truncation adds less than one ulp.

func refMul(x, y []float64, ulp float64) (want, tol []float64) {
	for i := range x {
		want = append(want, x[i]*y[i])
		tol = append(tol, (math.Abs(x[i])+math.Abs(y[i]))*ulp/2+ulp*ulp/4+ulp)
	}
	return want, tol
}

func refSquare(x []float64, ulp float64) (want, tol []float64) {
	for _, v := range x {
		want = append(want, v*v)
		tol = append(tol, math.Abs(v)*ulp+ulp*ulp/4+ulp)
	}
	return want, tol
}

// refMatMul is the m×k·k×n product, each element summed over k terms
// before one truncation.
func refMatMul(x, y []float64, m, k, n int, ulp float64) (want, tol []float64) {
	for i := range m {
		for j := range n {
			var sum, bound float64
			for l := range k {
				a, b := x[i*k+l], y[l*n+j]
				sum += a * b
				bound += (math.Abs(a) + math.Abs(b)) * ulp / 2
			}
			want = append(want, sum)
			tol = append(tol, bound+float64(k)*ulp*ulp/4+ulp)
		}
	}
	return want, tol
}

// refReduceSum sums the m×n matrix x along axis: exact in the ring, so
// only the encodings err.
func refReduceSum(x []float64, m, n, axis int, ulp float64) (want, tol []float64) {
	outer, inner := n, m
	at := func(o, i int) float64 { return x[i*n+o] }
	if axis == 1 {
		outer, inner = m, n
		at = func(o, i int) float64 { return x[o*n+i] }
	}
	for o := range outer {
		var sum float64
		for i := range inner {
			sum += at(o, i)
		}
		want = append(want, sum)
		tol = append(tol, float64(inner)*ulp/2)
	}
	return want, tol
}

// sqrtBound is the bound of both factors of a sum of k products that
// must stay in range.
func sqrtBound(k int) func(float64) float64 {
	return func(b float64) float64 { return math.Sqrt(b/float64(k)) * 0.9999 }
}

func fraction(n int) func(float64) float64 {
	return func(b float64) float64 { return b / float64(n) * 0.9999 }
}

func mulCase(s graph.Shape) verbCase {
	return verbCase{
		name: fmt.Sprintf("mul %v", s), shapes: []graph.Shape{s, s}, bound: sqrtBound(1),
		build: func(g *graph.Graph, in []any, _ float64) *graph.Private { return g.Mul(priv(in[0]), priv(in[1])) },
		ref:   func(in [][]float64, ulp, _ float64) ([]float64, []float64) { return refMul(in[0], in[1], ulp) },
	}
}

func squareCase(s graph.Shape) verbCase {
	return verbCase{
		name: fmt.Sprintf("square %v", s), shapes: []graph.Shape{s}, bound: sqrtBound(1),
		build: func(g *graph.Graph, in []any, _ float64) *graph.Private { return g.Square(priv(in[0])) },
		ref:   func(in [][]float64, ulp, _ float64) ([]float64, []float64) { return refSquare(in[0], ulp) },
	}
}

// matMulCase is the m×k·k×n product with the given operand public (-1:
// neither).
func matMulCase(m, k, n, public int) verbCase {
	c := verbCase{
		name:   fmt.Sprintf("matmul %d×%d·%d×%d", m, k, k, n),
		shapes: []graph.Shape{{m, k}, {k, n}}, bound: sqrtBound(k),
		build: func(g *graph.Graph, in []any, _ float64) *graph.Private { return g.MatMul(priv(in[0]), priv(in[1])) },
		ref: func(in [][]float64, ulp, _ float64) ([]float64, []float64) {
			return refMatMul(in[0], in[1], m, k, n, ulp)
		},
	}
	switch public {
	case 0:
		c.name = "public-" + c.name
		c.public = []bool{true, false}
		c.build = func(g *graph.Graph, in []any, _ float64) *graph.Private {
			return g.PublicMatMul(pub(in[0]), priv(in[1]))
		}
	case 1:
		c.name += "-public"
		c.public = []bool{false, true}
		c.build = func(g *graph.Graph, in []any, _ float64) *graph.Private {
			return g.MatMulPublic(priv(in[0]), pub(in[1]))
		}
	}
	return c
}

func dotCase(x graph.Shape) verbCase {
	k := x[len(x)-1]
	return verbCase{
		name: fmt.Sprintf("dot %v·(%d)", x, k), shapes: []graph.Shape{x, {k}}, bound: sqrtBound(k),
		build: func(g *graph.Graph, in []any, _ float64) *graph.Private { return g.Dot(priv(in[0]), priv(in[1])) },
		ref: func(in [][]float64, ulp, _ float64) ([]float64, []float64) {
			return refMatMul(in[0], in[1], x.Size()/k, k, 1, ulp)
		},
	}
}

func reduceSumCase(s graph.Shape, axis int) verbCase {
	m, n := 1, s[0]
	if len(s) == 2 {
		m, n = s[0], s[1]
	}
	count := s[axis]
	refAxis := axis
	if len(s) == 1 {
		refAxis = 1 // a vector sums as one row
	}
	return verbCase{
		name: fmt.Sprintf("reduce-sum %v axis %d", s, axis), shapes: []graph.Shape{s}, bound: fraction(count),
		build: func(g *graph.Graph, in []any, _ float64) *graph.Private { return g.ReduceSum(priv(in[0]), axis) },
		ref: func(in [][]float64, ulp, _ float64) ([]float64, []float64) {
			return refReduceSum(in[0], m, n, refAxis, ulp)
		},
	}
}

// verbCases covers every verb of a private forward pass, on several
// shapes, with factors and results near the edge of the range.
func verbCases() []verbCase {
	mulPublic := func(s graph.Shape) verbCase {
		c := mulCase(s)
		c.name = fmt.Sprintf("mul-public-tensor %v", s)
		c.public = []bool{false, true}
		c.build = func(g *graph.Graph, in []any, _ float64) *graph.Private {
			return g.MulPublicTensor(priv(in[0]), pub(in[1]))
		}
		return c
	}
	addBias := verbCase{
		name: "add-bias (4, 3)+(3)", shapes: []graph.Shape{{4, 3}, {3}}, bound: fraction(2),
		build: func(g *graph.Graph, in []any, _ float64) *graph.Private { return g.AddBias(priv(in[0]), priv(in[1])) },
		ref: func(in [][]float64, ulp, _ float64) (want, tol []float64) {
			for i, v := range in[0] {
				want = append(want, v+in[1][i%3])
				tol = append(tol, ulp)
			}
			return want, tol
		},
	}
	addConstant := func(s graph.Shape, frac float64) verbCase {
		return verbCase{
			name: fmt.Sprintf("add-constant %v + %g·range", s, frac), shapes: []graph.Shape{s}, bound: fraction(2),
			build: func(g *graph.Graph, in []any, b float64) *graph.Private { return g.AddConstant(priv(in[0]), frac*b) },
			ref: func(in [][]float64, ulp, b float64) (want, tol []float64) {
				for _, v := range in[0] {
					want = append(want, v+frac*b)
					tol = append(tol, ulp)
				}
				return want, tol
			},
		}
	}
	return []verbCase{
		mulCase(graph.Shape{1}), mulCase(graph.Shape{3, 5}), mulCase(graph.Shape{257}),
		{
			name: "mul (6) by itself", shapes: []graph.Shape{{6}}, bound: sqrtBound(1),
			build: func(g *graph.Graph, in []any, _ float64) *graph.Private { return g.Mul(priv(in[0]), priv(in[0])) },
			ref:   func(in [][]float64, ulp, _ float64) ([]float64, []float64) { return refMul(in[0], in[0], ulp) },
		},
		squareCase(graph.Shape{1}), squareCase(graph.Shape{4, 4}), squareCase(graph.Shape{300}),
		matMulCase(1, 1, 1, -1), matMulCase(3, 4, 2, -1), matMulCase(8, 33, 5, -1),
		matMulCase(3, 4, 2, 1), matMulCase(5, 16, 3, 1),
		matMulCase(2, 3, 4, 0), matMulCase(6, 7, 1, 0),
		mulPublic(graph.Shape{6}), mulPublic(graph.Shape{2, 5}),
		dotCase(graph.Shape{1}), dotCase(graph.Shape{50}), dotCase(graph.Shape{4, 9}),
		reduceSumCase(graph.Shape{10}, 0), reduceSumCase(graph.Shape{3, 5}, 0), reduceSumCase(graph.Shape{3, 5}, 1),
		addBias,
		addConstant(graph.Shape{5}, -0.4999), addConstant(graph.Shape{2, 3}, 1e-3),
	}
}

// buildVerb builds c's graph: each operand an input of its own, the verb,
// and an output to the model owner. It returns the op, the operands'
// values and where the revealed result lands.
func buildVerb(c verbCase, r *mrand.Rand, rangeBound float64) (*graph.Graph, *graph.Op, [][]float64, *[]float64) {
	g := graph.New()
	bound := c.bound(rangeBound)
	var in []any
	var vals [][]float64
	for i, s := range c.shapes {
		v := edgeValues(r, s.Size(), bound)
		vals = append(vals, v)
		if c.public != nil && c.public[i] {
			in = append(in, g.DefinePublicInput(players.ModelOwner, shaped(s, v), []graph.Shape{s})[0])
		} else {
			in = append(in, g.DefinePrivateInput(players.DataOwner(i), shaped(s, v), []graph.Shape{s})[0])
		}
	}
	got := new([]float64)
	op := g.DefineOutput(players.ModelOwner, []*graph.Private{c.build(g, in, rangeBound)}, func(_ context.Context, v []*tensor.Dense) error {
		*got = slices.Clone(v[0].Float64s())
		return nil
	})
	return g, op, vals, got
}

// TestSecureVerbsMatchFloat64 runs every verb of a private forward pass in
// a local session, on random operands of both signs with factors, sums
// and results near the edge of the range, and compares the revealed
// result with float64 within the bounds pond's README documents, in both
// truncation modes and two configurations.
func TestSecureVerbsMatchFloat64(t *testing.T) {
	for _, cfg := range []pond.Config{{}, {FracBits: 12}} {
		for _, mode := range []pond.Truncation{pond.Interactive, pond.Local} {
			cfg.Truncation = mode
			proto, err := pond.New(cfg)
			require.NoError(t, err)
			cfg := proto.Config()
			for i, c := range verbCases() {
				t.Run(fmt.Sprintf("%v/f=%d/%s", mode, cfg.FracBits, c.name), func(t *testing.T) {
					r := mrand.New(mrand.NewPCG(uint64(i), uint64(cfg.FracBits)))
					g, op, vals, got := buildVerb(c, r, cfg.Bound())
					require.NoError(t, g.Err())
					s, err := NewLocal(g, Options{Protocol: cfg, Rand: newSeededRand(byte(i))})
					require.NoError(t, err)
					defer s.Close()
					require.NoError(t, s.Run(context.Background(), op))
					want, tol := c.ref(vals, cfg.Resolution(), cfg.Bound())
					require.Len(t, *got, len(want))
					for k := range want {
						// The slack covers float64's own rounding of the reference.
						require.InDelta(t, want[k], (*got)[k], tol[k]*(1+1e-9)+1e-12, "element %d of %v, operands %v", k, *got, vals)
					}
				})
			}
		}
	}
}

// TestCryptoProducerReceivesNothing: the compiled plan of every verb gives
// the crypto producer steps only when the verb multiplies two private
// values, and then only the product's triple: it receives nothing, sends
// only to the two servers, and its steps read nothing, so what it sends
// depends on no input.
func TestCryptoProducerReceivesNothing(t *testing.T) {
	for i, c := range verbCases() {
		g, op, _, _ := buildVerb(c, mrand.New(mrand.NewPCG(1, uint64(i))), 1000)
		s, err := NewLocal(g, Options{})
		require.NoError(t, err)
		plan, err := s.Plan(op)
		require.NoError(t, err)
		require.NoError(t, s.Close())
		cp := players.CryptoProducer
		product := op.Node().Inputs()[0].Node.Kind().PrivateProduct()
		assert.Equal(t, product, slices.Contains(plan.Players(), cp), "%s: the crypto producer takes part only in private products", c.name)
		sent, received := messageOrder(plan)
		for link := range received {
			assert.NotEqual(t, cp, link[1], "%s: %s receives from %s", c.name, cp, link[0])
		}
		for _, st := range plan.steps[cp] {
			assert.IsType(t, &tripleStep{}, st, c.name)
			assert.Empty(t, st.reads(), "%s: %q reads", c.name, st)
			assert.Empty(t, st.writes(), "%s: %q writes", c.name, st)
		}
		if product {
			assert.Len(t, plan.steps[cp], 1, c.name)
			for link := range sent {
				if link[0] == cp {
					assert.Contains(t, []string{players.Server0, players.Server1}, link[1], c.name)
				}
			}
		}
	}
}

// TestProductBytesPerLink checks the bytes on every link of one private
// mul and one private matmul, with their inputs and output, against the
// table of pond's README ("Bytes on the wire"), in both truncation modes.
func TestProductBytesPerLink(t *testing.T) {
	const n = 10            // mul
	const m, k, p = 3, 4, 5 // matmul m×k·k×p
	for _, mode := range []pond.Truncation{pond.Interactive, pond.Local} {
		for _, tc := range []struct {
			name                         string
			c                            verbCase
			x, y                         uint64 // operands' elements
			triple1, opening, trunc, out uint64
		}{
			{"mul", mulCase(graph.Shape{n}), n, n, 40 + 8*n, 16 + 16*n, 40 + 8*n, 8 + 8*n},
			{"matmul", matMulCase(m, k, p, -1), m * k, k * p, 40 + 8*m*p, 16 + 8*m*k + 8*k*p, 40 + 8*m*p, 8 + 8*m*p},
		} {
			t.Run(fmt.Sprintf("%v/%s", mode, tc.name), func(t *testing.T) {
				g, op, _, _ := buildVerb(tc.c, mrand.New(mrand.NewPCG(2, 2)), 100)
				s, err := NewLocal(g, Options{Protocol: pond.Config{Truncation: mode}})
				require.NoError(t, err)
				defer s.Close()
				require.NoError(t, s.Run(context.Background(), op))
				type count struct{ messages, bytes uint64 }
				want := map[Link]count{
					// x's seed to server0 and masked to server1, y's the other way
					{"data-owner-0", "server0"}: {1, 32},
					{"data-owner-0", "server1"}: {1, 8 * tc.x}, // the masked words, no header
					{"data-owner-1", "server1"}: {1, 32},
					{"data-owner-1", "server0"}: {1, 8 * tc.y},
					{"server2", "server0"}:      {1, 32},
					{"server2", "server1"}:      {1, tc.triple1},
					{"server0", "server1"}:      {1, tc.opening},
					{"server1", "server0"}:      {1, tc.opening},
					{"server0", "model-owner"}:  {1, tc.out},
					{"server1", "model-owner"}:  {1, tc.out},
				}
				if mode == pond.Interactive {
					want[Link{"server0", "server1"}] = count{2, tc.opening + tc.trunc}
				}
				got := map[Link]count{}
				for _, l := range s.Stats() {
					got[l.Link] = count{l.Messages, l.Bytes}
				}
				assert.Equal(t, want, got)
			})
		}
	}
}

// productGraph is a small forward pass: data-owner-0's private batch x
// (2×3) times data-owner-1's private weights y (3×2) plus its private
// bias b (2), and x times the model owner's public weights w (3×2); both
// results are revealed to the model owner.
func productGraph(x, y, b, w []float64) (*graph.Graph, *graph.Op, *[][]float64) {
	g := graph.New()
	xp := g.DefinePrivateInput("data-owner-0", shaped(graph.Shape{2, 3}, x), []graph.Shape{{2, 3}})[0]
	yb := g.DefinePrivateInput("data-owner-1", func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
		return []*tensor.Dense{
			tensor.New(tensor.WithShape(3, 2), tensor.WithBacking(slices.Clone(y))),
			tensor.New(tensor.WithShape(2), tensor.WithBacking(slices.Clone(b))),
		}, nil
	}, []graph.Shape{{3, 2}, {2}})
	wp := g.DefinePublicInput("model-owner", shaped(graph.Shape{3, 2}, w), []graph.Shape{{3, 2}})[0]
	got := new([][]float64)
	op := g.DefineOutput("model-owner", []*graph.Private{g.AddBias(g.MatMul(xp, yb[0]), yb[1]), g.MatMulPublic(xp, wp)},
		func(_ context.Context, vs []*tensor.Dense) error {
			*got = nil
			for _, v := range vs {
				*got = append(*got, slices.Clone(v.Float64s()))
			}
			return nil
		})
	return g, op, got
}

// productValues are productGraph's operands for the tests.
func productValues() (x, y, b, w []float64) {
	r := mrand.New(mrand.NewPCG(3, 3))
	return edgeValues(r, 6, 10), edgeValues(r, 6, 10), edgeValues(r, 2, 100), edgeValues(r, 6, 10)
}

// TestProductPlanGolden prints the plan of productGraph: it shows the
// crypto producer's triple going to the servers, the openings they
// exchange, the public weights reaching both servers, and that the crypto
// producer receives nothing.
func TestProductPlanGolden(t *testing.T) {
	g, op, got := productGraph(productValues())
	s, err := NewLocal(g, Options{})
	require.NoError(t, err)
	defer s.Close()
	plan, err := s.Plan(op)
	require.NoError(t, err)
	assertGolden(t, "plan-products.txt", plan.String())

	require.NoError(t, s.Run(context.Background(), op), "the plan runs")
	x, y, b, w := productValues()
	proto, err := pond.New(pond.Config{})
	require.NoError(t, err)
	ulp := proto.Config().Resolution()
	xy, tolXY := refMatMul(x, y, 2, 3, 2, ulp)
	xw, tolXW := refMatMul(x, w, 2, 3, 2, ulp)
	for i := range xy {
		assert.InDelta(t, xy[i]+b[i%2], (*got)[0][i], tolXY[i]+ulp/2+1e-9, "x·y + b, element %d", i)
		assert.InDelta(t, xw[i], (*got)[1][i], tolXW[i]+1e-9, "x·w, element %d", i)
	}
}

// TestRemoteProductsMatchLocal runs productGraph with every player in a
// Remote session of its own, the crypto producer included, as separate
// hosts would, and gets what a Local session gets with the same seed,
// bit for bit, in two iterations. The crypto producer's own counts show
// that it only sends, to the servers.
func TestRemoteProductsMatchLocal(t *testing.T) {
	for _, mode := range []pond.Truncation{pond.Interactive, pond.Local} {
		t.Run(mode.String(), func(t *testing.T) {
			opts := func() Options {
				return Options{SessionID: "products", Rand: newSeededRand(11), Protocol: pond.Config{Truncation: mode}}
			}
			g, op, got := productGraph(productValues())
			s, err := NewLocal(g, opts())
			require.NoError(t, err)
			var local [][][]float64
			for range 2 {
				require.NoError(t, s.Run(context.Background(), op))
				local = append(local, *got)
			}
			require.NoError(t, s.Close())

			names := []string{"server0", "server1", "server2", "model-owner", "data-owner-0", "data-owner-1"}
			var remote [][][]float64
			var revealed *[][]float64
			var producer []LinkStats
			errs := runPlayers(t, names, func(p string, _ *transport.MemoryEndpoint) playerSetup {
				g, op, got := productGraph(productValues())
				if p == "model-owner" {
					revealed = got
				}
				return playerSetup{g: g, ops: []*graph.Op{op}, opts: opts()}
			}, func(p string, s *Remote, ops []*graph.Op) error {
				for range 2 {
					if err := runIterations(s, ops[0], 1, 10*time.Second); err != nil {
						return err
					}
					if p == "model-owner" {
						remote = append(remote, *revealed)
					}
				}
				if p == "server2" {
					producer = s.Stats()
				}
				return nil
			})
			for p, err := range errs {
				require.NoError(t, err, p)
			}
			assert.Equal(t, local, remote)
			require.NotEmpty(t, producer)
			for _, l := range producer {
				assert.Equal(t, "server2", l.From, "server2 receives nothing")
				assert.Contains(t, []string{"server0", "server1"}, l.To)
				assert.Equal(t, uint64(2), l.Messages, "one private product, two iterations: one triple message each")
			}
		})
	}
}

// tamperSends rewrites with tamper the payloads it sends under session
// (not the handshake's).
type tamperSends struct {
	transport.Transport
	session string
	tamper  func(to string, payload []byte) []byte
}

func (t *tamperSends) Send(ctx context.Context, to string, key transport.Key, payload []byte) error {
	if key.Session == t.session {
		payload = t.tamper(to, payload)
	}
	return t.Transport.Send(ctx, to, key, payload)
}

// TestProductMessagesOfTheWrongSize: a server refuses a triple message or
// an opening whose size is not the one its plan's shape gives, before
// decoding it, and names the sender and the edge.
func TestProductMessagesOfTheWrongSize(t *testing.T) {
	opening := pond.MulShape(4).OpeningSize()
	for _, tc := range []struct {
		name, liar string
		tamper     func(to string, payload []byte) []byte
		want       string
	}{
		{"triple one byte too long", "server2", func(to string, b []byte) []byte {
			if to == "server0" {
				return append(slices.Clone(b), 0)
			}
			return b
		}, `triple for mul#2 from "server2" (edge 4) has 33 bytes, want 32 for mul[4]`},
		{"opening one element short", "server1", func(to string, b []byte) []byte {
			if to == "server0" && len(b) == opening {
				return b[:len(b)-8]
			}
			return b
		}, fmt.Sprintf(`opening from "server1" (edge 7) has %d bytes, want %d for mul[4]`, opening-8, opening)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names := []string{"server0", "server1", "server2", "model-owner", "data-owner-0", "data-owner-1"}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			errs := runPlayers(t, names, func(p string, ep *transport.MemoryEndpoint) playerSetup {
				c := mulCase(graph.Shape{4})
				g, op, _, _ := buildVerb(c, mrand.New(mrand.NewPCG(1, 1)), 10)
				ps := playerSetup{g: g, ops: []*graph.Op{op}, opts: Options{SessionID: "liar", Players: names}}
				if p == tc.liar {
					ps.t = &tamperSends{Transport: ep, session: "liar", tamper: tc.tamper}
				}
				return ps
			}, func(_ string, s *Remote, ops []*graph.Op) error {
				// The first player to fail stops the others, which would
				// otherwise wait for its messages until their deadline.
				err := s.Run(ctx, ops[0])
				if err != nil {
					cancel()
				}
				return err
			})
			require.Error(t, errs["server0"])
			assert.ErrorIs(t, errs["server0"], ErrWire)
			assert.ErrorContains(t, errs["server0"], tc.want)
		})
	}
}

// TestCryptoProducerPlacement: the crypto producer must be neither server
// and receive nothing; another name for it is taken everywhere; plans
// without products do not care where it is.
func TestCryptoProducerPlacement(t *testing.T) {
	mulTo := func(output string) (*graph.Graph, *graph.Op) {
		g := graph.New()
		x := g.DefinePrivateInput("data-owner-0", shaped(graph.Shape{2}, []float64{1.5, -2}), []graph.Shape{{2}})[0]
		y := g.DefinePrivateInput("data-owner-1", shaped(graph.Shape{2}, []float64{3, 0.25}), []graph.Shape{{2}})[0]
		return g, g.DefineOutput(output, []*graph.Private{g.Mul(x, y)}, func(_ context.Context, v []*tensor.Dense) error {
			assert.InDeltaSlice(t, []float64{4.5, -0.5}, v[0].Float64s(), 1e-4)
			return nil
		})
	}
	planOf := func(g *graph.Graph, op *graph.Op, opts Options) (*Plan, error) {
		s, err := NewLocal(g, opts)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		p, err := s.Plan(op)
		if err == nil {
			err = s.Run(context.Background(), op)
		}
		return p, err
	}

	g0, op0 := mulTo(players.CryptoProducer)
	_, err := planOf(g0, op0, Options{})
	assert.ErrorContains(t, err, `the crypto producer "server2" draws the plan's Beaver triples and must receive nothing, but its plan has "reveal output#3`)

	_, err = NewLocal(graph.New(), Options{CryptoProducer: "server1"})
	assert.ErrorContains(t, err, `crypto producer "server1" must not be a compute server`)

	servers := Options{Servers: [2]string{"server2", "server1"}}
	g1, op1 := mulTo(players.ModelOwner)
	_, err = planOf(g1, op1, servers)
	assert.ErrorContains(t, err, `mul#2 needs a Beaver triple, but the crypto producer "server2" is also a compute server`)
	g, op := flGraph(2)
	_, err = planOf(g, op, servers)
	assert.NoError(t, err, "a plan without products needs no crypto producer")

	g2, op2 := mulTo(players.ModelOwner)
	p, err := planOf(g2, op2, Options{CryptoProducer: "dealer"})
	require.NoError(t, err)
	assert.Contains(t, p.Players(), "dealer")
	assert.NotContains(t, p.Players(), players.CryptoProducer)
	assert.Contains(t, p.String(), "triple for mul#2 (mul[2]): seed -> server0 (edge 4), seed and c1 -> server1 (edge 5)")
}

// Values the protocol cannot hold are refused with the node, player and
// tensor named: a public operand out of range when it is encoded, an
// added constant out of range when the graph is compiled.
func TestProductOperandsOutOfRange(t *testing.T) {
	g := graph.New()
	x := g.DefinePrivateInput("data-owner-0", shaped(graph.Shape{2}, []float64{1, 2}), []graph.Shape{{2}})[0]
	w := g.DefinePublicInput("model-owner", shaped(graph.Shape{2}, []float64{1, 5000}), []graph.Shape{{2}})[0]
	op := g.DefineOutput("model-owner", []*graph.Private{g.MulPublicTensor(x, w)}, func(context.Context, []*tensor.Dense) error { return nil })
	s, err := NewLocal(g, Options{})
	require.NoError(t, err)
	err = s.Run(context.Background(), op)
	require.NoError(t, s.Close())
	var pe *PlayerError
	require.ErrorAs(t, err, &pe)
	assert.Contains(t, []string{"server0", "server1"}, pe.Player)
	assert.ErrorContains(t, err, `mul-public-tensor#2: public public-input#1 on "model-owner": pond: element 1 is 5000, outside the fixed-point range (-1024, 1024)`)

	g = graph.New()
	x = g.DefinePrivateInput("data-owner-0", shaped(graph.Shape{2}, []float64{1, 2}), []graph.Shape{{2}})[0]
	op = g.DefineOutput("model-owner", []*graph.Private{g.AddConstant(x, 2000)}, func(context.Context, []*tensor.Dense) error { return nil })
	s, err = NewLocal(g, Options{})
	require.NoError(t, err)
	_, err = s.Plan(op)
	require.NoError(t, s.Close())
	assert.ErrorIs(t, err, pond.ErrConstant)
	assert.ErrorContains(t, err, "add-constant#1: pond: constant does not fit the fixed-point configuration: 2000 is outside the fixed-point range (-1024, 1024)")
}

// TestFingerprintCoversProducts: changing a product's verb, its operands'
// order, its shape or who draws its triples changes the fingerprint, even
// where the plans print alike (x·y against y·x).
func TestFingerprintCoversProducts(t *testing.T) {
	plan := func(opts Options, shapes [2]graph.Shape, build func(g *graph.Graph, x, y *graph.Private) *graph.Private) *Plan {
		g := graph.New()
		x := g.DefinePrivateInput("data-owner-0", shaped(shapes[0], make([]float64, shapes[0].Size())), []graph.Shape{shapes[0]})[0]
		y := g.DefinePrivateInput("data-owner-1", shaped(shapes[1], make([]float64, shapes[1].Size())), []graph.Shape{shapes[1]})[0]
		op := g.DefineOutput("model-owner", []*graph.Private{build(g, x, y)}, func(context.Context, []*tensor.Dense) error { return nil })
		s, err := NewLocal(g, opts)
		require.NoError(t, err)
		defer s.Close()
		p, err := s.Plan(op)
		require.NoError(t, err)
		return p
	}
	square := [2]graph.Shape{{2, 2}, {2, 2}}
	matmul := func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.MatMul(x, y) }
	base := plan(Options{}, square, matmul)
	assert.Equal(t, base.Fingerprint(), plan(Options{}, square, matmul).Fingerprint(), "same program, same fingerprint")
	swapped := plan(Options{}, square, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.MatMul(y, x) })
	assert.Equal(t, base.String(), swapped.String(), "the plans print alike")

	seen := map[string]string{base.Fingerprint(): "matmul x·y"}
	for name, p := range map[string]*Plan{
		"matmul y·x":         swapped,
		"mul":                plan(Options{}, square, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.Mul(x, y) }),
		"square":             plan(Options{}, square, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.Square(x) }),
		"sub x−y":            plan(Options{}, square, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.Sub(x, y) }),
		"sub y−x":            plan(Options{}, square, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.Sub(y, x) }),
		"matmul 2×2·2×3":     plan(Options{}, [2]graph.Shape{{2, 2}, {2, 3}}, matmul),
		"another producer":   plan(Options{CryptoProducer: "dealer"}, square, matmul),
		"local truncation":   plan(Options{Protocol: pond.Config{Truncation: pond.Local}}, square, matmul),
		"reduce-sum, axis 0": plan(Options{}, square, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.ReduceSum(x, 0) }),
		"reduce-sum, axis 1": plan(Options{}, square, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.ReduceSum(x, 1) }),
		"add-constant 1":     plan(Options{}, square, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.AddConstant(x, 1) }),
		"add-constant 2":     plan(Options{}, square, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.AddConstant(x, 2) }),
		"dot":                plan(Options{}, [2]graph.Shape{{2, 2}, {2}}, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.Dot(x, y) }),
		"add-bias":           plan(Options{}, [2]graph.Shape{{2, 2}, {2}}, func(g *graph.Graph, x, y *graph.Private) *graph.Private { return g.AddBias(x, y) }),
	} {
		other, dup := seen[p.Fingerprint()]
		assert.False(t, dup, "%s has the fingerprint of %s", name, other)
		seen[p.Fingerprint()] = name
	}
}

// everyProductGraph uses every verb of a private forward pass in one
// graph, for the tests that must see every step type run.
func everyProductGraph() (*graph.Graph, *graph.Op) {
	r := mrand.New(mrand.NewPCG(5, 5))
	g := graph.New()
	x := g.DefinePrivateInput("data-owner-0", shaped(graph.Shape{2, 3}, edgeValues(r, 6, 3)), []graph.Shape{{2, 3}})[0]
	yv := g.DefinePrivateInput("data-owner-1", func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
		return []*tensor.Dense{
			tensor.New(tensor.WithShape(3, 2), tensor.WithBacking(edgeValues(r, 6, 3))),
			tensor.New(tensor.WithShape(3), tensor.WithBacking(edgeValues(r, 3, 3))),
		}, nil
	}, []graph.Shape{{3, 2}, {3}})
	y, v := yv[0], yv[1]
	w := g.DefinePublicInput("model-owner", shaped(graph.Shape{3, 2}, edgeValues(r, 6, 3)), []graph.Shape{{3, 2}})[0]
	u := g.DefinePublicInput("model-owner", shaped(graph.Shape{2, 2}, edgeValues(r, 4, 3)), []graph.Shape{{2, 2}})[0]
	outs := []*graph.Private{
		g.AddBias(g.MatMul(x, y), g.ReduceSum(y, 0)),
		g.Mul(x, x),
		g.Square(y),
		g.Dot(x, v),
		g.MatMulPublic(x, w),
		g.PublicMatMul(u, x),
		g.MulPublicTensor(y, w),
		g.AddConstant(g.ReduceSum(x, 1), 1.5),
	}
	return g, g.DefineOutput("model-owner", outs, func(context.Context, []*tensor.Dense) error { return nil })
}

// Plans with products still receive every sender's messages in the order
// they were sent, as backpressure needs (see TestPlansReceiveInSendOrder).
func TestProductPlansReceiveInSendOrder(t *testing.T) {
	for _, opts := range []Options{{}, {Protocol: pond.Config{Truncation: pond.Local}}} {
		g, op := everyProductGraph()
		s, err := NewLocal(g, opts)
		require.NoError(t, err)
		plan, err := s.Plan(op)
		require.NoError(t, err)
		sent, received := messageOrder(plan)
		assert.Equal(t, sent, received, "options %+v", opts)
		assert.True(t, strings.Contains(plan.String(), "triple for"), "the plan has triples")
		require.NoError(t, s.Run(context.Background(), op))
		require.NoError(t, s.Close())
	}
}

// TestLargeProductsSplitAcrossCores runs products large enough that the
// session spreads the triple, the finish and the truncation over two
// cores (run with -race): an element-wise product of 140,000 elements and
// a 64×96·96×80 matrix product, in both truncation modes, within the
// documented bounds.
func TestLargeProductsSplitAcrossCores(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	const n, m, k, p = 140_000, 64, 96, 80
	require.GreaterOrEqual(t, n, 2*par.Min, "the element-wise work splits")
	require.GreaterOrEqual(t, m*k*p, 2*par.Min, "the matrix product splits")
	for _, mode := range []pond.Truncation{pond.Interactive, pond.Local} {
		for i, c := range []verbCase{mulCase(graph.Shape{n}), matMulCase(m, k, p, -1)} {
			t.Run(fmt.Sprintf("%v/%s", mode, c.name), func(t *testing.T) {
				proto, err := pond.New(pond.Config{Truncation: mode})
				require.NoError(t, err)
				cfg := proto.Config()
				g, op, vals, got := buildVerb(c, mrand.New(mrand.NewPCG(9, uint64(i))), cfg.Bound())
				s, err := NewLocal(g, Options{Protocol: cfg, Rand: newSeededRand(byte(20 + i))})
				require.NoError(t, err)
				defer s.Close()
				require.NoError(t, s.Run(context.Background(), op))
				want, tol := c.ref(vals, cfg.Resolution(), cfg.Bound())
				require.Len(t, *got, len(want))
				for k := range want {
					require.InDelta(t, want[k], (*got)[k], tol[k]*(1+1e-9)+1e-12, "element %d", k)
				}
			})
		}
	}
}

// TestIssue10CryptoProducerRunsAhead: across hosts the crypto producer
// draws the next iteration's triples while the servers still run this
// one, since it waits for nobody. Here data-owner-0's input of the first
// iteration is held until server2 has sent a triple of the second: the
// servers cannot finish the first iteration before then, so the test
// would hang (and fail at its deadline) if server2 waited for them.
func TestIssue10CryptoProducerRunsAhead(t *testing.T) {
	names := []string{"server0", "server1", "server2", "model-owner", "data-owner-0", "data-owner-1"}
	ahead := newIterationGate()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := runPlayers(t, names, func(p string, ep *transport.MemoryEndpoint) playerSetup {
		calls := 0
		g := graph.New()
		x := g.DefinePrivateInput("data-owner-0", func(ctx context.Context, _ []*tensor.Dense) ([]*tensor.Dense, error) {
			if calls++; calls == 1 {
				if err := ahead.wait(ctx, 1); err != nil {
					return nil, fmt.Errorf("server2 did not draw the second iteration's triple during the first: %w", err)
				}
			}
			return []*tensor.Dense{tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 2}))}, nil
		}, []graph.Shape{{2}})[0]
		y := g.DefinePrivateInput("data-owner-1", shaped(graph.Shape{2}, []float64{3, -4}), []graph.Shape{{2}})[0]
		op := g.DefineOutput("model-owner", []*graph.Private{g.Mul(x, y)}, func(_ context.Context, v []*tensor.Dense) error {
			assert.InDeltaSlice(t, []float64{3, -8}, v[0].Float64s(), 1e-4)
			return nil
		})
		ps := playerSetup{g: g, ops: []*graph.Op{op}, opts: Options{SessionID: "ahead", Players: names}}
		if p == "server2" {
			ps.t = &watchedSends{Transport: ep, onSend: func(_ string, key transport.Key, _ int) {
				if key.Session == "ahead" {
					ahead.reach(key.Iteration)
				}
			}}
		}
		return ps
	}, func(_ string, s *Remote, ops []*graph.Op) error {
		for range 2 {
			if err := s.Run(ctx, ops[0]); err != nil {
				cancel()
				return err
			}
		}
		return nil
	})
	for p, err := range errs {
		require.NoError(t, err, p)
	}
}

// A remote session whose list of players leaves out one that the plan
// needs (here the crypto producer of a product) stops every player at the
// handshake, naming it, instead of waiting for its messages.
func TestRemotePlayersMustIncludeTheCryptoProducer(t *testing.T) {
	names := []string{"server0", "server1", "model-owner", "data-owner-0", "data-owner-1"}
	errs := runPlayers(t, names, func(string, *transport.MemoryEndpoint) playerSetup {
		g, op, _, _ := buildVerb(mulCase(graph.Shape{2}), mrand.New(mrand.NewPCG(1, 1)), 10)
		return playerSetup{g: g, ops: []*graph.Op{op}, opts: Options{SessionID: "no-producer", Players: names}}
	}, func(_ string, s *Remote, ops []*graph.Op) error {
		return runIterations(s, ops[0], 1, time.Minute)
	})
	for _, p := range names {
		assert.ErrorContains(t, errs[p], `the plan needs player "server2", which is not among the players`, p)
	}
}
