package graph

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/players"
)

// Func computes a player's tensors from the public tensors it receives. It
// runs on its player once per iteration and must return one float64 tensor
// of the declared shape per declared output. Its inputs are its own; it
// may keep or modify them. The tensors it returns are handed over to the
// engine, which reads them without copying: the function must not modify
// them afterwards (return a fresh tensor or a copy each iteration).
type Func func(ctx context.Context, inputs []*tensor.Dense) ([]*tensor.Dense, error)

// OutputFunc receives revealed values on the output player, once per
// iteration, in the order they were given to DefineOutput.
type OutputFunc func(ctx context.Context, values []*tensor.Dense) error

// Shape is a tensor's dimensions. Every dimension is at least one; the
// empty shape is a scalar.
type Shape []int

// Size returns the number of elements.
func (s Shape) Size() int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// Equal reports whether s and t have the same dimensions.
func (s Shape) Equal(t Shape) bool {
	if len(s) != len(t) {
		return false
	}
	for i := range s {
		if s[i] != t[i] {
			return false
		}
	}
	return true
}

// String formats the shape as (d0, d1, ...).
func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func (s Shape) valid() bool {
	n := 1
	for _, d := range s {
		if d < 1 || n > math.MaxInt32/d {
			return false
		}
		n *= d
	}
	return true
}

// Kind is what a node does.
type Kind int

// The kinds of node.
const (
	KindPublicInput  Kind = iota + 1 // a player produces public tensors
	KindLocal                        // a player computes public tensors from public inputs
	KindPrivateInput                 // a player produces tensors that enter the protocol secret-shared
	KindAddN                         // private sum of private tensors
	KindSub                          // private difference
	KindNeg                          // private negation
	KindMulPublic                    // private tensor times a public constant
	KindDiv                          // private tensor divided by a public constant
	KindOutput                       // reveal private tensors to one player

	// Products and the other verbs of a private forward pass (products.go).
	KindMul             // private ⊙ private, element by element
	KindMulPublicTensor // private ⊙ public tensor, element by element
	KindSquare          // private ⊙ itself
	KindMatMul          // private matrix product, both operands private
	KindMatMulPublic    // matrix product of a private and a public matrix
	KindDot             // private dot product along the last axis
	KindReduceSum       // private sum along one axis
	KindAddBias         // private matrix plus a private row vector on every row
	KindAddConstant     // private tensor plus a public constant

	// Cohorts (cohort.go).
	KindCohortInput  // every member of a round's cohort produces tensors that enter the protocol secret-shared
	KindMean         // private mean of a cohort tensor over a round's survivors
	KindWeightedMean // private weighted mean of a cohort tensor over a round's survivors
	KindSumCohort    // private sum of a cohort tensor over a round's survivors
)

var kindNames = map[Kind]string{
	KindPublicInput: "public-input", KindLocal: "local", KindPrivateInput: "private-input",
	KindAddN: "add-n", KindSub: "sub", KindNeg: "neg", KindMulPublic: "mul-public",
	KindDiv: "div", KindOutput: "output",
	KindMul: "mul", KindMulPublicTensor: "mul-public-tensor", KindSquare: "square",
	KindMatMul: "matmul", KindMatMulPublic: "matmul-public", KindDot: "dot",
	KindReduceSum: "reduce-sum", KindAddBias: "add-bias", KindAddConstant: "add-constant",
	KindCohortInput: "cohort-input", KindMean: "mean", KindWeightedMean: "weighted-mean", KindSumCohort: "sum-cohort",
}

// String names the kind.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Private reports whether the node computes inside the protocol.
func (k Kind) Private() bool {
	switch k {
	case KindAddN, KindSub, KindNeg, KindMulPublic, KindDiv:
		return true
	case KindMul, KindMulPublicTensor, KindSquare, KindMatMul, KindMatMulPublic,
		KindDot, KindReduceSum, KindAddBias, KindAddConstant:
		return true
	case KindMean, KindWeightedMean, KindSumCohort:
		return true
	}
	return false
}

// Node is one operation of a graph. Nodes are created by the Graph's
// verbs and are read-only.
type Node struct {
	g        *Graph
	id       int
	kind     Kind
	player   string
	inputs   []Ref
	outputs  []Shape
	constant float64
	fn       Func
	outFn    OutputFunc
	cohort   *Cohort // cohort-input and aggregation nodes
}

// Ref names one output of a node.
type Ref struct {
	Node  *Node
	Index int
}

