package graph

import "math"

// Products and the verbs a private forward pass needs: element-wise and
// matrix products, squares, dot products, sums along an axis, a bias added
// to every row, and a public constant added to every element. Their names
// follow TF Encrypted's tfe.mul, tfe.matmul, tfe.square, tfe.reduce_sum;
// as Go has no overloading, an operand that is public says so in the
// verb's name (MulPublicTensor, MatMulPublic, PublicMatMul), in the order
// the operands are given.
//
// Each verb checks its operands' shapes when the graph is built and
// records an error naming the node, the operands and their shapes, as the
// other verbs do. Every result must stay within the protocol's fixed-point
// range, which the graph cannot check: see the protocol's documentation
// (protocol/pond/README.md gives the ranges and error bounds of Pond's
// products).

// PrivateProduct reports whether nodes of kind k multiply two private
// values (mul, square, matmul, dot). A protocol needs more than local
// steps for these: Pond draws a Beaver triple from its crypto producer for
// each. Products with a public operand or constant are not private
// products.
func (k Kind) PrivateProduct() bool {
	switch k {
	case KindMul, KindSquare, KindMatMul, KindDot:
		return true
	}
	return false
}

// Public reports whether the output r names is a public tensor, held in
// the clear by the node's player, rather than a private one.
func (r Ref) Public() bool {
	return r.Node.kind == KindPublicInput || r.Node.kind == KindLocal
}

// PublicOperand returns the index in Inputs of the public operand of a
// mul-public-tensor or matmul-public node (0 for PublicMatMul, 1 for
// MatMulPublic and MulPublicTensor), or −1 for a node of another kind or
// one whose public operand was refused at build time.
func (n *Node) PublicOperand() int {
	if n.kind != KindMulPublicTensor && n.kind != KindMatMulPublic {
		return -1
	}
	for i, in := range n.inputs {
		if in.Public() {
			return i
		}
	}
	return -1
}

// Axis returns the axis a reduce-sum node sums along, or −1 for a node of
// another kind.
func (n *Node) Axis() int {
	if n.kind != KindReduceSum {
		return -1
	}
	// A reduce-sum node has no public constant, so its field holds the
	// axis, a small integer that a float64 stores exactly.
	return int(n.constant)
}

// publicOperand checks the public handle given as operand i of node n.
func (g *Graph) publicOperand(n *Node, i int, t *Public) (Ref, bool) {
	switch {
	case t == nil:
		g.fail("%s: operand %d is nil", n, i)
	case t.ref.Node.g != g:
		g.fail("%s: operand %d (%s) belongs to another graph", n, i, t)
	default:
		return t.ref, true
	}
	return Ref{}, false
}

// binary adds a node of the given kind for two operands, each either a
// *Private or a *Public, and records the operands that pass the nil and
// graph checks. It reports whether both did.
func (g *Graph) binary(kind Kind, x, y any) (*Node, bool) {
	n := g.add(kind, "", nil, nil)
	ok := true
	for i, t := range []any{x, y} {
		var ref Ref
		var good bool
		switch t := t.(type) {
		case *Private:
			ref, good = g.privateRef(n.String(), i, t, false)
		case *Public:
			ref, good = g.publicOperand(n, i, t)
		}
		if good {
			n.inputs = append(n.inputs, ref)
		}
		ok = ok && good
	}
	return n, ok
}

// Mul returns the element-wise product x ⊙ y of two private tensors of one
// shape, as TF Encrypted's tfe.mul. In Pond it costs a Beaver triple: see
// Kind.PrivateProduct.
func (g *Graph) Mul(x, y *Private) *Private {
	return g.sameShape(KindMul, x, y)
}

// MulPublicTensor returns the element-wise product x ⊙ y of a private
// tensor and a public tensor of the same shape. y is sent in the clear to
// the protocol's servers; the product needs no triple.
func (g *Graph) MulPublicTensor(x *Private, y *Public) *Private {
	return g.sameShape(KindMulPublicTensor, x, y)
}

// sameShape adds an element-wise binary node whose operands must have one
// shape; the result has that shape.
func (g *Graph) sameShape(kind Kind, x, y any) *Private {
	n, ok := g.binary(kind, x, y)
	n.outputs = []Shape{{1}}
	if len(n.inputs) > 0 {
		n.outputs = []Shape{n.inputs[0].Shape()}
	}
	if ok {
		a, b := n.inputs[0], n.inputs[1]
		if !a.Shape().Equal(b.Shape()) {
			g.fail("%s: shape mismatch: %s has shape %v but %s has shape %v", n, a, a.Shape(), b, b.Shape())
		}
	}
	return &Private{Ref{n, 0}}
}

// Square returns the element-wise square x ⊙ x of a private tensor, as TF
// Encrypted's tfe.square. It is cheaper than Mul(x, x): Pond's triple for
// it is a square pair, and only x − a is opened.
func (g *Graph) Square(x *Private) *Private {
	return g.elementwise(KindSquare, []*Private{x})
}

// MatMul returns the matrix product x · y of a private m×k matrix and a
// private k×n matrix, an m×n matrix, as TF Encrypted's tfe.matmul. In Pond
// it costs one Beaver triple of the product's shape.
func (g *Graph) MatMul(x, y *Private) *Private {
	return g.matMul(KindMatMul, x, y)
}

// MatMulPublic returns the matrix product x · w of a private m×k matrix
// and a public k×n matrix, for instance a model's weights held by its
// owner and sent in the clear to the protocol's servers. The product needs
// no triple: each server multiplies its share by w.
func (g *Graph) MatMulPublic(x *Private, w *Public) *Private {
	return g.matMul(KindMatMulPublic, x, w)
}

