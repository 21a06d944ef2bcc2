package session

import (
	"context"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
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

// cohortNet runs the players of rounds as Remote sessions over one
// in-memory network, each in its own goroutine, the way separate hosts
// would: the servers and members Serve; the test runs the coordinator.
// Every player builds its own graph with build.
type cohortNet struct {
	t     *testing.T
	ctx   context.Context
	net   *transport.Memory
	build func() (*graph.Graph, *graph.Op)
	opts  Options
	wg    sync.WaitGroup
	mu    sync.Mutex
	errs  map[string]error
}

func newCohortNet(t *testing.T, build func() (*graph.Graph, *graph.Op), opts Options) *cohortNet {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if opts.SessionID == "" {
		opts.SessionID = "rounds"
	}
	return &cohortNet{t: t, ctx: ctx, net: transport.NewMemory("server0", "server1", players.ModelOwner), build: build, opts: opts, errs: map[string]error{}}
}

// serve starts player p's Serve over tr (its endpoint if nil), with opts
// changed by tweak if not nil.
func (c *cohortNet) serve(p string, tr transport.Transport, tweak func(*Options)) *Remote {
	if tr == nil {
		ep, err := c.net.Endpoint(p)
		if err != nil {
			ep, err = c.net.Connect(p)
		}
		require.NoError(c.t, err)
		tr = ep
	}
	opts := c.opts
	if tweak != nil {
		tweak(&opts)
	}
	g, op := c.build()
	s, err := NewRemote(g, p, tr, opts)
	require.NoError(c.t, err)
	c.wg.Go(func() {
		defer s.Close()
		err := s.Serve(c.ctx, op)
		c.mu.Lock()
		c.errs[p] = err
		c.mu.Unlock()
	})
	return s
}

// coordinator returns the model owner's session over tr (its endpoint if
// nil) and its op.
func (c *cohortNet) coordinator(tr transport.Transport) (*Remote, *graph.Op) {
	if tr == nil {
		ep, err := c.net.Endpoint(players.ModelOwner)
		require.NoError(c.t, err)
		tr = ep
	}
	g, op := c.build()
	s, err := NewRemote(g, players.ModelOwner, tr, c.opts)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { s.Close() })
	return s, op
}

// coordinatorEditingStart is coordinator over an endpoint that lets edit
// change the start of round 1 the coordinator sends the servers: a
// hostile coordinator.
func (c *cohortNet) coordinatorEditingStart(cp *cohortPlan, edit func(*roundStart)) (*Remote, *graph.Op) {
	ep, err := c.net.Endpoint(players.ModelOwner)
	require.NoError(c.t, err)
	return c.coordinator(&sendHook{MemoryEndpoint: ep, onSend: func(to string, key transport.Key, b []byte) []byte {
		if key.Session != roundSession(c.opts.SessionID) || key.Edge != cp.startEdge || key.Iteration != 1 {
			return b
		}
		var m roundStart
		require.NoError(c.t, m.UnmarshalBinary(b))
		edit(&m)
		out, err := m.MarshalBinary()
		require.NoError(c.t, err)
		return out
	}})
}

// finish ends the run and returns what every Serve returned.
func (c *cohortNet) finish(s *Remote) map[string]error {
	require.NoError(c.t, s.Finish(c.ctx))
	c.wg.Wait()
	return c.errs
}

// sendHook is a player's endpoint that shows onSend every message it
// sends, which may change it, hold it back or drop it (returning nil).
type sendHook struct {
	*transport.MemoryEndpoint
	onSend func(to string, key transport.Key, payload []byte) []byte
}

func (h *sendHook) Send(ctx context.Context, to string, key transport.Key, payload []byte) error {
	if payload = h.onSend(to, key, payload); payload == nil {
		return nil
	}
	return h.MemoryEndpoint.Send(ctx, to, key, payload)
}

func (h *sendHook) SendOwned(ctx context.Context, to string, key transport.Key, payload []byte) error {
	return h.Send(ctx, to, key, payload)
}

