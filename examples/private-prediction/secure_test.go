package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session"
)

// logitTolerance bounds how far a private logit may lie from the
// fixed-point emulation's (fixedLogits): the emulation truncates every
// product by a shift, interactive truncation gives that or one unit more
// (2^-16), and these differences pass through the polynomial and the sum
// over 512 hidden units. The largest difference measured on the 10,000
// images of the full test set is 8.7e-4 (README.md); this leaves a margin.
const logitTolerance = 2e-3

// checkAgainstEmulation checks that logits, n images of private logits,
// are the emulation's fixed to within logitTolerance, and that the
// classes are the same but where the emulation's two best logits are too
// close to tell apart at that tolerance. It returns how many such near
// ties it skipped.
func checkAgainstEmulation(t *testing.T, c *classifier, images []float32, logits []float64) (nearTies int) {
	t.Helper()
	proto, err := pond.New(sessionOptions().Protocol)
	require.NoError(t, err)
	fixed, err := c.fixedLogits(images, predictionSigmoid(), proto)
	require.NoError(t, err)
	require.Len(t, logits, len(fixed.Logits))
	k := c.arch.Classes
	for i := range len(logits) / k {
		got, want := logits[i*k:(i+1)*k], fixed.Logits[i*k:(i+1)*k]
		for j := range got {
			require.InDelta(t, want[j], got[j], logitTolerance, "image %d, logit %d", i, j)
		}
		if topGap(want) < 2*logitTolerance {
			nearTies++
			continue
		}
		assert.Equal(t, argmax(want, k)[0], argmax(got, k)[0], "class of image %d", i)
	}
	return nearTies
}

// topGap returns the difference between the two largest values of row.
func topGap(row []float64) float64 {
	s := slices.Clone(row)
	slices.Sort(s)
	return s[len(s)-1] - s[len(s)-2]
}

// TestPrivatePredictionMatchesPlaintext runs a private prediction in one
// process on 150 test images, in two batches of 100 (the second padded):
// the logits are those of the fixed-point emulation of the computation,
// to within a few units in the last place, and the classes those of the
// plaintext network but for the rare image on which the polynomial
// changes the class (TestPrivatePredictionAgrees measures their share on
// the whole test set). Only the client receives anything but the servers.
func TestPrivatePredictionMatchesPlaintext(t *testing.T) {
	c, _, test := loadAll(t)
	const n, batch = 150, 100
	r, err := predictLocal(context.Background(), c, test, n, batch, sessionOptions(), nil)
	require.NoError(t, err)
	require.Equal(t, 2, r.batches)
	require.Len(t, r.client.logits, n*c.arch.Classes)

	ties := checkAgainstEmulation(t, c, test.Images[:n*c.arch.Inputs], r.client.logits)
	assert.LessOrEqual(t, ties, 2, "near ties, whose class the comparison skips")

	a, err := compareWithPlaintext(c, test, r)
	require.NoError(t, err)
	t.Logf("%d images: same class as plaintext %d, as the emulation %d (logits within %.1e); accuracy private %.4f plaintext %.4f",
		a.N, a.SamePlain, a.SameFixed, a.MaxFixedDiff, a.PrivateAccuracy, a.PlainAccuracy)
	assert.Equal(t, n, a.SameFixed)
	assert.GreaterOrEqual(t, float64(a.SamePlain)/float64(n), 0.99)
	assert.InDelta(t, a.PlainAccuracy, a.PrivateAccuracy, 0.01)

	// Who received what: the model owner and server2 nothing; the client
	// one share of the logits from each server, per batch, and nothing
	// else (a share of a batch×classes matrix: an 8-byte header and 8
	// bytes an element).
	toClient := uint64(0)
	for _, l := range r.stats {
		assert.NotEqual(t, players.ModelOwner, l.To, "%s -> %s", l.From, l.To)
		assert.NotEqual(t, players.CryptoProducer, l.To, "%s -> %s", l.From, l.To)
		if l.To == clientName {
			assert.Contains(t, []string{players.Server0, players.Server1}, l.From)
			assert.Equal(t, uint64(r.batches), l.Messages, "%s -> %s", l.From, l.To)
			assert.Equal(t, uint64(r.batches*(8+8*batch*c.arch.Classes)), l.Bytes, "%s -> %s", l.From, l.To)
			toClient++
		}
	}
	assert.Equal(t, uint64(2), toClient, "both servers send the client its share")
}

