package main

import (
	"context"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/internal/atomicfile"
)

// Defaults of TF Encrypted's federated-learning example.
const (
	defaultLearningRate = 0.1
	defaultBatchSize    = 30
	defaultEvalEvery    = 100
)

// ModelOwnerConfig configures a ModelOwner. Zero fields take defaults.
type ModelOwnerConfig struct {
	// Arch is the network shape; zero means model.TFE() (784-512-10).
	Arch model.Architecture
	// LearningRate is the SGD step size; zero means 0.1.
	LearningRate float64
	// Seed seeds the Glorot initialisation of the weights.
	Seed uint64
	// Params, if set, are the initial weights (copied) instead of a fresh
	// initialisation.
	Params []*tensor.Dense
	// TestSet is the model owner's own evaluation data; nil disables
	// evaluation (Evaluate then returns NaNs).
	TestSet *mnist.Dataset
	// EvalEvery is how many updates pass between the evaluations recorded
	// in History; zero means 100 and a negative value disables them.
	EvalEvery int
}

// Evaluation is one point of the model owner's training curve: the test
// loss and accuracy after Iteration updates.
type Evaluation struct {
	Iteration int
	Loss      float64
	Accuracy  float64
}

// ModelOwner is TF Encrypted's model-owner player: it holds the model,
// publishes its weights to the data owners every iteration, and applies the
// revealed mean gradient with a plain SGD step. It never sees an individual
// data owner's gradient.
//
// A ModelOwner is safe for concurrent use.
type ModelOwner struct {
	// Name is the player name, "model-owner" in the example.
	Name string

	arch      model.Architecture
	lr        float64
	test      *mnist.Dataset
	evalEvery int

	mu        sync.Mutex
	params    []*tensor.Dense
	iteration int
	history   []Evaluation
	evalTime  time.Duration
}

// NewModelOwner returns a model owner with freshly initialised (or the
// given) weights. It evaluates the initial model once when it has a test
// set, as iteration 0 of History.
func NewModelOwner(name string, cfg ModelOwnerConfig) (*ModelOwner, error) {
	if name == "" {
		return nil, errors.New("model owner: empty player name")
	}
	m := &ModelOwner{Name: name, arch: cfg.Arch, lr: cfg.LearningRate, test: cfg.TestSet, evalEvery: cfg.EvalEvery}
	if m.arch == (model.Architecture{}) {
		m.arch = model.TFE()
	}
	if err := m.arch.Validate(); err != nil {
		return nil, fmt.Errorf("%s: config field Arch: %w", name, err)
	}
	if m.lr == 0 {
		m.lr = defaultLearningRate
	}
	if math.IsNaN(m.lr) || math.IsInf(m.lr, 0) || m.lr < 0 {
		return nil, fmt.Errorf("%s: config field LearningRate = %v, want a positive number", name, cfg.LearningRate)
	}
	if m.evalEvery == 0 {
		m.evalEvery = defaultEvalEvery
	}
	if m.test != nil {
		if err := checkDataset(m.test, m.arch); err != nil {
			return nil, fmt.Errorf("%s: config field TestSet: %w", name, err)
		}
	}
	if cfg.Params != nil {
		if err := m.arch.CheckParams("initial weights", cfg.Params); err != nil {
			return nil, fmt.Errorf("%s: config field Params: %w", name, err)
		}
		m.params = model.Clone(cfg.Params)
	} else {
		p, err := m.arch.Init(rand.New(rand.NewPCG(cfg.Seed, 0x6d6f64656c)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		m.params = p
	}
	if m.test != nil {
		loss, acc := m.Evaluate()
		m.history = append(m.history, Evaluation{Iteration: 0, Loss: loss, Accuracy: acc})
	}
	return m, nil
}

// checkDataset checks that d is usable with architecture a.
func checkDataset(d *mnist.Dataset, a model.Architecture) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if d.Pixels() != a.Inputs {
		return fmt.Errorf("images have %d×%d = %d pixels but the model takes %d inputs", d.Rows, d.Cols, d.Pixels(), a.Inputs)
	}
	for i, l := range d.Labels {
		if int(l) >= a.Classes {
			return fmt.Errorf("example %d has label %d but the model has %d classes", i, l, a.Classes)
		}
	}
	return nil
}

// Step returns the number of updates applied so far, as a tensor of shape
// (1): the step the next update makes, sent with the weights, from which
// each data owner picks its batch (DataOwner.GradientAt). The input
// argument is unused.
func (m *ModelOwner) Step(ctx context.Context, _ []*tensor.Dense) ([]*tensor.Dense, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: step: %w", m.Name, err)
	}
	return []*tensor.Dense{tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{float64(m.Iteration())}))}, nil
}