// planOf compiles op of a fresh graph, for its edges.
func planOf(t *testing.T, build func() (*graph.Graph, *graph.Op), opts Options) *Plan {
	g, op := build()
	s, err := NewLocal(g, opts)
	require.NoError(t, err)
	defer s.Close()
	p, err := s.Plan(op)
	require.NoError(t, err)
	require.NotNil(t, p.cohort)
	return p
}

// mixedRand returns a seeded random source for member and round.
func mixedRand(member string, round int) *mrand.Rand {
	var h uint64 = 14695981039346656037
	for _, c := range []byte(member) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return mrand.New(mrand.NewPCG(h, uint64(round)))
}

// roundValues is what member contributes in its call-th round: x, its
// weight and whether it drops out (with probability dropout).
func roundValues(member string, call, n int, dropout float64) (x []float64, w float64, drop bool) {
	r := mixedRand(member, call)
	x = make([]float64, n)
	for i := range x {
		x[i] = (r.Float64()*2 - 1) * 10
	}
	return x, 0.1 + r.Float64()*4.9, r.Float64() < dropout
}

// callCounter counts each member's calls. It is safe for concurrent use.
type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *callCounter) next(member string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[member]++
	return c.n[member]
}

// randomMember is a member function that contributes roundValues, and
// drops out with probability dropout.
func randomMember(n int, dropout float64) memberFunc {
	calls := &callCounter{}
	return func(_ context.Context, member string, _ []float64) ([]float64, float64, error) {
		x, w, drop := roundValues(member, calls.next(member), n, dropout)
		if drop {
			return nil, 0, fmt.Errorf("simulated: %w", graph.ErrDropout)
		}
		return x, w, nil
	}
}

// checkRound compares what a round revealed with the plaintext mean,
// weighted mean and sum over its survivors (each contributing in its
// round-th call), within the fixed-point bounds: each input is encoded
// within half a unit in the last place (ulp), so a sum over k survivors
// is within k·ulp/2, a mean within ulp/2, and a weighted mean within
// k·ulp/2·(1 + |mean|)/Σw, as both Σw·x and Σw are.
func checkRound(t *testing.T, info RoundInfo, got [][]float64, n int) {
	t.Helper()
	ulp := math.Ldexp(1, -pond.DefaultFracBits)
	k := float64(len(info.Survivors))
	require.NotZero(t, k)
	sum := make([]float64, n)
	wsum := make([]float64, n)
	var W float64
	for _, m := range info.Survivors {
		x, w, _ := roundValues(m, int(info.Round), n, 0)
		W += w
		for i := range x {
			sum[i] += x[i]
			wsum[i] += w * x[i]
		}
	}
	assert.InDelta(t, W, info.TotalWeight, k*ulp/2, "Σw of round %d", info.Round)
	for i := range n {
		wm := wsum[i] / W
		require.InDelta(t, sum[i]/k, got[0][i], ulp/2+1e-9, "mean, round %d, element %d", info.Round, i)
		require.InDelta(t, wm, got[1][i], k*ulp/2*(1+math.Abs(wm))/W+1e-9, "weighted mean, round %d, element %d", info.Round, i)
		require.InDelta(t, sum[i], got[2][i], k*ulp/2+1e-9, "sum, round %d, element %d", info.Round, i)
	}
}

// roundRunner is what runs rounds: a Local session or the coordinator's
// Remote one.
type roundRunner interface {
	Run(ctx context.Context, op *graph.Op) error
	LastRound() RoundInfo
}

// checkRandomRounds runs rounds of the aggregation graph whose members
// contribute randomMember's values, and checks every revealed round
// against the plaintext and every skipped one against its survivors.
func checkRandomRounds(t *testing.T, s roundRunner, op *graph.Op, rec *revealed, rounds, n, minOwners int) {
	revealedRounds, withDropouts := 0, 0
	for range rounds {
		err := s.Run(context.Background(), op)
		info := s.LastRound()
		if errors.Is(err, ErrRoundSkipped) {
			assert.Less(t, len(info.Survivors), minOwners, "round %d skipped", info.Round)
			assert.NotEmpty(t, info.Skipped)
			continue
		}
		require.NoError(t, err)
		revealedRounds++
		calls, got := rec.last()
		require.Equal(t, revealedRounds, calls, "the output function ran once per revealed round")
		for m, why := range info.Dropped {
			assert.Contains(t, why, "simulated", "member %s", m)
		}
		assert.Len(t, info.Dropped, len(info.Cohort)-len(info.Survivors))
		if len(info.Dropped) > 0 {
			withDropouts++
		}
		checkRound(t, info, got, n)
	}
	assert.Greater(t, revealedRounds, rounds/2, "most rounds are revealed")
	assert.Positive(t, withDropouts, "some revealed rounds had dropouts")
}

