package graph

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBuildPrivatePrediction builds the forward pass of the private-
// prediction example: a client's batch and a model owner's weights enter
// privately, a one-hidden-layer network with a polynomial sigmoid runs on
// shares, and only the client learns the logits.
func TestBuildPrivatePrediction(t *testing.T) {
	g := New()
	x := g.DefinePrivateInput("prediction-client", constFn, []Shape{{4, 784}})[0]
	w := g.DefinePrivateInput("model-owner", constFn, []Shape{{784, 512}, {512}, {512, 10}, {10}})

	z := g.AddBias(g.MatMul(x, w[0]), w[1])
	// σ(z) ≈ 0.5 + u·(c1 + c3·u²), u = z/8
	u := g.MulPublic(z, 1.0/8)
	h := g.AddConstant(g.Mul(g.AddConstant(g.MulPublic(g.Square(u), -0.1), 0.6), u), 0.5)
	logits := g.AddBias(g.MatMul(h, w[2]), w[3])
	op := g.DefineOutput("prediction-client", []*Private{logits}, sinkFn)
	require.NoError(t, g.Err())

	assert.Equal(t, Shape{4, 512}, z.Shape())
	assert.Equal(t, Shape{4, 512}, h.Shape())
	assert.Equal(t, Shape{4, 10}, logits.Shape())
	assert.Equal(t, KindOutput, op.Node().Kind())

	products := 0
	for _, n := range g.Nodes() {
		if n.Kind().PrivateProduct() {
			products++
		}
		for _, in := range n.Inputs() {
			assert.Less(t, in.Node.ID(), n.ID(), "IDs are a topological order")
		}
	}
	assert.Equal(t, 4, products, "two matmuls, a square and a mul")
}

func TestProductShapes(t *testing.T) {
	g := New()
	p := g.DefinePrivateInput("a", constFn, []Shape{{2, 3}, {3, 4}, {3}, {2, 3}, {4}})
	w := g.DefinePublicInput("m", constFn, []Shape{{3, 5}, {6, 2}, {2, 3}})
	m23, m34, v3, n23, v4 := p[0], p[1], p[2], p[3], p[4]

	tests := []struct {
		name string
		got  *Private
		kind Kind
		want Shape
	}{
		{"mul", g.Mul(m23, n23), KindMul, Shape{2, 3}},
		{"mul by itself", g.Mul(v3, v3), KindMul, Shape{3}},
		{"mul public tensor", g.MulPublicTensor(m23, w[2]), KindMulPublicTensor, Shape{2, 3}},
		{"square", g.Square(m34), KindSquare, Shape{3, 4}},
		{"matmul", g.MatMul(m23, m34), KindMatMul, Shape{2, 4}},
		{"matmul public right", g.MatMulPublic(m23, w[0]), KindMatMulPublic, Shape{2, 5}},
		{"matmul public left", g.PublicMatMul(w[1], m23), KindMatMulPublic, Shape{6, 3}},
		{"dot of vectors", g.Dot(v3, v3), KindDot, Shape{1}},
		{"dot of matrix rows", g.Dot(m23, v3), KindDot, Shape{2}},
		{"reduce vector", g.ReduceSum(v4, 0), KindReduceSum, Shape{1}},
		{"reduce columns", g.ReduceSum(m34, 0), KindReduceSum, Shape{4}},
		{"reduce rows", g.ReduceSum(m34, 1), KindReduceSum, Shape{3}},
		{"add bias", g.AddBias(m34, v4), KindAddBias, Shape{3, 4}},
		{"add constant", g.AddConstant(m23, -2.5), KindAddConstant, Shape{2, 3}},
	}
	require.NoError(t, g.Err())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.got.Ref().Node
			assert.Equal(t, tt.kind, n.Kind())
			assert.True(t, n.Kind().Private(), "%s computes inside the protocol", n.Kind())
			assert.Equal(t, tt.want, tt.got.Shape())
			assert.Empty(t, n.Player(), "private nodes run on the protocol's servers")
		})
	}
}

