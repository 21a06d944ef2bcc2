package session

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/internal/le"
	"github.com/shareflow/shareflow/internal/par"
	"github.com/shareflow/shareflow/ops"
	"github.com/shareflow/shareflow/protocol/pond"
)

// Products: how the compiler lowers the verbs of a private forward pass
// (package graph, products.go) and the steps that run them.
//
// A private × private product (mul, square, matmul, dot) costs a Beaver
// triple from the crypto producer: it draws the triple and sends server0
// a seed and server1 a seed and c1 (tripleStep); each server receives and
// expands its share (recvTripleStep), then both open their masked
// operands to each other, one message each way, finish their shares of
// the product and truncate it (productStep). A dot product is a matrix
// product by a k×1 matrix, so each row is summed before it is truncated
// once. The crypto producer receives nothing, ever: what it sends depends
// on the product's shape, the domain and its randomness alone.
//
// A product with a public operand needs no triple: the operand's holder
// sends it to both servers, and each multiplies its share by its encoding
// and truncates (publicProductStep). Reduce-sum, add-bias and
// add-constant are local to each server (linearStep).

// lowerPrivateProduct lowers a private × private product.
func (c *compiler) lowerPrivateProduct(n *graph.Node) error {
	shape := tripleShape(n)
	if err := shape.Validate(); err != nil {
		return fmt.Errorf("session: %s: %w", n, err)
	}
	cp, s0, s1 := c.producer, c.servers[0], c.servers[1]
	if cp == s0 || cp == s1 {
		return fmt.Errorf("session: %s needs a Beaver triple, but the crypto producer %q is also a compute server: it would learn the other server's shares (set Options.CryptoProducer)", n, cp)
	}
	ts := &tripleStep{node: n, shape: shape, servers: c.servers, edges: [2]uint64{c.newEdge(), c.newEdge()}}
	c.emit(cp, ts)
	c.emit(s0, &recvTripleStep{node: n, shape: shape, party: pond.Server0, from: cp, edge: ts.edges[0]})
	c.emit(s1, &recvTripleStep{node: n, shape: shape, party: pond.Server1, from: cp, edge: ts.edges[1]})
	e01, e10 := c.newEdge(), c.newEdge()
	tr := c.truncation()
	c.emit(s0, &productStep{node: n, shape: shape, party: pond.Server0, peer: s1, sendEdge: e01, recvEdge: e10, trunc: tr[0]})
	c.emit(s1, &productStep{node: n, shape: shape, party: pond.Server1, peer: s0, sendEdge: e10, recvEdge: e01, trunc: tr[1]})
	c.products = true
	return nil
}

// tripleShape is the shape of the triple a private product needs. A dot
// product of x (k, or m×k) and y (k) is the matrix product of x, as an
// m×k matrix, and y, as a k×1 one: its triple sends m elements of c
// rather than m·k, and each row is summed before truncation.
func tripleShape(n *graph.Node) pond.TripleShape {
	x := n.Inputs()[0].Shape()
	switch n.Kind() {
	case graph.KindMul:
		return pond.MulShape(x.Size())
	case graph.KindSquare:
		return pond.SquareShape(x.Size())
	case graph.KindMatMul:
		return pond.MatMulShape(x[0], x[1], n.Inputs()[1].Shape()[1])
	}
	k := x[len(x)-1]
	return pond.MatMulShape(x.Size()/k, k, 1)
}

// lowerPublicProduct lowers a product of a private and a public tensor:
// the public one goes to both servers, in the clear.
func (c *compiler) lowerPublicProduct(n *graph.Node) error {
	pi := n.PublicOperand()
	if pi < 0 {
		return fmt.Errorf("session: %s: no public operand (plan bug)", n)
	}
	pub := n.Inputs()[pi]
	c.movePublic(pub, c.servers[0])
	c.movePublic(pub, c.servers[1])
	tr := c.truncation()
	c.emit(c.servers[0], &publicProductStep{node: n, public: pi, trunc: tr[0]})
	c.emit(c.servers[1], &publicProductStep{node: n, public: pi, trunc: tr[1]})
	return nil
}