// TestCohortWeightedMeanMatchesPlaintext: over random values, random
// weights and random dropouts, every round reveals the mean, the weighted
// mean Σwx/Σw and the sum over its survivors, within the fixed-point
// bounds, in a Local session and across Remote sessions.
func TestCohortWeightedMeanMatchesPlaintext(t *testing.T) {
	const n, rounds, dropout = 257, 8, 0.3
	members := cohortMembers(6)
	t.Run("local", func(t *testing.T) {
		g, op, rec := aggregationGraph(n, randomMember(n, dropout))
		s, err := NewLocal(g, Options{Rounds: RoundOptions{Members: members}})
		require.NoError(t, err)
		defer s.Close()
		checkRandomRounds(t, s, op, rec, rounds, n, DefaultMinOwners)
	})
	t.Run("remote", func(t *testing.T) {
		fn := randomMember(n, dropout) // the members' calls are counted apart
		var rec *revealed
		c := newCohortNet(t, func() (*graph.Graph, *graph.Op) {
			g, op, r := aggregationGraph(n, fn)
			rec = r
			return g, op
		}, Options{})
		for _, p := range append([]string{"server0", "server1"}, members...) {
			c.serve(p, nil, nil)
		}
		s, op := c.coordinator(nil)
		checkRandomRounds(t, s, op, rec, rounds, n, DefaultMinOwners)
		for p, err := range c.finish(s) {
			assert.NoError(t, err, p)
		}
	})
}

// fixedMember contributes x = (1, 2, ...)·(its index+1) and weight 1, but
// for the members in drop, which drop out of every round.
func fixedMember(n int, drop ...string) memberFunc {
	return func(_ context.Context, member string, _ []float64) ([]float64, float64, error) {
		if slices.Contains(drop, member) {
			return nil, 0, fmt.Errorf("out of battery: %w", graph.ErrDropout)
		}
		var idx int
		fmt.Sscanf(member, "member-%d", &idx)
		x := make([]float64, n)
		for i := range x {
			x[i] = float64((i + 1) * (idx + 1))
		}
		return x, 1, nil
	}
}

// checkSkippedRounds runs MaxSkipped (3) rounds of 3 members of which
// member-2 drops out, under MinOwners 3: every round is skipped, and the
// third fails with ErrTooManySkipped naming member-2. The output function
// never runs.
func checkSkippedRounds(t *testing.T, s roundRunner, op *graph.Op, rec *revealed) {
	for round := uint64(1); round <= 3; round++ {
		err := s.Run(context.Background(), op)
		var skip *SkippedError
		require.ErrorAs(t, err, &skip, "round %d", round)
		assert.ErrorIs(t, err, ErrRoundSkipped)
		assert.Equal(t, round, skip.Round)
		assert.Equal(t, []string{"member-2"}, skip.Missing)
		assert.Contains(t, skip.Reason, "2 of the 3 members invited survived, fewer than the 3 the servers require (MinOwners)")
		info := s.LastRound()
		assert.Equal(t, round, info.Round)
		assert.Equal(t, skip.Reason, info.Skipped)
		assert.Equal(t, []string{"member-0", "member-1"}, info.Survivors)
		assert.Contains(t, info.Dropped["member-2"], "dropped out: ")
		assert.Contains(t, info.Dropped["member-2"], "out of battery: "+graph.ErrDropout.Error())
		if round < 3 {
			assert.NotErrorIs(t, err, ErrTooManySkipped)
		} else {
			assert.ErrorIs(t, err, ErrTooManySkipped)
			assert.ErrorContains(t, err, `3 rounds in a row, up to round 3; missing: "member-2" (3 of 3)`)
		}
	}
	calls, _ := rec.last()
	assert.Zero(t, calls, "the output function never runs in a skipped round")
}

