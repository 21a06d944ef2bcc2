package session

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/session/transport"
)

// TestIssue8RemoteForgetsHandshakesAndNotices: a Remote session forgets
// the handshake of each op once every peer's hello is in, and the
// notices of a failing player once its iteration is over, so that
// neither stays in a player's mailbox for the rest of its life (and a
// peer cannot park messages under them). The run is the one of
// TestFailingPlayerTellsTheOthers: data-owner-0 fails in the second
// iteration and tells the others why.
func TestIssue8RemoteForgetsHandshakesAndNotices(t *testing.T) {
	boxes := map[string]*transport.Mailbox{}
	errs := runRemoteFailingWith(t, func(p string, ep *transport.MemoryEndpoint) {
		boxes[p] = ep.Mailbox() // setup runs on one goroutine
	})
	require.ErrorContains(t, errs["data-owner-0"], "disk on fire")
	require.Len(t, boxes, 5)
	for p, box := range boxes {
		assert.Zero(t, box.Keys(helloSession), "%s holds handshakes", p)
		assert.Zero(t, box.Keys(abortSession), "%s holds notices", p)
	}
}

// runRemoteFailingWith runs two data owners, the servers and the model
// owner as Remote sessions; data-owner-0's input fails in the second
// iteration. look, if not nil, sees each player's endpoint before it
// starts. The memory network does not tell the others when a player
// stops, as a closed connection would: the players waiting for
// data-owner-0 learn it when it returns, from their context, whose
// cause says so; a minute is only a safety net.
func runRemoteFailingWith(t *testing.T, look func(p string, ep *transport.MemoryEndpoint)) map[string]error {
	names := []string{"server0", "server1", "model-owner", "data-owner-0", "data-owner-1"}
	stopped, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	return runPlayers(t, names, func(p string, ep *transport.MemoryEndpoint) playerSetup {
		if look != nil {
			look(p, ep)
		}
		calls := 0
		g := graph.New()
		a := g.DefinePrivateInput("data-owner-0", func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
			if calls++; calls > 1 {
				return nil, errors.New("disk on fire")
			}
			return []*tensor.Dense{tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 2}))}, nil
		}, []graph.Shape{{2}})
		b := g.DefinePrivateInput("data-owner-1", fixed([]float64{3, 4}), []graph.Shape{{2}})
		op := g.DefineOutput("model-owner", []*graph.Private{g.Add(a[0], b[0])}, func(context.Context, []*tensor.Dense) error { return nil })
		return playerSetup{g: g, ops: []*graph.Op{op}, opts: Options{SessionID: "run-f", Players: names}}
	}, func(p string, s *Remote, ops []*graph.Op) error {
		ctx, cancel := context.WithTimeout(stopped, time.Minute)
		defer cancel()
		for range 3 {
			if err := s.Run(ctx, ops[0]); err != nil {
				if p == "data-owner-0" {
					stop(fmt.Errorf("data-owner-0 stopped: %w", err))
				}
				return err
			}
		}
		return nil
	})
}

// TestIssue8PlayerSittingOutForgetsItsIterations: a player with no part
// in the plan (the crypto producer in aggregation) moves through the
// iterations all the same, forgetting each, so that the notices others
// send it when they stop in a later iteration are not held back behind
// its first (a transport with a horizon would hold them, and everything
// the peer sends it after them, such as the outcome of the run).
func TestIssue8PlayerSittingOutForgetsItsIterations(t *testing.T) {
	names := []string{"server0", "server1", "server2", "model-owner", "data-owner-0"}
	const iterations = 10
	var box *transport.Mailbox
	errs := runPlayers(t, names, func(p string, ep *transport.MemoryEndpoint) playerSetup {
		if p == "server2" {
			box = ep.Mailbox()
		}
		g := graph.New()
		a := g.DefinePrivateInput("data-owner-0", fixed([]float64{1, 2}), []graph.Shape{{2}})
		op := g.DefineOutput("model-owner", []*graph.Private{g.Add(a[0], a[0])}, func(context.Context, []*tensor.Dense) error { return nil })
		return playerSetup{g: g, ops: []*graph.Op{op}, opts: Options{SessionID: "sit", Players: names}}
	}, func(_ string, s *Remote, ops []*graph.Op) error {
		return runIterations(s, ops[0], iterations, time.Minute)
	})
	for p, err := range errs {
		require.NoError(t, err, p)
	}
	ctx := context.Background()
	require.NoError(t, box.Deliver(ctx, "server0", transport.Key{Session: abortSession, Iteration: iterations - 1}, []byte("late")))
	require.NoError(t, box.Deliver(ctx, "server0", transport.Key{Session: "sit", Iteration: iterations - 1}, nil))
	assert.Zero(t, box.Keys(abortSession), "server2 forgot the notices of the iterations it sat out")
	assert.Zero(t, box.Keys("sit"), "and their messages")
}