// Weights returns copies of the current weights (W1, b1, W2, b2): the public
// value sent to every data owner at the start of an iteration. The input
// argument is unused; it is there for the engine's local-computation
// signature.
func (m *ModelOwner) Weights(ctx context.Context, _ []*tensor.Dense) ([]*tensor.Dense, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: weights: %w", m.Name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return model.Clone(m.params), nil
}

// UpdateModel applies one SGD step with the revealed mean gradient. It
// rejects a gradient of the wrong count, shape or dtype, or with a NaN or
// infinite element, with an error naming the tensor, and then leaves the
// model unchanged. Every EvalEvery updates it evaluates the model on the
// test set and appends the result to History.
func (m *ModelOwner) UpdateModel(ctx context.Context, meanGrads []*tensor.Dense) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: update model: %w", m.Name, err)
	}
	m.mu.Lock()
	if err := model.SGD(m.arch, m.params, meanGrads, m.lr); err != nil {
		it := m.iteration + 1
		m.mu.Unlock()
		return fmt.Errorf("%s: update model, iteration %d: %w", m.Name, it, err)
	}
	m.iteration++
	it := m.iteration
	evaluate := m.test != nil && m.evalEvery > 0 && it%m.evalEvery == 0
	var snapshot []*tensor.Dense
	if evaluate {
		snapshot = model.Clone(m.params)
	}
	m.mu.Unlock()

	if evaluate {
		start := time.Now()
		loss, acc := m.evaluate(snapshot)
		m.mu.Lock()
		m.history = append(m.history, Evaluation{Iteration: it, Loss: loss, Accuracy: acc})
		m.evalTime += time.Since(start)
		m.mu.Unlock()
	}
	return nil
}

// EvaluationTime returns the time UpdateModel spent evaluating on the test
// set so far, so that training time can be told apart from it.
func (m *ModelOwner) EvaluationTime() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.evalTime
}

// ParamShapes returns the shapes of W1, b1, W2, b2.
func (m *ModelOwner) ParamShapes() [][]int { return m.arch.ParamShapes() }

// Architecture returns the network shape.
func (m *ModelOwner) Architecture() model.Architecture { return m.arch }

// LearningRate returns the SGD step size.
func (m *ModelOwner) LearningRate() float64 { return m.lr }

// Iteration returns the number of updates applied so far.
func (m *ModelOwner) Iteration() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.iteration
}

// History returns the evaluations recorded so far, oldest first.
func (m *ModelOwner) History() []Evaluation {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Evaluation(nil), m.history...)
}

// Evaluate returns the mean cross-entropy loss and the accuracy of the
// current model on the test set, or NaNs when there is no test set.
func (m *ModelOwner) Evaluate() (loss, accuracy float64) {
	m.mu.Lock()
	snapshot := model.Clone(m.params)
	m.mu.Unlock()
	return m.evaluate(snapshot)
}

func (m *ModelOwner) evaluate(params []*tensor.Dense) (loss, accuracy float64) {
	if m.test == nil {
		return math.NaN(), math.NaN()
	}
	loss, accuracy, err := model.Evaluate(m.arch, params, m.test.Images, m.test.Labels)
	if err != nil {
		// Unreachable: the test set was checked against the architecture
		// and UpdateModel keeps the weights finite.
		return math.NaN(), math.NaN()
	}
	return loss, accuracy
}

// DataOwner is TF Encrypted's data-owner player: it holds one shard of the
// training data, which never leaves it, and each iteration computes the
// gradient of the loss on its next local batch at the weights the model
// owner published. The gradient then enters the secure computation as a
// private input.
//
// Batches come from a seeded shuffle of the shard; when an epoch runs out
// the shard is reshuffled and the batch continues into the next epoch, so
// every batch is full. The network's shape is taken from the first weights
// received; later weights must have the same shape.
//
// A DataOwner is safe for concurrent use, but calls are serialised.
type DataOwner struct {
	// Name is the player name, such as "data-owner-0".
	Name string

	shard     *mnist.Dataset
	batchSize int

	mu      sync.Mutex
	src     *rand.PCG // rng's state, kept for checkpoints
	seed    uint64
	epochs  map[uint64][]int // GradientAt's orders, by epoch (at most two kept)
	replay  *epochReplay
	rng     *rand.Rand
	order   []int
	pos     int
	epoch   int
	trainer *model.Trainer
	batch   model.Batch
	losses  []float64
}