// TestCohortMinOwners: with three owners, MinOwners 3 and one dropping
// out, the servers skip every round and never send the coordinator a
// share, and Run fails with ErrTooManySkipped after MaxSkipped rounds,
// naming the missing owner.
func TestCohortMinOwners(t *testing.T) {
	const n = 5
	opts := Options{Rounds: RoundOptions{MinOwners: 3, MaxSkipped: 3, Members: cohortMembers(3)}}
	t.Run("local", func(t *testing.T) {
		g, op, rec := aggregationGraph(n, fixedMember(n, "member-2"))
		s, err := NewLocal(g, opts)
		require.NoError(t, err)
		defer s.Close()
		checkSkippedRounds(t, s, op, rec)
		// Each server sent the coordinator one message a round: its result.
		for _, l := range s.Stats() {
			if l.To == players.ModelOwner {
				assert.Equal(t, uint64(3), l.Messages, "%s -> %s", l.From, l.To)
			}
		}
	})
	t.Run("remote", func(t *testing.T) {
		var rec *revealed // the last graph built: the coordinator's
		build := func() (*graph.Graph, *graph.Op) {
			g, op, r := aggregationGraph(n, fixedMember(n, "member-2"))
			rec = r
			return g, op
		}
		ropts := opts
		ropts.Rounds.Members = nil // the members connect
		c := newCohortNet(t, build, ropts)
		cp := planOf(t, build, ropts).cohort
		var mu sync.Mutex
		var toCoordinator []transport.Key
		for _, p := range []string{"server0", "server1"} {
			ep, err := c.net.Endpoint(p)
			require.NoError(t, err)
			c.serve(p, &sendHook{MemoryEndpoint: ep, onSend: func(to string, key transport.Key, b []byte) []byte {
				if to == players.ModelOwner && key.Session != helloSession {
					mu.Lock()
					toCoordinator = append(toCoordinator, key)
					mu.Unlock()
				}
				return b
			}}, nil)
		}
		for _, m := range cohortMembers(3) {
			c.serve(m, nil, nil)
		}
		s, op := c.coordinator(nil)
		checkSkippedRounds(t, s, op, rec)
		for p, err := range c.finish(s) {
			assert.NoError(t, err, p)
		}
		require.Len(t, toCoordinator, 6, "one message from each server in each of 3 rounds")
		for _, k := range toCoordinator {
			assert.Contains(t, []uint64{cp.resultEdges[0], cp.resultEdges[1]}, k.Edge, "only round results reach the coordinator, no share (%s)", k)
		}
	})
}

// TestCohortSurvivorMismatch: when the servers end up with different
// survivors, here because server1's arrived set loses a member on its way
// to server0, the coordinator reveals nothing and the round fails with
// ErrSurvivorMismatch naming both sets.
func TestCohortSurvivorMismatch(t *testing.T) {
	const n = 4
	var rec *revealed
	build := func() (*graph.Graph, *graph.Op) {
		g, op, r := aggregationGraph(n, fixedMember(n))
		rec = r
		return g, op
	}
	c := newCohortNet(t, build, Options{})
	cp := planOf(t, build, c.opts).cohort
	c.serve("server0", nil, nil)
	ep, err := c.net.Endpoint("server1")
	require.NoError(t, err)
	altered := 0
	c.serve("server1", &sendHook{MemoryEndpoint: ep, onSend: func(to string, key transport.Key, b []byte) []byte {
		if to != "server0" || key.Session != roundSession(c.opts.SessionID) || key.Edge != cp.exchangeEdges[1] || key.Iteration != 1 {
			return b
		}
		var a arrivedSet
		require.NoError(t, a.UnmarshalBinary(b))
		a.Members = a.Members[1:] // server0 learns that member-0's shares did not reach server1
		altered++
		out, err := a.MarshalBinary()
		require.NoError(t, err)
		return out
	}}, nil)
	for _, m := range cohortMembers(3) {
		c.serve(m, nil, nil)
	}
	s, op := c.coordinator(nil)
	err = s.Run(c.ctx, op)
	require.ErrorIs(t, err, ErrSurvivorMismatch)
	assert.ErrorContains(t, err, "in round 1: server0 names 2 survivors [member-1 member-2], server1 names 3 [member-0 member-1 member-2]; nothing is revealed")
	assert.NotErrorIs(t, err, ErrRoundSkipped)
	calls, _ := rec.last()
	assert.Zero(t, calls, "nothing is revealed")
	assert.Equal(t, 1, altered)
	assert.Nil(t, s.LastRound().Survivors, "no survivors agreed")

	// The next round, untouched, is revealed.
	require.NoError(t, s.Run(c.ctx, op))
	calls, got := rec.last()
	assert.Equal(t, 1, calls)
	assert.Equal(t, []float64{2, 4, 6, 8}, got[0], "mean of (1..4)·1, ·2, ·3")
	for p, err := range c.finish(s) {
		assert.NoError(t, err, p)
	}
}

