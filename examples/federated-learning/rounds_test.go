package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/session"
)

func TestRoundFlagsRefuseBadValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--checkpoint-every", "0", "--checkpoint", "d"}, "--checkpoint-every 0"},
		{[]string{"--checkpoint-every", "5"}, "--checkpoint-every needs --checkpoint"},
		{[]string{"--shard-sizes", "0.6,0.3"}, `--shard-sizes "0.6,0.3": the sizes sum to 0.9`},
		{[]string{"--shard-sizes", "0.6,0.5,-0.1"}, "size 3 is \"-0.1\""},
		{[]string{"--shard-sizes", "0.5,x"}, "size 2 is \"x\""},
		{[]string{"--shard-sizes", "0.5,0.5", "--data-owners", "3"}, "--shard-sizes gives 2 sizes for 3 data owners"},
		{[]string{"--weighted", "--max-weight", "0"}, "--max-weight 0"},
		{[]string{"--max-weight", "10"}, "--max-weight needs --weighted"},
		{[]string{"--min-owners", "1"}, "--min-owners 1: want at least 2"},
		{[]string{"--min-owners", "4"}, "--min-owners 4: there are only 3 data owners"},
		{[]string{"--data-owners", "1"}, "--min-owners 2: there are only 1 data owners"},
		{[]string{"--max-skipped", "0"}, "--max-skipped 0"},
		{[]string{"--sample", "-1"}, "--sample -1"},
		{[]string{"--sample", "4"}, "--sample 4: there are only 3 data owners"},
		{[]string{"--sample", "2", "--min-owners", "3"}, "--sample 2 is below --min-owners 3"},
		{[]string{"--dropout", "1"}, "--dropout 1"},
		{[]string{"--dropout", "-0.1"}, "--dropout -0.1"},
		{[]string{"--dropout", "NaN"}, "--dropout NaN"},
		{[]string{"--dropout", "0.1", "--config", "h.json", "--player", "server0"}, "--dropout simulates dropouts in a run in one process"},
		{[]string{"--round-deadline", "-1s"}, "--round-deadline -1s"},
		{[]string{"--fixed-owners", "--sample", "2"}, "--fixed-owners runs every data owner every iteration"},
		{[]string{"--fixed-owners", "--min-owners", "3"}, "--fixed-owners runs every data owner every iteration"},
		{[]string{"--compare", "--checkpoint", "d"}, "--checkpoint resumes secure training"},
		{[]string{"--data-owners", "1001"}, "--data-owners 1001: want 1 to 1000"},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		var ue usageError
		if assert.ErrorAs(t, err, &ue, "%v", tc.args) {
			assert.Contains(t, err.Error(), tc.want, "%v", tc.args)
		}
	}

	o, err := parseFlags([]string{"--shard-sizes", "0.6, 0.3,0.1"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 3, o.dataOwners)
	assert.Equal(t, []float64{0.6, 0.3, 0.1}, o.shardSizes)
	o, err = parseFlags([]string{"--shard-sizes", "0.25,0.25,0.25,0.25"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 4, o.dataOwners, "the number of sizes sets the number of data owners")
	o, err = parseFlags([]string{"--data-owners", "100", "--sample", "10", "--dropout", "0.1"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 2, o.minOwners)
	assert.Equal(t, 10, o.maxSkipped)
	assert.Equal(t, 50, o.checkpointEvery)
	// A run across hosts checks its owner count against the hosts file.
	o, err = parseFlags([]string{"--sample", "5", "--config", "h.json", "--player", "server0"}, io.Discard)
	require.NoError(t, err)
	assert.ErrorContains(t, checkOwnerCount(o, 3, "h.json"), "--sample 5: there are only 3 data owners (h.json)")
}

// simOptions parses args as the command line of a run in one process.
func simOptions(t *testing.T, args ...string) options {
	t.Helper()
	o, err := parseFlags(append([]string{"--quiet"}, args...), io.Discard)
	require.NoError(t, err)
	return o
}

// readRoundLog returns the records of a round log.
func readRoundLog(t *testing.T, path string) []roundRecord {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []roundRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r roundRecord
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&r), sc.Text())
		out = append(out, r)
	}
	require.NoError(t, sc.Err())
	return out
}

