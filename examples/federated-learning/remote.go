package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/internal/multihost"
	"github.com/shareflow/shareflow/internal/units"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session"
	"github.com/shareflow/shareflow/session/transport/grpctransport"
)

// sessionOptions are the engine options every player must agree on; they
// enter the plan fingerprint players compare before the first iteration.
func sessionOptions(o options) session.Options {
	return session.Options{
		Protocol:        pond.Config{Truncation: o.truncation, Ring: o.ring},
		PrivateDivision: o.privateDiv,
		Rounds: session.RoundOptions{
			MinOwners:  o.minOwners,
			MaxSkipped: o.maxSkipped,
			Sample:     o.sample,
			Deadline:   o.roundDeadline,
		},
	}
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

// loadHosts reads the hosts file and applies the TLS flags
// (multihost.Flags.LoadHostmap), then checks that --player is in it, or
// is a data owner it admits without being listed, and that it has the
// players the example needs.
func loadHosts(o options, stdout io.Writer) (*players.Config, error) {
	cfg, err := o.LoadHostmap(stdout)
	if err != nil {
		return nil, err
	}
	if !cfg.Has(o.Player) {
		if players.RoleOf(o.Player) != players.RoleDataOwner {
			return nil, fmt.Errorf("--player %q is not in %s (players: %v)", o.Player, o.Config, cfg.Names())
		}
		if err := cfg.Admits(o.Player); err != nil {
			return nil, fmt.Errorf("--player %q: %w", o.Player, err)
		}
	}
	if err := cfg.Require(examplePlayers(cfg)...); err != nil {
		return nil, fmt.Errorf("%w (the example needs %s, %s, %s and data owners %s, %s, ...)",
			err, players.Server0, players.Server1, players.ModelOwner, players.DataOwner(0), players.DataOwner(1))
	}
	return cfg, nil
}

// outcomeKey is the key of the last message of a multi-host run: every
// player tells every other how its part ended (multihost.Outcomes).
var outcomeKey = multihost.OutcomeKey("federated-learning")

// printable returns b as text with every rune that is not printable, and
// every invalid byte, replaced, so that a file's bytes cannot move the
// terminal.
func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, string(b))
}

// examplePlayers returns the players the example expects of cfg: the
// servers, the model owner and its data owners (multihost.WithDataOwners,
// which counts names of no known role as misspelt data owners). The
// crypto producer is optional: aggregation does not use it.
func examplePlayers(cfg *players.Config) []string {
	fixed := []string{players.Server0, players.Server1, players.ModelOwner}
	if cfg.Has(players.CryptoProducer) {
		fixed = append(fixed, players.CryptoProducer)
	}
	return multihost.WithDataOwners(cfg, fixed, 0)
}