// lowerAddConstant lowers x + c: server0 adds the encoding of c to its
// share, server1 keeps its own. A constant below the resolution adds
// nothing, within half a unit, and is accepted; one out of range is not.
func (c *compiler) lowerAddConstant(n *graph.Node) error {
	var enc [1]uint64
	if err := c.proto.Encode(enc[:], []float64{n.Constant()}); err != nil {
		b := c.proto.Config().Bound()
		return fmt.Errorf("session: %s: %w: %g is outside the fixed-point range (-%g, %g)", n, pond.ErrConstant, n.Constant(), b, b)
	}
	c.emit(c.servers[0], &linearStep{node: n, c: enc[0], party: pond.Server0})
	c.emit(c.servers[1], &linearStep{node: n, c: enc[0], party: pond.Server1})
	return nil
}

// truncation returns how each server truncates a product under the
// plan's configuration; an interactive truncation takes the next edge.
func (c *compiler) truncation() [2]truncation {
	s0, s1 := c.servers[0], c.servers[1]
	if c.proto.Config().Truncation == pond.Interactive {
		e := c.newEdge()
		return [2]truncation{{party: pond.Server0, peer: s1, edge: e}, {party: pond.Server1, peer: s0, edge: e}}
	}
	return [2]truncation{{party: pond.Server0, local: true}, {party: pond.Server1, local: true}}
}

// checkProducerReceivesNothing refuses a plan in which the crypto
// producer of its triples would receive a message: it would then hold
// more than its randomness, and its triples could depend on it. Only
// steps placed on a named player receive on one that is not a server:
// public tensors and reveals.
func (c *compiler) checkProducerReceivesNothing() error {
	if !c.products {
		return nil
	}
	for _, s := range c.steps[c.producer] {
		switch s.(type) {
		case *recvPublicStep, *revealStep:
			return fmt.Errorf("session: the crypto producer %q draws the plan's Beaver triples and must receive nothing, but its plan has %q: place the nodes that receive on another player, or name another crypto producer (Options.CryptoProducer)", c.producer, s)
		}
	}
	return nil
}

// split is the session's pond.Split: n units of work each, spread over
// up to GOMAXPROCS cores (internal/par) when the whole is large enough to
// pay for the goroutines.
func split(n, work int, f func(lo, hi int)) {
	work = max(work, 1)
	if n <= 1 || n > math.MaxInt/work {
		f(0, n)
		return
	}
	par.For(n*work, work, func(lo, hi int) { f(lo/work, hi/work) })
}

// truncation is how a server brings its share of a product, which
// carries 2·FracBits fractional bits, back to a share at the fixed-point
// scale: locally, or interactively, with server0 sending server1 one
// masked tensor on edge.
type truncation struct {
	party pond.Server
	local bool
	peer  string // the other server, when interactive
	edge  uint64 // when interactive
}

func (t truncation) String() string {
	switch {
	case t.local:
		return "local truncation"
	case t.party == pond.Server0:
		return fmt.Sprintf("truncation: send masked share -> %s (edge %d)", t.peer, t.edge)
	}
	return fmt.Sprintf("truncation: recv masked share from %s (edge %d)", t.peer, t.edge)
}

// run truncates the product share prod of node into out, a range at a
// time, on several cores for a large tensor. fill, if not nil, first
// computes each range of prod, so that a core truncates its range while
// it is still in its cache.
func (t truncation) run(ctx context.Context, r *runner, node *graph.Node, out pond.Share, prod pond.Product, fill func(lo, hi int)) error {
	n := len(out)
	if fill == nil {
		fill = func(int, int) {}
	}
	d := r.domain(graph.Ref{Node: node})
	switch {
	case t.local:
		parallel(n, func(lo, hi int) {
			fill(lo, hi)
			r.proto.TruncateLocal(t.party, out[lo:hi], prod[lo:hi])
		})
	case t.party == pond.Server0:
		mask, err := pond.NewSeed(r.rng)
		if err != nil {
			return err
		}
		fresh, err := pond.NewSeed(r.rng)
		if err != nil {
			return err
		}
		msg := pond.TruncationMessage{Seed: fresh, Masked: pond.Masked(r.shareBuf(n))}
		defer r.pool.putUint64s(msg.Masked)
		parallel(n, func(lo, hi int) {
			fill(lo, hi)
			r.proto.TruncateSendAt(out[lo:hi], msg.Masked[lo:hi], prod[lo:hi], mask, fresh, d, lo)
		})
		return r.send(ctx, t.peer, t.edge, pond.SeedSize+8+8*n, &msg)
	default:
		msg := pond.TruncationMessage{Masked: pond.Masked(r.shareBuf(n))[:0]}
		defer func() { r.pool.putUint64s(msg.Masked) }() // the buffer the message was decoded into
		if err := r.recv(ctx, t.peer, t.edge, &msg); err != nil {
			return err
		}
		if len(msg.Masked) != n {
			return fmt.Errorf("%s: truncation message from %q has %d elements, want %d", node, t.peer, len(msg.Masked), n)
		}
		parallel(n, func(lo, hi int) {
			fill(lo, hi)
			r.proto.TruncateReceiveAt(out[lo:hi], prod[lo:hi], msg.Masked[lo:hi], msg.Seed, d, lo)
		})
	}
	return nil
}

