package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"
)

var small = Architecture{Inputs: 6, Hidden: 5, Classes: 3}

// randomBatch returns n examples with inputs in [0, 1) and labels < classes.
func randomBatch(rng *rand.Rand, a Architecture, n int) Batch {
	b := Batch{X: make([]float32, n*a.Inputs), Labels: make([]uint8, n)}
	for i := range b.X {
		b.X[i] = rng.Float32()
	}
	for i := range b.Labels {
		b.Labels[i] = uint8(rng.IntN(a.Classes))
	}
	return b
}

// randomParams returns parameters with larger, non-zero biases than Init so
// that every term of the gradient is exercised.
func randomParams(rng *rand.Rand, a Architecture) []*tensor.Dense {
	p := a.Zeros()
	for _, t := range p {
		d := t.Data().([]float64)
		for i := range d {
			d[i] = rng.NormFloat64()
		}
	}
	return p
}

func TestArchitecture(t *testing.T) {
	a := TFE()
	require.NoError(t, a.Validate())
	assert.Equal(t, 407050, a.NumParams())
	assert.Equal(t, [][]int{{784, 512}, {512}, {512, 10}, {10}}, a.ParamShapes())
	assert.Equal(t, "784-512-10", a.String())

	for _, bad := range []Architecture{{}, {784, 1, 10}, {784, 512, 1}, {0, 512, 10}, {784, 1 << 20, 10}} {
		assert.Error(t, bad.Validate(), "%v", bad)
	}
	assert.Equal(t, "b2", ParamName(3))
	assert.Equal(t, "param[7]", ParamName(7))
}

func TestInit(t *testing.T) {
	a := TFE()
	p1, err := a.Init(rand.New(rand.NewPCG(1, 2)))
	require.NoError(t, err)
	p2, err := a.Init(rand.New(rand.NewPCG(1, 2)))
	require.NoError(t, err)
	p3, err := a.Init(rand.New(rand.NewPCG(3, 4)))
	require.NoError(t, err)
	require.NoError(t, a.CheckParams("init", p1))
	for i := range p1 {
		assert.Equal(t, p1[i].Data(), p2[i].Data(), "same seed, tensor %s", ParamName(i))
	}
	assert.NotEqual(t, p1[0].Data(), p3[0].Data())

	limits := []float64{math.Sqrt(6.0 / (784 + 512)), 0, 4 * math.Sqrt(6.0/(512+10)), 0} // gain 4 after the sigmoid
	for i, p := range p1 {
		d := p.Data().([]float64)
		var sq float64
		for _, v := range d {
			require.LessOrEqual(t, math.Abs(v), limits[i])
			sq += v * v
		}
		if limits[i] > 0 {
			// U(−l, l) has variance l²/3.
			assert.InDelta(t, limits[i]*limits[i]/3, sq/float64(len(d)), 0.05*limits[i]*limits[i])
		}
	}
	_, err = a.Init(nil)
	assert.Error(t, err)
}

// TestGradientsFiniteDifferences checks gorgonia's gradients against central
// differences of the plain-Go loss on a small network.
func TestGradientsFiniteDifferences(t *testing.T) {
	for _, batch := range []int{1, 4} {
		rng := rand.New(rand.NewPCG(7, uint64(batch)))
		tr, err := NewTrainer(small, batch)
		require.NoError(t, err)
		defer tr.Close()
		params := randomParams(rng, small)
		b := randomBatch(rng, small, batch)

		loss, grads, err := tr.Gradients(params, b)
		require.NoError(t, err)
		ref, _, err := Evaluate(small, params, b.X, b.Labels)
		require.NoError(t, err)
		assert.InDelta(t, ref, loss, 1e-12, "gorgonia and plain-Go loss, batch %d", batch)

		const h = 1e-5
		for i, p := range params {
			d := p.Data().([]float64)
			g := grads[i].Data().([]float64)
			require.Equal(t, p.Shape(), grads[i].Shape())
			for j := range d {
				orig := d[j]
				d[j] = orig + h
				up, _, err := Evaluate(small, params, b.X, b.Labels)
				require.NoError(t, err)
				d[j] = orig - h
				down, _, err := Evaluate(small, params, b.X, b.Labels)
				require.NoError(t, err)
				d[j] = orig
				numeric := (up - down) / (2 * h)
				assert.InDelta(t, numeric, g[j], 1e-7+1e-5*math.Abs(numeric),
					"batch %d, d loss / d %s[%d]", batch, ParamName(i), j)
			}
		}
	}
}

