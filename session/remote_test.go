package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
)

// playerSetup is what one player of runPlayers runs: its graph, the ops
// it runs, its options and, if not nil, the transport it uses instead of
// its endpoint (say, a wrapper of it).
type playerSetup struct {
	g    *graph.Graph
	ops  []*graph.Op
	opts Options
	t    transport.Transport
}

// runPlayers runs every player of names as its own Remote session over one
// in-memory network, each in its own goroutine, the way separate hosts
// would. setup builds a player's graph, ops and options (it may also set
// up the player's endpoint); run runs its iterations. It returns what run
// returned for each player.
func runPlayers(t *testing.T, names []string,
	setup func(p string, ep *transport.MemoryEndpoint) playerSetup,
	run func(p string, s *Remote, ops []*graph.Op) error,
) map[string]error {
	net := transport.NewMemory(names...)
	errs := make(map[string]error)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range names {
		ep, err := net.Endpoint(p)
		require.NoError(t, err)
		ps := setup(p, ep)
		tr := ps.t
		if tr == nil {
			tr = ep
		}
		s, err := NewRemote(ps.g, p, tr, ps.opts)
		require.NoError(t, err)
		wg.Go(func() {
			defer s.Close()
			err := run(p, s, ps.ops)
			mu.Lock()
			errs[p] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	return errs
}

// runIterations runs op n times, each within its own timeout, and stops
// at the first error.
func runIterations(s *Remote, op *graph.Op, n int, timeout time.Duration) error {
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := s.Run(ctx, op)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// runRemote runs every player of the federated-learning miniature as its
// own Remote session over an in-memory network, the way separate hosts
// would, with per-player option changes.
func runRemote(t *testing.T, owners int, tweak func(player string, o *Options) int) map[string]error {
	names := []string{"server0", "server1", "model-owner"}
	for i := range owners {
		names = append(names, "data-owner-"+string(rune('0'+i)))
	}
	return runPlayers(t, names, func(p string, _ *transport.MemoryEndpoint) playerSetup {
		opts := Options{SessionID: "run-1"}
		n := owners
		if tweak != nil {
			n = tweak(p, &opts)
		}
		g, op := flGraph(n)
		return playerSetup{g: g, ops: []*graph.Op{op}, opts: opts}
	}, func(_ string, s *Remote, ops []*graph.Op) error {
		return runIterations(s, ops[0], 3, 2*time.Second)
	})
}

func TestRemotePlayersRunTogether(t *testing.T) {
	for p, err := range runRemote(t, 2, nil) {
		assert.NoError(t, err, p)
	}
}

func TestRemoteHandshakeRefusesMismatch(t *testing.T) {
	errs := runRemote(t, 2, func(p string, o *Options) int {
		if p == "server1" {
			o.PrivateDivision = true // a different program
		}
		return 2
	})
	assert.ErrorIs(t, errs["server0"], ErrMismatch)
	assert.ErrorContains(t, errs["server0"], `player "server1" compiled plan`)

	// The plans print alike, but the numbers mean different things: issue
	// 8, point 4.
	errs = runRemote(t, 2, func(p string, o *Options) int {
		if p == "server1" {
			o.Protocol.FracBits = 20
		}
		return 2
	})
	assert.ErrorIs(t, errs["server0"], ErrMismatch)
	assert.ErrorIs(t, errs["model-owner"], ErrMismatch)

	errs = runRemote(t, 2, func(p string, o *Options) int {
		if p == "data-owner-1" {
			o.SessionID = "run-2"
		}
		return 2
	})
	assert.ErrorContains(t, errs["data-owner-0"], `player "data-owner-1" is in session "run-2"`)
}

func TestHelloWire(t *testing.T) {
	h := hello{Session: "s", Fingerprint: "abc"}
	var got hello
	require.NoError(t, got.unmarshal(h.marshal()))
	assert.Equal(t, h, got)
	assert.ErrorIs(t, got.unmarshal(h.marshal()[:5]), ErrWire)
	assert.ErrorIs(t, got.unmarshal(append(h.marshal(), 0)), ErrWire)
}

func TestCascadeErrorNamesTheRootCause(t *testing.T) {
	inner := &PlayerError{Player: "model-owner", Iteration: 3, Err: errors.New(`peer closed: player "server0" closed its connection`)}
	err := error(&CascadeError{Err: inner, Lost: []string{"data-owner-1"}, Stopped: []PeerStop{{"server0", `receiving from "data-owner-1": peer lost`}}})
	assert.EqualError(t, err, `player "model-owner", iteration 3: peer closed: player "server0" closed its connection (lost contact with "data-owner-1"); "server0" had stopped: receiving from "data-owner-1": peer lost`)
	var pe *PlayerError
	assert.ErrorAs(t, err, &pe, "the player's error stays reachable")
}

// TestFailingPlayerTellsTheOthers: a player whose input fails stops, and
// the players waiting for it learn why from its notice, not only that it
// is gone.
func TestFailingPlayerTellsTheOthers(t *testing.T) {
	errs := runRemoteFailing(t)
	assert.ErrorContains(t, errs["data-owner-0"], "disk on fire")
	var ce *CascadeError
	require.ErrorAs(t, errs["server0"], &ce, "server0: %v", errs["server0"])
	assert.Contains(t, ce.Error(), `"data-owner-0" had stopped`)
	assert.Contains(t, ce.Error(), "disk on fire")
}

// runRemoteFailing runs two data owners, the servers and the model owner
// as Remote sessions; data-owner-0's input fails in the second iteration.
// The others learn it from events, not a deadline (runRemoteFailingWith).
func runRemoteFailing(t *testing.T) map[string]error {
	return runRemoteFailingWith(t, nil)
}

// TestRemoteSenderAheadWaits runs a graph without feedback: data owners
// that only send can run iterations ahead of the servers. The mailbox
// bound on unread bytes must hold them back (backpressure), not fail them.
//
// Every tenth iteration server1 holds still until a data owner is held
// back: until an owner starts sending server1 a masked tensor two
// iterations ahead. Server1 has then read nothing of the two iterations
// before, whose masked tensors from that owner wait unread; a third does
// not fit under a bound of three masked tensors, since every message also
// costs its key and slot, so the owner is waiting for room.
func TestRemoteSenderAheadWaits(t *testing.T) {
	const n, iterations = 1000, 60
	shapes := []graph.Shape{{n}}
	inputs := randomInputs(newBenchRand(), 3, shapes, 100)
	names := []string{"server0", "server1", "model-owner", "data-owner-0", "data-owner-1", "data-owner-2"}
	ahead := newIterationGate()
	var revealed *[][]float64
	errs := runPlayers(t, names, func(p string, ep *transport.MemoryEndpoint) playerSetup {
		g, op, got := meanGraph(inputs, shapes)
		if p == "model-owner" {
			revealed = got
		}
		ep.Mailbox().SetPendingLimit(3 * (8 + 8*n)) // under three masked tensors
		// Z_2^64, whose masked tensors the sizes above count.
		ps := playerSetup{g: g, ops: []*graph.Op{op}, opts: Options{SessionID: "ahead", Protocol: pond.Config{Ring: pond.Ring64}}}
		if strings.HasPrefix(p, "data-owner-") {
			ps.t = &watchedSends{Transport: ep, onSend: func(to string, key transport.Key, size int) {
				if to == "server1" && size >= 8*n {
					ahead.reach(key.Iteration)
				}
			}}
		}
		return ps
	}, func(p string, s *Remote, ops []*graph.Op) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for i := range uint64(iterations) {
			if p == "server1" && i > 0 && i%10 == 0 { // after the handshake of the first Run
				if err := ahead.wait(ctx, i+2); err != nil {
					return fmt.Errorf("no data owner got two iterations ahead of server1 at iteration %d: %w", i, err)
				}
			}
			if err := s.Run(ctx, ops[0]); err != nil {
				return err
			}
		}
		return nil
	})
	for p, err := range errs {
		require.NoError(t, err, p)
	}
	require.Len(t, *revealed, 1)
	for i, got := range (*revealed)[0] {
		want := (inputs[0][0][i] + inputs[1][0][i] + inputs[2][0][i]) / 3
		require.InDelta(t, want, got, 1e-4)
	}
}

// watchedSends tells onSend of every message before it sends it.
type watchedSends struct {
	transport.Transport
	onSend func(to string, key transport.Key, size int)
}

func (w *watchedSends) Send(ctx context.Context, to string, key transport.Key, payload []byte) error {
	w.onSend(to, key, len(payload))
	return w.Transport.Send(ctx, to, key, payload)
}

// iterationGate lets goroutines wait until some event has reached an
// iteration. It is safe for concurrent use.
type iterationGate struct {
	mu      sync.Mutex
	reached uint64 // the highest iteration reached, plus one (0: none)
	changed chan struct{}
}

func newIterationGate() *iterationGate { return &iterationGate{changed: make(chan struct{})} }

func (g *iterationGate) reach(iter uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if iter+1 > g.reached {
		g.reached = iter + 1
		close(g.changed)
		g.changed = make(chan struct{})
	}
}

// wait returns once iteration iter has been reached, or ctx is done.
func (g *iterationGate) wait(ctx context.Context, iter uint64) error {
	for {
		g.mu.Lock()
		done, changed := g.reached > iter, g.changed
		g.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}