// NewDataOwner returns a data owner over shard (which it keeps and reads,
// but does not modify) drawing batches of batchSize examples (zero means
// 30) in an order seeded by seed.
func NewDataOwner(name string, shard *mnist.Dataset, batchSize int, seed uint64) (*DataOwner, error) {
	if name == "" {
		return nil, errors.New("data owner: empty player name")
	}
	if shard == nil {
		return nil, fmt.Errorf("%s: no data shard", name)
	}
	if err := shard.Validate(); err != nil {
		return nil, fmt.Errorf("%s: shard: %w", name, err)
	}
	if batchSize == 0 {
		batchSize = defaultBatchSize
	}
	if batchSize < 0 || batchSize > shard.N {
		return nil, fmt.Errorf("%s: batch size %d, want 1..%d (the shard's size)", name, batchSize, shard.N)
	}
	d := &DataOwner{
		Name:      name,
		shard:     shard,
		batchSize: batchSize,
		src:       rand.NewPCG(seed, 0x64617461),
		seed:      seed,
		order:     make([]int, shard.N),
		batch: model.Batch{
			X:      make([]float32, batchSize*shard.Pixels()),
			Labels: make([]uint8, batchSize),
		},
	}
	d.rng = rand.New(d.src)
	for i := range d.order {
		d.order[i] = i
	}
	d.shuffle()
	return d, nil
}

func (d *DataOwner) shuffle() {
	d.rng.Shuffle(len(d.order), func(i, j int) { d.order[i], d.order[j] = d.order[j], d.order[i] })
	d.pos = 0
}

// nextBatch fills d.batch with the next batchSize examples.
func (d *DataOwner) nextBatch() {
	p := d.shard.Pixels()
	for k := 0; k < d.batchSize; k++ {
		if d.pos == len(d.order) {
			d.epoch++
			d.shuffle()
		}
		i := d.order[d.pos]
		d.pos++
		copy(d.batch.X[k*p:(k+1)*p], d.shard.Image(i))
		d.batch.Labels[k] = d.shard.Labels[i]
	}
}

// ComputeGradient draws the next local batch and returns the gradient of
// its mean loss at weights (W1, b1, W2, b2), as four new tensors of the
// weights' shapes. It checks the weights' count, shapes, dtype and values,
// and their fit with the shard, before touching the batch iterator, so a
// rejected call consumes no data.
func (d *DataOwner) ComputeGradient(ctx context.Context, weights []*tensor.Dense) ([]*tensor.Dense, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: compute gradient: %w", d.Name, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.shard == nil {
		return nil, fmt.Errorf("%s: compute gradient: this data owner's data is on its own host, not here", d.Name)
	}
	tr, err := d.trainerFor(weights)
	if err != nil {
		return nil, fmt.Errorf("%s: compute gradient: %w", d.Name, err)
	}
	if err := tr.Architecture().CheckParams("weights", weights); err != nil {
		return nil, fmt.Errorf("%s: compute gradient: %w", d.Name, err)
	}
	d.nextBatch()
	loss, grads, err := tr.Gradients(weights, d.batch)
	if err != nil {
		return nil, fmt.Errorf("%s: compute gradient on batch %d: %w", d.Name, len(d.losses)+1, err)
	}
	d.losses = append(d.losses, loss)
	return grads, nil
}

// maxStep bounds the training step GradientAt accepts.
const maxStep = 1 << 40

