package session

import (
	"fmt"
	"slices"
	"strings"

	"github.com/shareflow/shareflow/graph"
)

// Compiling rounds of a cohort.
//
// An op whose output aggregates a cohort (graph.Mean, WeightedMean,
// SumCohort) compiles into a plan for rounds: the fixed players' steps as
// for any plan, and the steps every member of a round runs, which no
// player owns (cohortPlan.member). Every message of a round is keyed by
// the round's number; a member's messages carry the same edges as every
// other member's, told apart by their sender.
//
// A member receives the public inputs of the cohort's inputs (the model)
// from their holders, calls the inputs' functions and shares its uploads
// with the servers: each cohort tensor that a mean or sum takes, and for
// each weighted mean w·x (computed on the member) and w. Which server gets
// a member's seeds and which its masked tensors alternates with its
// position in the round's cohort; the seeds go first, when the member is
// invited (seedsStep), the masked tensors last (contributeStep). The
// servers sum the uploads as they arrive until the deadline, agree on the
// survivors, take back the streams of members that did not survive
// (gatherStep), and hand each sum on (aggregateStep); a mean revealed to
// the output player is revealed as its sum and divided by the number of
// survivors in the clear, a weighted mean as Σw·x and Σw.

// cohortMember keys the members' steps while the compiler emits them; it
// is no player's name (players.CheckName refuses it).
const cohortMember = "\x00member"

// cohortPlan is what a plan for rounds of a cohort has besides its fixed
// players' steps. It is immutable once compiled.
type cohortPlan struct {
	cohort      *graph.Cohort
	coordinator string    // the output player, who runs the rounds
	servers     [2]string //
	others      []string  // the plan's players but the coordinator, sorted: each is told of every round
	uploads     []*upload
	member      []step // what every member of a round runs
	// weight is the weight whose sum RoundInfo.TotalWeight reports: that
	// of the op's first weighted mean, if any.
	weight *graph.Ref
	// The edges of the round's own messages.
	startEdge     uint64    // coordinator → every other player of the plan
	noticeEdge    uint64    // coordinator → every connected member
	seedEdges     [2]uint64 // member → server k: its seeds (memberSeeds)
	heldEdges     [2]uint64 // server k → the other server: seeds-held notices, one per member (heldEdge)
	statusEdges   [2]uint64 // member → server k: a contribution
	exchangeEdges [2]uint64 // server k → the other server: its arrived set
	resultEdges   [2]uint64 // server k → coordinator: its roundResult
}

// upload is a tensor every member of a round shares with the servers.
type upload struct {
	// id names the upload and, on a server, its sum over the survivors:
	// the cohort tensor itself for a plain tensor or a weight, the
	// weighted-mean node for w·x.
	id graph.Ref
	x  graph.Ref
	// weight, for w·x, is w; nil otherwise.
	weight *graph.Ref
	edges  [2]uint64 // member → server k
}

func (u *upload) String() string {
	if u.weight != nil {
		return fmt.Sprintf("w·x of %s (%s × %s)", u.id.Node, u.x, *u.weight)
	}
	return u.id.String()
}

// tensorID is the upload's tensor in its mask domain.
func (u *upload) tensorID() uint64 { return uint64(u.id.Node.ID())<<32 | uint64(uint32(u.id.Index)) }

// cohortOf returns the cohort the needed aggregation nodes aggregate, or
// nil for a fixed-owner plan.
func cohortOf(g *graph.Graph, needed map[int]bool) *graph.Cohort {
	for _, n := range g.Nodes() {
		if needed[n.ID()] && n.Kind().Aggregation() {
			return n.Cohort()
		}
	}
	return nil
}

