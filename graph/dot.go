package graph

import (
	"bufio"
	"fmt"
	"io"
	"sort"
)

// WriteDOT writes the graph in Graphviz's DOT language: one cluster per
// player, one for the protocol's private nodes, and an edge per input
// labelled with its shape, and one per cohort for its inputs, which run
// on every member of a round. Edges that carry private tensors are
// dashed, so a reader sees at a glance where values are secret-shared.
func (g *Graph) WriteDOT(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "digraph shareflow {")
	fmt.Fprintln(bw, "  rankdir=LR;")
	fmt.Fprintln(bw, "  node [shape=box, fontname=\"Helvetica\"];")

	// Clusters are keyed by player; a cohort's by its name after a byte
	// no player name has, so that it sorts apart.
	const cohortKey = "\x00"
	byPlayer := map[string][]*Node{}
	for _, n := range g.nodes {
		key := n.player
		if n.kind == KindCohortInput && n.cohort != nil {
			key = cohortKey + n.cohort.name
		}
		byPlayer[key] = append(byPlayer[key], n)
	}
	names := make([]string, 0, len(byPlayer))
	for p := range byPlayer {
		names = append(names, p)
	}
	sort.Strings(names)
	for i, p := range names {
		label := p
		switch {
		case p == "":
			label = "private (secret-shared)"
		case p[0] == cohortKey[0]:
			label = fmt.Sprintf("cohort %s (every member of a round)", p[1:])
		}
		fmt.Fprintf(bw, "  subgraph cluster_%d {\n    label=%q;\n", i, label)
		for _, n := range byPlayer[p] {
			shape := "box"
			if n.kind.Private() {
				shape = "ellipse"
			}
			fmt.Fprintf(bw, "    n%d [label=%q, shape=%s];\n", n.id, fmt.Sprintf("%s#%d", n.kind, n.id), shape)
		}
		fmt.Fprintln(bw, "  }")
	}
	for _, n := range g.nodes {
		for _, in := range n.inputs {
			style := "solid"
			if k := in.Node.kind; k == KindPrivateInput || k == KindCohortInput || k.Private() {
				style = "dashed"
			}
			fmt.Fprintf(bw, "  n%d -> n%d [label=%q, style=%s];\n", in.Node.id, n.id, in.Shape().String(), style)
		}
	}
	fmt.Fprintln(bw, "}")
	return bw.Flush()
}