// GradientAt is ComputeGradient on the batch of training step step, which
// depends on the step alone: batch s holds examples s·B to (s+1)·B−1 of
// the owner's endless sequence of epochs, in the orders ComputeGradient's
// iterator gives them (see epochPerm), so an owner that answers every
// step draws the batches ComputeGradient would. An owner that missed rounds,
// or a model owner that resumed from a checkpoint and repeats steps, thus
// gets the batches an uninterrupted run would have had. step comes from
// the model owner (a public input): it must be a whole number from 0 to
// 2⁴⁰.
func (d *DataOwner) GradientAt(ctx context.Context, weights []*tensor.Dense, step float64) ([]*tensor.Dense, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: compute gradient: %w", d.Name, err)
	}
	if !(step >= 0 && step <= maxStep) || step != math.Trunc(step) {
		return nil, fmt.Errorf("%s: compute gradient: step %v, want a whole number from 0 to %d", d.Name, step, uint64(maxStep))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.shard == nil {
		return nil, fmt.Errorf("%s: compute gradient: this data owner's data is on its own host, not here", d.Name)
	}
	tr, err := d.trainerFor(weights)
	if err != nil {
		return nil, fmt.Errorf("%s: compute gradient: %w", d.Name, err)
	}
	if err := tr.Architecture().CheckParams("weights", weights); err != nil {
		return nil, fmt.Errorf("%s: compute gradient: %w", d.Name, err)
	}
	d.batchAt(uint64(step))
	loss, grads, err := tr.Gradients(weights, d.batch)
	if err != nil {
		return nil, fmt.Errorf("%s: compute gradient on the batch of step %d: %w", d.Name, uint64(step), err)
	}
	d.losses = append(d.losses, loss)
	return grads, nil
}

// batchAt fills d.batch with the batch of step s (see GradientAt).
func (d *DataOwner) batchAt(s uint64) {
	p := d.shard.Pixels()
	n := uint64(d.shard.N)
	b := uint64(d.batchSize)
	for k := range b {
		idx := s*b + k
		e, j := idx/n, idx%n
		i := d.epochPerm(e)[j]
		copy(d.batch.X[k*uint64(p):(k+1)*uint64(p)], d.shard.Image(i))
		d.batch.Labels[k] = d.shard.Labels[i]
	}
}

// epochPerm returns the order of the shard's examples in epoch e: the
// order ComputeGradient's iterator has in its epoch e (the identity
// shuffled e+1 times by the owner's seeded stream), so that an owner that
// answers every step draws the same batches either way. It keeps the two
// latest epochs' orders (a batch spans at most two) and replays the
// shuffles from the start when asked for an earlier epoch.
func (d *DataOwner) epochPerm(e uint64) []int {
	if perm, ok := d.epochs[e]; ok {
		return perm
	}
	if d.epochs == nil {
		d.epochs = map[uint64][]int{}
	}
	r := d.replay
	if r == nil || r.epoch > e {
		r = &epochReplay{rng: rand.New(rand.NewPCG(d.seed, 0x64617461)), order: make([]int, d.shard.N)}
		for i := range r.order {
			r.order[i] = i
		}
		r.shuffle()
		d.replay = r
	}
	for r.epoch < e {
		r.shuffle()
		r.epoch++
	}
	for old := range d.epochs {
		if old+1 < e || old > e+1 {
			delete(d.epochs, old)
		}
	}
	perm := slices.Clone(r.order)
	d.epochs[e] = perm
	return perm
}

// epochReplay replays the shuffles of a data owner's batch iterator.
type epochReplay struct {
	rng   *rand.Rand
	order []int // the order of epoch epoch
	epoch uint64
}

func (r *epochReplay) shuffle() {
	r.rng.Shuffle(len(r.order), func(i, j int) { r.order[i], r.order[j] = r.order[j], r.order[i] })
}

// trainerFor returns the trainer for the architecture of weights, building
// it on first use.
func (d *DataOwner) trainerFor(weights []*tensor.Dense) (*model.Trainer, error) {
	if len(weights) != model.NumTensors {
		return nil, fmt.Errorf("%w: weights has %d tensors, want %d (W1, b1, W2, b2)", model.ErrParams, len(weights), model.NumTensors)
	}
	for i, w := range weights {
		if w == nil {
			return nil, fmt.Errorf("%w: weights tensor %s: nil tensor", model.ErrParams, model.ParamName(i))
		}
		if want := 2 - i%2; w.Shape().Dims() != want {
			return nil, fmt.Errorf("%w: weights tensor %s has shape %v, want %d dimensions", model.ErrParams, model.ParamName(i), w.Shape(), want)
		}
	}
	w1, w2 := weights[0].Shape(), weights[2].Shape()
	arch := model.Architecture{Inputs: w1[0], Hidden: w1[1], Classes: w2[1]}
	if d.trainer != nil {
		if got := d.trainer.Architecture(); got != arch {
			return nil, fmt.Errorf("%w: weights are for a %v network, earlier weights were for %v", model.ErrParams, arch, got)
		}
		return d.trainer, nil
	}
	if err := arch.Validate(); err != nil {
		return nil, err
	}
	if err := checkDataset(d.shard, arch); err != nil {
		return nil, fmt.Errorf("shard does not fit the model: %w", err)
	}
	tr, err := model.NewTrainer(arch, d.batchSize)
	if err != nil {
		return nil, err
	}
	d.trainer = tr
	return tr, nil
}

