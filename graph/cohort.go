package graph

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Cohorts: data owners chosen anew for every round.
//
// A fixed-owner graph names each data owner (DefinePrivateInput on
// "data-owner-0", ...) and sums their tensors with AddN. A cohort names
// none: DefineCohortInput declares what every member of the cohort
// computes, and the session picks, for every round, which connected
// members take part (the cohort of the round) and which of them count
// (the survivors: those whose shares reached both servers in time). A
// cohort tensor, one per member, exists only inside a round, so the only
// verbs that take one are the aggregations over the round's survivors:
// Mean, WeightedMean and SumCohort. Their results are ordinary private
// values.

// Cohort is a set of data owners chosen anew for every round by the
// session's coordinator, the player that receives the op's output. A
// Cohort belongs to the graph that defined it and is read-only.
type Cohort struct {
	g    *Graph
	name string
}

// Name returns the name the cohort was defined with.
func (c *Cohort) Name() string { return c.name }

// String names the cohort, e.g. `cohort "data-owners"`.
func (c *Cohort) String() string { return fmt.Sprintf("cohort %q", c.name) }

// Aggregation reports whether nodes of kind k aggregate a cohort tensor
// over a round's survivors (mean, weighted-mean, sum-cohort).
func (k Kind) Aggregation() bool {
	switch k {
	case KindMean, KindWeightedMean, KindSumCohort:
		return true
	}
	return false
}

// Cohort returns the cohort of a cohort-input or aggregation node, and nil
// for other nodes.
func (n *Node) Cohort() *Cohort { return n.cohort }

// Cohort returns the cohort whose members each hold their own value of
// the tensor, if it is a cohort tensor (an output of DefineCohortInput),
// and nil otherwise.
func (t *Private) Cohort() *Cohort {
	if t.ref.Node.kind == KindCohortInput {
		return t.ref.Node.cohort
	}
	return nil
}

// ErrDropout may be wrapped by the error a member's function returns to
// leave the round: the member drops out of it, which is no failure of the
// run. Any error a member's function returns has the same effect; this
// one says it was meant.
var ErrDropout = errors.New("graph: member drops out of the round")

type memberKey struct{}

// WithMember returns a context that tells the functions of a cohort input
// which member they run for (see Member). Sessions call it; tests of a
// member's function may too.
func WithMember(ctx context.Context, member string) context.Context {
	return context.WithValue(ctx, memberKey{}, member)
}

// Member returns the member a cohort input's function runs for: one
// process may host many members, in a simulation. It returns "" outside
// a member's function.
func Member(ctx context.Context) string {
	m, _ := ctx.Value(memberKey{}).(string)
	return m
}

// DefineCohort declares a cohort of data owners, named for plans and
// errors. Its members are not named here: a session picks them for every
// round from the members connected then.
func (g *Graph) DefineCohort(name string) *Cohort {
	c := &Cohort{g: g, name: name}
	g.checkPlayer(fmt.Sprintf("cohort %q", name), name)
	for _, other := range g.cohorts {
		if other.name == name {
			g.fail("cohort %q is defined twice", name)
		}
	}
	g.cohorts = append(g.cohorts, c)
	return c
}

// DefineCohortInput declares tensors of the given shapes that fn produces
// on every member of a round's cohort, from the given public inputs (the
// model, say, sent to every member of the round), and that enter the
// protocol secret-shared. Each returned tensor is a cohort tensor, one
// per member: only Mean, WeightedMean and SumCohort take it. fn learns
// which member it runs for from Member(ctx); an error it returns drops
// that member from the round (see ErrDropout).
func (g *Graph) DefineCohortInput(c *Cohort, fn Func, shapes []Shape, inputs ...*Public) []*Private {
	n := g.add(KindCohortInput, "", nil, cloneShapes(shapes))
	n.fn = fn
	switch {
	case c == nil:
		g.fail("%s: nil cohort", n)
	case c.g != g:
		g.fail("%s: %s belongs to another graph", n, c)
	default:
		n.cohort = c
	}
	n.inputs = g.publicRefs(n, inputs)
	if fn == nil {
		g.fail("%s: nil function", n)
	}
	if len(n.outputs) == 0 {
		g.fail("%s: declares no output shapes", n)
	}
	g.checkShapes(n)
	return privates(n)
}