// TestTrainerReuse checks that one Trainer gives, call after call, exactly
// what a fresh Trainer gives, and never touches the caller's tensors.
func TestTrainerReuse(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	tr, err := NewTrainer(small, 3)
	require.NoError(t, err)
	defer tr.Close()
	for round := 0; round < 4; round++ {
		params := randomParams(rng, small)
		before := Clone(params)
		b := randomBatch(rng, small, 3)

		loss, grads, err := tr.Gradients(params, b)
		require.NoError(t, err)

		fresh, err := NewTrainer(small, 3)
		require.NoError(t, err)
		freshLoss, freshGrads, err := fresh.Gradients(params, b)
		require.NoError(t, err)
		require.NoError(t, fresh.Close())

		assert.Equal(t, freshLoss, loss, "round %d", round)
		for i := range grads {
			assert.Equal(t, freshGrads[i].Data(), grads[i].Data(), "round %d, %s", round, ParamName(i))
			assert.Equal(t, before[i].Data(), params[i].Data(), "caller's %s modified", ParamName(i))
		}
	}
}

// TestForwardConsistencyTFE compares the gorgonia loss with the plain-Go
// evaluation on the full network.
func TestForwardConsistencyTFE(t *testing.T) {
	a := TFE()
	rng := rand.New(rand.NewPCG(5, 6))
	params, err := a.Init(rng)
	require.NoError(t, err)
	tr, err := NewTrainer(a, 30)
	require.NoError(t, err)
	defer tr.Close()
	b := randomBatch(rng, a, 30)
	loss, grads, err := tr.Gradients(params, b)
	require.NoError(t, err)
	ref, _, err := Evaluate(a, params, b.X, b.Labels)
	require.NoError(t, err)
	assert.InDelta(t, ref, loss, 1e-10)
	require.NoError(t, a.CheckParams("gradient", grads))

	logits, err := Logits(a, params, b.X)
	require.NoError(t, err)
	require.Len(t, logits, 30*10)
	pred, err := Predict(a, params, b.X)
	require.NoError(t, err)
	for i, c := range pred {
		assert.Equal(t, argmax(logits[i*10:(i+1)*10]), c)
	}
}

func TestSGDDecreasesLoss(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	params, err := small.Init(rng)
	require.NoError(t, err)
	tr, err := NewTrainer(small, 8)
	require.NoError(t, err)
	defer tr.Close()
	b := randomBatch(rng, small, 8)
	first, _, err := Evaluate(small, params, b.X, b.Labels)
	require.NoError(t, err)
	prev := first
	for step := 0; step < 50; step++ {
		loss, grads, err := tr.Gradients(params, b)
		require.NoError(t, err)
		assert.InDelta(t, prev, loss, 1e-12)
		require.NoError(t, SGD(small, params, grads, 1))
		prev, _, err = Evaluate(small, params, b.X, b.Labels)
		require.NoError(t, err)
		assert.Less(t, prev, loss, "step %d", step)
	}
	assert.Less(t, prev, 0.8*first)
}

func TestValidationErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	params := randomParams(rng, small)
	b := randomBatch(rng, small, 2)
	tr, err := NewTrainer(small, 2)
	require.NoError(t, err)
	defer tr.Close()

	nan := Clone(params)
	nan[2].Data().([]float64)[4] = math.NaN()
	wrongShape := Clone(params)
	wrongShape[1] = tensor.New(tensor.WithShape(4), tensor.WithBacking(make([]float64, 4)))
	wrongType := Clone(params)
	wrongType[3] = tensor.New(tensor.WithShape(3), tensor.WithBacking(make([]float32, 3)))
	withNil := Clone(params)
	withNil[0] = nil

	tests := []struct {
		name   string
		params []*tensor.Dense
		batch  Batch
		want   string
	}{
		{"too few tensors", params[:3], b, "has 3 tensors, want 4"},
		{"NaN weight", nan, b, "weights tensor W2: element 4 is NaN"},
		{"wrong shape", wrongShape, b, "weights tensor b1: shape (4), want [5]"},
		{"wrong dtype", wrongType, b, "weights tensor b2: dtype float32"},
		{"nil tensor", withNil, b, "weights tensor W1: nil tensor"},
		{"short batch", params, Batch{X: b.X[:6], Labels: b.Labels[:1]}, "batch has 1 labels, trainer was built for 2"},
		{"ragged batch", params, Batch{X: b.X[:7], Labels: b.Labels}, "batch has 7 input values"},
		{"bad label", params, Batch{X: b.X, Labels: []uint8{0, 3}}, "label 3 of example 1 not in [0, 3)"},
		{"NaN input", params, Batch{X: append([]float32{float32(math.NaN())}, b.X[1:]...), Labels: b.Labels}, "input 0 of example 0 is NaN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tr.Gradients(tc.params, tc.batch)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	// The trainer still works after rejected calls.
	_, _, err = tr.Gradients(params, b)
	require.NoError(t, err)

	_, err = NewTrainer(small, 0)
	assert.Error(t, err)
	_, err = NewTrainer(Architecture{}, 3)
	assert.Error(t, err)

	_, _, err = Evaluate(small, params, b.X, []uint8{0, 9})
	assert.ErrorContains(t, err, "label 9 of example 1")
	_, _, err = Evaluate(small, params, b.X[:5], b.Labels)
	assert.Error(t, err)
	assert.ErrorContains(t, SGD(small, params, nan, 0.1), "gradient tensor W2")
	assert.Error(t, SGD(small, params, params, math.NaN()))
	huge := small.Zeros()
	huge[1].Data().([]float64)[2] = math.MaxFloat64
	before := Clone(params)
	assert.ErrorContains(t, SGD(small, params, huge, 2), "overflows weights tensor b1 at element 2")
	for i := range params {
		assert.Equal(t, before[i].Data(), params[i].Data(), "unchanged after a rejected step")
	}

	closed, err := NewTrainer(small, 2)
	require.NoError(t, err)
	require.NoError(t, closed.Close())
	_, _, err = closed.Gradients(params, b)
	assert.ErrorContains(t, err, "closed")
}

// TestViews checks that transposed and sliced tensors are read in logical
// order.
func TestViews(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	params := randomParams(rng, small)
	b := randomBatch(rng, small, 2)
	want, _, err := Evaluate(small, params, b.X, b.Labels)
	require.NoError(t, err)

	// W2 as the transpose of a Classes×Hidden tensor.
	w2 := params[2].Data().([]float64)
	tr := make([]float64, len(w2))
	for h := 0; h < small.Hidden; h++ {
		for c := 0; c < small.Classes; c++ {
			tr[c*small.Hidden+h] = w2[h*small.Classes+c]
		}
	}
	w2T := tensor.New(tensor.WithShape(small.Classes, small.Hidden), tensor.WithBacking(tr))
	require.NoError(t, w2T.T())
	// b1 as a slice of a longer vector.
	long := tensor.New(tensor.WithShape(small.Hidden+3), tensor.WithBacking(append([]float64{9, 9}, append(params[1].Data().([]float64), 9)...)))
	b1View, err := long.Slice(tensor.S(2, 2+small.Hidden))
	require.NoError(t, err)

	viewed := []*tensor.Dense{params[0], b1View.(*tensor.Dense), w2T, params[3]}
	got, _, err := Evaluate(small, viewed, b.X, b.Labels)
	require.NoError(t, err)
	assert.InDelta(t, want, got, 1e-12)
	c := Clone(viewed)
	assert.Equal(t, params[2].Data(), c[2].Data())
	assert.Equal(t, params[1].Data(), c[1].Data())

	tn, err := NewTrainer(small, 2)
	require.NoError(t, err)
	defer tn.Close()
	l1, g1, err := tn.Gradients(params, b)
	require.NoError(t, err)
	l2, g2, err := tn.Gradients(viewed, b)
	require.NoError(t, err)
	assert.Equal(t, l1, l2)
	assert.Equal(t, g1[2].Data(), g2[2].Data())

	// SGD refuses to update a view in place.
	assert.ErrorContains(t, SGD(small, viewed, g1, 0.1), "is a view")
}

func BenchmarkGradientsTFE(b *testing.B) {
	a := TFE()
	rng := rand.New(rand.NewPCG(1, 1))
	params, err := a.Init(rng)
	require.NoError(b, err)
	tr, err := NewTrainer(a, 30)
	require.NoError(b, err)
	defer tr.Close()
	batch := randomBatch(rng, a, 30)
	grads := a.Zeros()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.GradientsInto(grads, params, batch); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvaluateTFE1000(b *testing.B) {
	a := TFE()
	rng := rand.New(rand.NewPCG(1, 1))
	params, err := a.Init(rng)
	require.NoError(b, err)
	batch := randomBatch(rng, a, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Evaluate(a, params, batch.X, batch.Labels); err != nil {
			b.Fatal(err)
		}
	}
}
