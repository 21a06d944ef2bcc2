// Package graph builds the symbolic dataflow graphs that shareflow runs.
//
// A graph is a DAG of nodes placed on named players. Every node yields
// typed tensor handles: a *Public tensor is plaintext held by one player; a
// *Private tensor is secret-shared between the compute servers of the
// protocol and is never held in the clear by anyone. The verbs mirror TF
// Encrypted's:
//
//	g := graph.New()
//	w := g.DefinePublicInput("model-owner", owner.Weights, shapes)
//	var grads [][]*graph.Private
//	for _, d := range dataOwners {
//		grads = append(grads, g.DefinePrivateInput(d.Name, d.ComputeGradient, shapes, w...))
//	}
//	mean := make([]*graph.Private, len(shapes))
//	for i := range mean {
//		mean[i] = g.Div(g.AddN(graph.Column(grads, i)...), float64(len(grads)))
//	}
//	iteration := g.DefineOutput("model-owner", mean, owner.UpdateModel)
//	if err := g.Err(); err != nil { ... }
//
// Federated learning rarely knows its data owners in advance: owners
// join, leave and fail between rounds. A cohort names none of them. Its
// input function runs on every member of a round's cohort, which the
// session picks anew for each round, and its tensors (one per member) are
// taken only by the aggregations over the round's survivors, Mean,
// WeightedMean and SumCohort, whose results are ordinary private values.
// TF Encrypted's example in rounds, each owner weighed by its number of
// examples (federated averaging):
//
//	g := graph.New()
//	w := g.DefinePublicInput("model-owner", owner.Weights, shapes)
//	owners := g.DefineCohort("data-owners")
//	grads := g.DefineCohortInput(owners, computeGradient, shapes, w...) // graph.Member(ctx) says whose
//	examples := g.DefineCohortInput(owners, countExamples, []graph.Shape{{1}}, w...)[0]
//	mean := make([]*graph.Private, len(shapes))
//	for i := range mean {
//		mean[i] = g.WeightedMean(grads[i], examples) // Σ wᵢxᵢ / Σ wᵢ over the survivors
//	}
//	round := g.DefineOutput("model-owner", mean, owner.UpdateModel)
//
// A member's function that returns an error (wrapping ErrDropout, say)
// drops that member from the round; the round goes on without it. Passing
// a cohort tensor to any other verb, or a weighted mean (whose divisor
// stays private until revealed) to any verb but DefineOutput, or making
// one output depend on two cohorts, is a build error naming the node.
// Package session documents the rounds: who picks the cohort, the
// deadline, and the floor of survivors below which the servers reveal
// nothing.
//
// Private values can also be multiplied, as TF Encrypted's tfe.mul,
// tfe.matmul, tfe.square and tfe.reduce_sum do. Go has no overloading, so
// a verb whose operand is public says so in its name, in operand order:
//
//	Mul(x, y)              x ⊙ y, both private, one shape
//	MulPublicTensor(x, w)  x ⊙ w, w public, same shape
//	Square(x)              x ⊙ x
//	MatMul(x, y)           (m, k) · (k, n) → (m, n), both private
//	MatMulPublic(x, w)     private (m, k) · public (k, n)
//	PublicMatMul(w, x)     public (m, k) · private (k, n)
//	Dot(x, y)              (k)·(k) → (1), or (m, k)·(k) → (m)
//	ReduceSum(x, axis)     (k) → (1); (m, n) → (n) along 0, (m) along 1
//	AddBias(x, b)          (m, n) + (n) on every row
//	AddConstant(x, c)      x + c for a public number c
//
// A private prediction, one hidden layer with a polynomial sigmoid, and
// only the client learning the logits:
//
//	x := g.DefinePrivateInput("client", client.Images, []graph.Shape{{batch, 784}})[0]
//	w := g.DefinePrivateInput("model-owner", owner.Weights, shapes)
//	z := g.AddBias(g.MatMul(x, w[0]), w[1])
//	u := g.MulPublic(z, 1/r)                    // u in [-1, 1]
//	p := g.AddConstant(g.MulPublic(g.Square(u), c3), c1)
//	h := g.AddConstant(g.Mul(p, u), 0.5)        // σ(z) ≈ 0.5 + c1·u + c3·u³
//	logits := g.AddBias(g.MatMul(h, w[2]), w[3])
//	predict := g.DefineOutput("client", []*graph.Private{logits}, client.Show)
//
// Kind.PrivateProduct tells which nodes multiply two private values, for
// which a protocol needs more than local steps (Pond: a Beaver triple from
// its crypto producer); Node.PublicOperand and Node.Axis give what else a
// session needs to lower a node. Every value, and every product before it
// is scaled back, must stay within the protocol's fixed-point range, which
// the graph cannot check: package pond documents it.
//
// Building never fails midway: a verb given bad arguments (a shape
// mismatch, a handle from another graph, a missing function) records an
// error naming the nodes involved and returns usable handles, so a program
// reads top to bottom and checks Err once. A session refuses to run a graph
// whose Err is not nil.
//
// Private values are fixed-point numbers, and every value the computation
// handles must stay within the protocol's range: by default |x| < 1024 at
// a resolution of 2^-16 (about 1.5e-5), and each fractional bit added
// (pond.Config.FracBits) quarters the range, as a product carries twice
// the fractional bits. Inputs outside the range are
// refused when they arrive, naming the player, tensor and element; sums
// and products must stay inside it too, which nobody can check, since
// nobody sees them. Constants are checked when the graph is built: the
// constant of MulPublic and the reciprocal of Div's divisor must fit the
// widest range any configuration allows (MaxConstant, MinConstant), and a
// session checks them again against its own configuration when it compiles
// the graph.
//
// The graph only describes the computation. Package session compiles it
// into one plan per player and runs it; the functions stored in nodes are
// called only on the player that owns them. Nothing in this package knows
// about protocols or networks.
//
// A Graph is not safe for concurrent building; once built it is read-only
// and may be shared.
package graph
