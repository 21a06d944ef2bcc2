package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session"
	"github.com/shareflow/shareflow/session/transport"
	"github.com/shareflow/shareflow/session/transport/grpctransport"
)

// sessionOptions are the engine options every player must agree on; they
// enter the plan fingerprint players compare before the first iteration.
func sessionOptions(o options) session.Options {
	return session.Options{
		Protocol:        pond.Config{Truncation: o.truncation},
		PrivateDivision: o.privateDiv,
	}
}

// newAggregation returns the local session that runs every player here.
func newAggregation(o options, g *graph.Graph) (aggregation, error) {
	return session.NewLocal(g, sessionOptions(o))
}

// remoteAggregation is one player's session over gRPC, with a deadline on
// every iteration.
type remoteAggregation struct {
	*session.Remote
	timeout time.Duration
}

func (r *remoteAggregation) Run(ctx context.Context, op *graph.Op) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return r.Remote.Run(ctx, op)
}

// loadHosts reads the hosts file and applies the TLS flags.
func loadHosts(o options, stderr io.Writer) (*players.Config, error) {
	cfg, err := players.LoadConfig(o.config)
	if err != nil {
		return nil, err
	}
	if o.insecure {
		cfg = cfg.WithInsecure(true)
	} else if o.certs != "" {
		if cfg, err = cfg.WithCertDir(o.certs); err != nil {
			return nil, err
		}
	}
	if !cfg.Has(o.player) {
		return nil, fmt.Errorf("--player %q is not in %s (players: %v)", o.player, o.config, cfg.Names())
	}
	for _, need := range []string{players.Server0, players.Server1, players.ModelOwner} {
		if !cfg.Has(need) {
			return nil, fmt.Errorf("%s: player %q is missing; the example needs %s, %s, %s and data owners",
				o.config, need, players.Server0, players.Server1, players.ModelOwner)
		}
	}
	return cfg, nil
}

// waitForPeersToLeave returns once every other player has closed its
// connection to this one (or lost it), or ctx is done. A receive under a
// key nobody sends returns exactly when the peer goes away.
func waitForPeersToLeave(ctx context.Context, t transport.Transport, names []string, self string) {
	never := transport.Key{Session: "federated-learning/never"}
	for _, p := range names {
		if p != self {
			t.Recv(ctx, p, never) // the error is the point: the peer has left
		}
	}
}

// dataOwnersIn counts the data owners of a config: data-owner-0 to
// data-owner-(n-1), with no gap.
func dataOwnersIn(cfg *players.Config) (int, error) {
	n := 0
	for _, name := range cfg.Names() {
		if players.RoleOf(name) == players.RoleDataOwner {
			n++
		}
	}
	for i := range n {
		if !cfg.Has(players.DataOwner(i)) {
			return 0, fmt.Errorf("%s: data owners must be named %s to %s; %s is missing",
				cfg.File(), players.DataOwner(0), players.DataOwner(n-1), players.DataOwner(i))
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("%s: no data owners (data-owner-0, ...)", cfg.File())
	}
	return n, nil
}

// trainRemote runs this process's player of a multi-host run. Every host
// runs the same program with the same flags but --player; each builds the
// same graph and executes only its own player's part of it.
func trainRemote(ctx context.Context, o options, stdout, stderr io.Writer) error {
	cfg, err := loadHosts(o, stderr)
	if err != nil {
		return err
	}
	if o.dataOwners, err = dataOwnersIn(cfg); err != nil {
		return err
	}
	// Only the model owner (test set) and data owners (their shard of the
	// training set) read data.
	var trainSet, testSet *mnist.Dataset
	if role := players.RoleOf(o.player); role == players.RoleModelOwner || role == players.RoleDataOwner {
		if trainSet, testSet, _, err = loadData(o); err != nil {
			return err
		}
	}
	timeout := o.timeout
	if timeout == 0 {
		timeout = cfg.MessageTimeout()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	fed, err := newFederation(o, o.player, trainSet, testSet)
	if err != nil {
		return err
	}
	defer fed.Close()
	g, iteration, modelOwner := fed.graph, fed.iteration, fed.modelOwner

	t, err := grpctransport.New(cfg, o.player, grpctransport.Options{Logger: log})
	if err != nil {
		return err
	}
	for _, w := range t.Warnings() {
		fmt.Fprintln(stderr, "WARNING:", w)
	}
	opts := sessionOptions(o)
	opts.SessionID = o.sessionID
	opts.Players = cfg.Names()
	s, err := session.NewRemote(g, o.player, t, opts)
	if err != nil {
		t.Close()
		return err
	}
	defer s.Close()
	fmt.Fprintf(stdout, "%s: waiting for %d peers (up to %v)\n", o.player, cfg.Len()-1, cfg.ConnectTimeout())
	if err := t.Connect(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: connected; running %d iterations\n", o.player, o.iterations)

	agg := &remoteAggregation{Remote: s, timeout: timeout}
	isModelOwner := o.player == modelOwner.Name
	prog := newProgress(stderr, o.quiet || !isModelOwner)
	prog.start("secure", o.iterations)
	start := time.Now()
	for i := range o.iterations {
		if err := agg.Run(ctx, iteration); err != nil {
			return fmt.Errorf("secure training, iteration %d: %w", i, err)
		}
		prog.update(i+1, modelOwner.History())
	}
	elapsed := time.Since(start)
	prog.done()

	plan, err := s.Plan(iteration)
	if err != nil {
		return err
	}
	if !slices.Contains(plan.Players(), o.player) {
		// A player with no part in the plan (the crypto producer, in
		// aggregation) stays until the others are done, so that its
		// leaving is not mistaken for a failure.
		fmt.Fprintf(stdout, "%s: no part in this computation; waiting for the other players to finish\n", o.player)
		waitForPeersToLeave(ctx, t, cfg.Names(), o.player)
	}

	r := &result{mode: "secure (" + o.player + ")", perIter: (elapsed - modelOwner.EvaluationTime()) / time.Duration(o.iterations), stats: s.Stats(), iterations: o.iterations}
	if isModelOwner {
		r.loss, r.accuracy = modelOwner.Evaluate()
		r.history = append(modelOwner.History(), Evaluation{Iteration: o.iterations, Loss: r.loss, Accuracy: r.accuracy})
		printSummary(stdout, r, o.iterations)
		if o.plot != "" {
			if err := writePlot(o.plot, nil, r.history); err != nil {
				return fmt.Errorf("writing the plot: %w", err)
			}
		}
		return nil
	}
	fmt.Fprintf(stdout, "%s: done, %v per iteration\n", o.player, r.perIter.Round(time.Microsecond))
	for _, l := range r.stats {
		fmt.Fprintf(stdout, "  %s -> %s: %s per iteration\n", l.From, l.To, humanBytes(float64(l.Bytes)/float64(o.iterations)))
	}
	return nil
}