// String names the output, e.g. "private-input#3[1]".
func (r Ref) String() string {
	if len(r.Node.outputs) == 1 {
		return r.Node.String()
	}
	return fmt.Sprintf("%s[%d]", r.Node, r.Index)
}

// Shape returns the shape of the output.
func (r Ref) Shape() Shape { return r.Node.outputs[r.Index] }

// ID returns the node's position in the graph, which is also a topological
// order: a node's inputs have smaller IDs.
func (n *Node) ID() int { return n.id }

// Kind returns what the node does.
func (n *Node) Kind() Kind { return n.kind }

// Player returns the player the node runs on, or "" for private nodes,
// which run on the protocol's servers, and for cohort inputs, which run
// on the members of a round (see Cohort).
func (n *Node) Player() string { return n.player }

// Inputs returns the node's inputs.
func (n *Node) Inputs() []Ref { return n.inputs }

// Outputs returns the shapes of the node's outputs.
func (n *Node) Outputs() []Shape { return n.outputs }

// Constant returns the public constant of a mul-public or div node.
func (n *Node) Constant() float64 { return n.constant }

// Func returns the function of an input or local node.
func (n *Node) Func() Func { return n.fn }

// OutputFunc returns the function of an output node.
func (n *Node) OutputFunc() OutputFunc { return n.outFn }

// String names the node by kind, ID and player, e.g.
// `private-input#3 on "data-owner-0"`, or cohort, e.g.
// `cohort-input#1 of "data-owners"`.
func (n *Node) String() string {
	if n.kind == KindCohortInput && n.cohort != nil {
		return fmt.Sprintf("%s#%d of %q", n.kind, n.id, n.cohort.name)
	}
	if n.player == "" {
		return fmt.Sprintf("%s#%d", n.kind, n.id)
	}
	return fmt.Sprintf("%s#%d on %q", n.kind, n.id, n.player)
}

// Public is a plaintext tensor held by one player.
type Public struct{ ref Ref }

// Private is a tensor secret-shared inside the protocol.
type Private struct{ ref Ref }

// Ref returns the node output behind the handle.
func (t *Public) Ref() Ref { return t.ref }

// Shape returns the tensor's shape.
func (t *Public) Shape() Shape { return t.ref.Shape() }

// Player returns the player holding the tensor.
func (t *Public) Player() string { return t.ref.Node.player }

// String names the tensor.
func (t *Public) String() string { return t.ref.String() }

// Ref returns the node output behind the handle.
func (t *Private) Ref() Ref { return t.ref }

// Shape returns the tensor's shape.
func (t *Private) Shape() Shape { return t.ref.Shape() }

// String names the tensor.
func (t *Private) String() string { return t.ref.String() }

// Op is a runnable target: one iteration of the graph leading to an
// output. Sessions run ops.
type Op struct{ node *Node }

// Node returns the output node the op runs up to.
func (o *Op) Node() *Node { return o.node }

// Graph is a dataflow graph under construction or built.
type Graph struct {
	nodes   []*Node
	cohorts []*Cohort
	errs    []error
}

// New returns an empty graph.
func New() *Graph { return &Graph{} }

// ErrBuild is wrapped by every error recorded while building.
var ErrBuild = errors.New("graph")

// Err returns every error recorded while building, joined, or nil.
func (g *Graph) Err() error { return errors.Join(g.errs...) }

// Nodes returns the nodes in topological order.
func (g *Graph) Nodes() []*Node { return g.nodes }

func (g *Graph) fail(format string, args ...any) {
	g.errs = append(g.errs, fmt.Errorf("%w: %s", ErrBuild, fmt.Sprintf(format, args...)))
}

func (g *Graph) add(kind Kind, player string, inputs []Ref, outputs []Shape) *Node {
	n := &Node{g: g, id: len(g.nodes), kind: kind, player: player, inputs: inputs, outputs: outputs}
	g.nodes = append(g.nodes, n)
	return n
}

func (g *Graph) checkShapes(n *Node) {
	for i, s := range n.outputs {
		if !s.valid() {
			g.fail("%s: output %d has invalid shape %v (dimensions must be positive, size under 2^31)", n, i, s)
		}
	}
}

func (g *Graph) checkPlayer(verb, player string) {
	if err := players.CheckName(player); err != nil {
		g.fail("%s: %v", verb, err)
	}
}

