package graph

import (
	"bytes"
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"
)

func constFn(ctx context.Context, _ []*tensor.Dense) ([]*tensor.Dense, error) { return nil, nil }
func sinkFn(ctx context.Context, _ []*tensor.Dense) error                     { return nil }

func TestBuildSecureMean(t *testing.T) {
	g := New()
	shapes := []Shape{{2, 3}, {3}}
	w := g.DefinePublicInput("model-owner", constFn, shapes)
	require.Len(t, w, 2)
	assert.Equal(t, "model-owner", w[0].Player())

	var grads [][]*Private
	for _, p := range []string{"data-owner-0", "data-owner-1"} {
		grads = append(grads, g.DefinePrivateInput(p, constFn, shapes, w...))
	}
	mean := make([]*Private, len(shapes))
	for i := range mean {
		mean[i] = g.Div(g.AddN(Column(grads, i)...), 2)
	}
	op := g.DefineOutput("model-owner", mean, sinkFn)
	require.NoError(t, g.Err())

	assert.Equal(t, KindOutput, op.Node().Kind())
	assert.Equal(t, Shape{2, 3}, mean[0].Shape())
	for _, n := range g.Nodes() {
		for _, in := range n.Inputs() {
			assert.Less(t, in.Node.ID(), n.ID(), "IDs are a topological order")
		}
	}
	assert.Equal(t, KindPrivateInput, grads[1][0].Ref().Node.Kind())
	assert.Equal(t, `private-input#2 on "data-owner-1"[1]`, grads[1][1].String())
}

func TestBuildErrorsNameTheNodes(t *testing.T) {
	other := New()
	foreign := other.DefinePrivateInput("a", constFn, []Shape{{2}})

	tests := []struct {
		name  string
		build func(g *Graph)
		want  string
	}{
		{"shape mismatch", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2, 3}})
			b := g.DefinePrivateInput("b", constFn, []Shape{{3, 2}})
			g.AddN(a[0], b[0])
		}, `add-n#2: shape mismatch: private-input#0 on "a" has shape (2, 3) but private-input#1 on "b" has shape (3, 2)`},
		{"sub mismatch", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}, {4}})
			g.Sub(a[0], a[1])
		}, `sub#1: shape mismatch: private-input#0 on "a"[0] has shape (2) but private-input#0 on "a"[1] has shape (4)`},
		{"foreign handle", func(g *Graph) { g.Neg(foreign[0]) }, "belongs to another graph"},
		{"nil operand", func(g *Graph) { g.AddN(nil) }, "add-n#0: operand 0 is nil"},
		{"no operands", func(g *Graph) { g.AddN() }, "add-n#0: no operands"},
		{"zero divisor", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}})
			g.Div(a[0], 0)
		}, "div#1: divisor 0 must be a finite non-zero number"},
		{"NaN constant", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}})
			g.MulPublic(a[0], math.NaN())
		}, "constant NaN is not finite"},
		{"constant beyond any range", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}})
			g.MulPublic(a[0], -0x1p52)
		}, "mul-public#1: constant -4.503599627370496e+15 is outside (-2^52, 2^52)"},
		{"constant below any resolution", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}})
			g.MulPublic(a[0], 1e-9)
		}, "mul-public#1: constant 1e-09 is at most 2^-27 in magnitude"},
		{"divisor too large", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}})
			g.Div(a[0], 1e9)
		}, "div#1: divisor 1e+09: its reciprocal 1e-09 is at most 2^-27"},
		{"divisor too small", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}})
			g.Div(a[0], -1e-16)
		}, "div#1: divisor -1e-16: its reciprocal -1e+16 is outside (-2^52, 2^52)"},
		{"bad shape", func(g *Graph) { g.DefinePrivateInput("a", constFn, []Shape{{2, 0}}) }, "invalid shape (2, 0)"},
		{"no shapes", func(g *Graph) { g.DefinePublicInput("a", constFn, nil) }, "declares no output shapes"},
		{"nil func", func(g *Graph) { g.DefinePublicInput("a", nil, []Shape{{1}}) }, `public-input#0 on "a": nil function`},
		{"empty player", func(g *Graph) { g.DefinePublicInput("", constFn, []Shape{{1}}) }, "empty player name"},
		{"player name unfit for a certificate", func(g *Graph) { g.DefinePrivateInput("Data Owner", constFn, []Shape{{1}}) },
			`private-input#0 on "Data Owner": player name "Data Owner": use lowercase letters, digits, '-' and '_'`},
		{"output to a bad player name", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}})
			g.DefineOutput("-m", a, sinkFn)
		}, `output#1 on "-m": player name "-m"`},
		{"empty output", func(g *Graph) { g.DefineOutput("m", nil, sinkFn) }, "no tensors to reveal"},
		{"nil output func", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}})
			g.DefineOutput("m", a, nil)
		}, `output#1 on "m": nil function`},
		{"short column", func(g *Graph) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}, {2}})
			b := g.DefinePrivateInput("b", constFn, []Shape{{2}})
			g.AddN(Column([][]*Private{a, b}, 1)...)
		}, "add-n#2: operand 1 is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := New()
			tt.build(g)
			err := g.Err()
			require.ErrorIs(t, err, ErrBuild)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestWriteDOT(t *testing.T) {
	g := New()
	a := g.DefinePrivateInput("data-owner-0", constFn, []Shape{{2}})
	b := g.DefinePrivateInput("data-owner-1", constFn, []Shape{{2}})
	g.DefineOutput("model-owner", []*Private{g.Div(g.AddN(a[0], b[0]), 2)}, sinkFn)
	require.NoError(t, g.Err())
	var buf bytes.Buffer
	require.NoError(t, g.WriteDOT(&buf))
	dot := buf.String()
	assert.Contains(t, dot, `label="private (secret-shared)"`)
	assert.Contains(t, dot, `n0 -> n2 [label="(2)", style=dashed];`)
	assert.Contains(t, dot, `label="data-owner-1"`)
}

// Constants just inside the widest range build; the session checks them
// against its own configuration later.
func TestConstantsAtTheEdges(t *testing.T) {
	g := New()
	a := g.DefinePrivateInput("a", constFn, []Shape{{2}})
	for _, c := range []float64{0, MinConstant * 1.01, -MinConstant * 1.01, MaxConstant * 0.99, -MaxConstant * 0.99, 1, -0.5} {
		g.MulPublic(a[0], c)
	}
	for _, d := range []float64{1, -3, 1 / (MaxConstant * 0.99), 1 / (MinConstant * 1.01), 1e8} {
		g.Div(a[0], d)
	}
	assert.NoError(t, g.Err())
}