// tripleStep is the crypto producer's step for one private product: it
// draws the product's triple and sends server0 its seed and server1 its
// seed and c1. It reads nothing: what it sends depends on the shape, the
// domain (session, iteration, product) and its own randomness alone.
type tripleStep struct {
	lastUse
	node    *graph.Node
	shape   pond.TripleShape
	servers [2]string
	edges   [2]uint64
}

func (s *tripleStep) String() string {
	return fmt.Sprintf("triple for %s (%v): seed -> %s (edge %d), seed and c1 -> %s (edge %d)",
		s.node, s.shape, s.servers[0], s.edges[0], s.servers[1], s.edges[1])
}

func (s *tripleStep) reads() []value  { return nil }
func (s *tripleStep) writes() []value { return nil }

// exec draws c1 straight into its message where the byte order allows,
// saving a copy of it.
func (s *tripleStep) exec(ctx context.Context, r *runner) error {
	p := r.pool.producer()
	defer r.pool.putProducer(p)
	size, z := s.shape.Triple1Size(), s.shape.ZLen()
	b := r.pool.byteBuf(size)[:size]
	view, inPlace := le.Words(b[pond.SeedSize+8:])
	var to0 pond.TripleMessage0
	to1 := pond.TripleMessage1{C: view}
	if !inPlace {
		to1.C = r.shareBuf(z)
	}
	err := p.TripleSplit(r.rng, r.domain(graph.Ref{Node: s.node}), s.shape, &to0, &to1, split)
	inPlace = inPlace && len(to1.C) > 0 && &to1.C[0] == &view[0]
	if !inPlace {
		defer r.pool.putUint64s(to1.C)
	}
	if err != nil {
		r.pool.putBytes(b)
		return fmt.Errorf("triple for %s: %w", s.node, err)
	}
	if err := r.send(ctx, s.servers[0], s.edges[0], pond.SeedSize, &to0); err != nil {
		r.pool.putBytes(b)
		return err
	}
	if !inPlace {
		r.pool.putBytes(b)
		return r.send(ctx, s.servers[1], s.edges[1], size, &to1)
	}
	copy(b, to1.Seed[:])
	binary.LittleEndian.PutUint64(b[pond.SeedSize:], uint64(z))
	if err := r.t.SendOwned(ctx, s.servers[1], r.key(s.edges[1]), b); err != nil {
		return fmt.Errorf("sending to %q: %w", s.servers[1], err)
	}
	return nil
}

// recvTripleStep receives a server's triple message for one product from
// the crypto producer and expands it into the server's share of the
// triple.
type recvTripleStep struct {
	lastUse
	node  *graph.Node
	shape pond.TripleShape
	party pond.Server
	from  string
	edge  uint64
}

func (s *recvTripleStep) String() string {
	return fmt.Sprintf("recv triple for %s from %s (edge %d)", s.node, s.from, s.edge)
}

func (s *recvTripleStep) reads() []value  { return nil }
func (s *recvTripleStep) writes() []value { return values(tripleValue, graph.Ref{Node: s.node}) }

