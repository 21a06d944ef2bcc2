package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/internal/units"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session"
)

// sessionOptions are the engine settings every player must agree on (the
// plan fingerprint covers them): Pond's defaults, 16 fractional bits and
// interactive truncation, with server2 as the crypto producer.
func sessionOptions() session.Options { return session.Options{} }

// loadTest loads the client's images: the test set of o.dataDir, or the
// embedded one. source says what was loaded.
func loadTest(o options) (test *mnist.Dataset, source string, err error) {
	if o.dataDir == "" {
		test, err = mnist.LoadTestFS(mnist.EmbeddedFS(), ".")
		if err != nil {
			return nil, "", fmt.Errorf("loading the embedded test set: %w", err)
		}
		return test, fmt.Sprintf("the embedded Fashion-MNIST test set (%d images)", test.N), nil
	}
	test, err = mnist.LoadTest(o.dataDir)
	if err != nil {
		return nil, "", err
	}
	return test, fmt.Sprintf("the test set of %s (%d images)", o.dataDir, test.N), nil
}

// imageCount is the number of images to classify: --images, or, if 0,
// the whole test set, whose size is available (known without the data
// for the embedded set).
func imageCount(o options, available int) (int, error) {
	if o.images == 0 {
		return available, nil
	}
	if o.images > available {
		return 0, fmt.Errorf("--images %d: the test set has %d", o.images, available)
	}
	return o.images, nil
}

// localRun is what a private prediction with every player in this process
// measured.
type localRun struct {
	client  *client
	batches int
	times   batchTimes
	stats   []session.LinkStats
}

// predictLocal classifies the first n images of test privately, in
// batches of batch, with every player in this process: the model owner
// shares c's parameters, the client its images, and the client alone
// receives the logits. progress, if not nil, is told after every batch.
func predictLocal(ctx context.Context, c *classifier, test *mnist.Dataset, n, batch int, opts session.Options, progress func(done, total int)) (*localRun, error) {
	cl, err := newClient(c.arch, test.Images, test.Labels, n, batch)
	if err != nil {
		return nil, err
	}
	pr, err := newPrediction(c.arch, c, cl, predictionSigmoid())
	if err != nil {
		return nil, err
	}
	s, err := session.NewLocal(pr.graph, opts)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	r := &localRun{client: cl, batches: cl.Batches()}
	for i := range r.batches {
		start := time.Now()
		if err := s.Run(ctx, pr.op); err != nil {
			return nil, fmt.Errorf("private prediction, batch %d of %d: %w", i, r.batches, err)
		}
		r.times.add(time.Since(start))
		if progress != nil {
			progress(i+1, r.batches)
		}
	}
	r.stats = s.Stats()
	return r, nil
}

// batchTimes are the wall times of a run's batches. The first batch of a
// session also compiles the plan (and, across processes, exchanges
// fingerprints and warms up the connections), so the time per batch is
// the mean of the others when there are others.
type batchTimes struct {
	first, rest time.Duration
	n           int
}

func (b *batchTimes) add(d time.Duration) {
	if b.n == 0 {
		b.first = d
	} else {
		b.rest += d
	}
	b.n++
}

// PerBatch returns the mean time of a batch after the first, or the
// first's if it was the only one.
func (b batchTimes) PerBatch() time.Duration {
	if b.n <= 1 {
		return b.first
	}
	return b.rest / time.Duration(b.n-1)
}

func (b batchTimes) String() string {
	if b.n <= 1 {
		return fmt.Sprintf("%v for its one batch", b.first.Round(time.Microsecond))
	}
	return fmt.Sprintf("%v per batch after the first, which took %v", b.PerBatch().Round(time.Microsecond), b.first.Round(time.Microsecond))
}

// agreement compares a private prediction with the plaintext network's on
// the same images.
type agreement struct {
	N int
	// PrivateAccuracy and PlainAccuracy are the accuracies against the
	// labels of the private prediction and of the exact network (with the
	// sigmoid), in float64.
	PrivateAccuracy, PlainAccuracy float64
	// SamePlain counts the images whose private class is the exact
	// network's; SameFixed those whose private class is that of the
	// fixed-point emulation of the computation (fixedLogits).
	SamePlain, SameFixed int
	// MaxFixedDiff is the largest difference between a private logit and
	// the emulation's.
	MaxFixedDiff float64
	// PlainPerBatch is the plaintext network's time per batch (model.Logits,
	// gonum BLAS), on the same batches.
	PlainPerBatch time.Duration
}