// PublicMatMul returns the matrix product w · x of a public m×k matrix and
// a private k×n matrix, as MatMulPublic with the public operand on the
// left.
func (g *Graph) PublicMatMul(w *Public, x *Private) *Private {
	return g.matMul(KindMatMulPublic, w, x)
}

func (g *Graph) matMul(kind Kind, x, y any) *Private {
	n, ok := g.binary(kind, x, y)
	n.outputs = []Shape{{1}}
	if !ok {
		return &Private{Ref{n, 0}}
	}
	a, b := n.inputs[0], n.inputs[1]
	matrices := true
	for i, r := range n.inputs {
		if len(r.Shape()) != 2 {
			g.fail("%s: operand %d (%s) has shape %v, want a matrix (2 dimensions)", n, i, r, r.Shape())
			matrices = false
		}
	}
	if !matrices {
		return &Private{Ref{n, 0}}
	}
	if a.Shape()[1] != b.Shape()[0] {
		g.fail("%s: inner dimensions differ: %s has shape %v but %s has shape %v (want (m, k) and (k, n))",
			n, a, a.Shape(), b, b.Shape())
	}
	n.outputs = []Shape{{a.Shape()[0], b.Shape()[1]}}
	return &Private{Ref{n, 0}}
}

// Dot returns the dot product of two private tensors along x's last axis:
// for x and y vectors of k elements, the sum of x ⊙ y, of shape (1); for x
// an m×k matrix and y a vector of k elements, the m dot products of x's
// rows with y, of shape (m). It is MatMul with y as a k×1 matrix, and sums
// each row before truncating once, so its error is that of one product.
func (g *Graph) Dot(x, y *Private) *Private {
	n, ok := g.binary(KindDot, x, y)
	n.outputs = []Shape{{1}}
	if !ok {
		return &Private{Ref{n, 0}}
	}
	a, b := n.inputs[0], n.inputs[1]
	as, bs := a.Shape(), b.Shape()
	switch {
	case len(as) != 1 && len(as) != 2:
		g.fail("%s: operand 0 (%s) has shape %v, want a vector (k) or a matrix (m, k)", n, a, as)
	case len(bs) != 1:
		g.fail("%s: operand 1 (%s) has shape %v, want a vector (k)", n, b, bs)
	case as[len(as)-1] != bs[0]:
		g.fail("%s: inner dimensions differ: %s has shape %v but %s has shape %v (want (k) or (m, k), and (k))",
			n, a, as, b, bs)
	case len(as) == 2:
		n.outputs = []Shape{{as[0]}}
	}
	return &Private{Ref{n, 0}}
}

// ReduceSum returns the sum of a private vector or matrix along axis, as
// TF Encrypted's tfe.reduce_sum: a vector of k elements sums to shape (1)
// along axis 0; an m×n matrix sums to its n column sums along axis 0 and
// to its m row sums along axis 1. Node.Axis returns the axis. The sum is
// exact in the ring, so it adds no error; the sum itself must stay within
// the fixed-point range.
func (g *Graph) ReduceSum(x *Private, axis int) *Private {
	p := g.elementwise(KindReduceSum, []*Private{x})
	n := p.ref.Node
	n.constant = float64(axis)
	if len(n.inputs) == 0 {
		return p
	}
	in := n.inputs[0]
	s := in.Shape()
	switch {
	case len(s) != 1 && len(s) != 2:
		g.fail("%s: %s has shape %v, want a vector or a matrix", n, in, s)
	case axis < 0 || axis >= len(s):
		g.fail("%s: axis %d of %s, which has shape %v (want 0..%d)", n, axis, in, s, len(s)-1)
		n.constant = 0
	case len(s) == 1:
		n.outputs = []Shape{{1}}
	case axis == 0:
		n.outputs = []Shape{{s[1]}}
	default:
		n.outputs = []Shape{{s[0]}}
	}
	return p
}

// AddBias returns x + b with the private vector b (n elements) added to
// every row of the private m×n matrix x, as TF Encrypted's tfe.add
// broadcasts a layer's bias over a batch. It is local to each server, as
// Add is.
func (g *Graph) AddBias(x, b *Private) *Private {
	n, ok := g.binary(KindAddBias, x, b)
	n.outputs = []Shape{{1}}
	if !ok {
		return &Private{Ref{n, 0}}
	}
	xr, br := n.inputs[0], n.inputs[1]
	xs, bs := xr.Shape(), br.Shape()
	n.outputs = []Shape{xs}
	switch {
	case len(xs) != 2:
		g.fail("%s: operand 0 (%s) has shape %v, want a matrix (m, n)", n, xr, xs)
	case len(bs) != 1 || bs[0] != xs[1]:
		g.fail("%s: bias %s has shape %v, want (%d) to add to every row of %s, which has shape %v",
			n, br, bs, xs[1], xr, xs)
	}
	return &Private{Ref{n, 0}}
}

// AddConstant returns x + c, the public constant c added to every element
// of x. It is local: one server adds the encoding of c to its share.
// Node.Constant returns c.
func (g *Graph) AddConstant(x *Private, c float64) *Private {
	p := g.elementwise(KindAddConstant, []*Private{x})
	p.ref.Node.constant = c
	if math.IsNaN(c) || math.IsInf(c, 0) {
		g.fail("%s: constant %v is not finite", p.ref.Node, c)
	}
	return p
}
