package main

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/players"
)

// tiny is a network small enough for exhaustive checks, over 2×3 images.
var tiny = model.Architecture{Inputs: 6, Hidden: 4, Classes: 3}

// syntheticSet returns n random 2×3 images with labels below classes.
func syntheticSet(t testing.TB, seed uint64, n, classes int) *mnist.Dataset {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0))
	d := &mnist.Dataset{Images: make([]float32, n*6), Labels: make([]uint8, n), N: n, Rows: 2, Cols: 3}
	for i := range d.Images {
		d.Images[i] = rng.Float32()
	}
	for i := range d.Labels {
		d.Labels[i] = uint8(rng.IntN(classes))
	}
	require.NoError(t, d.Validate())
	return d
}

func newDataOwners(t testing.TB, shards []*mnist.Dataset, batch int) []*DataOwner {
	t.Helper()
	owners := make([]*DataOwner, len(shards))
	for i, s := range shards {
		o, err := NewDataOwner("data-owner-"+string(rune('0'+i)), s, batch, uint64(100+i))
		require.NoError(t, err)
		t.Cleanup(func() { _ = o.Close() })
		owners[i] = o
	}
	return owners
}

// TestFedAvgEmbedded trains the full 784-512-10 network by plain federated
// averaging over three data owners holding disjoint shards of the embedded
// Fashion-MNIST subset, and checks that test accuracy rises well above
// chance.
func TestFedAvgEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("trains the full network for 100 iterations (a few seconds)")
	}
	train, test, err := mnist.Embedded()
	require.NoError(t, err)
	shards, err := train.Split(3)
	require.NoError(t, err)
	owners := newDataOwners(t, shards, 0)
	mo, err := NewModelOwner("model-owner", ModelOwnerConfig{Seed: 1, TestSet: test, EvalEvery: 20})
	require.NoError(t, err)
	assert.Equal(t, 0.1, mo.LearningRate())
	assert.Equal(t, 30, owners[0].BatchSize())

	startLoss, startAcc := mo.Evaluate()
	assert.Less(t, startAcc, 0.25, "an untrained model should be near chance")

	const iterations = 100
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < iterations; i++ {
		require.NoError(t, plainIteration(ctx, mo, owners))
	}
	t.Logf("%d plain FedAvg iterations with 3 data owners: %v", iterations, time.Since(start))

	loss, acc := mo.Evaluate()
	t.Logf("test loss %.3f → %.3f, accuracy %.3f → %.3f", startLoss, loss, startAcc, acc)
	assert.Equal(t, iterations, mo.Iteration())
	// Seeds 1–4 reach 0.63–0.68 here (Fashion-MNIST, 9,000 examples seen);
	// chance is 0.1.
	assert.Greater(t, acc, 0.55)
	assert.Less(t, loss, 1.3)

	hist := mo.History()
	require.Len(t, hist, 1+iterations/20)
	for i, e := range hist {
		assert.Equal(t, 20*i, e.Iteration)
	}
	assert.Equal(t, Evaluation{Iteration: iterations, Loss: loss, Accuracy: acc}, hist[len(hist)-1])

	curve := meanTrainingLoss(owners)
	require.Len(t, curve, iterations)
	assert.Less(t, curve[iterations-1], curve[0])

	path := filepath.Join(t.TempDir(), "curve.png")
	require.NoError(t, writePlot(path, curve, hist))
}

// TestFedAvgMatchesCentralised checks the data flow: with one data owner
// the federated update equals plain SGD on the same batch.
func TestFedAvgMatchesCentralised(t *testing.T) {
	set := syntheticSet(t, 1, 12, 3)
	owners := newDataOwners(t, []*mnist.Dataset{set}, 4)
	mo, err := NewModelOwner("model-owner", ModelOwnerConfig{Arch: tiny, Seed: 2, LearningRate: 0.5})
	require.NoError(t, err)
	w0, err := mo.Weights(context.Background(), nil)
	require.NoError(t, err)

	// Replay the owner's batch through a separate trainer.
	twin, err := NewDataOwner("twin", set, 4, 100)
	require.NoError(t, err)
	defer twin.Close()
	g, err := twin.ComputeGradient(context.Background(), w0)
	require.NoError(t, err)
	require.NoError(t, model.SGD(tiny, w0, g, 0.5))

	require.NoError(t, plainIteration(context.Background(), mo, owners))
	w1, err := mo.Weights(context.Background(), nil)
	require.NoError(t, err)
	for i := range w1 {
		assert.Equal(t, w0[i].Data(), w1[i].Data(), model.ParamName(i))
	}
}