// compareWithPlaintext measures how the private logits of r agree with
// the plaintext network on the same images of test.
func compareWithPlaintext(c *classifier, test *mnist.Dataset, r *localRun) (agreement, error) {
	cl := r.client
	a := agreement{N: cl.n}
	if len(cl.logits) != cl.n*c.arch.Classes {
		return a, fmt.Errorf("the client holds logits of %d images, want %d", len(cl.logits)/c.arch.Classes, cl.n)
	}
	x := test.Images[:cl.n*c.arch.Inputs]
	var plain []float64
	start := time.Now()
	for from := 0; from < cl.n; from += cl.batch {
		to := min(from+cl.batch, cl.n)
		l, err := model.Logits(c.arch, c.Params(), x[from*c.arch.Inputs:to*c.arch.Inputs])
		if err != nil {
			return a, err
		}
		plain = append(plain, l...)
	}
	a.PlainPerBatch = time.Since(start) / time.Duration(r.batches)
	proto, err := pond.New(sessionOptions().Protocol)
	if err != nil {
		return a, err
	}
	fixed, err := c.fixedLogits(x, predictionSigmoid(), proto)
	if err != nil {
		return a, err
	}
	for i, v := range fixed.Logits {
		a.MaxFixedDiff = max(a.MaxFixedDiff, math.Abs(v-cl.logits[i]))
	}
	k := c.arch.Classes
	private, exact, fx := cl.Predictions(), argmax(plain, k), argmax(fixed.Logits, k)
	right := 0
	for i, p := range private {
		a.SamePlain += b2i(p == exact[i])
		a.SameFixed += b2i(p == fx[i])
		right += b2i(exact[i] == int(cl.labels[i]))
	}
	a.PrivateAccuracy, a.PlainAccuracy = cl.Accuracy(), float64(right)/float64(cl.n)
	return a, nil
}

// predict runs a private prediction with every player in this process and
// prints what it measured, or, with --print-plan, the plan.
func predict(ctx context.Context, o options, stdout, stderr io.Writer) error {
	c, err := loadClassifier()
	if err != nil {
		return err
	}
	test, source, err := loadTest(o)
	if err != nil {
		return err
	}
	n, err := imageCount(o, test.N)
	if err != nil {
		return err
	}
	if o.printPlan {
		return printPlan(stdout, c, n, o.batch)
	}
	p := predictionSigmoid()
	fmt.Fprintf(stdout, "data: %s\n", source)
	fmt.Fprintf(stdout, "private prediction of %d images in batches of %d: network %d-%d-%d, sigmoid as a polynomial of degree %d on [-%g, %g]\n",
		n, o.batch, c.arch.Inputs, c.arch.Hidden, c.arch.Classes, p.Degree(), p.R, p.R)
	r, err := predictLocal(ctx, c, test, n, o.batch, sessionOptions(), progressLines(stderr, o.quiet))
	if err != nil {
		return err
	}
	a, err := compareWithPlaintext(c, test, r)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%d images, %d batches of %d\n", a.N, r.batches, o.batch)
	fmt.Fprintf(stdout, "  same class as the plaintext network: %d of %d images (%.2f%%)\n", a.SamePlain, a.N, 100*float64(a.SamePlain)/float64(a.N))
	fmt.Fprintf(stdout, "  accuracy: private %.4f, plaintext %.4f\n", a.PrivateAccuracy, a.PlainAccuracy)
	fmt.Fprintf(stdout, "  against the fixed-point emulation: same class on %d of %d images, logits within %.1e\n", a.SameFixed, a.N, a.MaxFixedDiff)
	fmt.Fprintf(stdout, "  time per batch of %d: private %v, plaintext %v: %.1f times (the first private batch, which compiles the plan: %v)\n", o.batch,
		r.times.PerBatch().Round(time.Microsecond), a.PlainPerBatch.Round(time.Microsecond),
		float64(r.times.PerBatch())/float64(a.PlainPerBatch), r.times.first.Round(time.Microsecond))
	printPlayerBytes(stdout, r.stats, r.batches)
	printLinkBytes(stdout, r.stats, r.batches)
	if o.out != "" {
		if err := writePredictions(o.out, r.client); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "predictions written to %s\n", o.out)
	}
	return nil
}