func TestProductAccessors(t *testing.T) {
	g := New()
	p := g.DefinePrivateInput("a", constFn, []Shape{{2, 3}, {3}})
	w := g.DefinePublicInput("m", constFn, []Shape{{3, 3}, {2, 2}, {2, 3}})

	right := g.MatMulPublic(p[0], w[0]).Ref().Node
	left := g.PublicMatMul(w[1], p[0]).Ref().Node
	mulT := g.MulPublicTensor(p[0], w[2]).Ref().Node
	private := g.MatMul(p[0], g.DefinePrivateInput("b", constFn, []Shape{{3, 1}})[0]).Ref().Node
	sum := g.ReduceSum(p[0], 1).Ref().Node
	add := g.AddConstant(p[1], 0.25).Ref().Node
	require.NoError(t, g.Err())

	assert.Equal(t, 1, right.PublicOperand())
	assert.Equal(t, 0, left.PublicOperand())
	assert.Equal(t, 1, mulT.PublicOperand())
	assert.Equal(t, -1, private.PublicOperand())
	assert.Equal(t, -1, sum.PublicOperand())
	assert.True(t, right.Inputs()[1].Public())
	assert.False(t, right.Inputs()[0].Public())

	assert.Equal(t, 1, sum.Axis())
	assert.Equal(t, -1, right.Axis())
	assert.Equal(t, Shape{2}, sum.Outputs()[0])
	assert.Equal(t, 0.25, add.Constant())

	for k, want := range map[Kind]bool{
		KindMul: true, KindSquare: true, KindMatMul: true, KindDot: true,
		KindMulPublicTensor: false, KindMatMulPublic: false, KindReduceSum: false,
		KindAddBias: false, KindAddConstant: false, KindMulPublic: false, KindAddN: false,
		KindPrivateInput: false,
	} {
		assert.Equal(t, want, k.PrivateProduct(), "%s", k)
	}
	for _, k := range []Kind{KindMul, KindMulPublicTensor, KindSquare, KindMatMul, KindMatMulPublic,
		KindDot, KindReduceSum, KindAddBias, KindAddConstant} {
		assert.NotContains(t, k.String(), "Kind(", "kind %d has a name", int(k))
	}
}

