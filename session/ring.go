package session

import (
	"fmt"
	"math/bits"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/protocol/pond"
)

// The ring of a plan.
//
// Pond computes in Z_2^64 by default. A plan that only adds (private
// inputs, sums, differences, negations, public constants added, means
// divided in the clear) needs no room for a product's doubled fractional
// bits, and Z_2^32 holds its values: each share then crosses the wire as 4
// bytes an element instead of 8. With Options.Protocol.Ring zero, compile
// picks Z_2^32 for such a plan; Ring set to pond.Ring64 or pond.Ring32
// forces a ring, and a plan Ring32 cannot run is refused, saying why.
//
// In Z_2^32 nothing can wrap: compile derives the input range from the
// largest sum the plan forms. Every private value is a signed sum of at
// most M inputs and public constants, each below 2^IntBits in magnitude
// (sumTerms counts them: a cohort's sums count the largest cohort
// RoundOptions allow). Each encodes to at most 2^(IntBits+FracBits) in
// magnitude, so every value stays below M·2^(IntBits+FracBits) ≤ 2^31
// when IntBits = 30 − FracBits − ⌊log2 M⌋. The input check (pond's
// RangeError) refuses anything larger, naming the tensor and element.
// Chosen automatically, Z_2^32 never narrows the range the configuration
// asks for: without an explicit IntBits the plan keeps Z_2^64 when the
// derived range is below Z_2^64's default (2^10 for 16 fractional bits,
// which sums of up to 16 inputs keep).

// maxSumTerms caps sumTerms' count, far above what Z_2^32 can hold.
const maxSumTerms = 1 << 40

// sumTerms returns M, the most inputs and public constants any private
// value of the plan sums: nodes are the plan's nodes in graph order and
// cohort the most members a round may have. A mean or a division counts
// its dividend: divided in the clear, that is what the servers reveal,
// and divided inside the protocol, its plan is not additive anyway. ok is
// false when some private value is a product, which Z_2^32 cannot
// compute.
func sumTerms(nodes []*graph.Node, cohort int) (m int, ok bool) {
	terms := map[*graph.Node]int{}
	of := func(r graph.Ref) int { return terms[r.Node] }
	for _, n := range nodes {
		t := 0
		switch n.Kind() {
		case graph.KindPublicInput, graph.KindLocal, graph.KindOutput:
			continue
		case graph.KindPrivateInput, graph.KindCohortInput:
			t = 1
		case graph.KindAddN, graph.KindSub, graph.KindAddBias:
			for _, in := range n.Inputs() {
				t += of(in)
			}
		case graph.KindNeg:
			t = of(n.Inputs()[0])
		case graph.KindAddConstant:
			t = of(n.Inputs()[0]) + 1
		case graph.KindReduceSum:
			in := n.Inputs()[0]
			shape := in.Shape()
			t = of(in) * shape[min(n.Axis(), len(shape)-1)]
		case graph.KindMean, graph.KindSumCohort, graph.KindWeightedMean:
			for _, in := range n.Inputs() { // x, and w of a weighted mean
				t = max(t, of(in)*cohort)
			}
		case graph.KindDiv:
			t = of(n.Inputs()[0])
		default:
			return 0, false
		}
		t = min(t, maxSumTerms)
		terms[n] = t
		m = max(m, t)
	}
	return m, true
}

// ring32IntBits returns the integer bits Z_2^32 leaves an input when sums
// of up to m inputs must not wrap: 30 − FracBits − ⌊log2 m⌋.
func ring32IntBits(fracBits, m int) int {
	return 30 - fracBits - (bits.Len(uint(max(m, 1))) - 1)
}

// ringChoice is compile's decision on a plan's ring.
type ringChoice struct {
	proto *pond.Protocol
	terms int // M, for the plan's text; 0 in Z_2^64
}

// chooseRing returns the protocol a plan computes with: base, the
// session's (Z_2^64 unless Options.Protocol.Ring says otherwise), or a
// Z_2^32 protocol with the input range derived from m, the largest sum
// the plan forms (see the comment at the top of this file). additive
// says whether every step of the plan runs in Z_2^32. why explains a
// refusal when Options.Protocol.Ring forces Z_2^32.
func chooseRing(base *pond.Protocol, asked pond.Config, additive bool, m int, ok bool) (ringChoice, error) {
	keep := ringChoice{proto: base}
	if asked.Ring == pond.Ring64 {
		return keep, nil
	}
	forced := asked.Ring == pond.Ring32
	refuse := func(format string, args ...any) (ringChoice, error) {
		if !forced {
			return keep, nil
		}
		return ringChoice{}, fmt.Errorf("session: Protocol.Ring is %d, but %s", pond.Ring32, fmt.Sprintf(format, args...))
	}
	if !additive || !ok {
		return refuse("the plan multiplies or divides inside the protocol, which needs Z_2^64")
	}
	cfg := base.Config()
	cfg.Ring = pond.Ring32
	derived := ring32IntBits(cfg.FracBits, m)
	switch {
	case derived < 1:
		return refuse("a sum of up to %d inputs with %d fractional bits leaves no integer bits in Z_2^32", m, cfg.FracBits)
	case asked.IntBits > derived:
		return refuse("IntBits %d is more than the %d bits Z_2^32 leaves an input when sums of up to %d inputs must not wrap", asked.IntBits, derived, m)
	case asked.IntBits == 0 && !forced && derived < cfg.IntBits:
		return keep, nil // Z_2^32 would narrow the default range
	case asked.IntBits == 0:
		cfg.IntBits = derived
	}
	p, err := pond.New(cfg)
	if err != nil {
		return refuse("%v", err)
	}
	return ringChoice{proto: p, terms: m}, nil
}

// additive reports whether every step of steps computes in Z_2^32: the
// steps that move, share, add and reveal, but no product, no truncation
// and no mean divided inside the protocol.
func additive(steps []step) bool {
	for _, s := range steps {
		switch s := s.(type) {
		case *callStep, *shareStep, *recvSeedStep, *recvMaskedStep, *linearStep,
			*sendShareStep, *revealStep, *sendPublicStep, *recvPublicStep,
			*announceStep, *roundStartStep, *noticeStep, *sendMembersStep,
			*seedsStep, *contributeStep, *gatherStep, *sendResultStep, *cohortRevealStep:
		case *aggregateStep:
			if s.divide {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// describeRing says in a plan's text which ring it computes in and the
// range of its inputs.
func describeRing(c ringChoice) string {
	cfg := c.proto.Config()
	if cfg.Ring == pond.Ring32 {
		return fmt.Sprintf("ring Z_2^32 (4 bytes an element): inputs |x| < %g, so that a sum of up to %d cannot wrap", cfg.Bound(), c.terms)
	}
	return fmt.Sprintf("ring Z_2^64 (8 bytes an element): values |x| < %g", cfg.Bound())
}