// TestClient checks the client's batches: standardized, the last padded
// with its last image, and the padding's logits dropped; and what it
// refuses.
func TestClient(t *testing.T) {
	arch := model.TFE()
	const n = 5
	pixels := make([]float32, n*arch.Inputs)
	for i := range pixels {
		pixels[i] = float32(i/arch.Inputs) / 10 // image i is all i/10
	}
	labels := []uint8{0, 1, 2, 3, 4}
	cl, err := newClient(arch, pixels, labels, n, 3)
	require.NoError(t, err)
	require.Equal(t, 2, cl.Batches())
	ctx := context.Background()

	first, err := cl.shareBatch(ctx, nil)
	require.NoError(t, err)
	second, err := cl.shareBatch(ctx, nil)
	require.NoError(t, err)
	for b, x := range [][]*tensor.Dense{first, second} {
		require.Len(t, x, 1)
		v, err := model.Float64s(x[0], []int{3, arch.Inputs})
		require.NoError(t, err)
		for i := range 3 {
			img := min(3*b+i, n-1)
			assert.InDelta(t, standardize(float32(img)/10), v[i*arch.Inputs+7], 1e-12, "batch %d row %d", b, i)
		}
	}
	_, err = cl.shareBatch(ctx, nil)
	assert.ErrorContains(t, err, "data-owner-0: all 5 images have been sent, in 2 batches")

	logits := func(base float64) []*tensor.Dense {
		v := make([]float64, 3*arch.Classes)
		for i := range 3 {
			v[i*arch.Classes+i] = base + float64(i) // class i
		}
		return []*tensor.Dense{tensor.New(tensor.WithShape(3, arch.Classes), tensor.WithBacking(v))}
	}
	require.NoError(t, cl.receiveLogits(ctx, logits(1)))
	require.NoError(t, cl.receiveLogits(ctx, logits(1)))
	assert.Equal(t, []int{0, 1, 2, 0, 1}, cl.Predictions(), "the padding's logits are dropped")
	assert.InDelta(t, 3.0/5, cl.Accuracy(), 1e-12)
	assert.ErrorContains(t, cl.receiveLogits(ctx, logits(1)), "logits of a batch it did not send")

	bad, err := newClient(arch, pixels, labels, n, 3)
	require.NoError(t, err)
	_, err = bad.shareBatch(ctx, nil)
	require.NoError(t, err)
	assert.ErrorContains(t, bad.receiveLogits(ctx, nil), "0 output tensors")
	wrong := []*tensor.Dense{tensor.New(tensor.WithShape(2, arch.Classes), tensor.WithBacking(make([]float64, 2*arch.Classes)))}
	assert.ErrorContains(t, bad.receiveLogits(ctx, wrong), "data-owner-0: logits")
	nan := logits(math.NaN())
	assert.ErrorContains(t, bad.receiveLogits(ctx, nan), "logit 0 of image 0 is NaN")

	_, err = newClient(arch, pixels, labels, n+1, 3)
	assert.ErrorContains(t, err, "6 images wanted, the test set has 5")
	pixels[arch.Inputs+3] = 1.5
	_, err = newClient(arch, pixels, labels, n, 3)
	assert.ErrorContains(t, err, "pixel 3 of image 1 is 1.5")
	_, err = newClient(arch, nil, nil, n, 0)
	assert.ErrorContains(t, err, "5 images in batches of 0")

	standIn, err := newClient(arch, nil, nil, n, 3)
	require.NoError(t, err)
	_, err = standIn.shareBatch(ctx, nil)
	assert.ErrorIs(t, err, errStandIn)
	_, err = (&modelOwner{name: players.ModelOwner}).shareWeights(ctx, nil)
	assert.ErrorIs(t, err, errStandIn)
}

