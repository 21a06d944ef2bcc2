package main

import (
	"github.com/shareflow/shareflow/graph"
)

// graphArith is arith on private tensors: each operation adds a node to
// a graph, so evalSigmoid builds the polynomial's private evaluation.
type graphArith struct{ g *graph.Graph }

func (a graphArith) mulConst(x *graph.Private, c float64) *graph.Private { return a.g.MulPublic(x, c) }
func (a graphArith) addConst(x *graph.Private, c float64) *graph.Private {
	return a.g.AddConstant(x, c)
}
func (a graphArith) square(x *graph.Private) *graph.Private { return a.g.Square(x) }
func (a graphArith) mul(x, y *graph.Private) *graph.Private { return a.g.Mul(x, y) }
func (a graphArith) sub(x, y *graph.Private) *graph.Private { return a.g.Sub(x, y) }

// privateSigmoid adds to g the private evaluation of p on every element of
// z: the same steps as p.Eval, on secret shares.
func privateSigmoid(g *graph.Graph, z *graph.Private, p sigmoidApprox) *graph.Private {
	return evalSigmoid(p, arith[*graph.Private](graphArith{g}), z)
}

// privateLogits adds to g the network's forward pass on private tensors:
// x holds a batch of standardized images (batch × Inputs) and w the
// parameters W1, b1, W2, b2; the result is the batch's logits
// (batch × Classes), with p in place of the sigmoid.
func privateLogits(g *graph.Graph, x *graph.Private, w []*graph.Private, p sigmoidApprox) *graph.Private {
	var ws [4]*graph.Private // a short list is a nil-operand build error
	copy(ws[:], w)
	z := g.AddBias(g.MatMul(x, ws[0]), ws[1])
	h := privateSigmoid(g, z, p)
	return g.AddBias(g.MatMul(h, ws[2]), ws[3])
}