// TestSimulatedRoundsRecordCohorts runs a sampled federation with dropouts
// and checks every line of its round log against the rules of a round.
func TestSimulatedRoundsRecordCohorts(t *testing.T) {
	train, test, err := mnist.Embedded()
	require.NoError(t, err)
	logPath := filepath.Join(t.TempDir(), "rounds.jsonl")
	o := simOptions(t, "--data-owners", "20", "--sample", "5", "--dropout", "0.3", "--iterations", "12", "--round-log", logPath, "--seed", "7")
	var logs bytes.Buffer
	r, err := trainOnce(context.Background(), o, "secure", train, test, newProgress(io.Discard, true), slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NoError(t, err)

	recs := readRoundLog(t, logPath)
	require.NotEmpty(t, recs)
	var stats roundStats
	step := 0
	for i, rec := range recs {
		assert.Equal(t, uint64(i+1), rec.Round)
		assert.Len(t, rec.Cohort, 5, "round %d", rec.Round)
		assert.Equal(t, len(rec.Cohort), len(rec.Survivors)+len(rec.Dropped), "round %d: survivors and dropped make the cohort", rec.Round)
		for _, s := range rec.Survivors {
			assert.Contains(t, rec.Cohort, s)
			assert.NotContains(t, rec.Dropped, s)
		}
		for name, why := range rec.Dropped {
			assert.Contains(t, rec.Cohort, name)
			assert.Contains(t, why, "did not answer (simulated, --dropout 0.3)")
			assert.True(t, dropsOut(7, rec.Round, name, 0.3), "the draw of %s in round %d", name, rec.Round)
		}
		if rec.Skipped != "" {
			assert.Less(t, len(rec.Survivors), 2)
			assert.Equal(t, step, rec.Step, "a skipped round does not update the model")
		} else {
			step++
			assert.Equal(t, step, rec.Step)
			// The model to each survivor (8 bytes a parameter) and its masked
			// gradient back (4 in Z_2^32), at least.
			assert.Greater(t, rec.BytesSent, uint64(len(rec.Survivors))*407050*(8+4), "round %d: each survivor's share at least", rec.Round)
		}
		stats.add(rec)
	}
	assert.Equal(t, 12, step)
	assert.Equal(t, stats, r.rounds, "the summary counts what the log shows")
	assert.Greater(t, stats.Dropouts, 0, "a dropout of 0.3 over %d invitations drops someone", stats.Invited)
	assert.Equal(t, len(recs), strings.Count(logs.String(), "msg=round ")+strings.Count(logs.String(), `msg="round skipped"`), "one slog line a round")
	assert.Len(t, r.trainLoss, 12)
}

// TestSkippedRoundsFailAfterMaxSkipped: with min-owners 3 of 3 and owners
// dropping out half the time, rounds are skipped without updating the
// model, and the run fails after --max-skipped of them in a row, naming
// the owners who were missing.
func TestSkippedRoundsFailAfterMaxSkipped(t *testing.T) {
	train, test, err := mnist.Embedded()
	require.NoError(t, err)
	for _, mode := range []string{"secure", "plaintext"} {
		t.Run(mode, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "rounds.jsonl")
			o := simOptions(t, "--data-owners", "3", "--min-owners", "3", "--dropout", "0.5", "--max-skipped", "3", "--iterations", "400", "--round-log", logPath)
			_, err = trainOnce(context.Background(), o, mode, train, test, newProgress(io.Discard, true), nil)
			require.Error(t, err)
			if mode == "secure" {
				require.ErrorIs(t, err, session.ErrTooManySkipped)
			} else {
				require.ErrorIs(t, err, errTooManySkipped)
			}
			assert.Contains(t, err.Error(), "3 rounds in a row")

			recs := readRoundLog(t, logPath)
			missing := map[string]bool{}
			for _, rec := range recs[len(recs)-3:] {
				require.NotEmpty(t, rec.Skipped, "the last three rounds were skipped")
				for name := range rec.Dropped {
					missing[name] = true
				}
			}
			require.NotEmpty(t, missing)
			for name := range missing {
				assert.Contains(t, err.Error(), strconv.Quote(name), "the error names the missing owner")
			}
			updates := 0
			for i, rec := range recs {
				if rec.Skipped == "" {
					updates++
					assert.Len(t, rec.Survivors, 3)
				}
				assert.Equal(t, updates, rec.Step, "round %d: the model is updated in exactly the rounds not skipped", i+1)
			}
		})
	}
}