// Examples returns the number of local training examples: the data
// owner's weight in a weighted mean. A stand-in for an owner on another
// host has none.
func (d *DataOwner) Examples() int {
	if d.shard == nil {
		return 0
	}
	return d.shard.N
}

// LastLoss returns the mean loss of the last batch processed, and false
// when there was none.
func (d *DataOwner) LastLoss() (float64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.losses) == 0 {
		return 0, false
	}
	return d.losses[len(d.losses)-1], true
}

// BatchSize returns the number of examples in each batch.
func (d *DataOwner) BatchSize() int { return d.batchSize }

// Epoch returns how many times the shard has been fully used.
func (d *DataOwner) Epoch() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.epoch
}

// Losses returns the mean loss of every batch processed so far, in order.
func (d *DataOwner) Losses() []float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]float64(nil), d.losses...)
}

// Close releases the data owner's gorgonia machine.
func (d *DataOwner) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.trainer == nil {
		return nil
	}
	err := d.trainer.Close()
	d.trainer = nil
	return err
}

// plainIteration runs one iteration of federated averaging in the clear:
// the same data flow as the secure graph (weights out, one gradient per data
// owner, their mean to the model owner) but with the mean computed in
// plaintext here. It is the reference the secure run is compared with, and a
// quick way to train without the engine. The data owners compute
// concurrently, as they would on their own hosts.
func plainIteration(ctx context.Context, mo *ModelOwner, owners []*DataOwner) error {
	return plainMean(ctx, mo, owners, nil, (*DataOwner).ComputeGradient)
}

// meanTrainingLoss returns, for each iteration that every owner has
// completed, the mean of the owners' batch losses: the training curve.
func meanTrainingLoss(owners []*DataOwner) []float64 {
	if len(owners) == 0 {
		return nil
	}
	all := make([][]float64, len(owners))
	n := math.MaxInt
	for i, o := range owners {
		all[i] = o.Losses()
		n = min(n, len(all[i]))
	}
	out := make([]float64, n)
	for it := range out {
		var s float64
		for _, l := range all {
			s += l[it]
		}
		out[it] = s / float64(len(all))
	}
	return out
}

// Colours of the training-curve plot.
var (
	colourRawLoss   = color.RGBA{R: 0xb0, G: 0xc4, B: 0xde, A: 0xff}
	colourTrainLoss = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colourTestLoss  = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colourAccuracy  = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
)

// movingAverage returns the trailing mean of v over up to window values.
func movingAverage(v []float64, window int) []float64 {
	out := make([]float64, len(v))
	var s float64
	for i, x := range v {
		s += x
		if i >= window {
			s -= v[i-window]
		}
		out[i] = s / float64(min(i+1, window))
	}
	return out
}