// TestCohortLateShareLeftOutByBoth: a member whose shares reach server1
// only after server1 stopped waiting is left out by both servers, which
// agree on the others, and the round is revealed over them.
func TestCohortLateShareLeftOutByBoth(t *testing.T) {
	const n = 3
	var rec *revealed
	build := func() (*graph.Graph, *graph.Op) {
		g, op, r := aggregationGraph(n, fixedMember(n))
		rec = r
		return g, op
	}
	c := newCohortNet(t, build, Options{Rounds: RoundOptions{Deadline: 300 * time.Millisecond}})
	cp := planOf(t, build, c.opts).cohort
	c.serve("server0", nil, nil)
	stopped := make(chan struct{}) // server1 sent its arrived set: it stopped waiting
	var once sync.Once
	ep1, err := c.net.Endpoint("server1")
	require.NoError(t, err)
	c.serve("server1", &sendHook{MemoryEndpoint: ep1, onSend: func(to string, key transport.Key, b []byte) []byte {
		if key.Session == roundSession(c.opts.SessionID) && key.Edge == cp.exchangeEdges[1] {
			once.Do(func() { close(stopped) })
		}
		return b
	}}, nil)
	var late sync.WaitGroup
	t.Cleanup(late.Wait)
	for _, m := range cohortMembers(3) {
		if m != "member-1" {
			c.serve(m, nil, nil)
			continue
		}
		ep, err := c.net.Connect(m)
		require.NoError(t, err)
		c.serve(m, &sendHook{MemoryEndpoint: ep, onSend: func(to string, key transport.Key, b []byte) []byte {
			if to != "server1" || key.Session != roundSession(c.opts.SessionID) {
				return b
			}
			late.Go(func() { // delivered once server1 stopped waiting
				<-stopped
				ep.Send(context.Background(), to, key, b)
			})
			return nil
		}}, nil)
	}
	s, op := c.coordinator(nil)
	require.NoError(t, s.Run(c.ctx, op))
	info := s.LastRound()
	assert.Equal(t, []string{"member-0", "member-2"}, info.Survivors)
	assert.Equal(t, "its shares did not reach server1 within the deadline (300ms)", info.Dropped["member-1"])
	_, got := rec.last()
	assert.Equal(t, []float64{2, 4, 6}, got[0], "mean of (1, 2, 3)·1 and ·3")
	for p, err := range c.finish(s) {
		assert.NoError(t, err, p)
	}
}

