package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/internal/multihost"
	"github.com/shareflow/shareflow/internal/units"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session"
	"github.com/shareflow/shareflow/session/transport/grpctransport"
)

// A run across processes or hosts works as the federated-learning
// example's (examples/federated-learning/remote.go), with the same
// hostmap, certificates and launcher: every host runs this program with
// the same flags but --player, builds the same graph and executes only
// its own player's part. The flags, the hostmap's loading and the
// outcomes at the end are package multihost's, which both examples share.

// loadHosts reads the hosts file, applies the TLS flags and checks that
// it has the players the example needs (multihost.Flags.LoadConfig).
func loadHosts(o options, stdout io.Writer) (*players.Config, error) {
	return o.LoadConfig(stdout, examplePlayers, fmt.Sprintf("the example needs %s, %s, %s, %s and the client %s",
		players.Server0, players.Server1, players.CryptoProducer, players.ModelOwner, clientName))
}

// outcomeKey is the key of the outcomes every player tells every other at
// the end of a multi-host run.
var outcomeKey = multihost.OutcomeKey("private-prediction")

// examplePlayers returns the players the example expects of cfg: the
// servers, the crypto producer (it serves the products' triples), the
// model owner and data-owner-0 to data-owner-(n-1), the first of which is
// the client, where n ≥ 1 counts both the data owners and the names of no
// known role, which are most likely misspelt data owners. Config.Require
// then names a stray key and what it probably meant ("data-ower-1": did
// you mean "data-owner-1"?). A hostmap of the federated-learning example
// thus serves as it is; its other data owners have no part here.
func examplePlayers(cfg *players.Config) []string {
	return multihost.WithDataOwners(cfg, []string{players.Server0, players.Server1, players.CryptoProducer, players.ModelOwner}, 1)
}

// remoteImageCount is the number of images every player of a run across
// processes classifies: --images, or the embedded test set's size, which
// every player knows without the data (parseFlags refuses --data without
// --images there).
func remoteImageCount(o options) int {
	if o.images > 0 {
		return o.images
	}
	return mnist.EmbeddedTestN
}

// predictRemote runs this process's player of a private prediction
// across processes or hosts. Only the client reads images, only the model
// owner the classifier; the servers and the crypto producer read nothing,
// and the other players of the hostmap have no part but the handshake and
// the outcomes at the end.
func predictRemote(ctx context.Context, o options, stdout, stderr io.Writer) error {
	cfg, err := loadHosts(o, stdout)
	if err != nil {
		return err
	}
	arch := model.TFE() // public: every player builds the same graph
	n := remoteImageCount(o)
	var (
		pixels []float32
		labels []uint8
		owner  *classifier
	)
	switch o.Player {
	case clientName:
		test, source, err := loadTest(o)
		if err != nil {
			return fmt.Errorf("%s: %w", o.Player, err)
		}
		if n, err = imageCount(options{images: n}, test.N); err != nil {
			return fmt.Errorf("%s: %w", o.Player, err)
		}
		pixels, labels = test.Images, test.Labels
		fmt.Fprintf(stdout, "%s: data: %d images of %s\n", o.Player, n, source)
	case players.ModelOwner:
		if owner, err = loadClassifier(); err != nil {
			return fmt.Errorf("%s: %w", o.Player, err)
		}
		fmt.Fprintf(stdout, "%s: classifier.sfw.gz, %v, %d parameters\n", o.Player, owner.arch, owner.arch.NumParams())
	}
	cl, err := newClient(arch, pixels, labels, n, o.batch)
	if err != nil {
		return err
	}
	pr, err := newPrediction(arch, owner, cl, predictionSigmoid())
	if err != nil {
		return err
	}
	timeout := o.StepTimeout(cfg)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t, err := grpctransport.New(cfg, o.Player, grpctransport.Options{Logger: log})
	if err != nil {
		return err
	}
	for _, w := range t.Warnings() {
		fmt.Fprintln(stderr, "WARNING:", w)
	}
	opts := sessionOptions()
	opts.SessionID = o.SessionID
	opts.Players = cfg.Names()
	s, err := session.NewRemote(pr.graph, o.Player, t, opts)
	if err != nil {
		t.Close()
		return err
	}
	defer s.Close()
	// The session takes messages under its own sessions only; the
	// outcomes every player tells at the end (bounded by
	// multihost.MaxOutcomeReason) are this program's, so it declares them
	// before any peer connects.
	t.Mailbox().Expect(outcomeKey.Session)
	outcomes := multihost.Outcomes{Transport: t, Key: outcomeKey, Players: cfg.Names(), Self: o.Player}
	plan, err := s.Plan(pr.op)
	if err != nil {
		return err
	}
	hasPart := slices.Contains(plan.Players(), o.Player)
	fmt.Fprintf(stdout, "%s: waiting for %d peers (up to %v)\n", o.Player, cfg.Len()-1, cfg.ConnectTimeout())
	if err := t.Connect(ctx); err != nil {
		return err
	}
	batches := cl.Batches()
	if hasPart {
		fmt.Fprintf(stdout, "%s: connected; classifying %d images in %d batches of %d\n", o.Player, n, batches, o.batch)
	}

	isClient := o.Player == clientName
	progress := progressLines(stderr, o.quiet || !isClient)
	var times batchTimes
	for i := range batches {
		bctx, cancel := context.WithTimeout(ctx, timeout)
		start := time.Now()
		err := s.Run(bctx, pr.op)
		times.add(time.Since(start))
		cancel()
		if err != nil {
			// Tell the others this player's own failure; what the others
			// said, which err also carries, they tell themselves.
			outcomes.Tell(ctx, fmt.Errorf("private prediction, batch %d: %w", i, multihost.OwnFailure(err)))
			return fmt.Errorf("private prediction, batch %d: %w", i, err)
		}
		if progress != nil {
			progress(i+1, batches)
		}
	}

	// This player's part is done, but the run succeeded only if every
	// player's did (the client's last step, receiving the logits, comes
	// after the model owner's last). So every player tells the others how
	// it ended and waits to hear from them: a player with a part at most
	// two batch deadlines, one without (the other data owners) for the
	// whole run.
	within := 2 * timeout
	if !hasPart {
		within = 0
		fmt.Fprintf(stdout, "%s: no part in this computation; waiting for the other players to finish\n", o.Player)
	}
	if err := outcomes.Finish(ctx, within, "batch"); err != nil {
		return err
	}

	stats := s.Stats()
	switch {
	case isClient:
		fmt.Fprintf(stdout, "%s: %d images classified privately, accuracy %.4f; %s\n", o.Player, n, cl.Accuracy(), times)
		if o.out != "" {
			if err := writePredictions(o.out, cl); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: predictions written to %s\n", o.Player, o.out)
		}
	case hasPart:
		fmt.Fprintf(stdout, "%s: done; %s\n", o.Player, times)
	default:
		fmt.Fprintf(stdout, "%s: done\n", o.Player)
	}
	for _, l := range stats {
		fmt.Fprintf(stdout, "  %s -> %s: %s per batch\n", l.From, l.To, units.Bytes(float64(l.Bytes)/float64(batches)))
	}
	return nil
}
