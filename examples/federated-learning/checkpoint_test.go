package main

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
)

// smallCheckpoint returns a checkpoint of a small network with every
// kind of content.
func smallCheckpoint(t testing.TB) *checkpoint {
	arch := model.Architecture{Inputs: 4, Hidden: 3, Classes: 2}
	params, err := arch.Init(rand.New(rand.NewPCG(1, 2)))
	require.NoError(t, err)
	sampler, err := rand.NewPCG(3, 4).MarshalBinary()
	require.NoError(t, err)
	o := options{seed: 9, batchSize: 30, learningRate: 0.1, minOwners: 2, sample: 2, dropout: 0.1}
	return &checkpoint{
		Run: runFields(o, 3, arch), Arch: arch, Step: 20, Round: 23, Params: params, Sampler: sampler,
		Owners: []ownerState{
			{Name: "data-owner-0", RNG: sampler, Pos: 1, Epoch: 2, Batches: 7, order: []uint32{2, 0, 1}},
			{Name: "data-owner-1", RNG: sampler, order: []uint32{0}},
		},
		Stats:     roundStats{Rounds: 23, Skipped: 3, Dropouts: 5, Invited: 46, Survivors: 41},
		History:   []Evaluation{{0, 2.3, 0.1}, {10, math.NaN(), 0.5}},
		TrainLoss: []float64{2.2, 2.1, math.Inf(1)},
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	c := smallCheckpoint(t)
	b, err := c.encode()
	require.NoError(t, err)
	got, err := decodeCheckpoint(b)
	require.NoError(t, err)
	require.NoError(t, got.checkFits(c.Run, c.Arch))
	assert.Equal(t, c.Step, got.Step)
	assert.Equal(t, c.Round, got.Round)
	assert.Equal(t, c.Sampler, got.Sampler)
	assert.Equal(t, c.Stats, got.Stats)
	assert.Equal(t, c.Owners, got.Owners)
	assert.Equal(t, c.TrainLoss[:2], got.TrainLoss[:2])
	assert.True(t, math.IsInf(got.TrainLoss[2], 1))
	assert.Equal(t, c.History[0], got.History[0])
	assert.True(t, math.IsNaN(got.History[1].Loss), "NaN survives, which JSON would not carry")
	for i := range c.Params {
		assert.Equal(t, c.Params[i].Data(), got.Params[i].Data(), model.ParamName(i))
		assert.Equal(t, c.Params[i].Shape(), got.Params[i].Shape())
	}
	b2, err := got.encode()
	require.NoError(t, err)
	assert.Equal(t, b, b2, "decode and encode again give the same bytes")
}

// TestCheckpointRefused: a damaged checkpoint, one of another version or
// from another run is refused with an error that names the file and what
// was wrong, and nothing is overwritten.
func TestCheckpointRefused(t *testing.T) {
	c := smallCheckpoint(t)
	good, err := c.encode()
	require.NoError(t, err)
	flip := func(at int) []byte {
		b := append([]byte(nil), good...)
		b[at] ^= 1
		return b
	}
	version := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(version[8:], 2)
	other := smallCheckpoint(t)
	o := options{seed: 10, batchSize: 30, learningRate: 0.1, minOwners: 2, sample: 2, dropout: 0.1}
	other.Run = runFields(o, 3, other.Arch)
	fromOther, err := other.encode()
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"flipped payload bit", flip(len(good) - 100), "corrupt: its SHA-256 checksum does not match"},
		{"flipped header bit", flip(20), "corrupt: its SHA-256 checksum does not match"},
		{"cut short", good[:len(good)-1], "corrupt: its SHA-256 checksum does not match"},
		{"empty", nil, "only 0 bytes"},
		{"not a checkpoint", []byte("PK\x03\x04 a zip file of some sort, long enough to pass the length check at the start"), `not a federated-learning checkpoint (it starts with "PK?? a z"`},
		{"another version", version, "format version 2; this program reads version 1"},
		{"another run", fromOther, "it is from another run: written with --seed 10, this run has 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := checkpointPath(dir)
			require.NoError(t, os.WriteFile(path, tc.file, 0o600))
			_, err := loadCheckpoint(dir, c.Run, c.Arch)
			require.ErrorIs(t, err, errCheckpoint)
			assert.Contains(t, err.Error(), "checkpoint "+path+": ")
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "nothing was overwritten")
		})
	}

	// Another network.
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(checkpointPath(dir), good, 0o600))
	_, err = loadCheckpoint(dir, c.Run, model.TFE())
	assert.ErrorContains(t, err, "written for a 4-3-2 network, this run trains 784-512-10")
	// None yet.
	got, err := loadCheckpoint(t.TempDir(), c.Run, c.Arch)
	assert.NoError(t, err)
	assert.Nil(t, got)
}

