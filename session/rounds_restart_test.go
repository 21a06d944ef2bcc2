package session

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport/grpctransport"
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
	// Each round without server1 lasts a deadline: the coordinator waits
	// that long for it to be connected.
	c := newCohortNet(t, build, Options{Rounds: RoundOptions{MaxSkipped: maxSkipped, Deadline: time.Second}})
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

// ownerMember is fixedMember for members named data-owner-0, ... (the
// names open membership admits): data-owner-k contributes (i+1)·(k+1) at
// element i, with weight 1.
func ownerMember(n int) memberFunc {
	return func(_ context.Context, member string, _ []float64) ([]float64, float64, error) {
		var k int
		if _, err := fmt.Sscanf(member, "data-owner-%d", &k); err != nil {
			return nil, 0, fmt.Errorf("member %q: %w", member, err)
		}
		x := make([]float64, n)
		for i := range x {
			x[i] = float64((i + 1) * (k + 1))
		}
		return x, 1, nil
	}
}

// TestCohortRestartedServerOverGRPC: the same across players on loopback
// with gRPC and mutual TLS under open membership: server1's transport
// and session close, as its process ending would, and a new process
// listens on the same address. The others see it go (the model owner's
// transport reports it), the rounds meanwhile are skipped, and once the
// links are back (the listed players redial it, the members dial it
// again) the rounds reveal the right means again.
func TestCohortRestartedServerOverGRPC(t *testing.T) {
	const n, maxSkipped = 8, 3
	dir := t.TempDir()
	listed := []string{"server0", "server1", players.ModelOwner}
	members := []string{"data-owner-0", "data-owner-1", "data-owner-2"}
	addrs := map[string]string{}
	lns := map[string]net.Listener{}
	spec := `{"players": {`
	for i, p := range listed {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns[p], addrs[p] = ln, ln.Addr().String()
		if i > 0 {
			spec += ", "
		}
		spec += fmt.Sprintf("%q: %q", p, ln.Addr())
	}
	spec += `}, "cert_dir": "certs", "connect_timeout": "20s"}`
	cfg, err := players.ParseConfig([]byte(spec), filepath.Join(dir, "hosts.json"))
	require.NoError(t, err)
	specs := cfg.CertSpecs()
	for _, m := range members {
		specs = append(specs, players.CertSpec{Player: m})
	}
	_, err = players.GenerateDevPKI(filepath.Join(dir, "certs"), specs, players.DevPKIOptions{})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := Options{SessionID: "grpc-restart", Rounds: RoundOptions{MaxSkipped: maxSkipped, Deadline: time.Second}}
	newTransport := func(p string, ln net.Listener) *grpctransport.Transport {
		tr, err := grpctransport.New(cfg, p, grpctransport.Options{Listener: ln, ReconnectMin: 5 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
		require.NoError(t, err)
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	transports := map[string]*grpctransport.Transport{}
	for _, p := range append(slices.Clone(listed), members...) {
		transports[p] = newTransport(p, lns[p])
	}
	var connect sync.WaitGroup
	for p, tr := range transports {
		connect.Go(func() { assert.NoError(t, tr.Connect(ctx), p) })
	}
	connect.Wait()

	// waitFor waits until cond holds, checking it at every membership
	// change of tr.
	waitFor := func(tr *grpctransport.Transport, what string, cond func() bool) {
		t.Helper()
		for {
			changed := tr.MembershipChanged()
			if cond() {
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				t.Fatalf("waiting for %s: %v", what, ctx.Err())
			}
		}
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := map[string]error{}
	serve := func(p string, ctx context.Context) *Remote {
		g, op, _ := aggregationGraph(n, ownerMember(n))
		s, err := NewRemote(g, p, transports[p], opts)
		require.NoError(t, err)
		wg.Go(func() {
			err := s.Serve(ctx, op)
			mu.Lock()
			errs[p] = err
			mu.Unlock()
		})
		return s
	}
	for _, p := range append([]string{"server0"}, members...) {
		serve(p, ctx)
	}
	s1ctx, crash := context.WithCancel(ctx)
	s1 := serve("server1", s1ctx)

	g, op, rec := aggregationGraph(n, ownerMember(n))
	coord, err := NewRemote(g, players.ModelOwner, transports[players.ModelOwner], opts)
	require.NoError(t, err)
	defer coord.Close()
	c := transports[players.ModelOwner]
	waitFor(c, "every member to dial in", func() bool { return len(c.Members()) == len(members) })

	revealedRounds := 0
	reveal := func(what string) {
		t.Helper()
		require.NoError(t, coord.Run(ctx, op), what)
		revealedRounds++
		info := coord.LastRound()
		require.Equal(t, members, info.Survivors, what)
		calls, got := rec.last()
		require.Equal(t, revealedRounds, calls, what)
		for i := range n {
			var sum float64
			for _, m := range members {
				x, _, _ := ownerMember(n)(ctx, m, nil)
				sum += x[i]
			}
			require.InDelta(t, sum/float64(len(members)), got[0][i], 1e-3, "%s: mean, element %d", what, i)
			require.InDelta(t, sum, got[2][i], 1e-3, "%s: sum, element %d", what, i)
		}
	}
	reveal("before the crash")

	// server1's process ends: its Serve, its transport, its session.
	crash()
	require.NoError(t, transports["server1"].Close())
	require.NoError(t, s1.Close())
	waitFor(c, "the model owner to see server1 gone", func() bool { return !c.Connected("server1") })
	for i := range maxSkipped - 1 {
		err := coord.Run(ctx, op)
		require.ErrorIs(t, err, ErrRoundSkipped, "round %d without server1", i+1)
		require.NotErrorIs(t, err, ErrTooManySkipped)
		assert.Contains(t, err.Error(), `"server1" not connected`)
		calls, _ := rec.last()
		assert.Equal(t, revealedRounds, calls, "a skipped round calls no output function")
	}

	// A new process on the same address.
	ln, err := net.Listen("tcp", addrs["server1"])
	require.NoError(t, err)
	transports["server1"] = newTransport("server1", ln)
	require.NoError(t, transports["server1"].Connect(ctx))
	s1tr := transports["server1"]
	waitFor(c, "the model owner to redial server1", func() bool { return c.Connected("server1") })
	waitFor(transports["server0"], "server0 to redial server1", func() bool { return transports["server0"].Connected("server1") })
	waitFor(s1tr, "the members to dial server1 again", func() bool { return len(s1tr.Members()) == len(members) })
	serve("server1", ctx)
	reveal("after the restart")
	assert.Equal(t, uint64(1+maxSkipped-1+1), coord.LastRound().Round, "the rounds go on from the next round")
	reveal("after the restart, again")

	require.NoError(t, coord.Finish(ctx))
	wg.Wait()
	for _, p := range append([]string{"server0"}, members...) {
		assert.NoError(t, errs[p], p)
	}
	assert.NoError(t, errs["server1"], "the restarted server1")
}