// TestWeightedMean: the weighted mean of the survivors' gradients is
// Σwᵢgᵢ/Σwᵢ, in the clear exactly and securely within the fixed-point
// bound, over random shard sizes and dropouts.
func TestWeightedMean(t *testing.T) {
	train, _, err := mnist.Embedded()
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(5, 6))
	checked := 0
	for trial := range 4 {
		n := 3 + rng.IntN(3)
		sizes := make([]float64, n)
		var sum float64
		for i := range sizes {
			sizes[i] = 0.2 + rng.Float64()
			sum += sizes[i]
		}
		for i := range sizes {
			sizes[i] /= sum
		}
		o := options{seed: uint64(trial), batchSize: 10, learningRate: 1, dataOwners: n, shardSizes: sizes,
			weighted: true, maxWeight: defaultMaxWeight, minOwners: 2, maxSkipped: 10, dropout: 0.3, evalEvery: -1}
		shards, err := splitTrain(o, train)
		require.NoError(t, err)

		// One round securely, one in the clear, each from a fresh
		// federation; with learning rate 1, before − after is the mean.
		var means [2][][]float64
		var survivors [2][]string
		for k, mode := range []string{"secure", "plaintext"} {
			f, err := newFederation(o, "", shards, nil)
			require.NoError(t, err)
			defer f.Close()
			before, _, _ := f.modelOwner.snapshot()
			var r rounder
			if mode == "secure" {
				s, err := session.NewLocal(f.graph, f.localOptions(o))
				require.NoError(t, err)
				defer s.Close()
				r = &sessionRounds{run: func(ctx context.Context) error { return s.Run(ctx, f.iteration) }, last: s.LastRound,
					mo: f.modelOwner, members: f.members, index: ownerIndex(f.dataOwners), ownNumbers: true}
			} else {
				r, err = newPlainRounds(o, f.modelOwner, f.dataOwners, sampleStream(o.seed))
				require.NoError(t, err)
			}
			rec, _, err := r.round(context.Background(), 1)
			require.NoError(t, err)
			if rec.Skipped != "" {
				break // too few survivors in this trial: nothing to compare
			}
			survivors[k] = rec.Survivors
			after, _, _ := f.modelOwner.snapshot()
			for i := range after {
				b, _ := model.Float64s(before[i], before[i].Shape())
				a, _ := model.Float64s(after[i], after[i].Shape())
				d := make([]float64, len(a))
				for j := range d {
					d[j] = b[j] - a[j]
				}
				means[k] = append(means[k], d)
			}
		}
		if means[0] == nil || means[1] == nil {
			continue
		}
		checked++
		require.Equal(t, survivors[0], survivors[1], "trial %d: the same dropouts in both runs", trial)

		// The reference: fresh owners, gradients at the initial weights,
		// weighted by shard size, over the survivors.
		ref, err := newFederation(o, "", shards, nil)
		require.NoError(t, err)
		defer ref.Close()
		w, err := ref.modelOwner.Weights(context.Background(), nil)
		require.NoError(t, err)
		want := ref.modelOwner.Architecture().Zeros()
		var total float64
		idx := ownerIndex(ref.dataOwners)
		for _, name := range survivors[0] {
			total += float64(shards[idx[name]].N)
		}
		for _, name := range survivors[0] {
			i := idx[name]
			g, err := ref.dataOwners[i].GradientAt(context.Background(), w, 0)
			require.NoError(t, err)
			for p := range want {
				dst := want[p].Data().([]float64)
				src, _ := model.Float64s(g[p], g[p].Shape())
				for j := range dst {
					dst[j] += float64(shards[i].N) / total * src[j]
				}
			}
		}
		// Securely, each member shares wᵢ = Nᵢ/weightUnit and wᵢgᵢ in
		// fixed point (16 fractional bits, rounded to within 2⁻¹⁷): Σwᵢgᵢ
		// is off by at most n·2⁻¹⁷ and Σwᵢ too, so the mean by at most
		// n·2⁻¹⁷·(1 + max|g|)/Σwᵢ.
		maxG := 0.0
		for p := range want {
			for _, v := range want[p].Data().([]float64) {
				maxG = max(maxG, math.Abs(v))
			}
		}
		bound := float64(len(survivors[0])) / (1 << 17) * (1 + 2*maxG) / (total / weightUnit)
		for p := range want {
			exp := want[p].Data().([]float64)
			for j := range exp {
				require.InDelta(t, exp[j], means[1][p][j], 1e-9, "trial %d, plain, %s[%d]", trial, model.ParamName(p), j)
				require.InDelta(t, exp[j], means[0][p][j], bound+1e-12, "trial %d, secure, %s[%d]", trial, model.ParamName(p), j)
			}
		}
	}
	assert.GreaterOrEqual(t, checked, 3, "most trials have enough survivors")
}