// TestRefusedCheckpointIsNotOverwritten runs the example against a
// checkpoint from another seed: it stops before training, and the
// checkpoint and the round log are as they were.
func TestRefusedCheckpointIsNotOverwritten(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "rounds.jsonl")
	args := []string{"--iterations", "4", "--checkpoint", dir, "--checkpoint-every", "2", "--round-log", logPath, "--quiet"}
	require.NoError(t, run(context.Background(), append(args, "--seed", "1"), io.Discard, io.Discard))
	ck, err := os.ReadFile(checkpointPath(dir))
	require.NoError(t, err)
	roundLog, err := os.ReadFile(logPath)
	require.NoError(t, err)

	err = run(context.Background(), append(args, "--seed", "2", "--iterations", "8"), io.Discard, io.Discard)
	require.ErrorIs(t, err, errCheckpoint)
	assert.Contains(t, err.Error(), "written with --seed 1, this run has 2")
	after, err := os.ReadFile(checkpointPath(dir))
	require.NoError(t, err)
	assert.Equal(t, ck, after, "the checkpoint is untouched")
	logAfter, err := os.ReadFile(logPath)
	require.NoError(t, err)
	assert.Equal(t, roundLog, logAfter, "the round log is untouched")
}

// trainWith runs the example in one process with args and returns the
// model owner's final parameters, or the run's error. log, when not nil,
// gets the per-round lines.
func trainWith(t *testing.T, ctx context.Context, log *slog.Logger, args ...string) ([][]float64, *result, error) {
	t.Helper()
	train, test, err := mnist.Embedded()
	require.NoError(t, err)
	o := simOptions(t, args...)
	r, err := trainOnce(ctx, o, "secure", train, test, newProgress(io.Discard, true), log)
	if err != nil {
		return nil, nil, err
	}
	params := make([][]float64, len(r.model))
	for i, x := range r.model {
		v, err := model.Float64s(x, x.Shape())
		require.NoError(t, err)
		params[i] = v
	}
	return params, r, nil
}

// TestResumeContinuesTheRun stops a federation with dropouts at a
// checkpoint and resumes it: the model, the round log and the summary are
// those of a run that never stopped. (With --sample they would not be:
// a resumed session draws its samples from a new seed.)
func TestResumeContinuesTheRun(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three times; skipped with -short")
	}
	ctx := context.Background()
	common := []string{"--data-owners", "6", "--dropout", "0.2", "--eval-every", "5", "--checkpoint-every", "5"}

	whole := t.TempDir()
	want, wantR, err := trainWith(t, ctx, nil, append(common, "--iterations", "16", "--checkpoint", whole, "--round-log", filepath.Join(whole, "log"))...)
	require.NoError(t, err)

	parts := t.TempDir()
	first := append(common, "--iterations", "10", "--checkpoint", parts, "--round-log", filepath.Join(parts, "log"))
	_, _, err = trainWith(t, ctx, nil, first...)
	require.NoError(t, err)
	got, gotR, err := trainWith(t, ctx, nil, append(common, "--iterations", "16", "--checkpoint", parts, "--round-log", filepath.Join(parts, "log"))...)
	require.NoError(t, err)

	assert.Equal(t, want, got, "the resumed model is the uninterrupted one, bit for bit")
	assert.Equal(t, wantR.rounds, gotR.rounds, "the summary covers the whole run")
	assert.Equal(t, wantR.history, gotR.history)
	assert.Equal(t, wantR.trainLoss, gotR.trainLoss)
	assert.Equal(t, wantR.accuracy, gotR.accuracy)
	wl, gl := readRoundLog(t, filepath.Join(whole, "log")), readRoundLog(t, filepath.Join(parts, "log"))
	require.Equal(t, len(wl), len(gl))
	for i := range wl {
		wl[i].Seconds, gl[i].Seconds = 0, 0
		assert.Equal(t, wl[i], gl[i], "round %d", i+1)
	}
}