// printPlan prints the compiled plan of one batch: where each private
// tensor is shared, and who receives what.
func printPlan(w io.Writer, c *classifier, n, batch int) error {
	cl, err := newClient(c.arch, nil, nil, n, batch)
	if err != nil {
		return err
	}
	pr, err := newPrediction(c.arch, nil, cl, predictionSigmoid())
	if err != nil {
		return err
	}
	s, err := session.NewLocal(pr.graph, sessionOptions())
	if err != nil {
		return err
	}
	defer s.Close()
	plan, err := s.Plan(pr.op)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "fingerprint %s\n", plan.Fingerprint())
	_, err = plan.WriteTo(w)
	return err
}

// playerBytes is what one player sent and received.
type playerBytes struct {
	Player         string
	Sent, Received uint64
}

// bytesByPlayer sums stats by player, in the order server0, server1,
// server2, model owner, client, then any other.
func bytesByPlayer(stats []session.LinkStats) []playerBytes {
	by := map[string]*playerBytes{}
	get := func(p string) *playerBytes {
		if by[p] == nil {
			by[p] = &playerBytes{Player: p}
		}
		return by[p]
	}
	for _, l := range stats {
		get(l.From).Sent += l.Bytes
		get(l.To).Received += l.Bytes
	}
	order := []string{players.Server0, players.Server1, players.CryptoProducer, players.ModelOwner, clientName}
	var out []playerBytes
	for _, p := range order {
		if b := by[p]; b != nil {
			out = append(out, *b)
			delete(by, p)
		}
	}
	rest := make([]string, 0, len(by))
	for p := range by {
		rest = append(rest, p)
	}
	slices.Sort(rest)
	for _, p := range rest {
		out = append(out, *by[p])
	}
	return out
}

func printPlayerBytes(w io.Writer, stats []session.LinkStats, batches int) {
	fmt.Fprintf(w, "  bytes per batch, by player:\n")
	for _, p := range bytesByPlayer(stats) {
		fmt.Fprintf(w, "    %-14s sent %10s, received %10s\n", p.Player,
			units.Bytes(float64(p.Sent)/float64(batches)), units.Bytes(float64(p.Received)/float64(batches)))
	}
}

func printLinkBytes(w io.Writer, stats []session.LinkStats, batches int) {
	fmt.Fprintf(w, "  bytes per batch, by link:\n")
	stats = slices.Clone(stats)
	slices.SortStableFunc(stats, func(a, b session.LinkStats) int {
		if c := strings.Compare(a.From, b.From); c != 0 {
			return c
		}
		return strings.Compare(a.To, b.To)
	})
	var total uint64
	for _, l := range stats {
		total += l.Bytes
		fmt.Fprintf(w, "    %-14s -> %-14s %10s  (%d messages)\n", l.From, l.To,
			units.Bytes(float64(l.Bytes)/float64(batches)), l.Messages/uint64(batches))
	}
	fmt.Fprintf(w, "    %-32s %10s\n", "total", units.Bytes(float64(total)/float64(batches)))
}

// progressLines returns a progress function that prints a line every
// tenth of the run to w, or nil when quiet.
func progressLines(w io.Writer, quiet bool) func(done, total int) {
	if quiet {
		return nil
	}
	began := time.Now()
	last := 0
	return func(done, total int) {
		if done == total || done-last >= max(1, total/10) {
			last = done
			fmt.Fprintf(w, "secure: batch %d/%d, %v elapsed\n", done, total, time.Since(began).Round(100*time.Millisecond))
		}
	}
}

// predictionsHeader is the first line of the --out file.
var predictionsHeader = []string{"image", "label", "class", "logit0", "logit1", "logit2", "logit3", "logit4", "logit5", "logit6", "logit7", "logit8", "logit9"}

// writePredictions writes the client's results to path as CSV: for each
// image its index, label, predicted class and logits (shortest decimal
// that reads back as the same float64).
func writePredictions(path string, cl *client) error {
	k := cl.arch.Classes
	if k != len(predictionsHeader)-3 {
		return fmt.Errorf("writing %s: %d classes, the file format has %d", path, k, len(predictionsHeader)-3)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write(predictionsHeader)
	pred := cl.Predictions()
	row := make([]string, 3+k)
	for i, p := range pred {
		row[0], row[1], row[2] = strconv.Itoa(i), strconv.Itoa(int(cl.labels[i])), strconv.Itoa(p)
		for j, v := range cl.logits[i*k : (i+1)*k] {
			row[3+j] = strconv.FormatFloat(v, 'g', -1, 64)
		}
		w.Write(row)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}
