package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"gorgonia.org/tensor"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
)

func planRing(t *testing.T, g *graph.Graph, op *graph.Op, opts Options) (*Plan, error) {
	t.Helper()
	s, err := NewLocal(g, opts)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s.Plan(op)
}

func TestSumTerms(t *testing.T) {
	g := graph.New()
	xs := make([]*graph.Private, 3)
	for i := range xs {
		xs[i] = g.DefinePrivateInput(players.DataOwner(i), fixed([]float64{1, 2, 3, 4, 5, 6}), []graph.Shape{{2, 3}})[0]
	}
	sum := g.AddN(xs...)                  // 3
	diff := g.Sub(sum, xs[0])             // 4
	rows := g.ReduceSum(diff, 1)          // 4 · 3 columns = 12
	plus := g.AddConstant(g.Neg(rows), 2) // 13
	op := g.DefineOutput(players.ModelOwner, []*graph.Private{plus, g.Div(sum, 3)}, func(context.Context, []*tensor.Dense) error { return nil })
	_ = op
	m, ok := sumTerms(g.Nodes(), 1)
	require.True(t, ok)
	assert.Equal(t, 13, m)

	g.Mul(xs[0], xs[1])
	_, ok = sumTerms(g.Nodes(), 1)
	assert.False(t, ok, "a product is no sum")
}

func TestRing32IntBits(t *testing.T) {
	for m, want := range map[int]int{1: 14, 2: 13, 3: 13, 4: 12, 16: 10, 17: 10, 31: 10, 32: 9, 10000: 1} {
		bits := ring32IntBits(16, m)
		assert.Equal(t, want, bits, "m = %d", m)
		// m encodings of magnitude at most 2^(bits+16) sum below 2^31.
		assert.Less(t, uint64(m)<<(bits+16), uint64(1)<<31, "m = %d", m)
		assert.GreaterOrEqual(t, uint64(m)<<(bits+17), uint64(1)<<31, "m = %d: one more bit would wrap", m)
	}
}

// The ring a plan computes in: Z_2^32 where it only adds and the range
// allows, Z_2^64 otherwise, and what Options.Protocol.Ring forces.
func TestPlanRing(t *testing.T) {
	ringOf := func(p *Plan) (int, int) { return p.proto.Config().Ring, p.proto.Config().IntBits }
	mean := func(owners int) (*graph.Graph, *graph.Op) { return flGraph(owners) }

	g, op := mean(3)
	p, err := planRing(t, g, op, Options{})
	require.NoError(t, err)
	ring, bits := ringOf(p)
	assert.Equal(t, pond.Ring32, ring, "a mean divided in the clear only adds")
	assert.Equal(t, 13, bits)
	assert.Contains(t, p.String(), "ring Z_2^32 (4 bytes an element): inputs |x| < 8192, so that a sum of up to 3 cannot wrap\n")

	g, op = mean(3)
	p, err = planRing(t, g, op, Options{Protocol: pond.Config{Ring: pond.Ring64}})
	require.NoError(t, err)
	ring, bits = ringOf(p)
	assert.Equal(t, pond.Ring64, ring, "forced")
	assert.Equal(t, 10, bits)

	g, op = mean(3)
	p, err = planRing(t, g, op, Options{PrivateDivision: true})
	require.NoError(t, err)
	ring, _ = ringOf(p)
	assert.Equal(t, pond.Ring64, ring, "a division inside the protocol truncates")

	g, op = mean(3)
	_, err = planRing(t, g, op, Options{PrivateDivision: true, Protocol: pond.Config{Ring: pond.Ring32}})
	assert.ErrorContains(t, err, "session: Protocol.Ring is 32, but the plan multiplies or divides inside the protocol, which needs Z_2^64 (plan for output#")

	// 40 owners leave 9 integer bits: less than Z_2^64's default 10, so
	// the automatic choice keeps Z_2^64, unless the range asked for fits.
	g, op = mean(40)
	p, err = planRing(t, g, op, Options{})
	require.NoError(t, err)
	ring, _ = ringOf(p)
	assert.Equal(t, pond.Ring64, ring)
	g, op = mean(40)
	p, err = planRing(t, g, op, Options{Protocol: pond.Config{IntBits: 6}})
	require.NoError(t, err)
	ring, bits = ringOf(p)
	assert.Equal(t, pond.Ring32, ring)
	assert.Equal(t, 6, bits, "the range asked for")
	g, op = mean(40)
	p, err = planRing(t, g, op, Options{Protocol: pond.Config{Ring: pond.Ring32}})
	require.NoError(t, err)
	ring, bits = ringOf(p)
	assert.Equal(t, pond.Ring32, ring)
	assert.Equal(t, 9, bits, "forced: the derived range")
	g, op = mean(40)
	_, err = planRing(t, g, op, Options{Protocol: pond.Config{Ring: pond.Ring32, IntBits: 10}})
	assert.ErrorContains(t, err, "IntBits 10 is more than the 9 bits Z_2^32 leaves an input when sums of up to 40 inputs must not wrap")

	// Products need Z_2^64.
	g = graph.New()
	x := g.DefinePrivateInput("data-owner-0", fixed([]float64{1, 2}), []graph.Shape{{2}})[0]
	y := g.DefinePrivateInput("data-owner-1", fixed([]float64{1, 2}), []graph.Shape{{2}})[0]
	op = g.DefineOutput(players.ModelOwner, []*graph.Private{g.Mul(x, y)}, func(context.Context, []*tensor.Dense) error { return nil })
	p, err = planRing(t, g, op, Options{})
	require.NoError(t, err)
	ring, _ = ringOf(p)
	assert.Equal(t, pond.Ring64, ring)

	// A cohort's sums count the largest cohort a round may have.
	for _, tc := range []struct {
		rounds RoundOptions
		ring   int
		bits   int
	}{
		{RoundOptions{Members: cohortMembers(3)}, pond.Ring32, 13},
		{RoundOptions{Members: cohortMembers(40), Sample: 8}, pond.Ring32, 11},
		{RoundOptions{Members: cohortMembers(40)}, pond.Ring64, 10},
		{RoundOptions{}, pond.Ring64, 10}, // no bound but MaxMembers
		{RoundOptions{MaxCohort: 100}, pond.Ring64, 10},
	} {
		g, op := flCohortGraph()
		p, err := planRing(t, g, op, Options{Rounds: tc.rounds})
		require.NoError(t, err)
		ring, bits := ringOf(p)
		assert.Equal(t, tc.ring, ring, "%+v", tc.rounds)
		assert.Equal(t, tc.bits, bits, "%+v", tc.rounds)
	}
}

