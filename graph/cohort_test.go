package graph

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBuildCohortRound(t *testing.T) {
	g := New()
	shapes := []Shape{{2, 3}, {3}}
	model := g.DefinePublicInput("model-owner", constFn, shapes)
	owners := g.DefineCohort("data-owners")
	grads := g.DefineCohortInput(owners, constFn, shapes, model...)
	w := g.DefineCohortInput(owners, constFn, []Shape{{1}})[0]
	mean := g.Mean(grads[0])
	wmean := g.WeightedMean(grads[1], w)
	sum := g.SumCohort(grads[1])
	op := g.DefineOutput("model-owner", []*Private{mean, wmean, g.Neg(sum)}, sinkFn)
	require.NoError(t, g.Err())

	assert.Equal(t, "data-owners", owners.Name())
	assert.Equal(t, `cohort "data-owners"`, owners.String())
	in := grads[0].Ref().Node
	assert.Equal(t, KindCohortInput, in.Kind())
	assert.Equal(t, owners, in.Cohort())
	assert.Equal(t, owners, grads[1].Cohort())
	assert.Empty(t, in.Player(), "a cohort input runs on the members of a round, not on a player")
	assert.Equal(t, `cohort-input#1 of "data-owners"[0]`, grads[0].String())
	assert.Len(t, in.Inputs(), 2, "the model goes to every member")

	assert.Equal(t, KindMean, mean.Ref().Node.Kind())
	assert.Equal(t, Shape{2, 3}, mean.Shape())
	assert.Nil(t, mean.Cohort(), "an aggregate is an ordinary private value")
	assert.Equal(t, owners, mean.Ref().Node.Cohort())
	assert.True(t, KindMean.Private() && KindWeightedMean.Private() && KindSumCohort.Private())
	assert.False(t, KindCohortInput.Private())
	assert.True(t, KindWeightedMean.Aggregation())
	assert.False(t, KindAddN.Aggregation())
	wn := wmean.Ref().Node
	assert.Equal(t, []Ref{grads[1].Ref(), w.Ref()}, wn.Inputs())
	assert.Equal(t, Shape{3}, wmean.Shape())
	assert.Equal(t, "weighted-mean", KindWeightedMean.String())
	assert.Equal(t, KindOutput, op.Node().Kind())
}

