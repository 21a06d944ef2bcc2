package session

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
)

// flCohortGraph is TF Encrypted's federated learning in rounds: the model
// owner's weights go to every member of the round's cohort, which returns
// its gradient and its number of examples; the model owner learns the
// weighted mean of the gradients over the survivors.
func flCohortGraph() (*graph.Graph, *graph.Op) {
	shapes := []graph.Shape{{2, 2}, {2}}
	g := graph.New()
	weights := g.DefinePublicInput(players.ModelOwner, func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
		return []*tensor.Dense{
			tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{1, 2, 3, 4})),
			tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{5, 6})),
		}, nil
	}, shapes)
	owners := g.DefineCohort("data-owners")
	grads := g.DefineCohortInput(owners, func(_ context.Context, w []*tensor.Dense) ([]*tensor.Dense, error) {
		return w, nil
	}, shapes, weights...)
	examples := g.DefineCohortInput(owners, fixed([]float64{30}), []graph.Shape{{1}})[0]
	mean := make([]*graph.Private, len(shapes))
	for i := range mean {
		mean[i] = g.WeightedMean(grads[i], examples)
	}
	return g, g.DefineOutput(players.ModelOwner, mean, func(context.Context, []*tensor.Dense) error { return nil })
}

func TestCohortPlanGolden(t *testing.T) {
	g, op := flCohortGraph()
	s, err := NewLocal(g, Options{Rounds: RoundOptions{Members: cohortMembers(2)}})
	require.NoError(t, err)
	defer s.Close()
	plan, err := s.Plan(op)
	require.NoError(t, err)
	assertGolden(t, "plan-cohort.txt", plan.String())
	assert.Equal(t, []string{"model-owner", "server0", "server1"}, plan.Players(), "members are nobody's player")
	require.NoError(t, s.Run(context.Background(), op), "the plan runs")
	assert.Equal(t, 30.0*2, s.LastRound().TotalWeight)
}

// TestCohortFingerprint: a plan for rounds covers the round options the
// players apply, and not those of one player alone.
func TestCohortFingerprint(t *testing.T) {
	fp := func(o RoundOptions) string {
		g, op := flCohortGraph()
		s, err := NewLocal(g, Options{Rounds: o})
		require.NoError(t, err)
		defer s.Close()
		p, err := s.Plan(op)
		require.NoError(t, err)
		return p.Fingerprint()
	}
	base := fp(RoundOptions{})
	assert.Equal(t, base, fp(RoundOptions{MinOwners: DefaultMinOwners, Deadline: DefaultDeadline}), "the defaults spelt out")
	for name, o := range map[string]RoundOptions{
		"MinOwners":  {MinOwners: 3},
		"MaxSkipped": {MaxSkipped: 4},
		"Sample":     {Sample: 5},
		"Deadline":   {Deadline: time.Second},
		"MaxCohort":  {MaxCohort: 5},
	} {
		assert.NotEqual(t, base, fp(o), name)
	}
	// A Local session's Members bound its cohorts when MaxCohort does not:
	// with MaxCohort set, they are the session's own.
	bounded := fp(RoundOptions{MaxCohort: 2})
	for name, o := range map[string]RoundOptions{
		"SampleSeed":         {SampleSeed: 9, MaxCohort: 2},
		"CoordinatorTimeout": {CoordinatorTimeout: time.Hour, MaxCohort: 2},
		"Members":            {Members: []string{"x"}, MaxCohort: 2},
	} {
		assert.Equal(t, bounded, fp(o), "%s is one player's own", name)
	}
}

func TestRoundOptionsRefused(t *testing.T) {
	g, _ := flCohortGraph()
	for name, c := range map[string]struct {
		o    RoundOptions
		want string
	}{
		"floor of one":        {RoundOptions{MinOwners: 1}, "Rounds.MinOwners is 1: a sum over fewer than 2 owners reveals an owner's input"},
		"negative floor":      {RoundOptions{MinOwners: -3}, "Rounds.MinOwners is -3"},
		"sample below floor":  {RoundOptions{Sample: 2, MinOwners: 3}, "Rounds.Sample is 2, below Rounds.MinOwners (3)"},
		"negative sample":     {RoundOptions{Sample: -1}, "Rounds.Sample is -1"},
		"negative deadline":   {RoundOptions{Deadline: -time.Second}, "Rounds.Deadline is -1s"},
		"bad member":          {RoundOptions{Members: []string{"Data Owner"}}, `Rounds.Members: player name "Data Owner"`},
		"member twice":        {RoundOptions{Members: []string{"a", "a"}}, `Rounds.Members lists "a" twice`},
		"member a player":     {RoundOptions{Members: []string{"server1"}}, `Rounds.Members names "server1", a player of the graph`},
		"negative MaxSkipped": {RoundOptions{MaxSkipped: -1}, "Rounds.MaxSkipped is -1"},
	} {
		_, err := NewLocal(g, Options{Rounds: c.o})
		assert.ErrorContains(t, err, c.want, name)
	}
}