func TestProductBuildErrors(t *testing.T) {
	other := New()
	foreignPrivate := other.DefinePrivateInput("a", constFn, []Shape{{2, 2}})[0]
	foreignPublic := other.DefinePublicInput("m", constFn, []Shape{{2, 2}})[0]

	tests := []struct {
		name  string
		build func(g *Graph, p []*Private, w []*Public)
		want  string
	}{
		{"mul shape mismatch", func(g *Graph, p []*Private, _ []*Public) { g.Mul(p[0], p[1]) },
			`mul#2: shape mismatch: private-input#0 on "a"[0] has shape (2, 3) but private-input#0 on "a"[1] has shape (3, 4)`},
		{"mul nil operand", func(g *Graph, p []*Private, _ []*Public) { g.Mul(p[0], nil) }, "mul#2: operand 1 is nil"},
		{"mul foreign operand", func(g *Graph, p []*Private, _ []*Public) { g.Mul(foreignPrivate, p[0]) },
			"mul#2: operand 0 (private-input#0 on \"a\") belongs to another graph"},
		{"mul public tensor mismatch", func(g *Graph, p []*Private, w []*Public) { g.MulPublicTensor(p[0], w[0]) },
			`mul-public-tensor#2: shape mismatch: private-input#0 on "a"[0] has shape (2, 3) but public-input#1 on "m"[0] has shape (3, 5)`},
		{"mul public tensor nil", func(g *Graph, p []*Private, _ []*Public) { g.MulPublicTensor(p[0], nil) },
			"mul-public-tensor#2: operand 1 is nil"},
		{"mul public tensor foreign", func(g *Graph, p []*Private, _ []*Public) { g.MulPublicTensor(p[0], foreignPublic) },
			`mul-public-tensor#2: operand 1 (public-input#1 on "m") belongs to another graph`},
		{"square nil", func(g *Graph, _ []*Private, _ []*Public) { g.Square(nil) }, "square#2: operand 0 is nil"},
		{"matmul inner mismatch", func(g *Graph, p []*Private, _ []*Public) { g.MatMul(p[1], p[0]) },
			`matmul#2: inner dimensions differ: private-input#0 on "a"[1] has shape (3, 4) but private-input#0 on "a"[0] has shape (2, 3) (want (m, k) and (k, n))`},
		{"matmul of a vector", func(g *Graph, p []*Private, _ []*Public) { g.MatMul(p[2], p[1]) },
			`matmul#2: operand 0 (private-input#0 on "a"[2]) has shape (3), want a matrix (2 dimensions)`},
		{"matmul nil", func(g *Graph, p []*Private, _ []*Public) { g.MatMul(nil, p[1]) }, "matmul#2: operand 0 is nil"},
		{"matmul public inner mismatch", func(g *Graph, p []*Private, w []*Public) { g.MatMulPublic(p[1], w[0]) },
			`matmul-public#2: inner dimensions differ: private-input#0 on "a"[1] has shape (3, 4) but public-input#1 on "m"[0] has shape (3, 5)`},
		{"public matmul inner mismatch", func(g *Graph, p []*Private, w []*Public) { g.PublicMatMul(w[0], p[0]) },
			`matmul-public#2: inner dimensions differ: public-input#1 on "m"[0] has shape (3, 5) but private-input#0 on "a"[0] has shape (2, 3)`},
		{"public matmul of a vector", func(g *Graph, p []*Private, w []*Public) { g.PublicMatMul(w[1], p[0]) },
			`matmul-public#2: operand 0 (public-input#1 on "m"[1]) has shape (5), want a matrix (2 dimensions)`},
		{"matmul public nil", func(g *Graph, p []*Private, _ []*Public) { g.MatMulPublic(p[0], nil) },
			"matmul-public#2: operand 1 is nil"},
		{"dot mismatch", func(g *Graph, p []*Private, _ []*Public) { g.Dot(p[0], p[3]) },
			`dot#2: inner dimensions differ: private-input#0 on "a"[0] has shape (2, 3) but private-input#0 on "a"[3] has shape (4)`},
		{"dot with a matrix on the right", func(g *Graph, p []*Private, _ []*Public) { g.Dot(p[2], p[0]) },
			`dot#2: operand 1 (private-input#0 on "a"[0]) has shape (2, 3), want a vector (k)`},
		{"dot of a 3-D tensor", func(g *Graph, p []*Private, _ []*Public) { g.Dot(p[4], p[2]) },
			`dot#2: operand 0 (private-input#0 on "a"[4]) has shape (2, 2, 3), want a vector (k) or a matrix (m, k)`},
		{"dot nil", func(g *Graph, p []*Private, _ []*Public) { g.Dot(p[2], nil) }, "dot#2: operand 1 is nil"},
		{"reduce-sum bad axis", func(g *Graph, p []*Private, _ []*Public) { g.ReduceSum(p[0], 2) },
			`reduce-sum#2: axis 2 of private-input#0 on "a"[0], which has shape (2, 3) (want 0..1)`},
		{"reduce-sum negative axis", func(g *Graph, p []*Private, _ []*Public) { g.ReduceSum(p[2], -1) },
			`reduce-sum#2: axis -1 of private-input#0 on "a"[2], which has shape (3) (want 0..0)`},
		{"reduce-sum of a 3-D tensor", func(g *Graph, p []*Private, _ []*Public) { g.ReduceSum(p[4], 0) },
			`reduce-sum#2: private-input#0 on "a"[4] has shape (2, 2, 3), want a vector or a matrix`},
		{"reduce-sum nil", func(g *Graph, _ []*Private, _ []*Public) { g.ReduceSum(nil, 0) }, "reduce-sum#2: operand 0 is nil"},
		{"bias of the wrong length", func(g *Graph, p []*Private, _ []*Public) { g.AddBias(p[0], p[3]) },
			`add-bias#2: bias private-input#0 on "a"[3] has shape (4), want (3) to add to every row of private-input#0 on "a"[0], which has shape (2, 3)`},
		{"bias that is a matrix", func(g *Graph, p []*Private, _ []*Public) { g.AddBias(p[0], p[0]) },
			`add-bias#2: bias private-input#0 on "a"[0] has shape (2, 3), want (3)`},
		{"bias added to a vector", func(g *Graph, p []*Private, _ []*Public) { g.AddBias(p[2], p[2]) },
			`add-bias#2: operand 0 (private-input#0 on "a"[2]) has shape (3), want a matrix (m, n)`},
		{"bias nil", func(g *Graph, p []*Private, _ []*Public) { g.AddBias(nil, p[2]) }, "add-bias#2: operand 0 is nil"},
		{"NaN constant", func(g *Graph, p []*Private, _ []*Public) { g.AddConstant(p[0], math.NaN()) },
			"add-constant#2: constant NaN is not finite"},
		{"infinite constant", func(g *Graph, p []*Private, _ []*Public) { g.AddConstant(p[0], math.Inf(-1)) },
			"add-constant#2: constant -Inf is not finite"},
		{"add-constant nil", func(g *Graph, _ []*Private, _ []*Public) { g.AddConstant(nil, 1) },
			"add-constant#2: operand 0 is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := New()
			p := g.DefinePrivateInput("a", constFn, []Shape{{2, 3}, {3, 4}, {3}, {4}, {2, 2, 3}})
			w := g.DefinePublicInput("m", constFn, []Shape{{3, 5}, {5}})
			require.NoError(t, g.Err())
			tt.build(g, p, w)
			err := g.Err()
			require.ErrorIs(t, err, ErrBuild)
			assert.Contains(t, err.Error(), tt.want)
			for _, n := range g.Nodes() {
				for i, s := range n.Outputs() {
					assert.True(t, s.valid(), "%s: output %d has usable shape %v after an error", n, i, s)
				}
			}
		})
	}
}

