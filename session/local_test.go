package session

import (
	"context"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
)

// newSeededRand returns a reproducible byte source (ChaCha8 has a Read
// method) for tests only.
func newSeededRand(seed byte) *mrand.ChaCha8 {
	return mrand.NewChaCha8([32]byte{seed})
}

// fixed returns an input function producing the given tensors.
func fixed(values ...[]float64) graph.Func {
	return func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
		out := make([]*tensor.Dense, len(values))
		for i, v := range values {
			out[i] = tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(append([]float64(nil), v...)))
		}
		return out, nil
	}
}

// meanGraph builds the secure mean of every owner's tensors and returns the
// op and a pointer to the revealed values.
func meanGraph(inputs [][][]float64, shapes []graph.Shape) (*graph.Graph, *graph.Op, *[][]float64) {
	g := graph.New()
	var rows [][]*graph.Private
	for i, in := range inputs {
		fn := func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
			out := make([]*tensor.Dense, len(in))
			for j, v := range in {
				out[j] = tensor.New(tensor.WithShape(shapes[j]...), tensor.WithBacking(append([]float64(nil), v...)))
			}
			return out, nil
		}
		rows = append(rows, g.DefinePrivateInput(players.DataOwner(i), fn, shapes))
	}
	mean := make([]*graph.Private, len(shapes))
	for j := range shapes {
		mean[j] = g.Div(g.AddN(graph.Column(rows, j)...), float64(len(inputs)))
	}
	got := new([][]float64)
	op := g.DefineOutput(players.ModelOwner, mean, func(_ context.Context, vs []*tensor.Dense) error {
		*got = nil
		for _, v := range vs {
			*got = append(*got, v.Float64s())
		}
		return nil
	})
	return g, op, got
}

func newBenchRand() *mrand.Rand { return mrand.New(mrand.NewPCG(1, 1)) }

func randomInputs(r *mrand.Rand, owners int, shapes []graph.Shape, bound float64) [][][]float64 {
	in := make([][][]float64, owners)
	for i := range in {
		for _, s := range shapes {
			v := make([]float64, s.Size())
			for k := range v {
				switch k % 4 {
				case 0: // large, up to the bound
					v[k] = (r.Float64()*2 - 1) * bound * 0.999
				case 1: // tiny
					v[k] = (r.Float64()*2 - 1) * 1e-4
				case 2:
					v[k] = -r.Float64()
				default:
					v[k] = r.Float64() * 50
				}
			}
			in[i] = append(in[i], v)
		}
	}
	return in
}

// TestSecureMeanMatchesPlaintext compares the secure mean with the
// plaintext mean on random tensors, for 1 to 10 owners, several shapes and
// each way of dividing: in the clear after reveal (the default), and
// inside the protocol with either truncation. The documented bounds: an
// input is encoded within half a unit in the last place (ulp); a division
// in the clear is then exact in float64; inside the protocol, multiplying
// by the encoding of 1/n adds |sum|·ulp/2 and truncation under one ulp.
func TestSecureMeanMatchesPlaintext(t *testing.T) {
	modes := []struct {
		name    string
		private bool
		trunc   pond.Truncation
	}{
		{"clear division", false, pond.Interactive},
		{"interactive truncation", true, pond.Interactive},
		{"local truncation", true, pond.Local},
	}
	r := mrand.New(mrand.NewPCG(7, 7))
	shapeSets := [][]graph.Shape{{{1}}, {{3, 4}, {5}}, {{2, 3, 4}}, {{257}}}
	for _, m := range modes {
		for owners := 1; owners <= 10; owners += 3 {
			for si, shapes := range shapeSets {
				t.Run(fmt.Sprintf("%s/%d owners/shapes %d", m.name, owners, si), func(t *testing.T) {
					proto, err := pond.New(pond.Config{Truncation: m.trunc})
					require.NoError(t, err)
					cfg := proto.Config()
					inputs := randomInputs(r, owners, shapes, cfg.Bound())
					g, op, got := meanGraph(inputs, shapes)
					s, err := NewLocal(g, Options{Protocol: cfg, PrivateDivision: m.private, Rand: newSeededRand(byte(owners + 16*si))})
					require.NoError(t, err)
					defer s.Close()
					require.NoError(t, s.Run(context.Background(), op))

					ulp := cfg.Resolution()
					for j, shape := range shapes {
						require.Len(t, (*got)[j], shape.Size())
						for k := range (*got)[j] {
							var sum float64
							for i := range inputs {
								sum += inputs[i][j][k]
							}
							want := sum / float64(owners)
							tol := ulp / 2 * 1.0000001
							if m.private {
								tol = ulp/2 + math.Abs(sum)*ulp/2 + ulp
							}
							require.InDelta(t, want, (*got)[j][k], tol, "tensor %d element %d", j, k)
						}
					}
				})
			}
		}
	}
}

