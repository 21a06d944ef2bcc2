package session

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
)

// Plan is a graph compiled for one op: for every player the ordered steps
// it alone executes each iteration. Every edge between players is a send
// on one side and a receive on the other, paired by an edge number that
// becomes the message's rendezvous key. All players' steps follow one
// global order and sends never wait, so a plan cannot deadlock.
//
// A Plan is immutable and safe for concurrent use.
type Plan struct {
	op          *graph.Op
	servers     [2]string
	players     []string
	steps       map[string][]step
	edges       uint64
	fingerprint string
	cohort      *cohortPlan // nil but for rounds of a cohort
	proto       *pond.Protocol
	ring        string        // the ring and input range, for the text (describeRing)
	terms       int           // in Z_2^32, the most inputs a sum adds; 0 in Z_2^64
	nodes       []*graph.Node // the nodes the plan computes, in graph order
}

// Players returns the players that take part, sorted.
func (p *Plan) Players() []string { return p.players }

// Fingerprint returns a hex SHA-256 digest of the whole plan and of every
// setting that changes what it computes (see fingerprint). Players on
// different hosts compare fingerprints before the first iteration and
// refuse to run unless they compiled the same plan with the same
// settings.
func (p *Plan) Fingerprint() string { return p.fingerprint }

// Edges returns the number of messages one iteration sends.
func (p *Plan) Edges() uint64 { return p.edges }