func TestMaxWeightRefused(t *testing.T) {
	train, test, err := mnist.Embedded()
	require.NoError(t, err)
	o := simOptions(t, "--weighted", "--max-weight", "1500", "--shard-sizes", "0.5,0.25,0.25")
	_, err = trainOnce(context.Background(), o, "secure", train, test, newProgress(io.Discard, true), nil)
	require.ErrorIs(t, err, errWeight)
	assert.Contains(t, err.Error(), "data-owner-0: weight above --max-weight: its weight (local training examples) is 3000, --max-weight is 1500")
}

func TestRoundLogAppendsAfterACutLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rounds.jsonl")
	l, last, err := openRoundLog(path)
	require.NoError(t, err)
	assert.Zero(t, last)
	require.NoError(t, l.write(roundRecord{Round: 1, Step: 1, Dropped: map[string]string{}}))
	require.NoError(t, l.write(roundRecord{Round: 2, Step: 1, Skipped: "why", Dropped: map[string]string{"a": "gone"}}))
	require.NoError(t, l.Close())
	// A crash cut the third record short.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	f.WriteString(`{"round":3,"ste`)
	f.Close()

	l, last, err = openRoundLog(path)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), last, "the last complete record")
	require.NoError(t, l.write(roundRecord{Round: 3, Step: 2, Dropped: map[string]string{}}))
	require.NoError(t, l.Close())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	require.Len(t, lines, 4)
	assert.Equal(t, `{"round":3,"ste`, lines[2], "the cut line is ended, not glued to the next")
	assert.JSONEq(t, `{"round":3,"step":2,"cohort":null,"survivors":null,"dropped":{},"bytes_sent":0,"seconds":0}`, lines[3])
	assert.JSONEq(t, `{"round":2,"step":1,"cohort":null,"survivors":null,"dropped":{"a":"gone"},"skipped":"why","bytes_sent":0,"seconds":0}`, lines[1])
}

func TestDropsOutIsSeededAndFair(t *testing.T) {
	n := 0
	for round := range uint64(2000) {
		if dropsOut(1, round, "data-owner-3", 0.1) {
			n++
		}
		assert.Equal(t, dropsOut(1, round, "data-owner-3", 0.1), dropsOut(1, round, "data-owner-3", 0.1))
	}
	assert.InDelta(t, 200, n, 45, "about a tenth of 2000 draws")
	assert.False(t, dropsOut(1, 1, "x", 0))
	differ := false
	for round := range uint64(50) {
		differ = differ || dropsOut(1, round, "a", 0.5) != dropsOut(2, round, "a", 0.5)
	}
	assert.True(t, differ, "the seed matters")
}

// TestSimulationOf100Owners is the simulation: 100 data owners, 10
// sampled a round, each failing to answer with probability 0.1, on the
// embedded data in the default iterations.
func TestSimulationOf100Owners(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a minute; skipped with -short")
	}
	train, test, err := mnist.Embedded()
	require.NoError(t, err)
	o := simOptions(t, "--data-owners", "100", "--sample", "10", "--dropout", "0.1")
	r, err := trainOnce(context.Background(), o, "secure", train, test, newProgress(io.Discard, true), nil)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, r.accuracy, 0.80)
	assert.Equal(t, 400, r.history[len(r.history)-1].Iteration)
	assert.InDelta(t, 9, float64(r.rounds.Survivors)/float64(r.rounds.Rounds), 0.3, "a tenth of the cohort drops out")
	t.Logf("accuracy %.4f, %v, %v per round", r.accuracy, r.rounds, r.perIter)
}

// errAt is the error a test ends a run with to simulate a crash.
var errAt = errors.New("simulated crash")

// crashAfter is a slog handler that cancels a run once the model owner
// has logged the round with the given step.
type crashAfter struct {
	slog.Handler
	step   int64
	cancel context.CancelCauseFunc
}

func (c *crashAfter) Handle(ctx context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "step" && a.Value.Int64() == c.step {
			c.cancel(errAt)
		}
		return true
	})
	return nil
}

func (c *crashAfter) Enabled(context.Context, slog.Level) bool { return true }