// A mean computed in Z_2^32 reveals exactly what Z_2^64 reveals, negative
// values and the edge of the range included, for fixed owners and in
// rounds of a cohort.
func TestRing32MatchesRing64(t *testing.T) {
	const n = 4099
	inputs := randomInputs(newBenchRand(), 3, []graph.Shape{{n}}, 1000)
	inputs[0][0][0], inputs[1][0][0], inputs[2][0][0] = 1023.9, 1023.9, 1023.9
	inputs[0][0][1], inputs[1][0][1], inputs[2][0][1] = -1023.9, -1023.9, -1023.9
	var results [2][]float64
	for i, ring := range []int{pond.Ring32, pond.Ring64} {
		g, op, got := meanGraph(inputs, []graph.Shape{{n}})
		s, err := NewLocal(g, Options{Protocol: pond.Config{Ring: ring}, Rand: newSeededRand(1)})
		require.NoError(t, err)
		require.NoError(t, s.Run(context.Background(), op))
		s.Close()
		results[i] = (*got)[0]
	}
	assert.Equal(t, results[1], results[0])
	assert.InDelta(t, 1023.9, results[0][0], 1e-4)
	assert.InDelta(t, -1023.9, results[0][1], 1e-4)

	member := func(_ context.Context, m string, _ []float64) ([]float64, float64, error) {
		i := int(m[len(m)-1] - '0')
		x := slices.Clone(inputs[i][0][:8])
		for j := range x {
			x[j] /= 4 // w·x stays inside Z_2^64's range too
		}
		return x, float64(i + 1), nil
	}
	var rounds [2][][]float64
	for i, ring := range []int{pond.Ring32, pond.Ring64} {
		g, op, rec := aggregationGraph(8, member)
		s, err := NewLocal(g, Options{Protocol: pond.Config{Ring: ring}, Rounds: RoundOptions{Members: cohortMembers(3)}})
		require.NoError(t, err)
		require.NoError(t, s.Run(context.Background(), op))
		s.Close()
		_, rounds[i] = rec.last()
	}
	assert.Equal(t, rounds[1], rounds[0])
}

// TestServersRefuseACohortOverTheBound: the input range of Z_2^32 holds
// sums over at most MaxCohort members; a coordinator that announces more
// is refused by the servers, which send no share.
func TestServersRefuseACohortOverTheBound(t *testing.T) {
	const n = 2
	build := func() (*graph.Graph, *graph.Op) {
		g, op, _ := aggregationGraph(n, fixedMember(n))
		return g, op
	}
	opts := Options{Rounds: RoundOptions{MaxCohort: 2}}
	c := newCohortNet(t, build, opts)
	cp := planOf(t, build, c.opts).cohort
	for _, p := range []string{"server0", "server1", "member-0", "member-1"} {
		c.serve(p, nil, nil)
	}
	s, op := c.coordinatorEditingStart(cp, func(m *roundStart) {
		m.Cohort = cohortMembers(3) // member-2 need not even exist
	})
	err := s.Run(c.ctx, op)
	require.Error(t, err)
	assert.ErrorContains(t, err, "the cohort of round 1 has 3 members, more than the 2 the plan allows (RoundOptions.MaxCohort): refused")
	for _, l := range s.Stats() {
		if l.To == players.ModelOwner && strings.HasPrefix(l.From, "server") {
			assert.Equal(t, uint64(1), l.Messages, "%s sent its result, and no share", l.From)
		}
	}
	require.NoError(t, s.Run(c.ctx, op), "the next round, as announced, runs")
	for p, err := range c.finish(s) {
		assert.NoError(t, err, p)
	}
}