// WriteTo writes the plan in a readable form: player by player, every
// step with its peers and edges. It shows exactly where each private
// tensor is shared and who sees what.
func (p *Plan) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	if p.cohort != nil {
		fmt.Fprintf(&b, "plan for %s: rounds of %s run by %s, %d players and the members of each round, %d edges per round\n",
			p.op.Node(), p.cohort.cohort, p.cohort.coordinator, len(p.players), p.edges)
	} else {
		fmt.Fprintf(&b, "plan for %s: %d players, %d messages per iteration\n", p.op.Node(), len(p.players), p.edges)
	}
	fmt.Fprintf(&b, "%s\n", p.ring)
	for _, pl := range p.players {
		fmt.Fprintf(&b, "player %s:\n", pl)
		for _, s := range p.steps[pl] {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	if p.cohort != nil {
		p.cohort.writeTo(&b)
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// String returns the plan as WriteTo writes it.
func (p *Plan) String() string {
	var b strings.Builder
	p.WriteTo(&b)
	return b.String()
}

// compiler lowers a graph into per-player steps.
type compiler struct {
	proto    *pond.Protocol
	servers  [2]string
	producer string // the crypto producer
	steps    map[string][]step
	edge     uint64
	sent     map[sentKey]bool // public tensors already moved to a player
	masked   [2]int           // elements of masked inputs each server receives
	clearDiv bool
	products bool // some product needs a triple from the crypto producer

	// Rounds of a cohort (cohort_plan.go).
	cohort        *cohortPlan
	clearMeans    map[*graph.Node]bool // means revealed as sums, divided in the clear
	sentToMembers map[graph.Ref]bool   // public tensors already sent to every member
	weightSums    map[graph.Ref]bool   // weights whose sum is computed
	gathered      bool                 // the servers' gather step is emitted
}

type sentKey struct {
	ref graph.Ref
	to  string
}

func (c *compiler) emit(player string, s step) { c.steps[player] = append(c.steps[player], s) }

func (c *compiler) newEdge() uint64 {
	e := c.edge
	c.edge++
	return e
}

// compile lowers the part of g that op needs, in the ring the plan allows
// and Options.Protocol.Ring asks for (ring.go): it compiles in proto's
// ring, Z_2^64 unless forced otherwise, then again in Z_2^32 if the plan
// only adds.
func compile(g *graph.Graph, op *graph.Op, proto *pond.Protocol, opts Options) (*Plan, error) {
	plan, err := compileIn(g, op, ringChoice{proto: proto}, opts)
	if err != nil {
		return nil, err
	}
	steps := slices.Concat(slices.Collect(maps.Values(plan.steps))...)
	if plan.cohort != nil {
		steps = append(steps, plan.cohort.member...)
	}
	m, ok := sumTerms(plan.nodes, opts.Rounds.cohortBound())
	choice, err := chooseRing(proto, opts.Protocol, additive(steps), m, ok)
	if err != nil {
		return nil, fmt.Errorf("%w (plan for %s)", err, op.Node())
	}
	if choice.proto == proto {
		return plan, nil
	}
	plan32, err := compileIn(g, op, choice, opts)
	if err != nil && opts.Protocol.Ring == 0 {
		return plan, nil // a constant Z_2^32's narrower range cannot hold
	}
	return plan32, err
}

// compileIn lowers the part of g that op needs with the protocol of ring.
func compileIn(g *graph.Graph, op *graph.Op, ring ringChoice, opts Options) (*Plan, error) {
	proto := ring.proto
	if err := g.Err(); err != nil {
		return nil, fmt.Errorf("session: graph has build errors: %w", err)
	}
	if op == nil || op.Node() == nil || !containsNode(g, op.Node()) {
		return nil, fmt.Errorf("session: op does not belong to the graph")
	}
	c := &compiler{
		proto:    proto,
		servers:  opts.servers(),
		producer: opts.cryptoProducer(),
		steps:    map[string][]step{},
		sent:     map[sentKey]bool{},
		clearDiv: !opts.PrivateDivision,
	}
	reveal := c.revealRefs(op.Node())
	needed := neededNodes(op.Node(), reveal)
	if cohort := cohortOf(g, needed); cohort != nil {
		if err := c.startCohort(g, cohort, op.Node(), reveal, needed); err != nil {
			return nil, err
		}
		c.sentToMembers, c.weightSums = map[graph.Ref]bool{}, map[graph.Ref]bool{}
	}

	var nodes []*graph.Node
	for _, n := range g.Nodes() {
		if !needed[n.ID()] {
			continue
		}
		nodes = append(nodes, n)
		if err := c.lower(n, reveal); err != nil {
			return nil, err
		}
	}
	if err := c.checkProducerReceivesNothing(); err != nil {
		return nil, err
	}
	if c.cohort != nil {
		c.finishCohort()
	}
	if err := checkDataflow(c.steps); err != nil {
		return nil, fmt.Errorf("session: %s: %w", op.Node(), err)
	}
	markLastUses(c.steps)
	plan := &Plan{op: op, servers: c.servers, steps: c.steps, edges: c.edge, cohort: c.cohort, proto: proto, ring: describeRing(ring), terms: ring.terms, nodes: nodes}
	var rounds []byte
	if c.cohort != nil {
		c.cohort.member = c.steps[cohortMember]
		delete(c.steps, cohortMember)
		rounds = append([]byte(c.cohort.cohort.Name()), 0)
		rounds = opts.Rounds.appendFingerprint(rounds)
	}
	for p := range c.steps {
		plan.players = append(plan.players, p)
	}
	sort.Strings(plan.players)
	plan.fingerprint = fingerprint(proto.Config(), opts, c.servers, c.producer, structure(nodes), plan.String(), rounds)
	return plan, nil
}

// fingerprintLabel names the fingerprint's encoding; change its version
// whenever the encoding changes, or the wire form of a step's messages
// (v4: public tensors and masked inputs travel as bare words; v5: shares
// in Z_2^32 travel as 4-byte words; v6: masks in Z_2^32 take 4 bytes of
// keystream an element), or what a step's messages mean, so that players
// of two versions refuse each other at the handshake.
const fingerprintLabel = "shareflow/plan-fingerprint/v6"

// fingerprint hashes, in one canonical encoding, everything that decides
// what a plan computes: the protocol's configuration (every field of
// pond.Config, defaults filled in, see pond.Config.AppendBinary), the
// session options that change the computation (the servers, the crypto
// producer and PrivateDivision), the structure of the nodes the plan
// computes (see structure: which tensor feeds which operand, which the
// plan's text does not say), and the plan's text, which names every step,
// tensor, shape and edge. Every part is length-prefixed, so no two inputs
// encode alike. The session id is compared on its own in the handshake,
// and Options.Rand and Options.Players change who draws or connects, not
// what is computed. A plan for rounds of a cohort adds a part, rounds:
// the cohort's name and the round options every player applies (see
// RoundOptions.appendFingerprint); other plans have no such part, so
// their fingerprints are as they were before cohorts existed.
func fingerprint(cfg pond.Config, opts Options, servers [2]string, producer string, nodes []byte, text string, rounds []byte) string {
	b := append([]byte(fingerprintLabel), 0)
	part := func(p []byte) {
		b = binary.LittleEndian.AppendUint64(b, uint64(len(p)))
		b = append(b, p...)
	}
	enc, err := cfg.AppendBinary(nil)
	if err != nil {
		panic("session: encoding a pond config: " + err.Error()) // AppendBinary cannot fail
	}
	part(enc)
	part([]byte(servers[0]))
	part([]byte(servers[1]))
	part([]byte(producer))
	private := []byte{0}
	if opts.PrivateDivision {
		private[0] = 1
	}
	part(private)
	part(nodes)
	part([]byte(text))
	if rounds != nil {
		part(rounds)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// structure encodes the nodes a plan computes, in order: for each its ID,
// kind, player, constant (or axis), the node and output of each input in
// operand order, and its output shapes. Two graphs that differ only in
// the order of operands (x − y against y − x, x·y against y·x) print the
// same plan, as steps name their nodes but not their inputs; their
// fingerprints differ by this part.
func structure(nodes []*graph.Node) []byte {
	var b []byte
	u64 := func(v uint64) { b = binary.LittleEndian.AppendUint64(b, v) }
	for _, n := range nodes {
		u64(uint64(n.ID()))
		u64(uint64(n.Kind()))
		u64(uint64(len(n.Player())))
		b = append(b, n.Player()...)
		u64(math.Float64bits(n.Constant()))
		u64(uint64(len(n.Inputs())))
		for _, in := range n.Inputs() {
			u64(uint64(in.Node.ID()))
			u64(uint64(in.Index))
		}
		u64(uint64(len(n.Outputs())))
		for _, s := range n.Outputs() {
			u64(uint64(len(s)))
			for _, d := range s {
				u64(uint64(d))
			}
		}
	}
	return b
}

func containsNode(g *graph.Graph, n *graph.Node) bool {
	nodes := g.Nodes()
	return n.ID() < len(nodes) && nodes[n.ID()] == n
}

// revealTarget is what the servers reveal for one output tensor: the ref
// itself, or, for a division revealed in the clear, the dividend and the
// divisor the output player applies.
type revealTarget struct {
	ref     graph.Ref
	divisor float64 // 0: none
	// In rounds of a cohort, a mean is revealed as its sum and divided by
	// the number of survivors (byCount), a weighted mean as Σw·x and
	// divided by Σw, the revealed sum of the weight byWeight.
	byCount  bool
	byWeight *graph.Ref
}

// revealRefs decides what is revealed for each input of the output node.
// A division that feeds the output is done in the clear on the output
// player unless PrivateDivision is set: exact, and it reveals nothing the
// quotient does not, as the divisor is public.
func (c *compiler) revealRefs(out *graph.Node) []revealTarget {
	targets := make([]revealTarget, len(out.Inputs()))
	for i, in := range out.Inputs() {
		targets[i] = revealTarget{ref: in}
		if c.clearDiv && in.Node.Kind() == graph.KindDiv {
			targets[i] = revealTarget{ref: in.Node.Inputs()[0], divisor: in.Node.Constant()}
		}
	}
	return targets
}

// neededNodes returns the IDs of the nodes the output depends on.
func neededNodes(out *graph.Node, reveal []revealTarget) map[int]bool {
	needed := map[int]bool{out.ID(): true}
	var visit func(n *graph.Node)
	visit = func(n *graph.Node) {
		if needed[n.ID()] {
			return
		}
		needed[n.ID()] = true
		for _, in := range n.Inputs() {
			visit(in.Node)
		}
	}
	for _, r := range reveal {
		visit(r.ref.Node)
	}
	return needed
}

func (c *compiler) lower(n *graph.Node, reveal []revealTarget) error {
	s0, s1 := c.servers[0], c.servers[1]
	switch n.Kind() {
	case graph.KindCohortInput:
		c.lowerCohortInput(n)
	case graph.KindMean, graph.KindWeightedMean, graph.KindSumCohort:
		return c.lowerAggregation(n)
	case graph.KindOutput:
		if c.cohort != nil {
			c.lowerCohortOutput(n, reveal)
			return nil
		}
		c.lowerOutput(n, reveal)
	case graph.KindPublicInput, graph.KindLocal, graph.KindPrivateInput:
		for _, in := range n.Inputs() {
			c.movePublic(in, n.Player())
		}
		c.emit(n.Player(), &callStep{node: n})
		if n.Kind() != graph.KindPrivateInput {
			return nil
		}
		for i := range n.Outputs() {
			ref := graph.Ref{Node: n, Index: i}
			// The masked tensor goes to the server that has received fewer
			// masked elements so far, the seed to the other: this balances
			// bytes and work between the servers, however sizes vary.
			seedTo, maskedTo := s0, s1
			if c.masked[1] > c.masked[0] {
				seedTo, maskedTo = s1, s0
				c.masked[0] += ref.Shape().Size()
			} else {
				c.masked[1] += ref.Shape().Size()
			}
			st := &shareStep{ref: ref, seedTo: seedTo, maskedTo: maskedTo, seedEdge: c.newEdge(), maskedEdge: c.newEdge()}
			c.emit(n.Player(), st)
			c.emit(seedTo, &recvSeedStep{ref: ref, from: n.Player(), edge: st.seedEdge})
			c.emit(maskedTo, &recvMaskedStep{ref: ref, from: n.Player(), edge: st.maskedEdge})
		}
	case graph.KindAddN, graph.KindSub, graph.KindNeg, graph.KindReduceSum, graph.KindAddBias:
		c.emit(s0, &linearStep{node: n})
		c.emit(s1, &linearStep{node: n})
	case graph.KindAddConstant:
		return c.lowerAddConstant(n)
	case graph.KindMul, graph.KindSquare, graph.KindMatMul, graph.KindDot:
		return c.lowerPrivateProduct(n)
	case graph.KindMulPublicTensor, graph.KindMatMulPublic:
		return c.lowerPublicProduct(n)
	case graph.KindMulPublic, graph.KindDiv:
		k := n.Constant()
		if n.Kind() == graph.KindDiv {
			k = 1 / k
		}
		enc, err := c.proto.EncodeConstant(k)
		if err != nil {
			if n.Kind() == graph.KindDiv {
				return fmt.Errorf("session: %s: divisor %g, multiplied by its reciprocal: %w", n, n.Constant(), err)
			}
			return fmt.Errorf("session: %s: %w", n, err)
		}
		tr := c.truncation()
		c.emit(s0, &mulPublicStep{node: n, c: enc, trunc: tr[0]})
		c.emit(s1, &mulPublicStep{node: n, c: enc, trunc: tr[1]})
	default:
		return fmt.Errorf("session: %s: unknown kind", n)
	}
	return nil
}

// lowerOutput lowers the output node of a fixed-owner plan: both servers
// send their shares of every tensor revealed, and the output player
// reveals them.
func (c *compiler) lowerOutput(n *graph.Node, reveal []revealTarget) {
	rs := &revealStep{node: n, targets: reveal, servers: c.servers}
	for _, t := range reveal {
		e0, e1 := c.newEdge(), c.newEdge()
		rs.edges = append(rs.edges, [2]uint64{e0, e1})
		c.emit(c.servers[0], &sendShareStep{ref: t.ref, to: n.Player(), edge: e0})
		c.emit(c.servers[1], &sendShareStep{ref: t.ref, to: n.Player(), edge: e1})
	}
	c.emit(n.Player(), rs)
}

// markLastUses tells every step which of its reads are the last use of
// the value on its player: no later step, and no later read of the same
// step, reads it. At its last use a step may give a value's buffer away
// (to a function, or to the transport with a message); before, it must
// leave it or copy it. This is derived from the steps' declarations alone
// (step.reads), so a new step cannot be forgotten here.
func markLastUses(steps map[string][]step) {
	for _, list := range steps {
		later := map[value]bool{}
		for i := len(list) - 1; i >= 0; i-- {
			reads := list[i].reads()
			last := make([]bool, len(reads))
			for j := len(reads) - 1; j >= 0; j-- {
				last[j] = !later[reads[j]]
				later[reads[j]] = true
			}
			list[i].setLast(last)
		}
	}
}

// checkDataflow checks the steps' declarations against the order of each
// player's plan: every value is read only after a step of the same player
// wrote it (or by a step that writes it too, reading it if present), and
// written only once (or by a step that reads it too). A failure is a bug
// of the compiler or of a step's declarations.
func checkDataflow(steps map[string][]step) error {
	players := make([]string, 0, len(steps))
	for p := range steps {
		players = append(players, p)
	}
	sort.Strings(players)
	for _, p := range players {
		live := map[value]bool{}
		for _, s := range steps[p] {
			reads, writes := s.reads(), s.writes()
			for _, v := range reads {
				if !live[v] && !slices.Contains(writes, v) {
					return fmt.Errorf("plan bug: on %q, %q reads the %s, which no earlier step writes", p, s, v)
				}
			}
			for _, v := range writes {
				if live[v] && !slices.Contains(reads, v) {
					return fmt.Errorf("plan bug: on %q, %q writes the %s again", p, s, v)
				}
				live[v] = true
			}
		}
	}
	return nil
}

// movePublic sends a public tensor to player, once, unless it is there.
func (c *compiler) movePublic(ref graph.Ref, to string) {
	from := ref.Node.Player()
	if from == to || c.sent[sentKey{ref, to}] {
		return
	}
	c.sent[sentKey{ref, to}] = true
	e := c.newEdge()
	c.emit(from, &sendPublicStep{ref: ref, to: to, edge: e})
	c.emit(to, &recvPublicStep{ref: ref, from: from, edge: e})
}

// Options configure a session. The zero value is ready to use.
type Options struct {
	// Protocol is Pond's fixed-point configuration; zero means defaults.
	// Its Ring zero lets the compiler pick each plan's ring: Z_2^32 for a
	// plan that only adds, where the derived input range is no narrower
	// than the configuration's, and Z_2^64 otherwise; pond.Ring64 or
	// pond.Ring32 forces one (see the package documentation).
	Protocol pond.Config
	// Servers names the two compute servers; empty means server0 and
	// server1.
	Servers [2]string
	// CryptoProducer names the player that draws the Beaver triples of
	// private products (Mul, Square, MatMul, Dot) and sends each server
	// its share; empty means server2 (players.CryptoProducer). It must be
	// neither server, and it receives nothing. Plans without private
	// products do not involve it.
	CryptoProducer string
	// SessionID distinguishes this run's messages and mask streams from
	// every other run's. Empty means a fresh random id (local sessions);
	// players on separate hosts must agree on it.
	SessionID string
	// Rand is the source of every seed. Nil means crypto/rand.Reader,
	// read by every player directly. Only tests should set it, to a seeded
	// reader: the session then reads a 32-byte key from it once, when it is
	// created (after the session id, if it draws one), and gives each
	// player its own stream derived from the key and the player's name
	// (AES-256-CTR). Rand therefore need not be safe for concurrent use,
	// and a seeded Rand makes every player's draws reproducible.
	Rand io.Reader
	// Players lists every player of a remote session's network. Before
	// the first iteration of an op all of them exchange fingerprints,
	// including players with no step in the plan, which therefore stay
	// until everyone has connected. Empty means the plan's players. Local
	// sessions ignore it. In rounds of a cohort, players say hello to the
	// coordinator alone (see Remote.Serve), and the players listed with
	// no part in the plan, but the crypto producer, are members the
	// coordinator may invite.
	Players []string
	// PrivateDivision keeps a division that feeds an output inside the
	// protocol (multiply by 1/d and truncate) instead of revealing the
	// dividend and dividing on the output player. It applies to the means
	// of a cohort (graph.Mean) too, not to weighted means, whose divisor
	// Σw is private until revealed.
	PrivateDivision bool
	// Rounds configure the rounds of ops that aggregate a cohort
	// (graph.DefineCohort); other ops ignore them.
	Rounds RoundOptions
}

func (o Options) cryptoProducer() string {
	if o.CryptoProducer == "" {
		return players.CryptoProducer
	}
	return o.CryptoProducer
}

func (o Options) servers() [2]string {
	if o.Servers[0] == "" && o.Servers[1] == "" {
		return [2]string{players.Server0, players.Server1}
	}
	return o.Servers
}