// TestResumeAfterCrash kills a run (its context) after step 7, past the
// checkpoint at step 5: the restarted run resumes from step 5, numbers
// its rounds after those the log already holds, and ends with the full
// number of steps.
func TestResumeAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("trains twice; skipped with -short")
	}
	dir := t.TempDir()
	logPath := filepath.Join(dir, "log")
	args := []string{"--data-owners", "4", "--sample", "3", "--dropout", "0.2", "--iterations", "12",
		"--checkpoint", dir, "--checkpoint-every", "5", "--round-log", logPath}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	crash := slog.New(&crashAfter{Handler: slog.DiscardHandler, step: 7, cancel: cancel})
	_, _, err := trainWith(t, ctx, crash, args...)
	require.Error(t, err)
	assert.ErrorIs(t, context.Cause(ctx), errAt)
	crashed := readRoundLog(t, logPath)
	require.NotEmpty(t, crashed)
	assert.Equal(t, 7, crashed[len(crashed)-1].Step)

	_, r, err := trainWith(t, context.Background(), nil, args...)
	require.NoError(t, err)
	recs := readRoundLog(t, logPath)
	for i := 1; i < len(recs); i++ {
		assert.Equal(t, recs[i-1].Round+1, recs[i].Round, "round numbers never repeat")
	}
	resumed := recs[len(crashed)]
	assert.Equal(t, 6, resumed.Step, "the first round after the restart makes step 6, from the checkpoint at 5")
	assert.Equal(t, 12, recs[len(recs)-1].Step)
	assert.Equal(t, 12, r.history[len(r.history)-1].Iteration)

	ck, err := loadCheckpoint(dir, runFields(simOptions(t, args...), 4, model.TFE()), model.TFE())
	require.NoError(t, err)
	assert.Equal(t, 12, ck.Step, "and the checkpoint is written once more at the end")
	assert.Equal(t, recs[len(recs)-1].Round, ck.Round)
}

// FuzzDecodeCheckpoint feeds the parser behind the checksum (which a
// fuzzer cannot forge) arbitrary bodies: it must not panic nor allocate
// beyond what the input holds, and what it accepts must encode to a
// checkpoint that decodes to the same.
func FuzzDecodeCheckpoint(f *testing.F) {
	good, err := smallCheckpoint(f).encode()
	require.NoError(f, err)
	f.Add(good[:len(good)-32])
	f.Add(good[:40])
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := decodeBody(body)
		if err != nil {
			return
		}
		b, err := c.encode()
		if err != nil {
			return // parameters that are not finite are refused on encoding
		}
		again, err := decodeCheckpoint(b)
		require.NoError(t, err)
		b2, err := again.encode()
		require.NoError(t, err)
		assert.Equal(t, b, b2)
	})
}

// TestOwnerStateRestores: a data owner restored from another's state
// draws the same batches from then on.
func TestOwnerStateRestores(t *testing.T) {
	train, _, err := mnist.Embedded()
	require.NoError(t, err)
	shard, err := train.Shard(0, 10)
	require.NoError(t, err)
	a, err := NewDataOwner("data-owner-0", shard, 30, 1)
	require.NoError(t, err)
	defer a.Close()
	b, err := NewDataOwner("data-owner-0", shard, 30, 2)
	require.NoError(t, err)
	defer b.Close()
	for range 25 { // past an epoch of 600 examples
		a.nextBatch()
	}
	s, err := a.state()
	require.NoError(t, err)
	require.NoError(t, b.restore(s))
	for range 30 {
		a.nextBatch()
		b.nextBatch()
		require.Equal(t, a.batch.Labels, b.batch.Labels)
	}
	s.order[0] = s.order[1]
	assert.ErrorContains(t, b.restore(s), "not a permutation")
	s.Name = "data-owner-1"
	assert.ErrorContains(t, b.restore(s), `holds the state of "data-owner-1" where "data-owner-0" was expected`)
}
