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