func TestWriteDOTPublicOperand(t *testing.T) {
	g := New()
	x := g.DefinePrivateInput("client", constFn, []Shape{{1, 4}})[0]
	w := g.DefinePublicInput("model-owner", constFn, []Shape{{4, 2}})[0]
	g.DefineOutput("client", []*Private{g.MatMulPublic(x, w)}, sinkFn)
	require.NoError(t, g.Err())
	var buf bytes.Buffer
	require.NoError(t, g.WriteDOT(&buf))
	dot := buf.String()
	assert.Contains(t, dot, `n2 [label="matmul-public#2", shape=ellipse];`)
	assert.Contains(t, dot, `n0 -> n2 [label="(1, 4)", style=dashed];`)
	assert.Contains(t, dot, `n1 -> n2 [label="(4, 2)", style=solid];`, "a public operand travels in the clear")
}

// A private layer: a client's batch times a model owner's weights, plus a
// bias, both private; Kind.PrivateProduct picks out the nodes a protocol
// needs more than local steps for.
func ExampleGraph_MatMul() {
	g := New()
	x := g.DefinePrivateInput("client", constFn, []Shape{{4, 784}})[0]
	w := g.DefinePrivateInput("model-owner", constFn, []Shape{{784, 512}, {512}})
	z := g.AddBias(g.MatMul(x, w[0]), w[1])
	h := g.AddConstant(g.MulPublic(g.Mul(z, g.Square(z)), -0.01), 0.5)
	g.DefineOutput("client", []*Private{g.ReduceSum(h, 1)}, sinkFn)
	if err := g.Err(); err != nil {
		fmt.Println(err)
		return
	}
	for _, n := range g.Nodes() {
		if n.Kind().PrivateProduct() {
			fmt.Println(n, n.Inputs()[0].Shape(), "→", n.Outputs()[0])
		}
	}
	// Output:
	// matmul#2 (4, 784) → (4, 512)
	// square#4 (4, 512) → (4, 512)
	// mul#5 (4, 512) → (4, 512)
}
