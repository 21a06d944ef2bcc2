package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

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
		Rounds: session.RoundOptions{
			MinOwners:  o.minOwners,
			MaxSkipped: o.maxSkipped,
			Sample:     o.sample,
			Deadline:   o.roundDeadline,
		},
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

// loadHosts reads the hosts file and applies the TLS flags. With neither
// --certs nor --insecure, a config that names no TLS material (TF
// Encrypted's flat hostmap, say) takes its certificates from the certs
// directory next to it, where 'shareflow certs' writes them.
func loadHosts(o options, stdout io.Writer) (*players.Config, error) {
	cfg, err := players.LoadConfig(o.config)
	if err != nil {
		return nil, err
	}
	switch {
	case o.insecure:
		cfg = cfg.WithInsecure(true)
	case o.certs != "":
		if cfg, err = cfg.WithCertDir(o.certs); err != nil {
			return nil, err
		}
	case !cfg.Insecure() && !namesTLS(cfg):
		dir := filepath.Join(filepath.Dir(o.config), "certs")
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%s names no certificates, and there is no directory %s: "+
				"make them with 'shareflow certs --config %s', pass --certs DIR, "+
				"or --insecure to try without TLS", o.config, dir, o.config)
		}
		if cfg, err = cfg.WithCertDir(dir); err != nil {
			return nil, err
		}
		fmt.Fprintf(stdout, "%s: certificates from %s\n", o.player, dir)
	}
	if !cfg.Has(o.player) {
		if players.RoleOf(o.player) != players.RoleDataOwner {
			return nil, fmt.Errorf("--player %q is not in %s (players: %v)", o.player, o.config, cfg.Names())
		}
		if err := cfg.Admits(o.player); err != nil {
			return nil, fmt.Errorf("--player %q: %w", o.player, err)
		}
	}
	if err := cfg.Require(examplePlayers(cfg)...); err != nil {
		return nil, fmt.Errorf("%w (the example needs %s, %s, %s and data owners %s, %s, ...)",
			err, players.Server0, players.Server1, players.ModelOwner, players.DataOwner(0), players.DataOwner(1))
	}
	return cfg, nil
}

// outcomeKey is the key of the last message of a multi-host run: every
// player tells every other how its part ended. It lives outside the
// session's key space, whose messages the session forgets after each
// iteration.
var outcomeKey = transport.Key{Session: "federated-learning/outcome/v1"}

// maxOutcomeReason bounds the reason a player gives for its failure, on
// the sending and the receiving side.
const maxOutcomeReason = 2048

// Outcome messages: one status byte, then the reason of a failure.
const (
	outcomeSucceeded byte = 0
	outcomeFailed    byte = 1
)

// tellOutcome tells every other player how this one's part of the run
// ended: runErr is nil for success, the reason otherwise. Sends are best
// effort: a peer that has already gone does not need to know. A failure is
// told within a second of its own, since ctx may be what failed.
func tellOutcome(ctx context.Context, t transport.Transport, names []string, self string, runErr error) {
	msg := outcomeMessage(runErr)
	if runErr != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
	}
	for _, p := range names {
		if p != self {
			t.Send(ctx, p, outcomeKey, msg) // best effort, see above
		}
	}
}

// truncateReason cuts a failure's reason to maxOutcomeReason bytes, at a
// rune boundary.
func truncateReason(reason string) string {
	if len(reason) <= maxOutcomeReason {
		return reason
	}
	n := maxOutcomeReason
	for n > 0 && !utf8.RuneStart(reason[n]) {
		n--
	}
	return reason[:n]
}

// awaitOutcomes waits until every other player has told how its part
// ended, or has gone without telling, and returns nil only if every one
// succeeded. Otherwise the error names each player that failed, with its
// reason, and each that went away without a word (crashed, killed, cut
// off). A player with no part in the computation learns this way whether
// the run it waited for succeeded.
func awaitOutcomes(ctx context.Context, t transport.Transport, names []string, self string) error {
	// Receive from every player at once, so that an answer that came in
	// time is taken in time, and a deadline blames only the silent.
	verdicts := make([]string, len(names)) // "" for success
	var wg sync.WaitGroup
	for i, p := range names {
		if p == self {
			continue
		}
		wg.Go(func() {
			b, err := t.Recv(ctx, p, outcomeKey)
			switch {
			case err != nil && ctx.Err() != nil:
				verdicts[i] = fmt.Sprintf("%q: no word: %v", p, context.Cause(ctx))
			case err != nil:
				verdicts[i] = fmt.Sprintf("%q went away without a word: %v", p, err)
			case len(b) == 1 && b[0] == outcomeSucceeded:
			case len(b) >= 1 && b[0] == outcomeFailed && len(b) <= 1+maxOutcomeReason:
				verdicts[i] = fmt.Sprintf("%q failed: %s", p, printable(b[1:]))
			default:
				verdicts[i] = fmt.Sprintf("%q sent a malformed outcome of %d bytes", p, len(b))
			}
		})
	}
	wg.Wait()
	var failed []string
	for _, v := range verdicts {
		if v != "" {
			failed = append(failed, v)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("the run failed on %d of the other %d players:\n  %s", len(failed), len(names)-1, strings.Join(failed, "\n  "))
	}
	return nil
}

// printable returns b as text with every rune that is not printable, and
// every invalid byte, replaced, so that another player's words cannot
// move this one's terminal.
func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, string(b))
}