// TestPredict runs the command in one process on a few images and checks
// its report, and that --out writes what the client received.
func TestPredict(t *testing.T) {
	out := t.TempDir() + "/predictions.csv"
	var stdout bytes.Buffer
	err := run(context.Background(), []string{"--images", "30", "--batch", "20", "--quiet", "--out", out}, &stdout, io.Discard)
	require.NoError(t, err)
	s := stdout.String()
	assert.Contains(t, s, "30 images, 2 batches of 20")
	assert.Contains(t, s, "same class as the plaintext network: ")
	assert.Contains(t, s, "time per batch of 20: private ")
	assert.Regexp(t, `model-owner +sent +[0-9.]+ MB, received +0 B`, s)
	assert.Regexp(t, `server2 +sent +[0-9.]+ [kM]B, received +0 B`, s)

	got, err := readPredictions(out)
	require.NoError(t, err)
	require.Len(t, got.classes, 30)
	c, _, test := loadAll(t)
	ties := checkAgainstEmulation(t, c, test.Images[:30*c.arch.Inputs], got.logits)
	assert.LessOrEqual(t, ties, 1, "near ties, whose class the comparison skips")
	assert.Equal(t, test.Labels[:30], got.labels)

	var plan bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"--print-plan", "--images", "30", "--batch", "20"}, &plan, io.Discard))
	assert.Contains(t, plan.String(), "fingerprint ")
	assert.Contains(t, plan.String(), "server2")
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 100, o.batch)
	assert.Equal(t, 0, o.images)
	assert.Equal(t, "private-prediction", o.SessionID)

	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--batch", "0"}, "--batch 0: want 1 to 10000"},
		{[]string{"--images", "-1"}, "--images -1"},
		{[]string{"--config", "hosts.json"}, "--config needs --player NAME"},
		{[]string{"--player", "server0"}, "--player needs --config FILE"},
		{[]string{"--plaintext", "--config", "h.json", "--player", "server0"}, "--plaintext runs in one process"},
		{[]string{"--plaintext", "--out", "x.csv"}, "--plaintext makes no private prediction"},
		{[]string{"--config", "h.json", "--player", "server0", "--data", "/d"}, "--data needs --images N"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--timeout", "-1s", "--config", "h.json", "--player", "server0"}, "--timeout -1s"},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		var ue usageError
		require.ErrorAs(t, err, &ue, "%q", tc.args)
		assert.ErrorContains(t, err, tc.err, "%q", tc.args)
	}
	_, err = parseFlags([]string{"--help"}, io.Discard)
	assert.ErrorIs(t, err, errHelp)
	_, err = parseFlags([]string{"--config", "h.json", "--player", "server0", "--data", "/d", "--images", "10000"}, io.Discard)
	assert.NoError(t, err)
}

