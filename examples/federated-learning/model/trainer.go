package model

import (
	"errors"
	"fmt"
	"math"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Batch is a set of training examples: N = len(Labels) inputs of
// Architecture.Inputs values each, row after row in X.
type Batch struct {
	// X holds len(Labels) × Inputs values, typically pixels in [0, 1].
	X []float32
	// Labels holds one class index in [0, Classes) per example.
	Labels []uint8
}

// Trainer computes the mean softmax cross-entropy loss of a batch and its
// gradient with respect to the four parameter tensors, by reverse-mode
// automatic differentiation in gorgonia.
//
// The expression graph and its tape machine are built once, for a fixed
// batch size, and reused for every batch: the Trainer owns the tensors bound
// to the graph's inputs and copies each call's parameters and examples into
// them, so the caller's tensors are never aliased or modified.
//
// A Trainer is not safe for concurrent use; give each goroutine (each data
// owner) its own.
type Trainer struct {
	arch  Architecture
	batch int

	g     *gorgonia.ExprGraph
	vm    gorgonia.VM
	loss  *gorgonia.Node
	grads gorgonia.Nodes

	// Values bound to the graph's input nodes, overwritten in place.
	x, y  *tensor.Dense
	param [NumTensors]*tensor.Dense
}

// NewTrainer builds the graph for architecture a and batches of exactly
// batch examples.
func NewTrainer(a Architecture, batch int) (t *Trainer, err error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	if batch < 1 || batch > MaxDim {
		return nil, fmt.Errorf("model: batch size %d, want 1..%d", batch, MaxDim)
	}
	// gorgonia reports some construction failures by panicking; they would
	// be bugs here (the shapes are checked above), but surface them as
	// errors rather than crash a player.
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("model: building gorgonia graph for %v, batch %d: %v", a, batch, r)
		}
	}()

	t = &Trainer{arch: a, batch: batch, g: gorgonia.NewGraph()}
	g := t.g
	dense := func(shape ...int) *tensor.Dense {
		n := 1
		for _, d := range shape {
			n *= d
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(make([]float64, n)))
	}
	t.x = dense(batch, a.Inputs)
	t.y = dense(batch, a.Classes)
	for i, s := range a.ParamShapes() {
		t.param[i] = dense(s...)
	}

	x := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(batch, a.Inputs), gorgonia.WithName("x"), gorgonia.WithValue(t.x))
	y := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(batch, a.Classes), gorgonia.WithName("y"), gorgonia.WithValue(t.y))
	w1 := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(a.Inputs, a.Hidden), gorgonia.WithName("W1"), gorgonia.WithValue(t.param[0]))
	b1 := gorgonia.NewVector(g, tensor.Float64, gorgonia.WithShape(a.Hidden), gorgonia.WithName("b1"), gorgonia.WithValue(t.param[1]))
	w2 := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(a.Hidden, a.Classes), gorgonia.WithName("W2"), gorgonia.WithValue(t.param[2]))
	b2 := gorgonia.NewVector(g, tensor.Float64, gorgonia.WithShape(a.Classes), gorgonia.WithName("b2"), gorgonia.WithValue(t.param[3]))

	// loss = −mean_i Σ_c y_ic · log softmax(σ(x W1 + b1) W2 + b2)_ic
	xw1, err := gorgonia.Mul(x, w1)
	if err != nil {
		return nil, fmt.Errorf("model: x·W1: %w", err)
	}
	z1, err := gorgonia.BroadcastAdd(xw1, b1, nil, []byte{0})
	if err != nil {
		return nil, fmt.Errorf("model: x·W1 + b1: %w", err)
	}
	h, err := gorgonia.Sigmoid(z1)
	if err != nil {
		return nil, fmt.Errorf("model: sigmoid: %w", err)
	}
	hw2, err := gorgonia.Mul(h, w2)
	if err != nil {
		return nil, fmt.Errorf("model: h·W2: %w", err)
	}
	logits, err := gorgonia.BroadcastAdd(hw2, b2, nil, []byte{0})
	if err != nil {
		return nil, fmt.Errorf("model: h·W2 + b2: %w", err)
	}
	logp, err := gorgonia.LogSoftMax(logits, 1)
	if err != nil {
		return nil, fmt.Errorf("model: log-softmax: %w", err)
	}
	picked, err := gorgonia.HadamardProd(y, logp)
	if err != nil {
		return nil, fmt.Errorf("model: y ⊙ log p: %w", err)
	}
	perExample, err := gorgonia.Sum(picked, 1)
	if err != nil {
		return nil, fmt.Errorf("model: per-example log-likelihood: %w", err)
	}
	meanLL, err := gorgonia.Mean(perExample)
	if err != nil {
		return nil, fmt.Errorf("model: mean log-likelihood: %w", err)
	}
	if t.loss, err = gorgonia.Neg(meanLL); err != nil {
		return nil, fmt.Errorf("model: loss: %w", err)
	}
	if t.grads, err = gorgonia.Grad(t.loss, w1, b1, w2, b2); err != nil {
		return nil, fmt.Errorf("model: symbolic gradient: %w", err)
	}
	// Compile only what the loss and the four gradients need: the symbolic
	// differentiation also emits d loss / d x (a third large matrix
	// product), which nobody reads.
	outputs := append(gorgonia.Nodes{t.loss}, t.grads...)
	prog, locMap, err := gorgonia.CompileFunction(g, gorgonia.Nodes{x, y, w1, b1, w2, b2}, outputs)
	if err != nil {
		return nil, fmt.Errorf("model: compiling gorgonia graph: %w", err)
	}
	t.vm = gorgonia.NewTapeMachine(g, gorgonia.WithPrecompiled(prog, locMap))
	return t, nil
}

