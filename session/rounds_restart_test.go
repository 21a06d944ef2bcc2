package session

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/graph"
)

// TestCohortRestartedServer: a compute server that crashes mid-run (its
// session and endpoint gone, its connection cut) and starts again (a new
// endpoint with an empty mailbox and a new session) rejoins the rounds.
// The rounds while it is away are skipped, revealing nothing and calling
// no output function, and are not fatal while fewer than MaxSkipped in a
// row; the rounds after it is back reveal the right means again.
func TestCohortRestartedServer(t *testing.T) {
	const n, maxSkipped = 3, 3
	var rec *revealed
	build := func() (*graph.Graph, *graph.Op) {
		g, op, r := aggregationGraph(n, fixedMember(n))
		if rec == nil { // the coordinator's graph is built first
			rec = r
		}
		return g, op
	}
	c := newCohortNet(t, build, Options{Rounds: RoundOptions{MaxSkipped: maxSkipped}})
	s, op := c.coordinator(nil)
	for _, p := range []string{"server0", "member-0", "member-1", "member-2"} {
		c.serve(p, nil, nil)
	}

	// server1 runs under its own context, so that the test can crash it.
	type process struct {
		cancel context.CancelFunc
		done   chan error
		s      *Remote
	}
	start := func() *process {
		ep, err := c.net.Endpoint("server1")
		require.NoError(t, err)
		g, sop := build()
		rs, err := NewRemote(g, "server1", ep, c.opts)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(c.ctx)
		p := &process{cancel: cancel, done: make(chan error, 1), s: rs}
		go func() { p.done <- rs.Serve(ctx, sop) }()
		return p
	}
	members := cohortMembers(3)
	revealedRounds := 0
	reveal := func(what string) RoundInfo {
		t.Helper()
		require.NoError(t, s.Run(c.ctx, op), what)
		revealedRounds++
		info := s.LastRound()
		require.Equal(t, members, info.Survivors, what)
		calls, got := rec.last()
		require.Equal(t, revealedRounds, calls, "%s: the output function ran once per revealed round", what)
		for i := range n {
			var sum, wsum, w float64
			for _, m := range members {
				x, wm, _ := fixedMember(n)(c.ctx, m, nil)
				sum += x[i]
				wsum += wm * x[i]
				w += wm
			}
			assert.InDelta(t, sum/float64(len(members)), got[0][i], 1e-3, "%s: mean, element %d", what, i)
			assert.InDelta(t, wsum/w, got[1][i], 1e-3, "%s: weighted mean, element %d", what, i)
			assert.InDelta(t, sum, got[2][i], 1e-3, "%s: sum, element %d", what, i)
		}
		return info
	}

	first := start()
	for range 2 {
		reveal("before the crash")
	}
	assert.Equal(t, uint64(2), s.LastRound().Round)

	// crash cuts server1's connection and ends its process.
	crash := func(p *process) {
		require.NoError(t, c.net.Disconnect("server1"))
		p.cancel()
		<-p.done
		require.NoError(t, p.s.Close())
	}
	// skipped runs a round without server1 and checks that it was
	// skipped, revealing nothing, and returns Run's error.
	skipped := func(want uint64) error {
		t.Helper()
		err := s.Run(c.ctx, op)
		require.ErrorIs(t, err, ErrRoundSkipped, "round %d without server1", want)
		var skip *SkippedError
		require.ErrorAs(t, err, &skip)
		info := s.LastRound()
		assert.Equal(t, want, skip.Round)
		assert.Equal(t, want, info.Round)
		assert.NotEmpty(t, info.Skipped)
		assert.Empty(t, info.Survivors)
		assert.Contains(t, skip.Reason, `"server1" not connected`, "the skip names the server missing")
		calls, _ := rec.last()
		assert.Equal(t, revealedRounds, calls, "a skipped round calls no output function")
		return err
	}

	// While server1 is away, the rounds are skipped, and not fatal while
	// fewer than MaxSkipped in a row.
	crash(first)
	for i := range maxSkipped - 1 {
		assert.NotErrorIs(t, skipped(uint64(3+i)), ErrTooManySkipped)
	}

	// server1 starts again: a new endpoint (its mailbox empty, as a new
	// process's) and a new session, whose count of rounds starts again.
	_, err := c.net.Connect("server1")
	require.NoError(t, err)
	second := start()
	info := reveal("after the restart")
	assert.Equal(t, uint64(3+maxSkipped-1), info.Round, "the rounds go on from the next round")
	reveal("after the restart, again")

	// A second crash: the count of skipped rounds started again with the
	// rounds revealed, and MaxSkipped rounds in a row without server1 are
	// too many.
	crash(second)
	next := s.LastRound().Round + 1
	for i := range maxSkipped - 1 {
		assert.NotErrorIs(t, skipped(next+uint64(i)), ErrTooManySkipped)
	}
	err = skipped(next + maxSkipped - 1)
	require.ErrorIs(t, err, ErrTooManySkipped)

	// And back again, the rounds reveal again.
	_, err = c.net.Connect("server1")
	require.NoError(t, err)
	third := start()
	reveal("after the second restart")

	for p, err := range c.finish(s) {
		assert.NoError(t, err, p)
	}
	assert.NoError(t, <-third.done, "the restarted server1")
}