func TestCohortBuildErrorsNameTheNodes(t *testing.T) {
	other := New()
	foreignCohort := other.DefineCohort("elsewhere")
	tests := []struct {
		name  string
		build func(g *Graph, c *Cohort, x, w *Private)
		want  string
	}{
		{"cohort tensor into AddN", func(g *Graph, c *Cohort, x, w *Private) {
			g.AddN(x, x)
		}, `add-n#3: operand 0 (cohort-input#0 of "owners") is a cohort tensor, one per member of a round: only Mean, WeightedMean and SumCohort take it`},
		{"cohort tensor into a product", func(g *Graph, c *Cohort, x, w *Private) {
			g.Mul(w, w)
		}, `mul#3: operand 0 (cohort-input#1 of "owners") is a cohort tensor`},
		{"cohort tensor revealed", func(g *Graph, c *Cohort, x, w *Private) {
			g.DefineOutput("model-owner", []*Private{x}, sinkFn)
		}, `output#3 on "model-owner": operand 0 (cohort-input#0 of "owners") is a cohort tensor`},
		{"weighted mean into Div", func(g *Graph, c *Cohort, x, w *Private) {
			g.Div(g.WeightedMean(x, w), 2)
		}, `div#4: operand 0 (weighted-mean#3) is a weighted mean, whose divisor Σw stays private until it is revealed: only DefineOutput takes it`},
		{"mean of a fixed owner's tensor", func(g *Graph, c *Cohort, x, w *Private) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{2}})
			g.Mean(a[0])
		}, `mean#4: operand 0 (private-input#3 on "a") is not a cohort tensor (an output of DefineCohortInput); for fixed owners, use AddN and Div`},
		{"weight of the wrong shape", func(g *Graph, c *Cohort, x, w *Private) {
			g.WeightedMean(x, x)
		}, `weighted-mean#3: weight cohort-input#0 of "owners" has shape (4), want (1)`},
		{"weight of another cohort", func(g *Graph, c *Cohort, x, w *Private) {
			other := g.DefineCohort("others")
			v := g.DefineCohortInput(other, constFn, []Shape{{1}})[0]
			g.WeightedMean(x, v)
		}, `weighted-mean#4: weight cohort-input#3 of "others" is a tensor of cohort "others", but cohort-input#0 of "owners" is of cohort "owners"`},
		{"weight not a cohort tensor", func(g *Graph, c *Cohort, x, w *Private) {
			a := g.DefinePrivateInput("a", constFn, []Shape{{1}})
			g.WeightedMean(x, a[0])
		}, `weighted-mean#4: operand 1 (private-input#3 on "a") is not a cohort tensor`},
		{"nil weight", func(g *Graph, c *Cohort, x, w *Private) { g.WeightedMean(x, nil) }, "weighted-mean#3: operand 1 is nil"},
		{"two cohorts in one output", func(g *Graph, c *Cohort, x, w *Private) {
			other := g.DefineCohort("others")
			y := g.DefineCohortInput(other, constFn, []Shape{{4}})[0]
			g.DefineOutput("model-owner", []*Private{g.Mean(x), g.SumCohort(y)}, sinkFn)
		}, `output#6 on "model-owner": depends on cohort "owners" and cohort "others": a round draws the members of one cohort`},
		{"nil cohort", func(g *Graph, c *Cohort, x, w *Private) {
			g.DefineCohortInput(nil, constFn, []Shape{{1}})
		}, "cohort-input#3: nil cohort"},
		{"foreign cohort", func(g *Graph, c *Cohort, x, w *Private) {
			g.DefineCohortInput(foreignCohort, constFn, []Shape{{1}})
		}, `cohort-input#3: cohort "elsewhere" belongs to another graph`},
		{"cohort defined twice", func(g *Graph, c *Cohort, x, w *Private) { g.DefineCohort("owners") }, `cohort "owners" is defined twice`},
		{"bad cohort name", func(g *Graph, c *Cohort, x, w *Private) { g.DefineCohort("Owners!") }, `cohort "Owners!": player name "Owners!"`},
		{"nil member function", func(g *Graph, c *Cohort, x, w *Private) {
			g.DefineCohortInput(c, nil, []Shape{{1}})
		}, `cohort-input#3 of "owners": nil function`},
		{"no shapes", func(g *Graph, c *Cohort, x, w *Private) { g.DefineCohortInput(c, constFn, nil) }, "declares no output shapes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := New()
			c := g.DefineCohort("owners")
			x := g.DefineCohortInput(c, constFn, []Shape{{4}})[0]
			w := g.DefineCohortInput(c, constFn, []Shape{{1}})[0]
			g.DefinePublicInput("model-owner", constFn, []Shape{{1}})
			require.NoError(t, g.Err())
			tt.build(g, c, x, w)
			err := g.Err()
			require.ErrorIs(t, err, ErrBuild)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestMemberContext(t *testing.T) {
	ctx := context.Background()
	assert.Empty(t, Member(ctx))
	assert.Equal(t, "data-owner-7", Member(WithMember(ctx, "data-owner-7")))
}

func TestWriteDOTCohort(t *testing.T) {
	g := New()
	c := g.DefineCohort("owners")
	x := g.DefineCohortInput(c, constFn, []Shape{{2}})
	g.DefineOutput("model-owner", []*Private{g.Mean(x[0])}, sinkFn)
	require.NoError(t, g.Err())
	var buf bytes.Buffer
	require.NoError(t, g.WriteDOT(&buf))
	dot := buf.String()
	assert.Contains(t, dot, `label="cohort owners (every member of a round)"`)
	assert.Contains(t, dot, `n0 [label="cohort-input#0", shape=box];`)
	assert.Contains(t, dot, `n0 -> n1 [label="(2)", style=dashed];`)
	assert.Contains(t, dot, `n1 [label="mean#1", shape=ellipse];`)
}