// startCohort sets the compiler up for rounds of cohort, and decides how
// each mean is divided: a mean that feeds only the output is revealed as
// its sum and divided by the number of survivors in the clear, unless
// PrivateDivision is set; any other is divided inside the protocol.
func (c *compiler) startCohort(g *graph.Graph, cohort *graph.Cohort, out *graph.Node, reveal []revealTarget, needed map[int]bool) error {
	cp := &cohortPlan{cohort: cohort, coordinator: out.Player(), servers: c.servers}
	if out.Player() == c.servers[0] || out.Player() == c.servers[1] {
		return fmt.Errorf("session: %s: the output of rounds of %s goes to %q, a compute server: the coordinator of the rounds must be another player", out, cohort, out.Player())
	}
	cp.startEdge, cp.noticeEdge = c.newEdge(), c.newEdge()
	consumed := map[*graph.Node]bool{} // consumed by a needed node other than the output
	byID := map[graph.Ref]bool{}
	add := func(u *upload) {
		if !byID[u.id] {
			byID[u.id] = true
			cp.uploads = append(cp.uploads, u)
		}
	}
	for _, n := range g.Nodes() {
		if !needed[n.ID()] {
			continue
		}
		if n != out {
			for _, in := range n.Inputs() {
				consumed[in.Node] = true
			}
		}
		switch n.Kind() {
		case graph.KindMean, graph.KindSumCohort:
			add(&upload{id: n.Inputs()[0], x: n.Inputs()[0]})
		case graph.KindWeightedMean:
			w := n.Inputs()[1]
			add(&upload{id: graph.Ref{Node: n}, x: n.Inputs()[0], weight: &w})
			add(&upload{id: w, x: w})
			if cp.weight == nil {
				cp.weight = &w
			}
		}
	}
	c.clearMeans = map[*graph.Node]bool{}
	for i, t := range reveal {
		switch n := t.ref.Node; n.Kind() {
		case graph.KindMean:
			if c.clearDiv && !consumed[n] {
				reveal[i].byCount = true
				c.clearMeans[n] = true
			}
		case graph.KindWeightedMean:
			w := n.Inputs()[1]
			reveal[i].byWeight = &w
		}
	}
	c.cohort = cp
	return nil
}

// lowerCohortInput lowers a cohort input: its public inputs go to every
// member of the round, which calls its function.
func (c *compiler) lowerCohortInput(n *graph.Node) {
	for _, in := range n.Inputs() {
		if c.sentToMembers[in] {
			continue
		}
		c.sentToMembers[in] = true
		e := c.newEdge()
		c.emit(in.Node.Player(), &sendMembersStep{ref: in, edge: e})
		c.emit(cohortMember, &recvPublicStep{ref: in, from: in.Node.Player(), edge: e})
	}
	c.emit(cohortMember, &callStep{node: n})
}

// lowerAggregation lowers a mean, weighted mean or sum of a cohort tensor.
// The first one also gathers the round's uploads on the servers.
func (c *compiler) lowerAggregation(n *graph.Node) error {
	cp := c.cohort
	s0, s1 := c.servers[0], c.servers[1]
	if !c.gathered {
		c.gathered = true
		cp.seedEdges = [2]uint64{c.newEdge(), c.newEdge()}
		cp.heldEdges = [2]uint64{c.newEdge(), c.newEdge()}
		cp.statusEdges = [2]uint64{c.newEdge(), c.newEdge()}
		for _, u := range cp.uploads {
			u.edges = [2]uint64{c.newEdge(), c.newEdge()}
		}
		cp.exchangeEdges = [2]uint64{c.newEdge(), c.newEdge()}
		c.emit(s0, &gatherStep{cp: cp, party: 0})
		c.emit(s1, &gatherStep{cp: cp, party: 1})
	}
	switch n.Kind() {
	case graph.KindSumCohort:
		c.emitAggregate(&aggregateStep{node: n, up: c.uploadOf(n.Inputs()[0])})
	case graph.KindMean:
		up := c.uploadOf(n.Inputs()[0])
		if c.clearMeans[n] {
			c.emitAggregate(&aggregateStep{node: n, up: up})
			break
		}
		tr := c.truncation()
		c.emit(s0, &aggregateStep{node: n, up: up, divide: true, trunc: tr[0]})
		c.emit(s1, &aggregateStep{node: n, up: up, divide: true, trunc: tr[1]})
	case graph.KindWeightedMean:
		c.emitAggregate(&aggregateStep{node: n, up: c.uploadOf(graph.Ref{Node: n})})
		w := n.Inputs()[1]
		if !c.weightSums[w] {
			c.weightSums[w] = true
			c.emitAggregate(&aggregateStep{weightOf: &w, up: c.uploadOf(w)})
		}
	}
	return nil
}