// namesTLS reports whether cfg names a CA or any player's certificate.
func namesTLS(cfg *players.Config) bool {
	if cfg.CAFile() != "" {
		return true
	}
	for _, p := range cfg.Players() {
		if p.Cert != "" || p.Key != "" {
			return true
		}
	}
	return false
}

// examplePlayers returns the players the example expects of cfg: the
// servers, the model owner and data-owner-0 to data-owner-(n-1), where n
// counts both the data owners and the names of no known role, which are
// most likely misspelt data owners. Config.Require then names a stray key
// and what it probably meant ("data-ower-1": did you mean "data-owner-1"?).
// The crypto producer is optional: aggregation does not use it.
func examplePlayers(cfg *players.Config) []string {
	want := []string{players.Server0, players.Server1, players.ModelOwner}
	if cfg.Has(players.CryptoProducer) {
		want = append(want, players.CryptoProducer)
	}
	n := 0
	for _, name := range cfg.Names() {
		if r := players.RoleOf(name); r == players.RoleDataOwner || r == players.RoleOther {
			n++
		}
	}
	for i := range n {
		want = append(want, players.DataOwner(i))
	}
	return want
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
	from := o.config
	if listed == 0 {
		from = "--data-owners"
	}
	if err := checkOwnerCount(o, o.dataOwners, from); err != nil {
		return err
	}
	// Only the model owner (the test set) and the data owners (each its own
	// shard of the training set) read data, and each reads only its part.
	shards, testSet, source, err := loadPlayerData(o, o.player)
	if err != nil {
		return err
	}
	if source != "" {
		fmt.Fprintf(stdout, "%s: data: %s\n", o.player, source)
	}
	timeout := o.timeout
	if timeout == 0 {
		timeout = cfg.MessageTimeout()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	fed, err := newFederation(o, o.player, shards, testSet)
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
	isModelOwner := o.player == modelOwner.Name
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
	s, err := session.NewRemote(g, o.player, t, opts)
	if err != nil {
		t.Close()
		return err
	}
	defer s.Close()
	s.WithLogger(log)
	// The session takes messages under its own sessions only; the
	// outcomes every player tells at the end (bounded by maxOutcomeReason)
	// are this program's, so it declares them before any peer connects.
	t.Mailbox().Expect(outcomeKey.Session)
	plan, err := s.Plan(iteration)
	if err != nil {
		return err
	}
	hasPart := slices.Contains(plan.Players(), o.player)
	peers := cfg.Len() - 1
	if !cfg.Has(o.player) {
		peers = cfg.Len()
	}
	fmt.Fprintf(stdout, "%s: waiting for %d peers (up to %v)\n", o.player, peers, cfg.ConnectTimeout())
	if err := t.Connect(ctx); err != nil {
		return err
	}
	agg := &remoteAggregation{Remote: s, timeout: timeout}
	prog := newProgress(stderr, o.quiet || !isModelOwner)
	if !o.fixedOwners {
		c := &cohortRun{o: o, cfg: cfg, t: t, s: s, agg: agg, op: iteration, fed: fed, log: log, prog: prog, timeout: timeout}
		return c.run(ctx, stdout)
	}
	fmt.Fprintf(stdout, "%s: connected; running %d iterations\n", o.player, o.iterations)

	// fail tells the others this player's own failure in iteration i and
	// returns it; what the others said, which err also carries, they tell
	// themselves.
	fail := func(i int, err error) error {
		own := err
		var ce *session.CascadeError
		if errors.As(err, &ce) {
			own = &session.CascadeError{Err: ce.Err, Lost: ce.Lost}
		}
		tellOutcome(ctx, t, cfg.Names(), o.player, fmt.Errorf("secure training, iteration %d: %w", i, own))
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
	// to hear from them. A player with a part waits at most two iteration
	// deadlines (any peer's last iteration overlaps its own); one with
	// none (the crypto producer, in aggregation) waits for the whole run.
	wait := ctx
	if hasPart {
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeoutCause(ctx, 2*timeout,
			fmt.Errorf("not done %v after %q finished its last iteration", 2*timeout, o.player))
		defer cancel()
	} else {
		fmt.Fprintf(stdout, "%s: no part in this computation; waiting for the other players to finish\n", o.player)
	}
	tellOutcome(wait, t, cfg.Names(), o.player, nil)
	if err := awaitOutcomes(wait, t, cfg.Names(), o.player); err != nil {
		return err
	}

	r := &result{mode: "secure (" + o.player + ")", perIter: (elapsed - modelOwner.EvaluationTime()) / time.Duration(max(ran, 1)), stats: s.Stats(), iterations: ran, steps: modelOwner.Iteration(), rounds: rounds}
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
	fmt.Fprintf(stdout, "%s: done, %v per iteration\n", o.player, r.perIter.Round(time.Microsecond))
	for _, l := range r.stats {
		fmt.Fprintf(stdout, "  %s -> %s: %s per iteration\n", l.From, l.To, humanBytes(float64(l.Bytes)/float64(o.iterations)))
	}
	return nil
}