// Architecture returns the network shape t was built for.
func (t *Trainer) Architecture() Architecture { return t.arch }

// BatchSize returns the number of examples every batch must hold.
func (t *Trainer) BatchSize() int { return t.batch }

// Gradients returns the mean cross-entropy loss of b under params and its
// gradient with respect to W1, b1, W2, b2, as new tensors of the parameters'
// shapes.
func (t *Trainer) Gradients(params []*tensor.Dense, b Batch) (float64, []*tensor.Dense, error) {
	grads := t.arch.Zeros()
	loss, err := t.GradientsInto(grads, params, b)
	if err != nil {
		return 0, nil, err
	}
	return loss, grads, nil
}

// GradientsInto is Gradients writing into dst, which must hold four float64
// tensors of the parameters' shapes.
func (t *Trainer) GradientsInto(dst []*tensor.Dense, params []*tensor.Dense, b Batch) (loss float64, err error) {
	if t.vm == nil {
		return 0, errors.New("model: trainer is closed")
	}
	out, err := t.arch.paramData("gradient destination", dst, false)
	if err != nil {
		return 0, err
	}
	in, err := t.arch.paramData("weights", params, true)
	if err != nil {
		return 0, err
	}
	if err := t.load(b); err != nil {
		return 0, err
	}
	for i, d := range in {
		copy(t.param[i].Data().([]float64), d)
	}

	defer func() {
		if r := recover(); r != nil {
			loss, err = 0, fmt.Errorf("model: gorgonia run failed: %v", r)
		}
		t.vm.Reset()
	}()
	if err := t.vm.RunAll(); err != nil {
		return 0, fmt.Errorf("model: gorgonia run: %w", err)
	}
	lv, ok := t.loss.Value().Data().(float64)
	if !ok {
		return 0, fmt.Errorf("model: loss has type %T, want float64", t.loss.Value().Data())
	}
	if math.IsNaN(lv) || math.IsInf(lv, 0) {
		return 0, fmt.Errorf("model: loss is %v", lv)
	}
	for i, gn := range t.grads {
		gv, ok := gn.Value().(*tensor.Dense)
		if !ok {
			return 0, fmt.Errorf("model: gradient of %s has type %T", ParamName(i), gn.Value())
		}
		gd, err := Float64s(gv, t.arch.ParamShapes()[i])
		if err != nil {
			return 0, fmt.Errorf("model: gradient of %s: %w", ParamName(i), err)
		}
		copy(out[i], gd)
	}
	return lv, nil
}

// load copies a batch into the bound x and one-hot y tensors.
func (t *Trainer) load(b Batch) error {
	if len(b.Labels) != t.batch {
		return fmt.Errorf("model: batch has %d labels, trainer was built for %d", len(b.Labels), t.batch)
	}
	if len(b.X) != t.batch*t.arch.Inputs {
		return fmt.Errorf("model: batch has %d input values, want %d × %d", len(b.X), t.batch, t.arch.Inputs)
	}
	x := t.x.Data().([]float64)
	for i, v := range b.X {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("model: batch input %d of example %d is %v", i%t.arch.Inputs, i/t.arch.Inputs, v)
		}
		x[i] = standardize(v)
	}
	y := t.y.Data().([]float64)
	clear(y)
	for i, l := range b.Labels {
		if int(l) >= t.arch.Classes {
			return fmt.Errorf("model: batch label %d of example %d not in [0, %d)", l, i, t.arch.Classes)
		}
		y[i*t.arch.Classes+int(l)] = 1
	}
	return nil
}

// Close releases the tape machine. The Trainer must not be used afterwards.
func (t *Trainer) Close() error {
	if t.vm == nil {
		return errors.New("model: trainer already closed")
	}
	err := t.vm.Close()
	t.vm = nil
	return err
}