// TestIterationsRunAgain checks that every Run is a new iteration with new
// inputs and fresh masks, and that the session keeps working after a
// failed iteration.
func TestIterationsRunAgain(t *testing.T) {
	calls := 0
	fail := false
	g := graph.New()
	x := g.DefinePrivateInput("data-owner-0", func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
		calls++
		if fail {
			return nil, errors.New("disk on fire")
		}
		return []*tensor.Dense{tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{float64(calls)}))}, nil
	}, []graph.Shape{{1}})
	var got []float64
	op := g.DefineOutput("model-owner", x, func(_ context.Context, v []*tensor.Dense) error {
		got = append(got, v[0].Float64s()[0])
		return nil
	})
	s, err := NewLocal(g, Options{})
	require.NoError(t, err)
	defer s.Close()
	for range 3 {
		require.NoError(t, s.Run(context.Background(), op))
	}
	fail = true
	err = s.Run(context.Background(), op)
	var pe *PlayerError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "data-owner-0", pe.Player)
	assert.Equal(t, uint64(3), pe.Iteration)
	assert.ErrorContains(t, err, `player "data-owner-0", iteration 3: private-input#0 on "data-owner-0": disk on fire`)
	fail = false
	require.NoError(t, s.Run(context.Background(), op))
	assert.Equal(t, []float64{1, 2, 3, 5}, got)
	assert.Equal(t, uint64(5), s.Iterations())
}

// TestLinkCountersShowSeededSharing checks the wire cost of a private
// input: about 8 bytes per element from the owner (a 32-byte seed to one
// server, the masked tensor to the other), not 16.
func TestLinkCountersShowSeededSharing(t *testing.T) {
	const n = 10000
	// A mean computes in Z_2^32 unless told otherwise: 4 bytes an element.
	for ring, perElement := range map[int]float64{0: 4, pond.Ring32: 4, pond.Ring64: 8} {
		t.Run(fmt.Sprintf("ring %d", ring), func(t *testing.T) {
			inputs := [][][]float64{{make([]float64, n)}, {make([]float64, n)}, {make([]float64, n)}}
			g, op, _ := meanGraph(inputs, []graph.Shape{{n}})
			s, err := NewLocal(g, Options{Protocol: pond.Config{Ring: ring}})
			require.NoError(t, err)
			defer s.Close()
			require.NoError(t, s.Run(context.Background(), op))

			perOwner := map[string]uint64{}
			for _, l := range s.Stats() {
				if strings.HasPrefix(l.From, "data-owner-") {
					perOwner[l.From] += l.Bytes
				}
			}
			require.Len(t, perOwner, 3)
			for owner, bytes := range perOwner {
				assert.InDelta(t, perElement, float64(bytes)/n, 0.01, "%s sent %d bytes for %d elements", owner, bytes, n)
			}
			// The seed alternates between the servers: both receive masked tensors.
			links := map[Link]LinkStats{}
			for _, l := range s.Stats() {
				links[l.Link] = l
			}
			assert.Equal(t, uint64(32), links[Link{"data-owner-0", "server0"}].Bytes)
			assert.Equal(t, uint64(32), links[Link{"data-owner-1", "server1"}].Bytes)
			assert.Equal(t, uint64(8+perElement*n), links[Link{"server0", "model-owner"}].Bytes)
		})
	}
}