// TestCohortSampling: Sample=k picks k of the connected members each
// round, sorted; the same seed draws the same cohorts, another seed
// others; every member gets its turn. A member whose function drops out
// is left out of the survivors and listed in Dropped with its reason.
func TestCohortSampling(t *testing.T) {
	const n, rounds, k = 2, 12, 4
	members := cohortMembers(10)
	cohorts := func(seed uint64) [][]string {
		g, op, rec := aggregationGraph(n, fixedMember(n, "member-3"))
		s, err := NewLocal(g, Options{Rounds: RoundOptions{Members: members, Sample: k, SampleSeed: seed}})
		require.NoError(t, err)
		defer s.Close()
		var out [][]string
		for range rounds {
			require.NoError(t, s.Run(context.Background(), op))
			info := s.LastRound()
			require.Len(t, info.Cohort, k)
			assert.True(t, slices.IsSorted(info.Cohort))
			assert.Subset(t, members, info.Cohort)
			if slices.Contains(info.Cohort, "member-3") {
				assert.NotContains(t, info.Survivors, "member-3")
				assert.Equal(t, `dropped out: cohort-input#1 of "owners": out of battery: `+graph.ErrDropout.Error(), info.Dropped["member-3"])
				assert.Len(t, info.Survivors, k-1)
			} else {
				assert.Equal(t, info.Cohort, info.Survivors)
				assert.Empty(t, info.Dropped)
			}
			out = append(out, info.Cohort)
		}
		calls, _ := rec.last()
		assert.Equal(t, rounds, calls)
		return out
	}
	a := cohorts(42)
	assert.Equal(t, a, cohorts(42), "the same seed draws the same cohorts")
	assert.NotEqual(t, a, cohorts(43), "another seed draws others")
	picked := map[string]bool{}
	for _, c := range a {
		for _, m := range c {
			picked[m] = true
		}
	}
	assert.Len(t, picked, len(members), "every member is drawn some time in %d rounds", rounds)
	assert.True(t, slices.ContainsFunc(a, func(c []string) bool { return slices.Contains(c, "member-3") }), "the member that drops out is drawn")
}

func TestSampleCohort(t *testing.T) {
	c := cohortMembers(5)
	key := sampleKey(7)
	assert.Equal(t, c, sampleCohort(c, 0, key, 1), "0 takes all")
	assert.Equal(t, c, sampleCohort(c, 9, key, 1), "more than there are takes all")
	s := sampleCohort(c, 2, key, 1)
	assert.Len(t, s, 2)
	assert.Equal(t, s, sampleCohort(c, 2, key, 1), "a function of the key and round")
	assert.Equal(t, c, cohortMembers(5), "the candidates are left alone")
	counts := map[string]int{}
	for r := range uint64(1000) {
		for _, m := range sampleCohort(c, 2, key, r) {
			counts[m]++
		}
	}
	for _, m := range c {
		assert.InDelta(t, 400, counts[m], 80, "member %s is drawn about 2/5 of the rounds", m)
	}
}

// TestCohortJoinAndLeave: a member that joins between rounds is in the
// next round's cohort; a member that leaves during a round is dropped
// from that round on; when it connects again it is back from the next
// round.
func TestCohortJoinAndLeave(t *testing.T) {
	const n = 2
	computing := make(chan struct{}) // member-1 is in its third round
	leave := make(chan struct{})     // the test has cut member-1 off
	calls := &callCounter{}
	build := func() (*graph.Graph, *graph.Op) {
		g, op, _ := aggregationGraph(n, func(ctx context.Context, m string, model []float64) ([]float64, float64, error) {
			if m == "member-1" && calls.next(m) == 3 {
				close(computing)
				<-leave
			}
			return fixedMember(n)(ctx, m, model)
		})
		return g, op
	}
	c := newCohortNet(t, build, Options{})
	for _, p := range []string{"server0", "server1", "member-0", "member-1", "member-2"} {
		c.serve(p, nil, nil)
	}
	s, op := c.coordinator(nil)
	run := func() RoundInfo {
		require.NoError(t, s.Run(c.ctx, op))
		return s.LastRound()
	}
	assert.Equal(t, []string{"member-0", "member-1", "member-2"}, run().Cohort)

	c.serve("member-3", nil, nil) // joins
	info := run()
	assert.Equal(t, []string{"member-0", "member-1", "member-2", "member-3"}, info.Cohort)
	assert.Equal(t, info.Cohort, info.Survivors)

	go func() { // member-1 leaves while it computes its third round
		<-computing
		assert.NoError(t, c.net.Disconnect("member-1"))
		close(leave)
	}()
	info = run()
	assert.Equal(t, []string{"member-0", "member-1", "member-2", "member-3"}, info.Cohort)
	assert.Equal(t, []string{"member-0", "member-2", "member-3"}, info.Survivors)
	assert.Contains(t, info.Dropped["member-1"], "left: ")

	info = run()
	assert.Equal(t, []string{"member-0", "member-2", "member-3"}, info.Cohort, "gone, member-1 is not invited")

	_, err := c.net.Connect("member-1") // back, on its old session, which hellos again
	require.NoError(t, err)
	info = run()
	assert.Equal(t, []string{"member-0", "member-1", "member-2", "member-3"}, info.Cohort)
	assert.Equal(t, info.Cohort, info.Survivors)
	for p, err := range c.finish(s) {
		assert.NoError(t, err, p)
	}
}

