package graph

import (
	"bufio"
	"fmt"
	"io"
	"sort"
)

// WriteDOT writes the graph in Graphviz's DOT language: one cluster per
// player, one for the protocol's private nodes, and an edge per input
// labelled with its shape. Edges that carry private tensors are dashed,
// so a reader sees at a glance where values are secret-shared.
func (g *Graph) WriteDOT(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "digraph shareflow {")
	fmt.Fprintln(bw, "  rankdir=LR;")
	fmt.Fprintln(bw, "  node [shape=box, fontname=\"Helvetica\"];")

	byPlayer := map[string][]*Node{}
	for _, n := range g.nodes {
		byPlayer[n.player] = append(byPlayer[n.player], n)
	}
	names := make([]string, 0, len(byPlayer))
	for p := range byPlayer {
		names = append(names, p)
	}
	sort.Strings(names)
	for i, p := range names {
		label := p
		if p == "" {
			label = "private (secret-shared)"
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
			if in.Node.kind == KindPrivateInput || in.Node.kind.Private() {
				style = "dashed"
			}
			fmt.Fprintf(bw, "  n%d -> n%d [label=%q, style=%s];\n", in.Node.id, n.id, in.Shape().String(), style)
		}
	}
	fmt.Fprintln(bw, "}")
	return bw.Flush()
}