func TestBadInputsNameThePlayerAndTensor(t *testing.T) {
	tests := []struct {
		name string
		fn   graph.Func
		want string
	}{
		{"NaN", fixed([]float64{1, math.NaN()}), `player "data-owner-0", iteration 0: private input private-input#0 on "data-owner-0": pond: element 1 is NaN`},
		{"Inf", fixed([]float64{math.Inf(-1), 0}), "element 0 is -Inf"},
		{"out of range", fixed([]float64{0, 9000}), "element 1 is 9000, outside the fixed-point range (-8192, 8192) (the plan computes in Z_2^32, where a sum of up to 2 inputs of this range cannot wrap"},
		{"wrong shape", fixed([]float64{1, 2, 3}), "function returned shape (3), declared (2)"},
		{"wrong count", fixed([]float64{1, 2}, []float64{1, 2}), "function returned 2 tensors, declared 1"},
		{"wrong type", func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
			return []*tensor.Dense{tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, 2}))}, nil
		}, "function returned a float32 tensor, want float64"},
		{"nil tensor", func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
			return []*tensor.Dense{nil}, nil
		}, "nil tensor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := graph.New()
			x := g.DefinePrivateInput("data-owner-0", tt.fn, []graph.Shape{{2}})
			y := g.DefinePrivateInput("data-owner-1", fixed([]float64{1, 2}), []graph.Shape{{2}})
			op := g.DefineOutput("model-owner", []*graph.Private{g.Add(x[0], y[0])}, func(context.Context, []*tensor.Dense) error {
				t.Error("the output must not be reached")
				return nil
			})
			s, err := NewLocal(g, Options{})
			require.NoError(t, err)
			defer s.Close()
			err = s.Run(context.Background(), op)
			var pe *PlayerError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "data-owner-0", pe.Player)
			assert.ErrorContains(t, err, tt.want)
		})
	}
}

func TestBuildErrorsRefused(t *testing.T) {
	g := graph.New()
	a := g.DefinePrivateInput("a", fixed([]float64{1}), []graph.Shape{{1}})
	b := g.DefinePrivateInput("b", fixed([]float64{1, 2}), []graph.Shape{{2}})
	g.AddN(a[0], b[0])
	_, err := NewLocal(g, Options{})
	require.ErrorIs(t, err, graph.ErrBuild)
	assert.ErrorContains(t, err, "shape mismatch")

	_, err = NewLocal(graph.New(), Options{Protocol: pond.Config{FracBits: 40}})
	assert.ErrorIs(t, err, pond.ErrConfig)
}

// TestConstantsCheckedAgainstTheConfig: a constant the graph accepts (it
// fits some configuration) but the session's configuration cannot hold is
// refused when the session compiles the graph, with pond.ErrConstant and
// the node named; a division done in the clear needs no encoding.
func TestConstantsCheckedAgainstTheConfig(t *testing.T) {
	out := func(context.Context, []*tensor.Dense) error { return nil }
	tests := []struct {
		name  string
		build func(g *graph.Graph, x *graph.Private) *graph.Private
		opts  Options
		want  string // "" means it runs
	}{
		{"divisor whose reciprocal is below the resolution", func(g *graph.Graph, x *graph.Private) *graph.Private { return g.Div(x, 1e6) },
			Options{PrivateDivision: true}, "div#1: divisor 1e+06, multiplied by its reciprocal: pond: constant does not fit the fixed-point configuration: 1e-06 is below the fixed-point resolution"},
		{"the same divisor, divided in the clear", func(g *graph.Graph, x *graph.Private) *graph.Private { return g.Div(x, 1e6) },
			Options{}, ""},
		{"the same divisor, with more fractional bits", func(g *graph.Graph, x *graph.Private) *graph.Private { return g.Div(x, 1e6) },
			Options{PrivateDivision: true, Protocol: pond.Config{FracBits: 20}}, ""},
		{"constant out of range", func(g *graph.Graph, x *graph.Private) *graph.Private { return g.MulPublic(x, 2000) },
			Options{}, "mul-public#1: pond: constant does not fit the fixed-point configuration: 2000 is outside the fixed-point range (-1024, 1024)"},
		{"the same constant, with fewer fractional bits", func(g *graph.Graph, x *graph.Private) *graph.Private { return g.MulPublic(x, 2000) },
			Options{Protocol: pond.Config{FracBits: 12}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := graph.New()
			x := g.DefinePrivateInput("a", fixed([]float64{0.5}), []graph.Shape{{1}})
			op := g.DefineOutput("m", []*graph.Private{tt.build(g, x[0])}, out)
			require.NoError(t, g.Err(), "the graph accepts what some configuration holds")
			s, err := NewLocal(g, tt.opts)
			require.NoError(t, err)
			defer s.Close()
			_, planErr := s.Plan(op)
			runErr := s.Run(context.Background(), op)
			if tt.want == "" {
				assert.NoError(t, planErr)
				assert.NoError(t, runErr)
				return
			}
			for _, err := range []error{planErr, runErr} {
				assert.ErrorIs(t, err, pond.ErrConstant)
				assert.ErrorContains(t, err, tt.want)
			}
		})
	}
}