// exec refuses a message whose size is not the one the shape gives
// before decoding it.
func (s *recvTripleStep) exec(ctx context.Context, r *runner) error {
	b, err := r.t.Recv(ctx, s.from, r.key(s.edge))
	if err != nil {
		return fmt.Errorf("receiving from %q: %w", s.from, err)
	}
	defer r.pool.putBytes(b) // the triple share holds no reference to it
	want := s.shape.Triple0Size()
	if s.party == pond.Server1 {
		want = s.shape.Triple1Size()
	}
	if len(b) != want {
		return fmt.Errorf("%w: triple for %s from %q (edge %d) has %d bytes, want %d for %v", ErrWire, s.node, s.from, s.edge, len(b), want, s.shape)
	}
	ref := graph.Ref{Node: s.node}
	d := r.domain(ref)
	t := r.pool.triple(s.shape)
	if s.party == pond.Server0 {
		var m pond.TripleMessage0
		err = m.UnmarshalBinary(b)
		if err == nil {
			err = m.Expand(t, d, s.shape)
		}
	} else {
		err = s.expand1(r, t, d, b)
	}
	if err != nil {
		r.pool.putTriple(t)
		return fmt.Errorf("triple for %s from %q (edge %d): %w", s.node, s.from, s.edge, err)
	}
	r.setTriple(ref, t)
	return nil
}

// expand1 decodes server1's triple message b, of the right size, and
// expands it into t, reading c1 where it lies in b when it can.
func (s *recvTripleStep) expand1(r *runner, t *pond.TripleShare, d pond.Domain, b []byte) error {
	var m pond.TripleMessage1
	z := s.shape.ZLen()
	if binary.LittleEndian.Uint64(b[pond.SeedSize:]) == uint64(z) {
		if c, ok := le.Words(b[pond.SeedSize+8:]); ok {
			copy(m.Seed[:], b)
			m.C = c
			return m.Expand(t, d, s.shape)
		}
	}
	m.C = r.shareBuf(z)[:0]
	defer func() { r.pool.putUint64s(m.C) }()
	if err := m.UnmarshalBinary(b); err != nil {
		return err
	}
	return m.Expand(t, d, s.shape)
}

// productStep is a server's online step of a private product: it opens
// its masked operands to the other server and receives the other's
// opening (one message each way), finishes its share of the product with
// its triple and truncates it.
type productStep struct {
	lastUse
	node               *graph.Node
	shape              pond.TripleShape
	party              pond.Server
	peer               string
	sendEdge, recvEdge uint64 // this server's opening, the peer's
	trunc              truncation
}

func (s *productStep) String() string {
	return fmt.Sprintf("private %s (%v): send opening -> %s (edge %d), recv opening from %s (edge %d), %s",
		s.node, s.shape, s.peer, s.sendEdge, s.peer, s.recvEdge, s.trunc)
}

func (s *productStep) reads() []value {
	return append(values(shareValue, s.node.Inputs()...), value{tripleValue, graph.Ref{Node: s.node}})
}
func (s *productStep) writes() []value { return values(shareValue, graph.Ref{Node: s.node}) }

func (s *productStep) exec(ctx context.Context, r *runner) error {
	ins := s.node.Inputs()
	x, err := r.share(ins[0])
	if err != nil {
		return err
	}
	var y pond.Share // none for a square
	if s.shape.Kind != pond.ProductSquare {
		if y, err = r.share(ins[1]); err != nil {
			return err
		}
	}
	ref := graph.Ref{Node: s.node}
	t, err := r.takeTriple(ref)
	if err != nil {
		return err
	}
	defer r.pool.putTriple(t)

	mine := pond.Opening{E: r.shareBuf(s.shape.XLen()), F: r.shareBuf(s.shape.YLen())}
	defer func() {
		r.pool.putUint64s(mine.E)
		r.pool.putUint64s(mine.F)
	}()
	if err := t.Open(&mine, x, y); err != nil {
		return fmt.Errorf("%s: %w", s.node, err)
	}
	if err := r.send(ctx, s.peer, s.sendEdge, s.shape.OpeningSize(), &mine); err != nil {
		return err
	}
	theirs, release, err := r.recvOpening(ctx, s.peer, s.recvEdge, s.shape)
	if err != nil {
		return fmt.Errorf("%s: %w", s.node, err)
	}
	defer release()

	z := s.shape.ZLen()
	prod := pond.Product(r.shareBuf(z))
	defer r.pool.putUint64s(prod)
	if err := t.FinishSplit(prod, &mine, &theirs, split); err != nil {
		return fmt.Errorf("%s: opening from %q: %w", s.node, s.peer, err)
	}
	// The result is computed inside a message buffer, so that sending it
	// to the output player later needs no copy.
	out := r.messageShare(z)
	r.setShare(ref, out)
	return s.trunc.run(ctx, r, s.node, out, prod, nil)
}

