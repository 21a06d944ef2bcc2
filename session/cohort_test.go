package session

import (
	"context"
	"fmt"
	"sync"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
)

// cohortMembers returns the names of n members: member-0, member-1, ...
func cohortMembers(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("member-%d", i)
	}
	return out
}

// memberFunc is what a member of a test's cohort computes in a round: its
// tensor x and its weight w, or an error that drops it out.
type memberFunc func(ctx context.Context, member string, model []float64) (x []float64, w float64, err error)

// revealed records what the output function of a test's rounds received.
// It is safe for concurrent use.
type revealed struct {
	mu     sync.Mutex
	calls  int
	values [][]float64
}

func (r *revealed) record(_ context.Context, vs []*tensor.Dense) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.values = nil
	for _, v := range vs {
		r.values = append(r.values, v.Float64s())
	}
	return nil
}

func (r *revealed) last() (int, [][]float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls, r.values
}

// aggregationGraph is federated averaging in rounds: the model owner's
// model (shape (1), the value 0.5) goes to every member of cohort
// "owners", whose function fn returns x of shape (n) and a weight; the
// model owner learns Mean(x), WeightedMean(x, w) and SumCohort(x).
func aggregationGraph(n int, fn memberFunc) (*graph.Graph, *graph.Op, *revealed) {
	g := graph.New()
	owners := g.DefineCohort("owners")
	model := g.DefinePublicInput(players.ModelOwner, fixed([]float64{0.5}), []graph.Shape{{1}})
	in := g.DefineCohortInput(owners, func(ctx context.Context, ins []*tensor.Dense) ([]*tensor.Dense, error) {
		x, w, err := fn(ctx, graph.Member(ctx), ins[0].Float64s())
		if err != nil {
			return nil, err
		}
		return []*tensor.Dense{
			tensor.New(tensor.WithShape(n), tensor.WithBacking(x)),
			tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{w})),
		}, nil
	}, []graph.Shape{{n}, {1}}, model...)
	rec := &revealed{}
	op := g.DefineOutput(players.ModelOwner, []*graph.Private{g.Mean(in[0]), g.WeightedMean(in[0], in[1]), g.SumCohort(in[0])}, rec.record)
	return g, op, rec
}

// everyAggregationGraph uses every verb of rounds and each way of
// dividing a mean: a mean revealed (divided in the clear, unless
// PrivateDivision), a mean squared (divided inside the protocol), a
// weighted mean, a sum, and a fixed owner's input added to the sum.
func everyAggregationGraph() (*graph.Graph, *graph.Op, *revealed) {
	g := graph.New()
	owners := g.DefineCohort("owners")
	model := g.DefinePublicInput(players.ModelOwner, fixed([]float64{0.5, 1}), []graph.Shape{{2}})
	in := g.DefineCohortInput(owners, func(ctx context.Context, ins []*tensor.Dense) ([]*tensor.Dense, error) {
		v := float64(len(graph.Member(ctx))) / 10
		m := ins[0].Float64s()
		return []*tensor.Dense{
			tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{v * m[0], v * m[1]})),
			tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{v})),
		}, nil
	}, []graph.Shape{{2}, {1}}, model...)
	extra := g.DefinePrivateInput("data-owner-0", fixed([]float64{1, -1}), []graph.Shape{{2}})
	mean := g.Mean(in[0])
	rec := &revealed{}
	op := g.DefineOutput(players.ModelOwner, []*graph.Private{
		mean, g.Square(g.Mean(in[0])), g.WeightedMean(in[0], in[1]), g.Add(g.SumCohort(in[0]), extra[0]),
	}, rec.record)
	return g, op, rec
}
