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

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session"
	"github.com/shareflow/shareflow/session/transport"
	"github.com/shareflow/shareflow/session/transport/grpctransport"
)

// A run across processes or hosts works as the federated-learning
// example's (examples/federated-learning/remote.go), with the same
// hostmap, certificates and launcher: every host runs this program with
// the same flags but --player, builds the same graph and executes only
// its own player's part. The helpers below (hosts, the end-of-run
// outcomes) are that example's, which lives in another main package.

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
		return nil, fmt.Errorf("--player %q is not in %s (players: %v)", o.player, o.config, cfg.Names())
	}
	if err := cfg.Require(examplePlayers(cfg)...); err != nil {
		return nil, fmt.Errorf("%w (the example needs %s, %s, %s, %s and the client %s)",
			err, players.Server0, players.Server1, players.CryptoProducer, players.ModelOwner, clientName)
	}
	return cfg, nil
}

// outcomeKey is the key of the last message of a multi-host run: every
// player tells every other how its part ended. It lives outside the
// session's key space, whose messages the session forgets after each
// iteration.
var outcomeKey = transport.Key{Session: "private-prediction/outcome/v1"}

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
	msg := []byte{outcomeSucceeded}
	if runErr != nil {
		reason := runErr.Error()
		if len(reason) > maxOutcomeReason {
			n := maxOutcomeReason
			for n > 0 && !utf8.RuneStart(reason[n]) {
				n--
			}
			reason = reason[:n]
		}
		msg = append([]byte{outcomeFailed}, reason...)
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
// servers, the crypto producer (it serves the products' triples), the
// model owner and data-owner-0 to data-owner-(n-1), the first of which is
// the client, where n ≥ 1 counts both the data owners and the names of no
// known role, which are most likely misspelt data owners. Config.Require
// then names a stray key and what it probably meant ("data-ower-1": did
// you mean "data-owner-1"?). A hostmap of the federated-learning example
// thus serves as it is; its other data owners have no part here.
func examplePlayers(cfg *players.Config) []string {
	want := []string{players.Server0, players.Server1, players.CryptoProducer, players.ModelOwner}
	n := 0
	for _, name := range cfg.Names() {
		if r := players.RoleOf(name); r == players.RoleDataOwner || r == players.RoleOther {
			n++
		}
	}
	for i := range max(n, 1) {
		want = append(want, players.DataOwner(i))
	}
	return want
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
	switch o.player {
	case clientName:
		test, source, err := loadTest(o)
		if err != nil {
			return fmt.Errorf("%s: %w", o.player, err)
		}
		if n, err = imageCount(options{images: n}, test.N); err != nil {
			return fmt.Errorf("%s: %w", o.player, err)
		}
		pixels, labels = test.Images, test.Labels
		fmt.Fprintf(stdout, "%s: data: %d images of %s\n", o.player, n, source)
	case players.ModelOwner:
		if owner, err = loadClassifier(); err != nil {
			return fmt.Errorf("%s: %w", o.player, err)
		}
		fmt.Fprintf(stdout, "%s: classifier.sfw.gz, %v, %d parameters\n", o.player, owner.arch, owner.arch.NumParams())
	}
	cl, err := newClient(arch, pixels, labels, n, o.batch)
	if err != nil {
		return err
	}
	pr, err := newPrediction(arch, owner, cl, predictionSigmoid())
	if err != nil {
		return err
	}
	timeout := o.timeout
	if timeout == 0 {
		timeout = cfg.MessageTimeout()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t, err := grpctransport.New(cfg, o.player, grpctransport.Options{Logger: log})
	if err != nil {
		return err
	}
	for _, w := range t.Warnings() {
		fmt.Fprintln(stderr, "WARNING:", w)
	}
	opts := sessionOptions()
	opts.SessionID = o.sessionID
	opts.Players = cfg.Names()
	s, err := session.NewRemote(pr.graph, o.player, t, opts)
	if err != nil {
		t.Close()
		return err
	}
	defer s.Close()
	// The session takes messages under its own sessions only; the
	// outcomes every player tells at the end (bounded by maxOutcomeReason)
	// are this program's, so it declares them before any peer connects.
	t.Mailbox().Expect(outcomeKey.Session)
	plan, err := s.Plan(pr.op)
	if err != nil {
		return err
	}
	hasPart := slices.Contains(plan.Players(), o.player)
	fmt.Fprintf(stdout, "%s: waiting for %d peers (up to %v)\n", o.player, cfg.Len()-1, cfg.ConnectTimeout())
	if err := t.Connect(ctx); err != nil {
		return err
	}
	batches := cl.Batches()
	if hasPart {
		fmt.Fprintf(stdout, "%s: connected; classifying %d images in %d batches of %d\n", o.player, n, batches, o.batch)
	}

	isClient := o.player == clientName
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
			own := err
			var ce *session.CascadeError
			if errors.As(err, &ce) {
				own = &session.CascadeError{Err: ce.Err, Lost: ce.Lost}
			}
			tellOutcome(ctx, t, cfg.Names(), o.player, fmt.Errorf("private prediction, batch %d: %w", i, own))
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
	wait := ctx
	if hasPart {
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeoutCause(ctx, 2*timeout,
			fmt.Errorf("not done %v after %q finished its last batch", 2*timeout, o.player))
		defer cancel()
	} else {
		fmt.Fprintf(stdout, "%s: no part in this computation; waiting for the other players to finish\n", o.player)
	}
	tellOutcome(wait, t, cfg.Names(), o.player, nil)
	if err := awaitOutcomes(wait, t, cfg.Names(), o.player); err != nil {
		return err
	}

	stats := s.Stats()
	switch {
	case isClient:
		fmt.Fprintf(stdout, "%s: %d images classified privately, accuracy %.4f; %s\n", o.player, n, cl.Accuracy(), times)
		if o.out != "" {
			if err := writePredictions(o.out, cl); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: predictions written to %s\n", o.player, o.out)
		}
	case hasPart:
		fmt.Fprintf(stdout, "%s: done; %s\n", o.player, times)
	default:
		fmt.Fprintf(stdout, "%s: done\n", o.player)
	}
	for _, l := range stats {
		fmt.Fprintf(stdout, "  %s -> %s: %s per batch\n", l.From, l.To, humanBytes(float64(l.Bytes)/float64(batches)))
	}
	return nil
}