// publicRefs checks handles given as inputs to node n.
func (g *Graph) publicRefs(n *Node, ts []*Public) []Ref {
	refs := make([]Ref, 0, len(ts))
	for i, t := range ts {
		switch {
		case t == nil:
			g.fail("%s: input %d is nil", n, i)
		case t.ref.Node.g != g:
			g.fail("%s: input %d (%s) belongs to another graph", n, i, t)
		default:
			refs = append(refs, t.ref)
		}
	}
	return refs
}

// privateRef checks the private handle given as operand i of verb; output
// says whether the verb is DefineOutput (see checkOperand).
func (g *Graph) privateRef(verb string, i int, t *Private, output bool) (Ref, bool) {
	switch {
	case t == nil:
		g.fail("%s: operand %d is nil", verb, i)
	case t.ref.Node.g != g:
		g.fail("%s: operand %d (%s) belongs to another graph", verb, i, t)
	case !g.checkOperand(verb, i, t.ref, output):
	default:
		return t.ref, true
	}
	return Ref{}, false
}

func publics(n *Node) []*Public {
	out := make([]*Public, len(n.outputs))
	for i := range out {
		out[i] = &Public{Ref{n, i}}
	}
	return out
}

func privates(n *Node) []*Private {
	out := make([]*Private, len(n.outputs))
	for i := range out {
		out[i] = &Private{Ref{n, i}}
	}
	return out
}

// DefinePublicInput declares tensors of the given shapes that fn produces
// on player every iteration, in the clear. They may be sent to other
// players as inputs of their computations.
func (g *Graph) DefinePublicInput(player string, fn Func, shapes []Shape) []*Public {
	return g.LocalComputation(player, fn, shapes)
}

// LocalComputation declares fn, run on player every iteration with the
// given public inputs (sent to player from wherever they are held), and
// producing public tensors of the given shapes on player.
func (g *Graph) LocalComputation(player string, fn Func, shapes []Shape, inputs ...*Public) []*Public {
	kind := KindLocal
	if len(inputs) == 0 {
		kind = KindPublicInput
	}
	n := g.add(kind, player, nil, cloneShapes(shapes))
	n.fn = fn
	n.inputs = g.publicRefs(n, inputs)
	g.checkSource(n)
	return publics(n)
}

// DefinePrivateInput declares tensors of the given shapes that fn produces
// on player every iteration, from the given public inputs, and that enter
// the protocol secret-shared: nobody but player ever sees them in the
// clear.
func (g *Graph) DefinePrivateInput(player string, fn Func, shapes []Shape, inputs ...*Public) []*Private {
	n := g.add(KindPrivateInput, player, nil, cloneShapes(shapes))
	n.fn = fn
	n.inputs = g.publicRefs(n, inputs)
	g.checkSource(n)
	return privates(n)
}

func (g *Graph) checkSource(n *Node) {
	g.checkPlayer(n.String(), n.player)
	if n.fn == nil {
		g.fail("%s: nil function", n)
	}
	if len(n.outputs) == 0 {
		g.fail("%s: declares no output shapes", n)
	}
	g.checkShapes(n)
}

func cloneShapes(shapes []Shape) []Shape {
	out := make([]Shape, len(shapes))
	for i, s := range shapes {
		out[i] = append(Shape(nil), s...)
	}
	return out
}

// AddN returns the private sum of xs, which must all have one shape.
func (g *Graph) AddN(xs ...*Private) *Private {
	return g.elementwise(KindAddN, xs)
}

// Add returns the private sum x + y.
func (g *Graph) Add(x, y *Private) *Private {
	return g.elementwise(KindAddN, []*Private{x, y})
}

// Sub returns the private difference x − y.
func (g *Graph) Sub(x, y *Private) *Private {
	return g.elementwise(KindSub, []*Private{x, y})
}

// Neg returns the private negation −x.
func (g *Graph) Neg(x *Private) *Private {
	return g.elementwise(KindNeg, []*Private{x})
}

// The public constants a graph accepts. This package knows no protocol,
// so it checks against the widest range that any fixed-point
// configuration of the ring Z_2^64 allows: Pond with 1 fractional bit and
// the smallest statistical gap (8 bits) holds |x| < 2^52, and with the
// most fractional bits it allows (26) its resolution is 2^-26, so that a
// constant of magnitude 2^-27 or less encodes to zero whatever the
// configuration. A session checks the constants again, against its own
// configuration (by default |c| < 1024 and |c| > 2^-17), when it compiles
// the graph, and refuses with an error wrapping pond.ErrConstant.
const (
	// MaxConstant bounds the magnitude of a constant: |c| < 2^52.
	MaxConstant = 0x1p52
	// MinConstant bounds the magnitude of a non-zero constant from below:
	// |c| > 2^-27.
	MinConstant = 0x1p-27
)

