package main

import (
	"context"
	"errors"
	"fmt"
	"math"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
)

// clientName is the prediction client's player: the first data owner of
// the federated-learning example's hostmap, so that both examples run on
// the same hosts, certificates and launcher. The other data owners of a
// hostmap have no part in a prediction.
var clientName = players.DataOwner(0)

// errStandIn is what a stand-in's function returns if it is ever called:
// in a run across hosts a player's functions run only on its own host.
var errStandIn = errors.New("this player runs on another host; its data is not here")

// client is the prediction client: it holds the images, shares one batch
// of them (standardized) each iteration, and is the only player that
// receives the logits. The session calls its functions from one goroutine
// at a time (its player's); a client is not safe for concurrent use
// otherwise.
type client struct {
	name    string
	arch    model.Architecture
	batch   int
	n       int       // images to classify
	pixels  []float32 // n images, raw pixels in [0, 1]; nil on a stand-in
	labels  []uint8   // their labels, which never leave the client
	batches int       // batches shared so far
	logits  []float64 // received so far, arch.Classes per image
}

// newClient returns the client that classifies the n images of pixels
// (with their labels) in batches of batch. A nil pixels makes a stand-in,
// for a host that runs another player.
func newClient(arch model.Architecture, pixels []float32, labels []uint8, n, batch int) (*client, error) {
	c := &client{name: clientName, arch: arch, batch: batch, n: n}
	if batch < 1 || n < 1 {
		return nil, fmt.Errorf("%s: %d images in batches of %d", c.name, n, batch)
	}
	if pixels == nil {
		return c, nil
	}
	if len(pixels) < n*arch.Inputs || len(labels) < n {
		return nil, fmt.Errorf("%s: %d images wanted, the test set has %d", c.name, n, min(len(pixels)/arch.Inputs, len(labels)))
	}
	c.pixels, c.labels = pixels[:n*arch.Inputs], labels[:n]
	for i, v := range c.pixels {
		if !(v >= 0 && v <= 1) {
			return nil, fmt.Errorf("%s: pixel %d of image %d is %v, want a value in [0, 1]", c.name, i%arch.Inputs, i/arch.Inputs, v)
		}
	}
	return c, nil
}

// Batches returns the number of batches, and so of iterations, that
// classify the client's n images: the last batch is padded.
func (c *client) Batches() int { return (c.n + c.batch - 1) / c.batch }

// shareBatch is the client's private input: the next batch of images,
// standardized as the network expects (see standardize). The last batch
// is padded with copies of its last image, whose logits receive drops:
// every batch has the shape the graph declares.
func (c *client) shareBatch(_ context.Context, _ []*tensor.Dense) ([]*tensor.Dense, error) {
	if c.pixels == nil {
		return nil, fmt.Errorf("%s: %w", c.name, errStandIn)
	}
	if c.batches >= c.Batches() {
		return nil, fmt.Errorf("%s: all %d images have been sent, in %d batches", c.name, c.n, c.batches)
	}
	in := c.arch.Inputs
	from := c.batches * c.batch
	last := min(from+c.batch, c.n) - 1
	x := make([]float64, c.batch*in)
	for i := range c.batch {
		img := min(from+i, last)
		for k, v := range c.pixels[img*in : (img+1)*in] {
			x[i*in+k] = standardize(v)
		}
	}
	c.batches++
	return []*tensor.Dense{tensor.New(tensor.WithShape(c.batch, in), tensor.WithBacking(x))}, nil
}

// receiveLogits is the client's output: the logits of the batch it shared
// last, revealed to it alone.
func (c *client) receiveLogits(_ context.Context, values []*tensor.Dense) error {
	if len(values) != 1 {
		return fmt.Errorf("%s: %d output tensors, want the logits", c.name, len(values))
	}
	got, err := model.Float64s(values[0], []int{c.batch, c.arch.Classes})
	if err != nil {
		return fmt.Errorf("%s: logits: %w", c.name, err)
	}
	done := len(c.logits) / c.arch.Classes
	if done >= c.n || done >= c.batches*c.batch {
		return fmt.Errorf("%s: logits of a batch it did not send", c.name)
	}
	keep := min(c.batch, c.n-done)
	for i, v := range got[:keep*c.arch.Classes] {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%s: logit %d of image %d is %v", c.name, i%c.arch.Classes, done+i/c.arch.Classes, v)
		}
	}
	c.logits = append(c.logits, got[:keep*c.arch.Classes]...)
	return nil
}

// Predictions returns the class of each image classified so far.
func (c *client) Predictions() []int { return argmax(c.logits, c.arch.Classes) }

// Accuracy returns the fraction of the images classified so far whose
// class is their label.
func (c *client) Accuracy() float64 {
	pred := c.Predictions()
	if len(pred) == 0 {
		return 0
	}
	right := 0
	for i, p := range pred {
		right += b2i(p == int(c.labels[i]))
	}
	return float64(right) / float64(len(pred))
}

// modelOwner holds the trained classifier and shares its parameters each
// iteration; it receives nothing. Its function is called from one
// goroutine at a time; the classifier itself is read-only.
type modelOwner struct {
	name string
	c    *classifier // nil on a stand-in
}

// shareWeights is the model owner's private input: W1, b1, W2, b2, fresh
// copies each iteration, as the engine takes over what it is given.
func (m *modelOwner) shareWeights(_ context.Context, _ []*tensor.Dense) ([]*tensor.Dense, error) {
	if m.c == nil {
		return nil, fmt.Errorf("%s: %w", m.name, errStandIn)
	}
	return model.Clone(m.c.Params()), nil
}

// prediction is the graph of a private prediction and its players.
type prediction struct {
	graph  *graph.Graph
	op     *graph.Op // one batch
	client *client
	owner  *modelOwner
}

// newPrediction links the players: the client's batch and the model
// owner's parameters enter as private inputs, the servers compute the
// forward pass on shares with p in place of the sigmoid, and only the
// client receives the logits. The architecture is public; owner's
// classifier is nil on hosts other than the model owner's.
func newPrediction(arch model.Architecture, owner *classifier, cl *client, p sigmoidApprox) (*prediction, error) {
	if owner != nil && owner.arch != arch {
		return nil, fmt.Errorf("%s: the classifier is a %v network, the prediction expects %v", players.ModelOwner, owner.arch, arch)
	}
	pr := &prediction{client: cl, owner: &modelOwner{name: players.ModelOwner, c: owner}}
	shapes := make([]graph.Shape, 0, model.NumTensors)
	for _, s := range arch.ParamShapes() {
		shapes = append(shapes, graph.Shape(s))
	}
	g := graph.New()
	x := g.DefinePrivateInput(cl.name, cl.shareBatch, []graph.Shape{{cl.batch, arch.Inputs}})[0]
	w := g.DefinePrivateInput(pr.owner.name, pr.owner.shareWeights, shapes)
	logits := privateLogits(g, x, w, p)
	pr.op = g.DefineOutput(cl.name, []*graph.Private{logits}, cl.receiveLogits)
	pr.graph = g
	return pr, g.Err()
}