// TestGraphConstantBoundsAreTheWidest checks graph.MaxConstant and
// graph.MinConstant against every configuration pond accepts: the widest
// range is exactly 2^52, and the finest resolution is 2·MinConstant.
func TestGraphConstantBoundsAreTheWidest(t *testing.T) {
	widest, finest := 0.0, math.Inf(1)
	for frac := 0; frac <= 64; frac++ {
		for gap := 0; gap <= 64; gap++ {
			for intBits := 0; intBits <= 64; intBits++ {
				p, err := pond.New(pond.Config{FracBits: frac, StatGap: gap, IntBits: intBits})
				if err != nil {
					continue
				}
				widest = max(widest, p.Config().Bound())
				finest = min(finest, p.Config().Resolution())
			}
		}
	}
	assert.Equal(t, graph.MaxConstant, widest)
	assert.Equal(t, 2*graph.MinConstant, finest)
}

// TestCancelAndCloseLeaveNoGoroutines runs in a synctest bubble: once
// every player is blocked (one in its slow input, the others waiting for
// its messages), the iteration is cancelled; after Close, the bubble ends
// only if no goroutine the session started is left (synctest.Test fails
// on goroutines that outlive it).
func TestCancelAndCloseLeaveNoGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		block := make(chan struct{})
		g := graph.New()
		x := g.DefinePrivateInput("slow", func(ctx context.Context, _ []*tensor.Dense) ([]*tensor.Dense, error) {
			select {
			case <-block:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return nil, nil
		}, []graph.Shape{{1}})
		y := g.DefinePrivateInput("fast", fixed([]float64{1}), []graph.Shape{{1}})
		op := g.DefineOutput("m", []*graph.Private{g.Add(x[0], y[0])}, func(context.Context, []*tensor.Dense) error { return nil })
		s, err := NewLocal(g, Options{})
		require.NoError(t, err)

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			synctest.Wait() // every player is blocked
			cancel()
		}()
		err = s.Run(ctx, op)
		require.ErrorIs(t, err, context.Canceled)
		require.NoError(t, s.Close())
		assert.ErrorIs(t, s.Run(context.Background(), op), ErrClosed)
	})
}

// everyVerbGraph builds a graph with every verb: a public input on the
// model owner, a local computation on a data owner that receives it,
// private inputs computed from public ones, and Add, Sub, Neg, MulPublic
// and Div, revealed together. It returns the revealed values' destination
// and what they should be.
func everyVerbGraph() (*graph.Graph, *graph.Op, *[][]float64, [][]float64) {
	g := graph.New()
	w := g.DefinePublicInput("model-owner", fixed([]float64{1.5, -2, 0.25}), []graph.Shape{{3}})
	// data-owner-0 doubles the weights locally, then uses them privately.
	doubled := g.LocalComputation("data-owner-0", func(_ context.Context, in []*tensor.Dense) ([]*tensor.Dense, error) {
		v := in[0].Float64s()
		for i := range v {
			v[i] *= 2
		}
		return in, nil
	}, []graph.Shape{{3}}, w...)
	a := g.DefinePrivateInput("data-owner-0", func(_ context.Context, in []*tensor.Dense) ([]*tensor.Dense, error) {
		return []*tensor.Dense{tensor.New(tensor.WithShape(3), tensor.WithBacking(append([]float64(nil), in[0].Float64s()...)))}, nil
	}, []graph.Shape{{3}}, doubled...)
	b := g.DefinePrivateInput("data-owner-1", fixed([]float64{0.5, 4, -1}), []graph.Shape{{3}}, w...)
	sum := g.Add(a[0], b[0])
	outs := []*graph.Private{
		sum,
		g.Sub(a[0], b[0]),
		g.Neg(b[0]),
		g.MulPublic(a[0], -0.75),
		g.Div(g.AddN(a[0], b[0], a[0]), 4),
		sum, // revealed twice: the first send must not give the share away
	}
	got := new([][]float64)
	op := g.DefineOutput("model-owner", outs, func(_ context.Context, vs []*tensor.Dense) error {
		*got = nil
		for _, v := range vs {
			*got = append(*got, v.Float64s())
		}
		return nil
	})
	av, bv := []float64{3, -4, 0.5}, []float64{0.5, 4, -1}
	want := make([][]float64, 6)
	for i := range av {
		want[0] = append(want[0], av[i]+bv[i])
		want[1] = append(want[1], av[i]-bv[i])
		want[2] = append(want[2], -bv[i])
		want[3] = append(want[3], av[i]*-0.75)
		want[4] = append(want[4], (2*av[i]+bv[i])/4)
		want[5] = append(want[5], av[i]+bv[i])
	}
	return g, op, got, want
}

