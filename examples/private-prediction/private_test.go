package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
)

func noInput(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) { return nil, nil }
func noOutput(context.Context, []*tensor.Dense) error                   { return nil }

// countKinds counts the nodes of g by kind.
func countKinds(g *graph.Graph) map[graph.Kind]int {
	n := map[graph.Kind]int{}
	for _, node := range g.Nodes() {
		n[node.Kind()]++
	}
	return n
}

// TestPrivateSigmoidGraph checks that the polynomial's private evaluation
// builds from the graph's verbs with the products Products counts, and
// that its steps are those of Eval (both come from evalSigmoid).
func TestPrivateSigmoidGraph(t *testing.T) {
	for _, degree := range []int{1, 3, 5, 19} {
		p, err := fitSigmoid(sigmoidInterval, degree)
		require.NoError(t, err)
		g := graph.New()
		z := g.DefinePrivateInput("client", noInput, []graph.Shape{{4, 512}})[0]
		h := privateSigmoid(g, z, p)
		g.DefineOutput("client", []*graph.Private{h}, noOutput)
		require.NoError(t, g.Err(), "degree %d", degree)
		assert.Equal(t, graph.Shape{4, 512}, h.Shape())

		kinds := countKinds(g)
		products := 0
		for k, n := range kinds {
			if k.PrivateProduct() {
				products += n
			}
		}
		assert.Equal(t, p.Products(), products, "degree %d", degree)
		if degree > 1 {
			assert.Equal(t, 1, kinds[graph.KindSquare], "degree %d: one square", degree)
			assert.Equal(t, 2, kinds[graph.KindMulPublic], "degree %d: 2/R and the leading coefficient", degree)
		}
	}
}

// TestPrivateLogitsGraph builds the private prediction's forward pass and
// checks its shapes; weights of the wrong shapes are build errors naming
// the nodes.
func TestPrivateLogitsGraph(t *testing.T) {
	c, err := loadClassifier()
	require.NoError(t, err)
	shapes := make([]graph.Shape, 0, 4)
	for _, s := range c.arch.ParamShapes() {
		shapes = append(shapes, graph.Shape(s))
	}
	p := predictionSigmoid()

	g := graph.New()
	x := g.DefinePrivateInput("prediction-client", noInput, []graph.Shape{{8, 784}})[0]
	w := g.DefinePrivateInput("model-owner", noInput, shapes)
	logits := privateLogits(g, x, w, p)
	g.DefineOutput("prediction-client", []*graph.Private{logits}, noOutput)
	require.NoError(t, g.Err())
	assert.Equal(t, graph.Shape{8, 10}, logits.Shape())
	assert.Equal(t, 2, countKinds(g)[graph.KindMatMul])
	assert.Equal(t, 2, countKinds(g)[graph.KindAddBias])

	g = graph.New()
	x = g.DefinePrivateInput("prediction-client", noInput, []graph.Shape{{8, 784}})[0]
	w = g.DefinePrivateInput("model-owner", noInput, []graph.Shape{{512, 784}, {512}, {512, 10}, {10}})
	privateLogits(g, x, w, p)
	assert.ErrorContains(t, g.Err(), `matmul#2: inner dimensions differ: private-input#0 on "prediction-client" has shape (8, 784) but private-input#1 on "model-owner"[0] has shape (512, 784)`)

	g = graph.New()
	x = g.DefinePrivateInput("prediction-client", noInput, []graph.Shape{{8, 784}})[0]
	privateLogits(g, x, g.DefinePrivateInput("model-owner", noInput, shapes[:2]), p)
	assert.ErrorContains(t, g.Err(), "operand 1 is nil")
}