// emitAggregate emits a copy of a, which needs no truncation, on each server.
func (c *compiler) emitAggregate(a *aggregateStep) {
	a0, a1 := *a, *a
	c.emit(c.servers[0], &a0)
	c.emit(c.servers[1], &a1)
}

func (c *compiler) uploadOf(id graph.Ref) *upload {
	for _, u := range c.cohort.uploads {
		if u.id == id {
			return u
		}
	}
	panic(fmt.Sprintf("session: no upload %s (compiler bug)", id))
}

// finishCohort emits the steps that open and close a round: the
// coordinator announces it first, every other player of the plan
// receives the announcement first, and every member receives its notice
// first and contributes last.
func (c *compiler) finishCohort() {
	cp := c.cohort
	for p, list := range c.steps {
		switch p {
		case cohortMember:
		case cp.coordinator:
			c.steps[p] = append([]step{&announceStep{cp: cp}}, list...)
		default:
			c.steps[p] = append([]step{&roundStartStep{cp: cp}}, list...)
			cp.others = append(cp.others, p)
		}
	}
	if _, ok := c.steps[cp.coordinator]; !ok {
		c.steps[cp.coordinator] = []step{&announceStep{cp: cp}}
	}
	slices.Sort(cp.others)
	member := append([]step{&noticeStep{cp: cp}, &seedsStep{cp: cp}}, c.steps[cohortMember]...)
	c.steps[cohortMember] = append(member, &contributeStep{cp: cp})
}

// writeTo writes the members' part of a plan.
func (cp *cohortPlan) writeTo(b *strings.Builder) {
	fmt.Fprintf(b, "every member of %s invited to a round:\n", cp.cohort)
	for _, s := range cp.member {
		fmt.Fprintf(b, "  %s\n", s)
	}
}

// lowerCohortOutput lowers the output of rounds: each server sends the
// coordinator its result, then its shares of the sums of weights (the
// divisors of weighted means) and of every output tensor; the coordinator
// reveals them only if both servers sent shares over the same survivors.
func (c *compiler) lowerCohortOutput(n *graph.Node, reveal []revealTarget) {
	cp := c.cohort
	s0, s1 := c.servers[0], c.servers[1]
	cp.resultEdges = [2]uint64{c.newEdge(), c.newEdge()}
	c.emit(s0, &sendResultStep{cp: cp, party: 0})
	c.emit(s1, &sendResultStep{cp: cp, party: 1})
	rs := &cohortRevealStep{node: n, cp: cp, targets: reveal}
	for _, t := range reveal {
		if t.byWeight != nil && !slices.Contains(rs.weights, *t.byWeight) {
			rs.weights = append(rs.weights, *t.byWeight)
		}
	}
	refs := slices.Clone(rs.weights)
	for _, t := range reveal {
		refs = append(refs, t.ref)
	}
	for _, ref := range refs {
		e0, e1 := c.newEdge(), c.newEdge()
		rs.edges = append(rs.edges, [2]uint64{e0, e1})
		c.emit(s0, &sendShareStep{ref: ref, to: n.Player(), edge: e0})
		c.emit(s1, &sendShareStep{ref: ref, to: n.Player(), edge: e1})
	}
	c.emit(n.Player(), rs)
}
