package model

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gorgonia.org/tensor"
)

// evalChunk is the number of examples pushed through the network at once by
// the plain forward pass; it bounds the scratch memory at about
// evalChunk × (Inputs + Hidden + Classes) float64s.
const evalChunk = 256

// forward runs the network on the n = len(x)/Inputs examples of x in plain Go
// (gonum BLAS), calling visit with each example's index and logits. The
// logits slice is reused between calls.
func forward(a Architecture, params []*tensor.Dense, x []float32, visit func(i int, logits []float64)) (int, error) {
	if err := a.Validate(); err != nil {
		return 0, err
	}
	w, err := a.paramData("weights", params, true)
	if err != nil {
		return 0, err
	}
	if len(x) == 0 || len(x)%a.Inputs != 0 {
		return 0, fmt.Errorf("model: %d input values is not a positive multiple of %d inputs per example", len(x), a.Inputs)
	}
	n := len(x) / a.Inputs
	rows := min(n, evalChunk)
	xs := make([]float64, rows*a.Inputs)
	hs := make([]float64, rows*a.Hidden)
	zs := make([]float64, rows*a.Classes)
	W1 := blas64.General{Rows: a.Inputs, Cols: a.Hidden, Stride: a.Hidden, Data: w[0]}
	W2 := blas64.General{Rows: a.Hidden, Cols: a.Classes, Stride: a.Classes, Data: w[2]}
	b1, b2 := w[1], w[3]

	for start := 0; start < n; start += rows {
		m := min(rows, n-start)
		for i, v := range x[start*a.Inputs : (start+m)*a.Inputs] {
			f := float64(v)
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return 0, fmt.Errorf("model: input %d of example %d is %v", i%a.Inputs, start+i/a.Inputs, v)
			}
			xs[i] = standardize(v)
		}
		X := blas64.General{Rows: m, Cols: a.Inputs, Stride: a.Inputs, Data: xs[:m*a.Inputs]}
		H := blas64.General{Rows: m, Cols: a.Hidden, Stride: a.Hidden, Data: hs[:m*a.Hidden]}
		Z := blas64.General{Rows: m, Cols: a.Classes, Stride: a.Classes, Data: zs[:m*a.Classes]}
		blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, X, W1, 0, H)
		for r := 0; r < m; r++ {
			row := H.Data[r*a.Hidden : (r+1)*a.Hidden]
			for j := range row {
				row[j] = sigmoid(row[j] + b1[j])
			}
		}
		blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, H, W2, 0, Z)
		for r := 0; r < m; r++ {
			row := Z.Data[r*a.Classes : (r+1)*a.Classes]
			for j := range row {
				row[j] += b2[j]
			}
			visit(start+r, row)
		}
	}
	return n, nil
}

// sigmoid is the logistic function, written to stay finite for any input.
func sigmoid(v float64) float64 {
	if v >= 0 {
		return 1 / (1 + math.Exp(-v))
	}
	e := math.Exp(v)
	return e / (1 + e)
}

// logSumExp returns log Σ exp(z_j), computed stably.
func logSumExp(z []float64) float64 {
	m := z[0]
	for _, v := range z[1:] {
		m = max(m, v)
	}
	var s float64
	for _, v := range z {
		s += math.Exp(v - m)
	}
	return m + math.Log(s)
}

// argmax returns the index of the largest element (the first on ties).
func argmax(z []float64) int {
	best := 0
	for j, v := range z {
		if v > z[best] {
			best = j
		}
	}
	return best
}

// Logits returns the network's pre-softmax outputs for the examples in x
// (len(x)/Inputs rows of Classes values), computed in plain Go.
func Logits(a Architecture, params []*tensor.Dense, x []float32) ([]float64, error) {
	var out []float64
	_, err := forward(a, params, x, func(_ int, z []float64) { out = append(out, z...) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Predict returns the most likely class of each example in x.
func Predict(a Architecture, params []*tensor.Dense, x []float32) ([]int, error) {
	var out []int
	_, err := forward(a, params, x, func(_ int, z []float64) { out = append(out, argmax(z)) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Evaluate returns the mean softmax cross-entropy loss and the accuracy of
// the network on the examples (x, labels), computed in plain Go. It agrees
// with the loss of Trainer.Gradients on the same data to rounding error.
func Evaluate(a Architecture, params []*tensor.Dense, x []float32, labels []uint8) (loss, accuracy float64, err error) {
	if len(labels) == 0 || len(x) != len(labels)*a.Inputs {
		return 0, 0, fmt.Errorf("model: %d input values for %d labels, want %d per example", len(x), len(labels), a.Inputs)
	}
	for i, l := range labels {
		if int(l) >= a.Classes {
			return 0, 0, fmt.Errorf("model: label %d of example %d not in [0, %d)", l, i, a.Classes)
		}
	}
	var sum float64
	correct := 0
	n, err := forward(a, params, x, func(i int, z []float64) {
		l := int(labels[i])
		sum += logSumExp(z) - z[l]
		if argmax(z) == l {
			correct++
		}
	})
	if err != nil {
		return 0, 0, err
	}
	return sum / float64(n), float64(correct) / float64(n), nil
}

// SGD applies one plain stochastic-gradient-descent step in place:
// params ← params − lr · grads. Both lists are checked first (count, shapes,
// finite values), and so is every updated value before any is written: on
// error params is unchanged.
func SGD(a Architecture, params, grads []*tensor.Dense, lr float64) error {
	if math.IsNaN(lr) || math.IsInf(lr, 0) || lr <= 0 {
		return fmt.Errorf("model: learning rate %v, want a positive finite number", lr)
	}
	g, err := a.paramData("gradient", grads, true)
	if err != nil {
		return err
	}
	for i, p := range params {
		if p != nil && p.RequiresIterator() {
			return fmt.Errorf("%w: weights tensor %s is a view; SGD updates dense tensors in place", ErrParams, ParamName(i))
		}
	}
	w, err := a.paramData("weights", params, true)
	if err != nil {
		return err
	}
	for i := range w {
		for j, v := range g[i] {
			if nv := w[i][j] - lr*v; math.IsInf(nv, 0) {
				return fmt.Errorf("%w: SGD step overflows weights tensor %s at element %d", ErrParams, ParamName(i), j)
			}
		}
	}
	for i := range w {
		for j, v := range g[i] {
			w[i][j] -= lr * v
		}
	}
	return nil
}