// recvOpening receives the other server's opening for a product of shape
// sh, refusing a message whose size is not the shape's before decoding
// it. Where the byte order allows, e and f are views of the message.
// release gives their memory back.
func (r *runner) recvOpening(ctx context.Context, from string, edge uint64, sh pond.TripleShape) (o pond.Opening, release func(), err error) {
	b, err := r.t.Recv(ctx, from, r.key(edge))
	if err != nil {
		return o, nil, fmt.Errorf("receiving from %q: %w", from, err)
	}
	if len(b) != sh.OpeningSize() {
		r.pool.putBytes(b)
		return o, nil, fmt.Errorf("%w: opening from %q (edge %d) has %d bytes, want %d for %v", ErrWire, from, edge, len(b), sh.OpeningSize(), sh)
	}
	x, y := sh.XLen(), sh.YLen()
	fAt := 16 + 8*x
	if binary.LittleEndian.Uint64(b) == uint64(x) && binary.LittleEndian.Uint64(b[fAt-8:]) == uint64(y) {
		e, okE := le.Words(b[8 : fAt-8])
		f, okF := le.Words(b[fAt:])
		if okE && okF {
			return pond.Opening{E: e, F: f}, func() { r.pool.putBytes(b) }, nil
		}
	}
	o = pond.Opening{E: r.shareBuf(x)[:0], F: r.shareBuf(y)[:0]}
	release = func() {
		r.pool.putUint64s(o.E)
		r.pool.putUint64s(o.F)
	}
	err = o.UnmarshalBinary(b)
	r.pool.putBytes(b)
	if err != nil {
		release()
		return o, nil, fmt.Errorf("opening from %q (edge %d): %w", from, edge, err)
	}
	return o, release, nil
}

// publicProductStep multiplies a server's share by a public tensor, which
// its holder sent in the clear, element-wise or as a matrix product, and
// truncates. No triple: the product of a share and a public value is a
// share of the product.
type publicProductStep struct {
	lastUse
	node   *graph.Node
	public int // the index of the public operand in the node's inputs
	trunc  truncation
}

func (s *publicProductStep) String() string {
	return fmt.Sprintf("local %s with public %s, %s", s.node, s.node.Inputs()[s.public], s.trunc)
}

func (s *publicProductStep) reads() []value {
	ins := s.node.Inputs()
	out := values(shareValue, ins...)
	out[s.public].kind = publicValue
	return out
}
func (s *publicProductStep) writes() []value { return values(shareValue, graph.Ref{Node: s.node}) }

func (s *publicProductStep) exec(ctx context.Context, r *runner) error {
	ins := s.node.Inputs()
	pub, priv := ins[s.public], ins[1-s.public]
	x, err := r.share(priv)
	if err != nil {
		return err
	}
	w, err := r.publicTensor(pub)
	if err != nil {
		return err
	}
	enc := r.shareBuf(len(w))
	defer r.pool.putUint64s(enc)
	if err := r.proto.Encode(enc, w); err != nil {
		return fmt.Errorf("%s: public %s: %w", s.node, pub, err)
	}
	ref := graph.Ref{Node: s.node}
	z := ref.Shape().Size()
	prod := pond.Product(r.shareBuf(z))
	defer r.pool.putUint64s(prod)
	out := r.messageShare(z)
	r.setShare(ref, out) // released with the iteration, even on error
	if s.node.Kind() == graph.KindMulPublicTensor {
		return s.trunc.run(ctx, r, s.node, out, prod, func(lo, hi int) {
			ops.Mul(prod[lo:hi], x[lo:hi], enc[lo:hi])
		})
	}
	// A matrix product, by ranges of rows: x·w or w·x.
	a, b := x, pond.Share(enc)
	if s.public == 0 {
		a, b = b, a
	}
	as, bs := ins[0].Shape(), ins[1].Shape()
	m, k, n := as[0], as[1], bs[1]
	split(m, k*n, func(lo, hi int) {
		ops.MatMul(prod[lo*n:hi*n], a[lo*k:hi*k], b, hi-lo, k, n)
	})
	return s.trunc.run(ctx, r, s.node, out, prod, nil)
}