// dataOwnersIn counts the data owners of a config checked by loadHosts:
// data-owner-0 to data-owner-(n-1), with no gap.
func dataOwnersIn(cfg *players.Config) (int, error) {
	n := 0
	for _, name := range cfg.Names() {
		if players.RoleOf(name) == players.RoleDataOwner {
			n++
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
	cfg, err := loadHosts(o, stdout)
	if err != nil {
		return err
	}
	if n := cfg.MinOwners(); n != 0 && !o.minOwnersSet && !o.fixedOwners {
		o.minOwners = n // the config's privacy floor, unless --min-owners says otherwise
	}
	listed, err := dataOwnersIn(cfg)
	switch {
	case err == nil:
		o.dataOwners = listed
	case o.fixedOwners:
		return err
	default:
		// Open membership: the data owners join as they come; the
		// training set is cut for --data-owners of them.
	}
	from := o.Config
	if listed == 0 {
		from = "--data-owners"
	}
	if err := checkOwnerCount(o, o.dataOwners, from); err != nil {
		return err
	}
	// Only the model owner (the test set) and the data owners (each its own
	// shard of the training set) read data, and each reads only its part.
	shards, testSet, source, err := loadPlayerData(o, o.Player)
	if err != nil {
		return err
	}
	if source != "" {
		fmt.Fprintf(stdout, "%s: data: %s\n", o.Player, source)
	}
	timeout := o.StepTimeout(cfg)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	fed, err := newFederation(o, o.Player, shards, testSet)
	if err != nil {
		return err
	}
	defer fed.Close()
	g, iteration, modelOwner := fed.graph, fed.iteration, fed.modelOwner

	t, err := grpctransport.New(cfg, o.Player, grpctransport.Options{Logger: log})
	if err != nil {
		return err
	}
	for _, w := range t.Warnings() {
		fmt.Fprintln(stderr, "WARNING:", w)
	}
	opts := sessionOptions(o)
	opts.SessionID = o.SessionID
	opts.Players = cfg.Names()
	// The most members a round may have, which every player computes
	// alike from the config: the listed data owners, and under open
	// membership as many more as may connect. It bounds the sums a round
	// forms, and so the input range of Z_2^32.
	if !o.fixedOwners {
		opts.Rounds.MaxCohort = listed
		if cfg.OpenMembership() {
			opts.Rounds.MaxCohort = min(listed+cfg.MaxMembers(), session.MaxMembers)
		}
	}
	isModelOwner := o.Player == modelOwner.Name
	if isModelOwner && !o.fixedOwners {
		// The data owners the config lists; the transport adds those that
		// dial in.
		for _, name := range cfg.Names() {
			if players.RoleOf(name) == players.RoleDataOwner {
				opts.Rounds.Members = append(opts.Rounds.Members, name)
			}
		}
		// Samples drawn from the run's seed and the round number: the
		// servers number the rounds on across a restart of the model
		// owner, so the samples go on as if it had not stopped.
		opts.Rounds.SampleSeed = sampleStream(o.seed).Uint64() | 1
	}
	s, err := session.NewRemote(g, o.Player, t, opts)
	if err != nil {
		t.Close()
		return err
	}
	defer s.Close()
	s.WithLogger(log)
	// The session takes messages under its own sessions only; the
	// outcomes every player tells at the end (bounded by
	// multihost.MaxOutcomeReason) are this program's, so it declares them
	// before any peer connects.
	t.Mailbox().Expect(outcomeKey.Session)
	outcomes := multihost.Outcomes{Transport: t, Key: outcomeKey, Players: cfg.Names(), Self: o.Player}
	plan, err := s.Plan(iteration)
	if err != nil {
		return err
	}
	hasPart := slices.Contains(plan.Players(), o.Player)
	peers := cfg.Len() - 1
	if !cfg.Has(o.Player) {
		peers = cfg.Len()
	}
	fmt.Fprintf(stdout, "%s: waiting for %d peers (up to %v)\n", o.Player, peers, cfg.ConnectTimeout())
	if err := t.Connect(ctx); err != nil {
		return err
	}
	agg := &remoteAggregation{Remote: s, timeout: timeout}
	prog := newProgress(stderr, o.quiet || !isModelOwner)
	if !o.fixedOwners {
		c := &cohortRun{o: o, cfg: cfg, t: t, s: s, agg: agg, op: iteration, fed: fed, log: log, prog: prog, timeout: timeout}
		return c.run(ctx, stdout)
	}
	fmt.Fprintf(stdout, "%s: connected; running %d iterations\n", o.Player, o.iterations)

	// fail tells the others this player's own failure in iteration i and
	// returns it; what the others said, which err also carries, they tell
	// themselves.
	fail := func(i int, err error) error {
		outcomes.Tell(ctx, fmt.Errorf("secure training, iteration %d: %w", i, multihost.OwnFailure(err)))
		return fmt.Errorf("secure training, iteration %d: %w", i, err)
	}
	start := time.Now()
	ran := o.iterations
	var rounds roundStats
	if isModelOwner {
		// The model owner records the rounds and keeps the checkpoint.
		d := &driver{o: o, mo: modelOwner, log: log, progress: prog, rounds: &fixedRounds{
			names: ownerNames(fed.dataOwners), mo: modelOwner, stats: s.Stats,
			step: func(ctx context.Context) error { return agg.Run(ctx, iteration) },
		}}
		if o.checkpointDir != "" {
			d.run = runFields(o, o.dataOwners, modelOwner.Architecture())
		}
		if err := d.resume(); err != nil {
			return fail(0, err)
		}
		defer d.Close()
		if modelOwner.Iteration() > 0 {
			return fail(0, &checkpointError{File: checkpointPath(o.checkpointDir), Err: errResumeAcrossHosts})
		}
		if err := d.train(ctx, "secure"); err != nil {
			return fail(modelOwner.Iteration(), err)
		}
		if err := d.Close(); err != nil {
			return fail(modelOwner.Iteration(), err)
		}
		ran, rounds = d.ran, d.stats
	} else {
		for i := range o.iterations {
			if err := agg.Run(ctx, iteration); err != nil {
				return fail(i, err)
			}
		}
	}
	elapsed := time.Since(start)

	// This player's part is done, but the run succeeded only if every
	// player's did: a player's last step may come before another's last
	// step fails. So every player tells the others how it ended and waits
	// to hear from them: a player with a part at most two iteration
	// deadlines (any peer's last iteration overlaps its own), one with
	// none (the crypto producer, in aggregation) for the whole run.
	within := 2 * timeout
	if !hasPart {
		within = 0
		fmt.Fprintf(stdout, "%s: no part in this computation; waiting for the other players to finish\n", o.Player)
	}
	if err := outcomes.Finish(ctx, within, "iteration"); err != nil {
		return err
	}

	r := &result{mode: "secure (" + o.Player + ")", perIter: (elapsed - modelOwner.EvaluationTime()) / time.Duration(max(ran, 1)), stats: s.Stats(), iterations: ran, steps: modelOwner.Iteration(), rounds: rounds}
	if isModelOwner {
		r.loss, r.accuracy = modelOwner.Evaluate()
		r.history = append(modelOwner.History(), Evaluation{Iteration: modelOwner.Iteration(), Loss: r.loss, Accuracy: r.accuracy})
		printSummary(stdout, r, ran)
		if o.plot != "" {
			if err := writePlot(o.plot, nil, r.history); err != nil {
				return fmt.Errorf("writing the plot: %w", err)
			}
		}
		return nil
	}
	fmt.Fprintf(stdout, "%s: done, %v per iteration\n", o.Player, r.perIter.Round(time.Microsecond))
	for _, l := range r.stats {
		fmt.Fprintf(stdout, "  %s -> %s: %s per iteration\n", l.From, l.To, units.Bytes(float64(l.Bytes)/float64(o.iterations)))
	}
	return nil
}