// TestPlainIterationConcurrent runs three data owners' gorgonia machines
// at once, as the engine does (run it with -race), on a small network.
func TestPlainIterationConcurrent(t *testing.T) {
	set := syntheticSet(t, 11, 60, 3)
	shards, err := set.Split(3)
	require.NoError(t, err)
	owners := newDataOwners(t, shards, 5)
	mo, err := NewModelOwner("model-owner", ModelOwnerConfig{Arch: tiny, Seed: 12, LearningRate: 0.5, TestSet: set, EvalEvery: 10})
	require.NoError(t, err)
	before, _ := mo.Evaluate()
	for i := 0; i < 30; i++ {
		require.NoError(t, plainIteration(context.Background(), mo, owners))
	}
	after, _ := mo.Evaluate()
	assert.Less(t, after, before)
	assert.Len(t, mo.History(), 4)
	assert.Len(t, meanTrainingLoss(owners), 30)
	assert.ErrorContains(t, plainIteration(context.Background(), mo, nil), "no data owners")
}

func TestModelOwnerConfig(t *testing.T) {
	test := syntheticSet(t, 3, 10, 3)
	tests := []struct {
		name string
		cfg  ModelOwnerConfig
		want string
	}{
		{"defaults", ModelOwnerConfig{}, ""},
		{"small", ModelOwnerConfig{Arch: tiny, TestSet: test}, ""},
		{"bad arch", ModelOwnerConfig{Arch: model.Architecture{Inputs: 6, Hidden: 1, Classes: 3}}, "config field Arch"},
		{"negative rate", ModelOwnerConfig{LearningRate: -1}, "config field LearningRate"},
		{"NaN rate", ModelOwnerConfig{LearningRate: math.NaN()}, "config field LearningRate"},
		{"test set size", ModelOwnerConfig{TestSet: test}, "config field TestSet: images have 2×3 = 6 pixels but the model takes 784 inputs"},
		{"test labels", ModelOwnerConfig{Arch: model.Architecture{Inputs: 6, Hidden: 4, Classes: 2}, TestSet: test}, "has label 2 but the model has 2 classes"},
		{"bad params", ModelOwnerConfig{Arch: tiny, Params: tiny.Zeros()[:2]}, "config field Params"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewModelOwner("model-owner", tc.cfg)
			if tc.want == "" {
				require.NoError(t, err)
				assert.Equal(t, "model-owner", m.Name)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "model-owner")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := NewModelOwner("", ModelOwnerConfig{})
	assert.Error(t, err)

	m, err := NewModelOwner("model-owner", ModelOwnerConfig{})
	require.NoError(t, err)
	assert.Equal(t, [][]int{{784, 512}, {512}, {512, 10}, {10}}, m.ParamShapes())
	loss, acc := m.Evaluate()
	assert.True(t, math.IsNaN(loss) && math.IsNaN(acc), "no test set")
	assert.Empty(t, m.History())

	// Same seed, same model; given parameters are copied.
	a, err := NewModelOwner("a", ModelOwnerConfig{Arch: tiny, Seed: 9})
	require.NoError(t, err)
	b, err := NewModelOwner("b", ModelOwnerConfig{Arch: tiny, Seed: 9})
	require.NoError(t, err)
	wa, _ := a.Weights(context.Background(), nil)
	wb, _ := b.Weights(context.Background(), nil)
	assert.Equal(t, wa[0].Data(), wb[0].Data())
	c, err := NewModelOwner("c", ModelOwnerConfig{Arch: tiny, Params: wa})
	require.NoError(t, err)
	wa[0].Data().([]float64)[0] = 42
	wc, _ := c.Weights(context.Background(), nil)
	assert.NotEqual(t, 42.0, wc[0].Data().([]float64)[0])
}

func TestModelOwnerUpdateModel(t *testing.T) {
	ctx := context.Background()
	mo, err := NewModelOwner("model-owner", ModelOwnerConfig{Arch: tiny, Seed: 4, LearningRate: 0.5})
	require.NoError(t, err)

	// Weights hands out copies.
	w, err := mo.Weights(ctx, nil)
	require.NoError(t, err)
	w[0].Data().([]float64)[0] = 1e6
	again, err := mo.Weights(ctx, nil)
	require.NoError(t, err)
	assert.NotEqual(t, 1e6, again[0].Data().([]float64)[0])

	grads := tiny.Zeros()
	for _, g := range grads {
		for j := range g.Data().([]float64) {
			g.Data().([]float64)[j] = 0.25
		}
	}
	require.NoError(t, mo.UpdateModel(ctx, grads))
	after, err := mo.Weights(ctx, nil)
	require.NoError(t, err)
	for i := range after {
		want := again[i].Data().([]float64)
		for j, v := range after[i].Data().([]float64) {
			require.InDelta(t, want[j]-0.125, v, 1e-15)
		}
	}
	assert.Equal(t, 1, mo.Iteration())

	nan := model.Clone(grads)
	nan[3].Data().([]float64)[1] = math.NaN()
	inf := model.Clone(grads)
	inf[0].Data().([]float64)[5] = math.Inf(-1)
	transposed := model.Clone(grads)
	transposed[2] = tensor.New(tensor.WithShape(3, 4), tensor.WithBacking(make([]float64, 12)))
	f32 := model.Clone(grads)
	f32[1] = tensor.New(tensor.WithShape(4), tensor.WithBacking(make([]float32, 4)))

	tests := []struct {
		name  string
		grads []*tensor.Dense
		want  string
	}{
		{"none", nil, "gradient has 0 tensors, want 4"},
		{"too many", append(model.Clone(grads), grads[0]), "has 5 tensors"},
		{"NaN", nan, "gradient tensor b2: element 1 is NaN"},
		{"Inf", inf, "gradient tensor W1: element 5 is -Inf"},
		{"shape", transposed, "gradient tensor W2: shape (3, 4), want [4 3]"},
		{"dtype", f32, "gradient tensor b1: dtype float32"},
		{"nil", []*tensor.Dense{grads[0], nil, grads[2], grads[3]}, "gradient tensor b1: nil tensor"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := mo.UpdateModel(ctx, tc.grads)
			require.Error(t, err)
			assert.ErrorIs(t, err, model.ErrParams)
			assert.Contains(t, err.Error(), "model-owner: update model, iteration 2")
			assert.Contains(t, err.Error(), tc.want)
			// A rejected update leaves the model alone.
			now, err := mo.Weights(ctx, nil)
			require.NoError(t, err)
			for i := range now {
				assert.Equal(t, after[i].Data(), now[i].Data())
			}
			assert.Equal(t, 1, mo.Iteration())
		})
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, mo.UpdateModel(cancelled, grads), context.Canceled)
	_, err = mo.Weights(cancelled, nil)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestDataOwnerBatches(t *testing.T) {
	ctx := context.Background()
	set := syntheticSet(t, 5, 10, 3)
	mo, err := NewModelOwner("model-owner", ModelOwnerConfig{Arch: tiny, Seed: 6})
	require.NoError(t, err)
	w, err := mo.Weights(ctx, nil)
	require.NoError(t, err)

	a, err := NewDataOwner("data-owner-0", set, 4, 77)
	require.NoError(t, err)
	defer a.Close()
	b, err := NewDataOwner("data-owner-0", set, 4, 77)
	require.NoError(t, err)
	defer b.Close()
	c, err := NewDataOwner("data-owner-0", set, 4, 78)
	require.NoError(t, err)
	defer c.Close()

	// Every epoch visits each example exactly once.
	for epoch := 0; epoch < 3; epoch++ {
		seen := make([]int, set.N)
		for _, i := range a.order {
			seen[i]++
		}
		for i, n := range seen {
			require.Equal(t, 1, n, "epoch %d, example %d", epoch, i)
		}
		a.shuffle()
	}

	a, err = NewDataOwner("data-owner-0", set, 4, 77)
	require.NoError(t, err)
	defer a.Close()
	differs := false
	for call := 1; call <= 6; call++ {
		ga, err := a.ComputeGradient(ctx, w)
		require.NoError(t, err)
		gb, err := b.ComputeGradient(ctx, w)
		require.NoError(t, err)
		gc, err := c.ComputeGradient(ctx, w)
		require.NoError(t, err)
		for i := range ga {
			assert.Equal(t, ga[i].Data(), gb[i].Data(), "same seed, call %d, %s", call, model.ParamName(i))
			assert.Equal(t, ga[i].Shape(), w[i].Shape())
		}
		if !assert.ObjectsAreEqual(ga[0].Data(), gc[0].Data()) {
			differs = true
		}
		// 4 examples per call from 10: the second epoch starts during
		// call 3, the third at the start of call 6.
		assert.Equal(t, (call*4-1)/10, a.Epoch(), "call %d", call)
	}
	assert.True(t, differs, "different seeds should give different batches")
	assert.Len(t, a.Losses(), 6)
}

func TestDataOwnerValidation(t *testing.T) {
	ctx := context.Background()
	set := syntheticSet(t, 8, 10, 3)

	for _, tc := range []struct {
		name  string
		shard *mnist.Dataset
		batch int
		want  string
	}{
		{"nil shard", nil, 4, "no data shard"},
		{"batch too big", set, 11, "batch size 11, want 1..10"},
		{"negative batch", set, -1, "batch size -1"},
		{"broken shard", &mnist.Dataset{N: 2, Rows: 2, Cols: 3}, 1, "shard: mnist: dataset has 0 labels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewDataOwner("data-owner-1", tc.shard, tc.batch, 1)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "data-owner-1")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := NewDataOwner("", set, 1, 1)
	assert.Error(t, err)
	_, err = NewDataOwner("d", set, 0, 1)
	assert.ErrorContains(t, err, "batch size 30", "zero means the default of 30")

	o, err := NewDataOwner("data-owner-1", set, 5, 1)
	require.NoError(t, err)
	defer o.Close()
	good, err := tiny.Init(rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)

	nan := model.Clone(good)
	nan[0].Data().([]float64)[3] = math.NaN()
	wrongInputs, err := model.Architecture{Inputs: 7, Hidden: 4, Classes: 3}.Init(rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	fewClasses, err := model.Architecture{Inputs: 6, Hidden: 4, Classes: 2}.Init(rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	otherHidden, err := model.Architecture{Inputs: 6, Hidden: 5, Classes: 3}.Init(rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	badB1 := model.Clone(good)
	badB1[1] = tensor.New(tensor.WithShape(5), tensor.WithBacking(make([]float64, 5)))
	flat := model.Clone(good)
	flat[0] = tensor.New(tensor.WithShape(24), tensor.WithBacking(make([]float64, 24)))

	tests := []struct {
		name    string
		weights []*tensor.Dense
		want    string
		fresh   bool // on an owner that has not seen weights yet
	}{
		{"no weights", nil, "weights has 0 tensors, want 4", false},
		{"nil tensor", []*tensor.Dense{good[0], good[1], nil, good[3]}, "weights tensor W2: nil tensor", false},
		{"rank", flat, "weights tensor W1 has shape (24), want 2 dimensions", true},
		{"shard does not fit", wrongInputs, "shard does not fit the model: images have 2×3 = 6 pixels but the model takes 7 inputs", true},
		{"labels do not fit", fewClasses, "example 0 has label 2 but the model has 2 classes", true},
		{"NaN", nan, "weights tensor W1: element 3 is NaN", true},
		{"NaN later", nan, "weights tensor W1: element 3 is NaN", false},
		{"b1 shape", badB1, "weights tensor b1: shape (5), want [4]", true},
		{"architecture changes", otherHidden, "weights are for a 6-5-3 network, earlier weights were for 6-4-3", false},
	}
	// The first good call fixes the architecture.
	_, err = o.ComputeGradient(ctx, good)
	require.NoError(t, err)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := o
			if tc.fresh {
				var err error
				o, err = NewDataOwner("data-owner-1", set, 5, 1)
				require.NoError(t, err)
				defer o.Close()
			}
			pos, epoch := o.pos, o.epoch
			_, err := o.ComputeGradient(ctx, tc.weights)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "data-owner-1: compute gradient")
			assert.Contains(t, err.Error(), tc.want)
			// A rejected call consumes no data.
			assert.Equal(t, pos, o.pos)
			assert.Equal(t, epoch, o.epoch)
		})
	}
	assert.Len(t, o.Losses(), 1)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = o.ComputeGradient(cancelled, good)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestWritePlot(t *testing.T) {
	dir := t.TempDir()
	loss := make([]float64, 200)
	for i := range loss {
		loss[i] = 2.3*math.Exp(-float64(i)/60) + 0.4 + 0.1*math.Sin(float64(i))
	}
	loss[17] = math.NaN()
	loss[18] = 0 // cannot go on a log axis
	evals := []Evaluation{{0, 2.5, 0.1}, {100, 0.9, 0.7}, {200, 0.6, 0.8}, {150, math.NaN(), math.NaN()}}
	path := filepath.Join(dir, "curve.png")
	require.NoError(t, writePlot(path, loss, evals))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	assert.Equal(t, 1200, img.Bounds().Dx())
	assert.Greater(t, img.Bounds().Dy(), 900)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file left")

	require.NoError(t, writePlot(filepath.Join(dir, "only-evals.png"), nil, evals))
	assert.Error(t, writePlot(filepath.Join(dir, "empty.png"), nil, nil))
	assert.Error(t, writePlot(filepath.Join(dir, "missing", "x.png"), loss, evals))
	assert.Equal(t, []float64{1, 1.5, 2.5, 3.5}, movingAverage([]float64{1, 2, 3, 4}, 2))
}

func TestLogTicks125(t *testing.T) {
	var labels []string
	var values []float64
	for _, tk := range logTicks125(0.3, 7) {
		values = append(values, tk.Value)
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	assert.Equal(t, []string{"0.5", "1", "2", "5"}, labels)
	assert.InDeltaSlice(t, []float64{0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 3, 4, 5, 6, 7}, values, 1e-12)
	assert.Empty(t, logTicks125(0, 1), "a range touching zero has no log ticks")
	assert.Empty(t, logTicks125(math.NaN(), 1))
}

func BenchmarkComputeGradient(b *testing.B) {
	train, _, err := mnist.Embedded()
	require.NoError(b, err)
	o, err := NewDataOwner("data-owner-0", train, 30, 1)
	require.NoError(b, err)
	defer o.Close()
	mo, err := NewModelOwner("model-owner", ModelOwnerConfig{Seed: 1})
	require.NoError(b, err)
	w, err := mo.Weights(context.Background(), nil)
	require.NoError(b, err)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := o.ComputeGradient(ctx, w); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvaluate(b *testing.B) {
	_, test, err := mnist.Embedded()
	require.NoError(b, err)
	mo, err := NewModelOwner("model-owner", ModelOwnerConfig{Seed: 1, TestSet: test})
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		mo.Evaluate()
	}
}

// In a run across hosts a process builds only its own player; the others
// are stand-ins that need no data, and a stand-in data owner refuses to
// compute rather than fail obscurely.
func TestPlayersForOneHost(t *testing.T) {
	o, err := parseFlags(nil, &bytes.Buffer{})
	require.NoError(t, err)
	train, test, err := mnist.Embedded()
	require.NoError(t, err)

	mo, dos, err := newPlayers(o, players.Server0, nil, nil)
	require.NoError(t, err, "a server needs no data")
	require.Len(t, dos, 3)
	assert.Empty(t, mo.History(), "a stand-in model owner does not evaluate")
	weights, err := mo.Weights(context.Background(), nil)
	require.NoError(t, err)
	_, err = dos[0].ComputeGradient(context.Background(), weights)
	assert.ErrorContains(t, err, "data-owner-0: compute gradient: this data owner's data is on its own host")

	shards, err := train.Split(3)
	require.NoError(t, err)
	_, dos, err = newPlayers(o, players.DataOwner(1), []*mnist.Dataset{nil, shards[1], nil}, nil)
	require.NoError(t, err)
	_, err = dos[1].ComputeGradient(context.Background(), weights)
	require.NoError(t, err, "the host's own data owner computes")
	assert.Same(t, shards[1], dos[1].shard)
	assert.Nil(t, dos[0].shard)

	_, _, err = newPlayers(o, players.DataOwner(2), []*mnist.Dataset{nil, shards[1], nil}, nil)
	assert.ErrorContains(t, err, "data-owner-2: no data shard")

	mo, _, err = newPlayers(o, players.ModelOwner, nil, test)
	require.NoError(t, err)
	assert.Len(t, mo.History(), 1, "the real model owner evaluates the initial weights")
}

// TestBatchAtFollowsTheIterator: the batch of step s is the s-th batch
// ComputeGradient's iterator draws, across epochs, also when the steps
// come out of order (a model owner that resumed).
func TestBatchAtFollowsTheIterator(t *testing.T) {
	train, _, err := mnist.Embedded()
	require.NoError(t, err)
	shard, err := train.Shard(1, 20) // 300 examples: an epoch every 10 batches
	require.NoError(t, err)
	seq, err := NewDataOwner("data-owner-1", shard, 30, 7)
	require.NoError(t, err)
	defer seq.Close()
	at, err := NewDataOwner("data-owner-1", shard, 30, 7)
	require.NoError(t, err)
	defer at.Close()
	var want [][]uint8
	var wantX [][]float32
	for range 35 {
		seq.nextBatch()
		want = append(want, slices.Clone(seq.batch.Labels))
		wantX = append(wantX, slices.Clone(seq.batch.X))
	}
	for _, s := range []int{0, 1, 9, 10, 11, 34, 20, 3, 33, 12} {
		at.batchAt(uint64(s))
		require.Equal(t, want[s], at.batch.Labels, "step %d", s)
		require.Equal(t, wantX[s], at.batch.X, "step %d", s)
	}
	other, err := NewDataOwner("data-owner-1", shard, 30, 8)
	require.NoError(t, err)
	defer other.Close()
	other.batchAt(0)
	assert.NotEqual(t, want[0], other.batch.Labels, "the seed matters")
}