// writePlot renders the training curve as a PNG at path, in two panels
// sharing the iteration axis: on top the mean training batch loss
// (trainLoss[i] is the loss at iteration i+1; drawn raw and as a moving
// average) and the test loss, on a logarithmic axis; below the test
// accuracy in percent. Values that cannot be drawn (NaN, infinite, a loss
// of zero) are skipped. The file is replaced atomically.
func writePlot(path string, trainLoss []float64, evals []Evaluation) error {
	if len(trainLoss) == 0 && len(evals) == 0 {
		return fmt.Errorf("plot %s: nothing to plot", path)
	}
	// Losses go on a logarithmic axis, so that the first iterations (losses
	// of several nats) do not flatten the rest of the curve; only positive
	// finite values can be drawn there.
	drawable := func(l float64) bool { return l > 0 && !math.IsInf(l, 0) }
	var raw, testLoss, acc plotter.XYs
	for i, l := range trainLoss {
		if drawable(l) {
			raw = append(raw, plotter.XY{X: float64(i + 1), Y: l})
		}
	}
	smooth := make(plotter.XYs, len(raw))
	ys := make([]float64, len(raw))
	for i, p := range raw {
		ys[i] = p.Y
	}
	window := max(1, len(raw)/50)
	for i, y := range movingAverage(ys, window) {
		smooth[i] = plotter.XY{X: raw[i].X, Y: y}
	}
	for _, e := range evals {
		if drawable(e.Loss) {
			testLoss = append(testLoss, plotter.XY{X: float64(e.Iteration), Y: e.Loss})
		}
		if !math.IsNaN(e.Accuracy) && !math.IsInf(e.Accuracy, 0) {
			acc = append(acc, plotter.XY{X: float64(e.Iteration), Y: 100 * e.Accuracy})
		}
	}

	top := plot.New()
	top.Title.Text = "Federated training (mean of the data owners' gradients)"
	top.Title.TextStyle.Font.Size = vg.Points(14)
	top.Title.Padding = vg.Points(6)
	top.Y.Label.Text = "cross-entropy loss (log scale)"
	top.Y.Scale = plot.LogScale{}
	top.Y.Tick.Marker = plot.TickerFunc(logTicks125)
	top.Add(plotter.NewGrid())
	top.Legend.Top = true
	if len(raw) > 0 {
		l, err := plotter.NewLine(raw)
		if err != nil {
			return fmt.Errorf("plot %s: training loss: %w", path, err)
		}
		l.Color = colourRawLoss
		l.Width = vg.Points(0.7)
		s, err := plotter.NewLine(smooth)
		if err != nil {
			return fmt.Errorf("plot %s: training loss: %w", path, err)
		}
		s.Color = colourTrainLoss
		s.Width = vg.Points(2)
		top.Add(l, s)
		top.Legend.Add("training batch loss", l)
		top.Legend.Add(fmt.Sprintf("training loss, moving mean over %d iterations", window), s)
	}
	if len(testLoss) > 0 {
		l, p, err := plotter.NewLinePoints(testLoss)
		if err != nil {
			return fmt.Errorf("plot %s: test loss: %w", path, err)
		}
		l.Color, p.Color = colourTestLoss, colourTestLoss
		l.Width = vg.Points(2)
		p.Shape = draw.CircleGlyph{}
		top.Add(l, p)
		top.Legend.Add("test loss", l, p)
	}

	bottom := plot.New()
	bottom.X.Label.Text = "iteration"
	bottom.Y.Label.Text = "test accuracy (%)"
	bottom.Y.Min, bottom.Y.Max = 0, 100
	bottom.Add(plotter.NewGrid())
	// Accuracy rises towards the top right; keep the legend out of its way.
	bottom.Legend.Top = false
	bottom.Legend.Left = false
	if len(acc) > 0 {
		l, p, err := plotter.NewLinePoints(acc)
		if err != nil {
			return fmt.Errorf("plot %s: accuracy: %w", path, err)
		}
		l.Color, p.Color = colourAccuracy, colourAccuracy
		l.Width = vg.Points(2)
		p.Shape = draw.CircleGlyph{}
		bottom.Add(l, p)
		last := acc[len(acc)-1]
		bottom.Legend.Add(fmt.Sprintf("test accuracy (%.1f%% at iteration %.0f)", last.Y, last.X), l, p)
	}
	// Share the iteration axis.
	xmax := max(top.X.Max, bottom.X.Max)
	top.X.Min, top.X.Max = 0, xmax
	bottom.X.Min, bottom.X.Max = 0, xmax

	const width, height = 900, 760
	img := vgimg.NewWith(vgimg.UseWH(vg.Points(width), vg.Points(height)), vgimg.UseDPI(96), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	plots := [][]*plot.Plot{{top}, {bottom}}
	canvases := plot.Align(plots, tiles, dc)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])

	err := atomicfile.Write(path, 0o644, func(w io.Writer) error {
		_, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w)
		return err
	})
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

// logTicks125 labels a logarithmic axis at 1, 2 and 5 times the powers of
// ten within [lo, hi], with unlabelled ticks at the other integers times
// them: a loss that falls from 7 to 0.3 gets readable labels, not just 1.
func logTicks125(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	if !(lo > 0) || !(hi >= lo) || math.IsInf(hi, 0) {
		return ticks
	}
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		p := math.Pow(10, e)
		for m := 1.0; m <= 9; m++ {
			v := m * p
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}