// BenchmarkPrivatePrediction measures one private forward pass of a batch
// of 100 images with every player in this process, against the plaintext
// network's on the same batch (model.Logits, gonum BLAS): x-plaintext is
// the ratio of the wall times, cpu-x-plaintext that of the CPU times (all
// five players together against the plaintext pass). It also reports the
// bytes each player sends and receives per batch, from the session's
// stats.
func BenchmarkPrivatePrediction(b *testing.B) {
	const batch = 100
	c, err := loadClassifier()
	require.NoError(b, err)
	_, test, err := mnist.Embedded()
	require.NoError(b, err)
	// As many batches as the benchmark runs, and one to warm up, cycling
	// through the test set.
	n := (b.N + 1) * batch
	pixels := make([]float32, 0, n*c.arch.Inputs)
	labels := make([]uint8, 0, n)
	for len(labels) < n {
		k := min(test.N, n-len(labels))
		pixels = append(pixels, test.Images[:k*c.arch.Inputs]...)
		labels = append(labels, test.Labels[:k]...)
	}
	cl, err := newClient(c.arch, pixels, labels, n, batch)
	require.NoError(b, err)
	pr, err := newPrediction(c.arch, c, cl, predictionSigmoid())
	require.NoError(b, err)
	s, err := session.NewLocal(pr.graph, sessionOptions())
	require.NoError(b, err)
	defer s.Close()
	ctx := context.Background()
	require.NoError(b, s.Run(ctx, pr.op)) // compiles the plan
	warm := s.Stats()

	b.ResetTimer()
	start, cpu := time.Now(), cpuTime(b)
	for range b.N {
		if err := s.Run(ctx, pr.op); err != nil {
			b.Fatal(err)
		}
	}
	secure, secureCPU := time.Since(start), cpuTime(b)-cpu
	b.StopTimer()

	start, cpu = time.Now(), cpuTime(b)
	for i := range b.N {
		x := pixels[(i%(test.N/batch))*batch*c.arch.Inputs:][:batch*c.arch.Inputs]
		if _, err := model.Logits(c.arch, c.Params(), x); err != nil {
			b.Fatal(err)
		}
	}
	plain, plainCPU := time.Since(start), cpuTime(b)-cpu
	b.ReportMetric(float64(secure)/float64(plain), "x-plaintext")
	b.ReportMetric(float64(plain.Nanoseconds())/float64(b.N), "plaintext-ns/op")
	// CPU time, all players together: less sensitive than wall time to
	// other programs on a shared machine.
	b.ReportMetric(float64(secureCPU.Milliseconds())/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(plainCPU.Milliseconds())/float64(b.N), "plaintext-cpu-ms/op")
	b.ReportMetric(float64(secureCPU)/float64(plainCPU), "cpu-x-plaintext")

	// Bytes of the measured batches: the stats after them less the warm-up's.
	sent := map[string]uint64{}
	received := map[string]uint64{}
	for _, l := range s.Stats() {
		sent[l.From] += l.Bytes
		received[l.To] += l.Bytes
	}
	for _, l := range warm {
		sent[l.From] -= l.Bytes
		received[l.To] -= l.Bytes
	}
	for _, p := range []string{players.Server0, players.Server1, players.CryptoProducer, players.ModelOwner, clientName} {
		b.ReportMetric(float64(sent[p])/float64(b.N), p+"-sent-B/op")
		b.ReportMetric(float64(received[p])/float64(b.N), p+"-recv-B/op")
	}
}

// predictionsFile is what writePredictions wrote.
type predictionsFile struct {
	labels  []uint8
	classes []int
	logits  []float64
}

// readPredictions reads a file of writePredictions, checking its header,
// the image numbering and that each class is its row's argmax.
func readPredictions(path string) (*predictionsFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 || !slices.Equal(rows[0], predictionsHeader) {
		return nil, fmt.Errorf("%s: header %q", path, rows[:min(1, len(rows))])
	}
	p := &predictionsFile{}
	for i, row := range rows[1:] {
		nums := make([]float64, len(row))
		for j, s := range row {
			if nums[j], err = strconv.ParseFloat(s, 64); err != nil {
				return nil, fmt.Errorf("%s: row %d: %w", path, i+1, err)
			}
		}
		if int(nums[0]) != i {
			return nil, fmt.Errorf("%s: row %d is image %v", path, i+1, nums[0])
		}
		p.labels = append(p.labels, uint8(nums[1]))
		p.classes = append(p.classes, int(nums[2]))
		p.logits = append(p.logits, nums[3:]...)
		if want := argmax(nums[3:], len(nums)-3)[0]; want != int(nums[2]) {
			return nil, fmt.Errorf("%s: row %d: class %v, the logits' largest is %d", path, i+1, nums[2], want)
		}
	}
	return p, nil
}

// cpuTime returns the CPU time (user and system) this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
