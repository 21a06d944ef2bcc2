package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"math"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/examples/private-prediction/internal/weights"
)

//go:generate go run ./internal/maketrained -out classifier.sfw.gz

// classifierFile is the trained network: the federated-learning example's
// 784 → 512 sigmoid → 10 perceptron after 10 epochs of plain SGD on the
// embedded Fashion-MNIST subset, in the format of package weights. See
// README.md for how it was made.
//
//go:embed classifier.sfw.gz
var classifierFile []byte

// classifier is a trained one-hidden-layer network held as plain slices:
// the model owner's secret in a private prediction. It is read-only once
// loaded and safe for concurrent use.
type classifier struct {
	arch           model.Architecture
	w1, b1, w2, b2 []float64
	params         []*tensor.Dense
}

// loadClassifier decodes the embedded classifier.
func loadClassifier() (*classifier, error) {
	return readClassifier(classifierFile, "classifier.sfw.gz")
}

// readClassifier decodes a weights file; name identifies it in errors.
func readClassifier(file []byte, name string) (*classifier, error) {
	a, params, err := weights.Read(bytes.NewReader(file), name)
	if err != nil {
		return nil, err
	}
	c := &classifier{arch: a, params: params}
	slices := []*[]float64{&c.w1, &c.b1, &c.w2, &c.b2}
	for i, shape := range a.ParamShapes() {
		if *slices[i], err = model.Float64s(params[i], shape); err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", name, model.ParamName(i), err)
		}
	}
	return c, nil
}

// Params returns the network's parameters as package model takes them
// (W1, b1, W2, b2). They share the classifier's storage: do not modify.
func (c *classifier) Params() []*tensor.Dense { return c.params }

// standardize returns the network's view of a pixel, as package model
// feeds it: (v − model.InputMean) / model.InputStd. In a private
// prediction the client applies it to its own image before sharing it.
func standardize(v float32) float64 { return (float64(v) - model.InputMean) / model.InputStd }

// checkImages checks that x holds whole images of the network's input size
// with finite pixels, and returns how many.
func (c *classifier) checkImages(x []float32) (int, error) {
	if len(x) == 0 || len(x)%c.arch.Inputs != 0 {
		return 0, fmt.Errorf("%d pixel values is not a positive multiple of %d per image", len(x), c.arch.Inputs)
	}
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return 0, fmt.Errorf("pixel %d of image %d is %v", i%c.arch.Inputs, i/c.arch.Inputs, v)
		}
	}
	return len(x) / c.arch.Inputs, nil
}

// preActivations returns the hidden layer's inputs z = x̂·W1 + b1 for the
// images in x (x̂ standardized), Hidden values per image: the values the
// polynomial sigmoid must approximate σ on.
func (c *classifier) preActivations(x []float32) ([]float64, error) {
	n, err := c.checkImages(x)
	if err != nil {
		return nil, err
	}
	in, hid := c.arch.Inputs, c.arch.Hidden
	z := make([]float64, n*hid)
	xs := make([]float64, in)
	for i := range n {
		for k, v := range x[i*in : (i+1)*in] {
			xs[k] = standardize(v)
		}
		row := z[i*hid : (i+1)*hid]
		copy(row, c.b1)
		for k, v := range xs {
			if v == 0 {
				continue
			}
			for j, w := range c.w1[k*hid : (k+1)*hid] {
				row[j] += v * w
			}
		}
	}
	return z, nil
}

// logits returns the network's outputs for the images in x, Classes values
// per image, with activation sigma on the hidden layer: sigmoid for the
// network as trained, a polynomial for what a private prediction computes.
func (c *classifier) logits(x []float32, sigma func(float64) float64) ([]float64, error) {
	z, err := c.preActivations(x)
	if err != nil {
		return nil, err
	}
	for i, v := range z {
		z[i] = sigma(v)
	}
	return c.output(z), nil
}

// output returns h·W2 + b2 for hidden activations h, Hidden per image.
func (c *classifier) output(h []float64) []float64 {
	hid, cls := c.arch.Hidden, c.arch.Classes
	n := len(h) / hid
	out := make([]float64, n*cls)
	for i := range n {
		row := out[i*cls : (i+1)*cls]
		copy(row, c.b2)
		for k, v := range h[i*hid : (i+1)*hid] {
			for j, w := range c.w2[k*cls : (k+1)*cls] {
				row[j] += v * w
			}
		}
	}
	return out
}

// sigmoid is the logistic function, finite for every input.
func sigmoid(v float64) float64 {
	if v >= 0 {
		return 1 / (1 + math.Exp(-v))
	}
	e := math.Exp(v)
	return e / (1 + e)
}

// argmax returns the index of the largest of each row of classes values
// (the first on ties).
func argmax(logits []float64, classes int) []int {
	out := make([]int, len(logits)/classes)
	for i := range out {
		row := logits[i*classes : (i+1)*classes]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		out[i] = best
	}
	return out
}