// TestCohortRestartedCoordinator: a coordinator that restarts learns the
// servers' last round from their hellos and numbers its rounds after it;
// the servers and members, waiting for it, carry on with the new one.
func TestCohortRestartedCoordinator(t *testing.T) {
	const n = 2
	build := func() (*graph.Graph, *graph.Op) {
		g, op, _ := aggregationGraph(n, fixedMember(n))
		return g, op
	}
	c := newCohortNet(t, build, Options{})
	for _, p := range []string{"server0", "server1", "member-0", "member-1", "member-2"} {
		c.serve(p, nil, nil)
	}
	first, op := c.coordinator(nil)
	for range 2 {
		require.NoError(t, first.Run(c.ctx, op))
	}
	assert.Equal(t, uint64(2), first.LastRound().Round)
	require.NoError(t, first.Close())
	require.NoError(t, c.net.Disconnect(players.ModelOwner)) // the process is gone
	ep, err := c.net.Connect(players.ModelOwner)             // and starts again
	require.NoError(t, err)
	again, op := c.coordinator(ep)
	require.NoError(t, again.Run(c.ctx, op))
	info := again.LastRound()
	assert.Equal(t, uint64(3), info.Round, "round numbers only increase within a session")
	assert.Equal(t, cohortMembers(3), info.Survivors, "every member came back")
	for p, err := range c.finish(again) {
		assert.NoError(t, err, p)
	}
}

// TestCohortMemberHelloMismatch: a member that runs another program
// (another floor, so another plan fingerprint) is refused alone, and
// learns why; the rounds go on without it.
func TestCohortMemberHelloMismatch(t *testing.T) {
	const n = 2
	build := func() (*graph.Graph, *graph.Op) {
		g, op, _ := aggregationGraph(n, fixedMember(n))
		return g, op
	}
	c := newCohortNet(t, build, Options{})
	for _, p := range []string{"server0", "server1", "member-0", "member-1", "member-2"} {
		tweak := func(*Options) {}
		if p == "member-2" {
			tweak = func(o *Options) { o.Rounds.MinOwners = 3 }
		}
		c.serve(p, nil, tweak)
	}
	s, op := c.coordinator(nil)
	for range 2 {
		require.NoError(t, s.Run(c.ctx, op))
		assert.Equal(t, []string{"member-0", "member-1"}, s.LastRound().Cohort)
	}
	errs := c.finish(s)
	assert.ErrorIs(t, errs["member-2"], ErrMismatch)
	assert.ErrorContains(t, errs["member-2"], `player "model-owner" compiled plan`)
	for _, p := range []string{"server0", "server1", "member-0", "member-1"} {
		assert.NoError(t, errs[p], p)
	}
}