// TestCohortMisuse: the coordinator must not be a compute server; Run is
// the coordinator's, Serve everyone else's, and only for rounds.
func TestCohortMisuse(t *testing.T) {
	g := graph.New()
	c := g.DefineCohort("owners")
	x := g.DefineCohortInput(c, fixed([]float64{1}), []graph.Shape{{1}})[0]
	op := g.DefineOutput("server0", []*graph.Private{g.Mean(x)}, func(context.Context, []*tensor.Dense) error { return nil })
	s, err := NewLocal(g, Options{})
	require.NoError(t, err)
	_, err = s.Plan(op)
	assert.ErrorContains(t, err, `the output of rounds of cohort "owners" goes to "server0", a compute server`)

	ctx := context.Background()
	cg, cop := flCohortGraph()
	fg, fop := flGraph(2)
	net := newCohortNet(t, flCohortGraph, Options{}).net
	ep, err := net.Endpoint("server0")
	require.NoError(t, err)
	server, err := NewRemote(cg, "server0", ep, Options{SessionID: "m"})
	require.NoError(t, err)
	assert.ErrorContains(t, server.Run(ctx, cop), `"model-owner" runs the rounds of cohort "data-owners", not "server0": call Serve`)
	fixedServer, err := NewRemote(fg, "server0", ep, Options{SessionID: "m"})
	require.NoError(t, err)
	assert.ErrorContains(t, fixedServer.Serve(ctx, fop), "aggregates no cohort: call Run")
	ep, err = net.Endpoint(players.ModelOwner)
	require.NoError(t, err)
	coord, err := NewRemote(cg, players.ModelOwner, ep, Options{SessionID: "m"})
	require.NoError(t, err)
	assert.ErrorContains(t, coord.Serve(ctx, cop), `"model-owner" coordinates the rounds of cohort "data-owners": call Run`)
	assert.NoError(t, coord.Finish(ctx), "nothing to finish before a round")
}

// TestCohortEveryAggregation checks the values of every verb of rounds
// and each way of dividing a mean: in the clear, and inside the protocol
// with either truncation, where the division by the number of survivors
// adds at most the error of a multiplication by a public constant and
// its truncation (a few units in the last place).
func TestCohortEveryAggregation(t *testing.T) {
	members := []string{"a", "bb", "cccc"} // contribute v = 0.1, 0.2, 0.4 times the model (0.5, 1)
	for name, opts := range map[string]Options{
		"clear":       {},
		"interactive": {PrivateDivision: true},
		"local":       {PrivateDivision: true, Protocol: pond.Config{Truncation: pond.Local}},
	} {
		t.Run(name, func(t *testing.T) {
			g, op, rec := everyAggregationGraph()
			opts.Rounds.Members = members
			s, err := NewLocal(g, opts)
			require.NoError(t, err)
			defer s.Close()
			require.NoError(t, s.Run(context.Background(), op))
			_, got := rec.last()
			v := []float64{0.1, 0.2, 0.4}
			mean := (v[0] + v[1] + v[2]) / 3
			wmean := (v[0]*v[0] + v[1]*v[1] + v[2]*v[2]) / (v[0] + v[1] + v[2])
			sum := v[0] + v[1] + v[2]
			tol := 8 * 0x1p-16
			assert.InDeltaSlice(t, []float64{mean * 0.5, mean}, got[0], tol, "mean")
			assert.InDeltaSlice(t, []float64{mean * mean * 0.25, mean * mean}, got[1], tol, "mean squared")
			assert.InDeltaSlice(t, []float64{wmean * 0.5, wmean}, got[2], tol, "weighted mean")
			assert.InDeltaSlice(t, []float64{sum*0.5 + 1, sum - 1}, got[3], tol, "sum plus a fixed owner's input")
			assert.InDelta(t, sum, s.LastRound().TotalWeight, tol)
		})
	}
}