// constantProblem says why c cannot be a public constant of any
// configuration, or returns "".
func constantProblem(c float64) string {
	switch a := math.Abs(c); {
	case math.IsNaN(c) || math.IsInf(c, 0):
		return "is not finite"
	case a >= MaxConstant:
		return "is outside (-2^52, 2^52), the widest range of any fixed-point configuration"
	case c != 0 && a <= MinConstant:
		return "is at most 2^-27 in magnitude, so it encodes to zero at the finest resolution of any fixed-point configuration"
	}
	return ""
}

// MulPublic returns x · c for a public constant c. The constant must lie
// within the fixed-point range (see MaxConstant), and so must the result,
// like every value: the protocol cannot check a value it cannot see.
func (g *Graph) MulPublic(x *Private, c float64) *Private {
	p := g.elementwise(KindMulPublic, []*Private{x})
	p.ref.Node.constant = c
	if why := constantProblem(c); why != "" {
		g.fail("%s: constant %v %s", p.ref.Node, c, why)
	}
	return p
}

// Div returns x / d for a public, non-zero number d, as TF Encrypted's
// add_n(grads) / len(grads). Inside the protocol a division is a
// multiplication by 1/d, so 1/d must be a constant that some fixed-point
// configuration can hold (see MaxConstant and MinConstant): roughly
// 2^-52 < |d| < 2^27. This holds even where a session would divide in the
// clear (a division that feeds an output, by default), so that a graph
// that builds runs with the division kept private too.
func (g *Graph) Div(x *Private, d float64) *Private {
	p := g.elementwise(KindDiv, []*Private{x})
	p.ref.Node.constant = d
	if d == 0 || math.IsNaN(d) || math.IsInf(d, 0) {
		g.fail("%s: divisor %v must be a finite non-zero number", p.ref.Node, d)
	} else if why := constantProblem(1 / d); why != "" {
		g.fail("%s: divisor %v: its reciprocal %v %s", p.ref.Node, d, 1/d, why)
	}
	return p
}

func (g *Graph) elementwise(kind Kind, xs []*Private) *Private {
	n := g.add(kind, "", nil, nil)
	if len(xs) == 0 {
		g.fail("%s: no operands", n)
	}
	var first Ref
	for i, x := range xs {
		ref, ok := g.privateRef(n.String(), i, x, false)
		if !ok {
			continue
		}
		if len(n.inputs) == 0 {
			first = ref
		} else if !ref.Shape().Equal(first.Shape()) {
			g.fail("%s: shape mismatch: %s has shape %v but %s has shape %v", n, first, first.Shape(), ref, ref.Shape())
		}
		n.inputs = append(n.inputs, ref)
	}
	shape := Shape{1}
	if len(n.inputs) > 0 {
		shape = first.Shape()
	}
	n.outputs = []Shape{shape}
	return &Private{Ref{n, 0}}
}

// DefineOutput reveals xs to player, and to nobody else, every iteration
// and passes them to fn there. It returns the op that runs one iteration.
func (g *Graph) DefineOutput(player string, xs []*Private, fn OutputFunc) *Op {
	n := g.add(KindOutput, player, nil, nil)
	n.outFn = fn
	g.checkPlayer(n.String(), player)
	if fn == nil {
		g.fail("%s: nil function", n)
	}
	if len(xs) == 0 {
		g.fail("%s: no tensors to reveal", n)
	}
	for i, x := range xs {
		if ref, ok := g.privateRef(n.String(), i, x, true); ok {
			n.inputs = append(n.inputs, ref)
		}
	}
	g.checkCohorts(n)
	return &Op{n}
}

// Column returns the i-th tensor of every row: with rows[j] the tensors of
// owner j, Column(rows, i) collects everyone's i-th tensor, as Python's
// zip(*rows) in TF Encrypted's example. A short row is a build error of
// the nodes involved, reported by the verb that uses the column (a nil
// operand).
func Column[T any](rows [][]*T, i int) []*T {
	col := make([]*T, len(rows))
	for j, r := range rows {
		if i < len(r) {
			col[j] = r[i]
		}
	}
	return col
}