// TestEveryVerbMatchesPlaintext runs everyVerbGraph with each way of
// dividing and truncating.
func TestEveryVerbMatchesPlaintext(t *testing.T) {
	for _, opts := range []Options{{}, {PrivateDivision: true}, {PrivateDivision: true, Protocol: pond.Config{Truncation: pond.Local}}} {
		g, op, got, want := everyVerbGraph()
		s, err := NewLocal(g, opts)
		require.NoError(t, err)
		require.NoError(t, s.Run(context.Background(), op))
		require.NoError(t, s.Close())
		require.Len(t, *got, len(want))
		for j := range want {
			for i := range want[j] {
				assert.InDelta(t, want[j][i], (*got)[j][i], 1e-4, "options %+v, output %d element %d", opts, j, i)
			}
		}
	}
}

// A function given one public tensor twice, or a tensor that a later step
// reads too, gets copies: what it does to one input shows in no other and
// in no later step. Only an input's last use is handed over as it is.
func TestCallGetsItsOwnCopies(t *testing.T) {
	g := graph.New()
	w := g.DefinePublicInput("model-owner", fixed([]float64{1, 2}), []graph.Shape{{2}})
	scribble := func(_ context.Context, in []*tensor.Dense) ([]*tensor.Dense, error) {
		a, b := in[0].Float64s(), in[1].Float64s()
		out := make([]float64, len(a))
		for i := range a {
			a[i] *= 10 // must not show in b, nor in the later call
			out[i] = a[i] + b[i]
		}
		return []*tensor.Dense{tensor.New(tensor.WithShape(len(out)), tensor.WithBacking(out))}, nil
	}
	first := g.LocalComputation("model-owner", scribble, []graph.Shape{{2}}, w[0], w[0])
	second := g.LocalComputation("model-owner", scribble, []graph.Shape{{2}}, first[0], first[0])
	x := g.DefinePrivateInput("model-owner", func(_ context.Context, in []*tensor.Dense) ([]*tensor.Dense, error) {
		a, b := in[0].Float64s(), in[1].Float64s()
		return []*tensor.Dense{tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{a[0] + b[0], a[1] + b[1]}))}, nil
	}, []graph.Shape{{2}}, second[0], w[0])
	var got []float64
	op := g.DefineOutput("model-owner", x, func(_ context.Context, v []*tensor.Dense) error {
		got = v[0].Float64s()
		return nil
	})
	s, err := NewLocal(g, Options{})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Run(context.Background(), op))
	// first = 10w + w = 11w, second = 11·first = 121w, x = second + w
	assert.Equal(t, []float64{122, 244}, got)
}

// Outputs of one function that share memory are copied apart before
// either is given up: a private input masked where it lies, or a public
// tensor handed to its last receiver, leaves the other as it was.
func TestOutputsSharingMemory(t *testing.T) {
	g := graph.New()
	twice := func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
		v := tensor.New(tensor.WithShape(4), tensor.WithBacking([]float64{1, 2, 3, 4}))
		return []*tensor.Dense{v, v}, nil
	}
	x := g.DefinePrivateInput("data-owner-0", twice, []graph.Shape{{4}, {4}})
	w := g.DefinePublicInput("model-owner", twice, []graph.Shape{{4}, {4}})
	y := g.DefinePrivateInput("data-owner-1", func(_ context.Context, in []*tensor.Dense) ([]*tensor.Dense, error) {
		a, b := in[0].Float64s(), in[1].Float64s()
		out := make([]float64, len(a))
		for i := range a {
			a[i] *= 10 // must not show in b
			out[i] = a[i] + b[i]
		}
		return []*tensor.Dense{tensor.New(tensor.WithShape(len(out)), tensor.WithBacking(out))}, nil
	}, []graph.Shape{{4}}, w...)
	var got [][]float64
	op := g.DefineOutput("model-owner", []*graph.Private{g.Sub(x[0], x[1]), g.AddN(x[0], x[1]), y[0]}, func(_ context.Context, v []*tensor.Dense) error {
		got = nil
		for _, d := range v {
			got = append(got, d.Float64s())
		}
		return nil
	})
	s, err := NewLocal(g, Options{})
	require.NoError(t, err)
	defer s.Close()
	for range 2 {
		require.NoError(t, s.Run(context.Background(), op))
		assert.Equal(t, [][]float64{{0, 0, 0, 0}, {2, 4, 6, 8}, {11, 22, 33, 44}}, got)
	}
}
