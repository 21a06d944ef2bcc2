package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/protocol/pond"
)

func loadAll(t *testing.T) (*classifier, *mnist.Dataset, *mnist.Dataset) {
	t.Helper()
	c, err := loadClassifier()
	require.NoError(t, err)
	train, test, err := mnist.Embedded()
	require.NoError(t, err)
	return c, train, test
}

// TestEmbeddedClassifier checks the shipped network against package
// model's own forward pass and the accuracy README.md states.
func TestEmbeddedClassifier(t *testing.T) {
	c, _, test := loadAll(t)
	assert.Equal(t, model.TFE(), c.arch)
	assert.Less(t, len(classifierFile), 2<<20, "the file stays small enough to commit")

	got, err := c.logits(test.Images, sigmoid)
	require.NoError(t, err)
	want, err := model.Logits(c.arch, c.Params(), test.Images)
	require.NoError(t, err)
	require.Len(t, got, len(want))
	for i := range want {
		require.InDelta(t, want[i], got[i], 1e-9, "logit %d of image %d", i%10, i/10)
	}
	_, acc, err := model.Evaluate(c.arch, c.Params(), test.Images, test.Labels)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, acc, 0.85, "README: 0.854 on the embedded test set")
}

// TestIntervalCoversPreActivations checks that the polynomial's interval
// covers every hidden pre-activation of the training set with a margin of
// 10%: outside it the polynomial diverges.
func TestIntervalCoversPreActivations(t *testing.T) {
	c, train, _ := loadAll(t)
	z, err := c.preActivations(train.Images)
	require.NoError(t, err)
	var peak float64
	for _, v := range z {
		peak = max(peak, math.Abs(v))
	}
	assert.LessOrEqual(t, 1.1*peak, float64(sigmoidInterval), "largest |z| on the training set is %.2f", peak)
}

// TestPrivatePredictionAgrees is the example's promise: with the
// polynomial in place of the sigmoid, in float64 and in Pond's fixed
// point, the network predicts the exact network's class on at least 99.5%
// of the embedded test images.
func TestPrivatePredictionAgrees(t *testing.T) {
	c, _, test := loadAll(t)
	checkAgreement(t, c, test)
}

// TestPrivatePredictionAgreesOnFullTestSet checks the same on the 10,000
// test images of Fashion-MNIST, where Debian's dataset-fashion-mnist is
// installed.
func TestPrivatePredictionAgreesOnFullTestSet(t *testing.T) {
	const dir = "/usr/share/datasets/fashion-mnist"
	if testing.Short() {
		t.Skip("the full test set takes a few seconds; skipped in -short mode")
	}
	if _, err := os.Stat(filepath.Join(dir, mnist.TestImagesFile+".gz")); err != nil {
		t.Skipf("full Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): %v", err)
	}
	c, err := loadClassifier()
	require.NoError(t, err)
	_, test, err := mnist.Load(dir)
	require.NoError(t, err)
	require.Equal(t, 10000, test.N)
	checkAgreement(t, c, test)
}

func checkAgreement(t *testing.T, c *classifier, d *mnist.Dataset) {
	t.Helper()
	proto, err := pond.New(pond.Config{})
	require.NoError(t, err)
	r, err := compare(c, d, predictionSigmoid(), proto)
	require.NoError(t, err)
	t.Logf("%d images: agreement %.4f (fixed point %.4f), accuracy exact %.4f polynomial %.4f, max |z| %.2f, peak %.1f, fixed-point logit error %.1e",
		r.N, r.Agreement, r.FixedAgreement, r.ExactAccuracy, r.PolyAccuracy, r.MaxAbsZ, r.Peak, r.FixedLogitError)
	assert.GreaterOrEqual(t, r.Agreement, 0.995)
	assert.GreaterOrEqual(t, r.FixedAgreement, 0.995)
	assert.Less(t, r.MaxAbsZ, float64(sigmoidInterval))
	assert.Less(t, r.Peak, 64.0, "values stay far inside Pond's range (1024)")
	assert.Less(t, r.FixedLogitError, 2e-3, "fixed point adds little to the polynomial's error")
	assert.InDelta(t, r.ExactAccuracy, r.PolyAccuracy, 0.005)
}

func TestFixedLogitsRefusesOutOfRange(t *testing.T) {
	c, _, test := loadAll(t)
	// With IntBits 2 (|x| < 4) the hidden pre-activations, up to 12, do
	// not fit: the emulation must say so rather than wrap around.
	proto, err := pond.New(pond.Config{IntBits: 2})
	require.NoError(t, err)
	_, err = c.fixedLogits(test.Images[:20*784], predictionSigmoid(), proto)
	assert.ErrorContains(t, err, "leaves the fixed-point range (−4, 4)")
}

func TestClassifierRefusesBadInput(t *testing.T) {
	c, _, _ := loadAll(t)
	_, err := c.logits(make([]float32, 785), sigmoid)
	assert.ErrorContains(t, err, "785 pixel values is not a positive multiple of 784")
	_, err = c.logits(nil, sigmoid)
	assert.ErrorContains(t, err, "0 pixel values")
	x := make([]float32, 2*784)
	x[784+5] = float32(math.NaN())
	_, err = c.preActivations(x)
	assert.ErrorContains(t, err, "pixel 5 of image 1 is NaN")

	_, err = readClassifier([]byte("not a weights file"), "broken.sfw.gz")
	assert.ErrorContains(t, err, "broken.sfw.gz")
}

func TestCheckPolynomial(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, checkPolynomial(&out, ""))
	s := out.String()
	assert.Contains(t, s, "sigmoid: odd polynomial of degree 19 on [-14, 14]")
	assert.Contains(t, s, "embedded test set, 1000 images")
	assert.Contains(t, s, "agreement with the exact prediction")
	assert.ErrorContains(t, checkPolynomial(&out, t.TempDir()), "train-images-idx3-ubyte")
}
