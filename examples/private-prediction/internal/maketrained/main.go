// Command maketrained trains the classifier that the private-prediction
// example ships: the federated-learning example's 784 → 512 sigmoid → 10
// network (package model), trained by plain SGD on the embedded
// Fashion-MNIST subset (package mnist), from a fixed seed, and written in
// the format of package weights.
//
// Each epoch visits the 6,000 embedded training images once in an order
// drawn from the seed, in batches of -batch, with a learning rate that
// falls linearly from -lr to nearly zero over the run; after each epoch it prints the
// loss and accuracy on the 1,000 embedded test images. The output depends
// only on the flags, the embedded data and the floating-point behaviour of
// the machine (gonum's kernels), so the same Go release on amd64 rebuilds
// the same file.
//
// Usage (from the example's directory, as go generate runs it):
//
//	go run ./internal/maketrained -out classifier.sfw.gz
package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/examples/private-prediction/internal/weights"
	"github.com/shareflow/shareflow/internal/atomicfile"
)

func main() {
	out := flag.String("out", "classifier.sfw.gz", "file to write the trained weights to")
	epochs := flag.Int("epochs", 10, "passes over the embedded training set")
	batch := flag.Int("batch", 30, "examples per SGD step (TF Encrypted's example uses 30)")
	lr := flag.Float64("lr", 0.1, "learning rate (TF Encrypted's example uses 0.1)")
	seed := flag.Uint64("seed", 1, "seed of the initial weights and of the order of examples")
	flag.Parse()
	if err := run(os.Stdout, *out, *epochs, *batch, *lr, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "maketrained:", err)
		os.Exit(1)
	}
}

func run(log io.Writer, out string, epochs, batch int, lr float64, seed uint64) error {
	if epochs < 1 {
		return fmt.Errorf("-epochs %d, want at least 1", epochs)
	}
	train, test, err := mnist.Embedded()
	if err != nil {
		return err
	}
	if batch < 1 || batch > train.N {
		return fmt.Errorf("-batch %d, want 1..%d", batch, train.N)
	}
	a := model.TFE()
	rng := rand.New(rand.NewPCG(seed, 0))
	params, err := a.Init(rng)
	if err != nil {
		return err
	}
	tr, err := model.NewTrainer(a, batch)
	if err != nil {
		return err
	}
	defer tr.Close()

	grads := a.Zeros()
	p := train.Pixels()
	x := make([]float32, batch*p)
	labels := make([]uint8, batch)
	steps := epochs * (train.N / batch)
	step := 0
	for e := range epochs {
		order := rng.Perm(train.N)
		for start := 0; start+batch <= len(order); start += batch {
			// The rate falls linearly from lr to lr/steps: late steps settle
			// the weights rather than jump between minima of a small set.
			rate := lr * float64(steps-step) / float64(steps)
			step++
			for i, k := range order[start : start+batch] {
				copy(x[i*p:(i+1)*p], train.Image(k))
				labels[i] = train.Labels[k]
			}
			if _, err := tr.GradientsInto(grads, params, model.Batch{X: x, Labels: labels}); err != nil {
				return fmt.Errorf("epoch %d, batch at %d: %w", e+1, start, err)
			}
			if err := model.SGD(a, params, grads, rate); err != nil {
				return fmt.Errorf("epoch %d, batch at %d: %w", e+1, start, err)
			}
		}
		loss, acc, err := model.Evaluate(a, params, test.Images, test.Labels)
		if err != nil {
			return err
		}
		fmt.Fprintf(log, "epoch %2d: test loss %.4f, accuracy %.4f\n", e+1, loss, acc)
	}
	return atomicfile.Write(out, 0o644, func(w io.Writer) error { return weights.Write(w, a, params) })
}