func TestMaxCohortRefused(t *testing.T) {
	for o, want := range map[*RoundOptions]string{
		{MaxCohort: -1}:              "Rounds.MaxCohort is -1",
		{MaxCohort: MaxMembers + 1}:  fmt.Sprintf("Rounds.MaxCohort is %d", MaxMembers+1),
		{MaxCohort: 2, MinOwners: 3}: "Rounds.MaxCohort is 2, below Rounds.MinOwners (3)",
		{MaxCohort: 3, Sample: 3}:    "",
		{MaxCohort: 5, Sample: 3}:    "",
	} {
		_, err := o.withDefaults()
		if want == "" {
			assert.NoError(t, err, "%+v", *o)
		} else {
			assert.ErrorContains(t, err, want)
		}
	}
	assert.Equal(t, 3, RoundOptions{MaxCohort: 5, Sample: 3}.cohortBound())
	assert.Equal(t, 5, RoundOptions{MaxCohort: 5}.cohortBound())
	assert.Equal(t, MaxMembers, RoundOptions{}.cohortBound())
}

// cutSends cuts the last byte off every message its player sends on edges
// of a tensor's size or more: a hostile player whose messages do not fit
// the plan.
type cutSends struct {
	transport.Transport
	min int
}

func (c *cutSends) Send(ctx context.Context, to string, key transport.Key, payload []byte) error {
	if len(payload) >= c.min {
		payload = payload[:len(payload)-1]
	}
	return c.Transport.Send(ctx, to, key, payload)
}

// TestRing32RefusesCutShares: a masked input or a server's share in Z_2^32
// one byte short is refused, naming the sender, the edge and the sizes,
// and nothing is revealed.
func TestRing32RefusesCutShares(t *testing.T) {
	const n = 1000
	inputs := randomInputs(newBenchRand(), 3, []graph.Shape{{n}}, 100)
	names := []string{"server0", "server1", "model-owner", "data-owner-0", "data-owner-1", "data-owner-2"}
	for hostile, want := range map[string]struct{ victim, msg string }{
		"data-owner-0": {"", "from \"data-owner-0\""},
		"server0":      {"model-owner", "message from \"server0\""},
	} {
		t.Run(hostile, func(t *testing.T) {
			var revealed *[][]float64
			errs := runPlayers(t, names, func(p string, ep *transport.MemoryEndpoint) playerSetup {
				g, op, got := meanGraph(inputs, []graph.Shape{{n}})
				if p == "model-owner" {
					revealed = got
				}
				ps := playerSetup{g: g, ops: []*graph.Op{op}, opts: Options{SessionID: "cut"}}
				if p == hostile {
					ps.t = &cutSends{Transport: ep, min: 4 * n}
				}
				return ps
			}, func(p string, s *Remote, ops []*graph.Op) error {
				// The refusal comes at once; the bound only ends the players
				// left waiting for what the refusing player never sends.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return s.Run(ctx, ops[0])
			})
			var refused error
			for p, err := range errs {
				if errors.Is(err, ErrWire) {
					refused = err
					if want.victim != "" {
						assert.Equal(t, want.victim, p)
					}
				}
			}
			require.Error(t, refused, "someone refuses the cut message: %v", errs)
			assert.ErrorContains(t, refused, want.msg)
			assert.ErrorContains(t, refused, "in Z_2^32 needs")
			assert.Nil(t, *revealed, "nothing revealed")
		})
	}
}

// TestRing32OutOfRangeMemberDrops: in rounds, a member whose upload leaves
// the range Z_2^32 keeps for the round's sums drops out, saying which
// element and why, and the round goes on without it.
func TestRing32OutOfRangeMemberDrops(t *testing.T) {
	const n = 2
	g, op, rec := aggregationGraph(n, func(ctx context.Context, m string, model []float64) ([]float64, float64, error) {
		x, w, err := fixedMember(n)(ctx, m, model)
		if m == "member-3" {
			x = []float64{1, 5000} // 4 members: |x| < 2^(30−16−2) = 4096
		}
		return x, w, err
	})
	s, err := NewLocal(g, Options{Rounds: RoundOptions{Members: cohortMembers(4)}})
	require.NoError(t, err)
	defer s.Close()
	p, err := s.Plan(op)
	require.NoError(t, err)
	require.Equal(t, pond.Ring32, p.proto.Config().Ring)
	require.NoError(t, s.Run(context.Background(), op))
	info := s.LastRound()
	assert.Equal(t, []string{"member-0", "member-1", "member-2"}, info.Survivors)
	assert.Contains(t, info.Dropped["member-3"], "element 1 is 5000, outside the fixed-point range (-4096, 4096) (the plan computes in Z_2^32")
	calls, _ := rec.last()
	assert.Equal(t, 1, calls, "the round is revealed over the others")
}