// cohortOperand checks the cohort tensor given as operand i of the
// aggregation node n.
func (g *Graph) cohortOperand(n *Node, i int, t *Private) (Ref, bool) {
	switch {
	case t == nil:
		g.fail("%s: operand %d is nil", n, i)
	case t.ref.Node.g != g:
		g.fail("%s: operand %d (%s) belongs to another graph", n, i, t)
	case t.ref.Node.kind != KindCohortInput:
		g.fail("%s: operand %d (%s) is not a cohort tensor (an output of DefineCohortInput); for fixed owners, use AddN and Div", n, i, t)
	default:
		return t.ref, true
	}
	return Ref{}, false
}

// aggregation adds an aggregation node over the cohort tensor x.
func (g *Graph) aggregation(kind Kind, x *Private) *Node {
	n := g.add(kind, "", nil, []Shape{{1}})
	if ref, ok := g.cohortOperand(n, 0, x); ok {
		n.inputs = append(n.inputs, ref)
		n.outputs = []Shape{ref.Shape()}
		n.cohort = ref.Node.cohort
	}
	return n
}

// Mean returns the mean of the cohort tensor x over the survivors of each
// round: their sum divided by their number, which is public. A session
// reveals the sum and divides in the clear on the output player when the
// mean feeds an output, as it does for Div.
func (g *Graph) Mean(x *Private) *Private {
	return &Private{Ref{g.aggregation(KindMean, x), 0}}
}

// SumCohort returns the sum of the cohort tensor x over the survivors of
// each round.
func (g *Graph) SumCohort(x *Private) *Private {
	return &Private{Ref{g.aggregation(KindSumCohort, x), 0}}
}

// WeightedMean returns Σ wᵢxᵢ / Σ wᵢ over the survivors i of each round,
// as federated averaging weighs each owner's update by its number of
// examples. w is a cohort tensor of shape (1) of the same cohort as x:
//
//	w := g.DefineCohortInput(owners, examples, []graph.Shape{{1}}, model...)[0]
//
// Each member computes wᵢxᵢ itself and shares it with wᵢ; the servers sum
// both, and the output player divides the sums in the clear. Σ wᵢ is
// private until then, so a weighted mean can only be revealed: passing it
// to any verb but DefineOutput is a build error. A session refuses a
// weight that is not finite and positive, dropping its member from the
// round.
func (g *Graph) WeightedMean(x, w *Private) *Private {
	n := g.aggregation(KindWeightedMean, x)
	ref, ok := g.cohortOperand(n, 1, w)
	if !ok {
		return &Private{Ref{n, 0}}
	}
	n.inputs = append(n.inputs, ref)
	switch {
	case !ref.Shape().Equal(Shape{1}):
		g.fail("%s: weight %s has shape %v, want (1)", n, ref, ref.Shape())
	case n.cohort != nil && ref.Node.cohort != n.cohort:
		g.fail("%s: weight %s is a tensor of %s, but %s is of %s", n, ref, ref.Node.cohort, n.inputs[0], n.cohort)
	}
	return &Private{Ref{n, 0}}
}

// checkOperand refuses, as operand i of node (or verb) n, the private
// values that no verb but an aggregation or an output takes: a cohort
// tensor (one per member, it exists only inside a round) and a weighted
// mean (its divisor is private until revealed).
func (g *Graph) checkOperand(n string, i int, ref Ref, output bool) bool {
	switch k := ref.Node.kind; {
	case k == KindCohortInput:
		g.fail("%s: operand %d (%s) is a cohort tensor, one per member of a round: only Mean, WeightedMean and SumCohort take it", n, i, ref)
		return false
	case k == KindWeightedMean && !output:
		g.fail("%s: operand %d (%s) is a weighted mean, whose divisor Σw stays private until it is revealed: only DefineOutput takes it", n, i, ref)
		return false
	}
	return true
}

// checkCohorts records an error if the output node n depends on more than
// one cohort: a round picks the members of one.
func (g *Graph) checkCohorts(n *Node) {
	var found []*Cohort
	seen := map[*Node]bool{}
	var visit func(m *Node)
	visit = func(m *Node) {
		if seen[m] {
			return
		}
		seen[m] = true
		if m.cohort != nil && !slices.Contains(found, m.cohort) {
			found = append(found, m.cohort)
		}
		for _, in := range m.inputs {
			visit(in.Node)
		}
	}
	visit(n)
	if len(found) > 1 {
		g.fail("%s: depends on %s and %s: a round draws the members of one cohort", n, found[0], found[1])
	}
}