// TestCohortWeightRefused: a member whose weight is not finite and
// positive drops out of the round with ErrWeight's reason; the others are
// averaged.
func TestCohortWeightRefused(t *testing.T) {
	const n = 2
	bad := map[string]float64{"member-1": 0, "member-2": math.NaN(), "member-3": math.Inf(1), "member-4": -2}
	g, op, rec := aggregationGraph(n, func(ctx context.Context, m string, model []float64) ([]float64, float64, error) {
		x, _, err := fixedMember(n)(ctx, m, model)
		if w, ok := bad[m]; ok {
			return x, w, err
		}
		return x, 2, err
	})
	s, err := NewLocal(g, Options{Rounds: RoundOptions{Members: cohortMembers(6)}})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Run(context.Background(), op))
	info := s.LastRound()
	assert.Equal(t, []string{"member-0", "member-5"}, info.Survivors)
	for m := range bad {
		assert.Contains(t, info.Dropped[m], ErrWeight.Error(), m)
	}
	assert.Contains(t, info.Dropped["member-2"], "weight cohort-input#1 of \"owners\"[1] of weighted-mean#3 is NaN")
	assert.Equal(t, 4.0, info.TotalWeight)
	_, got := rec.last()
	assert.Equal(t, []float64{3.5, 7}, got[1], "(1·1 + 1·6)/2, (2·1 + 2·6)/2")
}

// TestCohortServersRefuseAPlayerAsMember: a coordinator that names itself
// in a cohort, to meet the floor with shares it knows, is refused by the
// servers, which send no share; the round fails and reveals nothing.
func TestCohortServersRefuseAPlayerAsMember(t *testing.T) {
	const n = 2
	var rec *revealed
	build := func() (*graph.Graph, *graph.Op) {
		g, op, r := aggregationGraph(n, fixedMember(n))
		rec = r
		return g, op
	}
	c := newCohortNet(t, build, Options{})
	cp := planOf(t, build, c.opts).cohort
	for _, p := range []string{"server0", "server1", "member-0", "member-1"} {
		c.serve(p, nil, nil)
	}
	s, op := c.coordinatorEditingStart(cp, func(m *roundStart) {
		m.Cohort = append(m.Cohort, players.ModelOwner)
		slices.Sort(m.Cohort)
	})
	err := s.Run(c.ctx, op)
	require.Error(t, err)
	assert.ErrorContains(t, err, `the cohort of round 1 names "model-owner", a player of the plan: refused`)
	calls, _ := rec.last()
	assert.Zero(t, calls)
	received := map[string]uint64{}
	for _, l := range s.Stats() {
		if l.To == players.ModelOwner {
			received[l.From] = l.Messages
		}
	}
	assert.Equal(t, map[string]uint64{"server0": 1, "server1": 1}, received, "each server sent its result, and no share")
	require.NoError(t, s.Run(c.ctx, op), "the next round, as announced, runs")
	for p, err := range c.finish(s) {
		assert.NoError(t, err, p)
	}
}

// TestCohortSilentMember: a member that connects but says no hello is
// left out, and holds up at most the round in which it was first waited
// for; once it says hello it is invited.
func TestCohortSilentMember(t *testing.T) {
	const n = 2
	build := func() (*graph.Graph, *graph.Op) {
		g, op, _ := aggregationGraph(n, fixedMember(n))
		return g, op
	}
	c := newCohortNet(t, build, Options{Rounds: RoundOptions{Deadline: 200 * time.Millisecond}})
	for _, p := range []string{"server0", "server1", "member-0", "member-1"} {
		c.serve(p, nil, nil)
	}
	silent, err := c.net.Connect("member-2")
	require.NoError(t, err)
	s, op := c.coordinator(nil)
	for range 2 {
		require.NoError(t, s.Run(c.ctx, op))
		assert.Equal(t, []string{"member-0", "member-1"}, s.LastRound().Cohort)
	}
	said := make(chan struct{})
	var once sync.Once
	c.serve("member-2", &sendHook{MemoryEndpoint: silent, onSend: func(to string, key transport.Key, b []byte) []byte {
		if to == players.ModelOwner && key == memberHelloKey {
			defer once.Do(func() { close(said) })
			if err := silent.Send(c.ctx, to, key, b); err != nil {
				t.Error(err)
			}
			return nil // sent above, before said is closed
		}
		return b
	}}, nil) // says hello at last
	<-said
	require.NoError(t, s.Run(c.ctx, op))
	assert.Equal(t, cohortMembers(3), s.LastRound().Cohort)
	for p, err := range c.finish(s) {
		assert.NoError(t, err, p)
	}
}
