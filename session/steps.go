package session

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/internal/le"
	"github.com/shareflow/shareflow/internal/par"
	"github.com/shareflow/shareflow/ops"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
)

// step is one instruction of a player's plan.
type step interface {
	exec(ctx context.Context, r *runner) error
	String() string
}

// runner executes one player's steps for one iteration. It holds the
// player's values: public tensors it holds, and, on a server, its shares.
type runner struct {
	player  string
	proto   *pond.Protocol
	t       *counting
	rng     io.Reader
	session string
	iter    uint64
	public  map[graph.Ref][]float64
	shares  map[graph.Ref]pond.Share
	seeds   map[graph.Ref]pond.Seed // input shares not yet expanded (see share)
	wire    map[graph.Ref][]byte    // encoded public tensors, sent to several players
	backing map[*uint64][]byte      // messages that shares are views of
	pool    *pool
}

// release returns the iteration's buffers to the pool.
func (r *runner) release() {
	for ref, s := range r.shares {
		r.releaseShare(s)
		delete(r.shares, ref)
	}
	for ref, b := range r.wire {
		r.pool.putBytes(b)
		delete(r.wire, ref)
	}
	clear(r.public)
	clear(r.seeds)
}

// appender is a wire type that encodes itself onto a buffer.
type appender interface {
	AppendBinary([]byte) ([]byte, error)
}

func (r *runner) key(edge uint64) transport.Key {
	return transport.Key{Session: r.session, Iteration: r.iter, Edge: edge}
}

func (r *runner) domain(ref graph.Ref) pond.Domain {
	// Tensor ids: node ID in the high 32 bits, output index in the low 32,
	// so that every tensor of a graph has its own.
	return pond.Domain{Session: r.session, Iteration: r.iter, Tensor: uint64(ref.Node.ID())<<32 | uint64(uint32(ref.Index))}
}

// send encodes m into a pooled buffer of about size bytes and hands the
// buffer over with the message: the receiver owns it from then on.
func (r *runner) send(ctx context.Context, to string, edge uint64, size int, m appender) error {
	b, err := m.AppendBinary(r.pool.byteBuf(size))
	if err != nil {
		return err
	}
	if err := r.t.SendOwned(ctx, to, r.key(edge), b); err != nil {
		return fmt.Errorf("sending to %q: %w", to, err)
	}
	return nil
}

func (r *runner) sendBytes(ctx context.Context, to string, edge uint64, b []byte) error {
	if err := r.t.Send(ctx, to, r.key(edge), b); err != nil {
		return fmt.Errorf("sending to %q: %w", to, err)
	}
	return nil
}

func (r *runner) recv(ctx context.Context, from string, edge uint64, m interface{ UnmarshalBinary([]byte) error }) error {
	b, err := r.t.Recv(ctx, from, r.key(edge))
	if err != nil {
		return fmt.Errorf("receiving from %q: %w", from, err)
	}
	err = m.UnmarshalBinary(b)
	r.pool.putBytes(b) // the payload is ours; m holds no reference to it
	if err != nil {
		return fmt.Errorf("message from %q (edge %d): %w", from, edge, err)
	}
	return nil
}

// shareBuf returns a pooled share of n elements with unspecified contents.
func (r *runner) shareBuf(n int) pond.Share { return r.pool.uint64s(n) }

// releaseShare gives a share's memory back to the pool: the message it is
// a view of, or the share itself.
func (r *runner) releaseShare(s pond.Share) {
	if len(s) > 0 {
		if b, ok := r.backing[&s[0]]; ok {
			delete(r.backing, &s[0])
			r.pool.putBytes(b)
			return
		}
	}
	r.pool.putUint64s(s)
}

// share returns the player's share of ref, expanding it from its seed on
// first use if it arrived as one.
func (r *runner) share(ref graph.Ref) (pond.Share, error) {
	if s, ok := r.shares[ref]; ok {
		return s, nil
	}
	seed, ok := r.seeds[ref]
	if !ok {
		return nil, fmt.Errorf("no share of %s on %q (plan bug)", ref, r.player)
	}
	s := r.shareBuf(ref.Shape().Size())
	pond.SeedShare(s, seed, r.domain(ref))
	r.shares[ref] = s
	delete(r.seeds, ref)
	return s, nil
}

// callStep runs an input or local function on its player. owned[i] says
// that input i has no later use on this player, so the function may have
// the engine's copy instead of a fresh one.
type callStep struct {
	node  *graph.Node
	owned []bool
}

func (s *callStep) String() string { return fmt.Sprintf("call %s", s.node) }

func (s *callStep) exec(ctx context.Context, r *runner) error {
	n := s.node
	ins := make([]*tensor.Dense, len(n.Inputs()))
	for i, in := range n.Inputs() {
		v, ok := r.public[in]
		if !ok {
			return fmt.Errorf("%s: input %s missing (plan bug)", n, in)
		}
		if !s.owned[i] {
			v = slices.Clone(v)
		}
		ins[i] = tensor.New(tensor.WithShape(shapeOf(in.Shape())...), tensor.WithBacking(v))
	}
	outs, err := n.Func()(ctx, ins)
	if err != nil {
		return fmt.Errorf("%s: %w", n, err)
	}
	if len(outs) != len(n.Outputs()) {
		return fmt.Errorf("%s: function returned %d tensors, declared %d", n, len(outs), len(n.Outputs()))
	}
	for i, out := range outs {
		ref := graph.Ref{Node: n, Index: i}
		data, err := denseData(out, n.Outputs()[i])
		if err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		r.public[ref] = data
	}
	return nil
}

// shapeOf turns a graph shape into a tensor shape; a scalar is (1).
func shapeOf(s graph.Shape) []int {
	if len(s) == 0 {
		return []int{1}
	}
	return s
}

// denseData checks a function's result against its declared shape and
// returns its elements. The function handed the tensor over (see
// graph.Func), so they are not copied.
func denseData(t *tensor.Dense, want graph.Shape) ([]float64, error) {
	if t == nil {
		return nil, errors.New("function returned a nil tensor")
	}
	if t.Dtype() != tensor.Float64 {
		return nil, fmt.Errorf("function returned a %v tensor, want float64", t.Dtype())
	}
	if t.Shape().TotalSize() != want.Size() || !sameShape(t.Shape(), want) {
		return nil, fmt.Errorf("function returned shape %v, declared %v", t.Shape(), want)
	}
	if t.IsView() {
		t = t.Materialize().(*tensor.Dense)
	}
	return t.Float64s(), nil
}

func sameShape(got tensor.Shape, want graph.Shape) bool {
	if len(want) == 0 {
		return got.TotalSize() == 1
	}
	return graph.Shape(got).Equal(want)
}

// shareStep encodes one private input tensor on its owner and sends the
// seed to one server and the masked tensor to the other.
type shareStep struct {
	ref                  graph.Ref
	seedTo, maskedTo     string
	seedEdge, maskedEdge uint64
}

func (s *shareStep) String() string {
	return fmt.Sprintf("share %s: seed -> %s (edge %d), masked -> %s (edge %d)", s.ref, s.seedTo, s.seedEdge, s.maskedTo, s.maskedEdge)
}

func (s *shareStep) exec(ctx context.Context, r *runner) error {
	x := r.public[s.ref]
	delete(r.public, s.ref) // the plaintext goes no further
	// The masked share is computed straight into the message when the
	// machine's byte order allows, saving a copy of the whole tensor.
	b, masked := r.shareMessage(len(x))
	seed, err := r.proto.EncodeAndShare(r.rng, r.domain(s.ref), masked, x)
	if err != nil {
		r.pool.putBytes(b)
		return fmt.Errorf("private input %s: %w", s.ref, err)
	}
	if b == nil {
		b = r.pool.byteBuf(8 + 8*len(masked))
		b, _ = masked.AppendBinary(b)
		r.pool.putUint64s(masked)
	}
	if err := r.send(ctx, s.seedTo, s.seedEdge, pond.SeedSize, seed); err != nil {
		return err
	}
	if err := r.t.SendOwned(ctx, s.maskedTo, r.key(s.maskedEdge), b); err != nil {
		return fmt.Errorf("sending to %q: %w", s.maskedTo, err)
	}
	return nil
}

// shareMessage returns a wire buffer holding a pond.Share of n elements
// and the share's words inside it, to be filled in place. Where the byte
// order does not allow it, b is nil and the share is a pooled buffer to
// encode afterwards.
func (r *runner) shareMessage(n int) (b []byte, words pond.Share) {
	b = r.pool.byteBuf(8 + 8*n)[:8+8*n]
	binary.LittleEndian.PutUint64(b, uint64(n))
	if w, ok := le.Words(b[8:]); ok {
		return b, w
	}
	r.pool.putBytes(b)
	return nil, r.shareBuf(n)
}

// messageShare returns a share of n elements with unspecified contents,
// laid out inside a pooled message buffer when the byte order allows, so
// that it can be sent as it is (see sendShareStep).
func (r *runner) messageShare(n int) pond.Share {
	b, w := r.shareMessage(n)
	if b != nil && n > 0 {
		r.backing[&w[0]] = b
	}
	return w
}

// recvShare receives a pond.Share of want elements. Where the byte order
// allows, the share is a view of the message itself, which the runner owns:
// no copy.
func (r *runner) recvShare(ctx context.Context, from string, edge uint64, want int) (pond.Share, error) {
	b, err := r.t.Recv(ctx, from, r.key(edge))
	if err != nil {
		return nil, fmt.Errorf("receiving from %q: %w", from, err)
	}
	if len(b) == 8+8*want && binary.LittleEndian.Uint64(b) == uint64(want) {
		if w, ok := le.Words(b[8:]); ok {
			if want > 0 {
				r.backing[&w[0]] = b
			}
			return w, nil
		}
	}
	share := r.shareBuf(want)[:0]
	err = share.UnmarshalBinary(b)
	r.pool.putBytes(b)
	if err == nil && len(share) != want {
		err = fmt.Errorf("share has %d elements, want %d", len(share), want)
	}
	if err != nil {
		r.pool.putUint64s(share)
		return nil, fmt.Errorf("message from %q (edge %d): %w", from, edge, err)
	}
	return share, nil
}

// recvSeedStep receives an input's seed on a server: its share, kept as
// the seed until used. A sum adds the expanded stream straight into its
// result; any other use expands it into a tensor (see runner.share).
type recvSeedStep struct {
	ref  graph.Ref
	from string
	edge uint64
}

func (s *recvSeedStep) String() string {
	return fmt.Sprintf("recv seed of %s from %s (edge %d)", s.ref, s.from, s.edge)
}

func (s *recvSeedStep) exec(ctx context.Context, r *runner) error {
	var seed pond.Seed
	if err := r.recv(ctx, s.from, s.edge, &seed); err != nil {
		return err
	}
	r.seeds[s.ref] = seed
	return nil
}

// recvMaskedStep receives an input's masked tensor on a server: its share.
type recvMaskedStep struct {
	ref  graph.Ref
	from string
	edge uint64
}

func (s *recvMaskedStep) String() string {
	return fmt.Sprintf("recv masked %s from %s (edge %d)", s.ref, s.from, s.edge)
}

func (s *recvMaskedStep) exec(ctx context.Context, r *runner) error {
	share, err := r.recvShare(ctx, s.from, s.edge, s.ref.Shape().Size())
	if err != nil {
		return fmt.Errorf("masked %s: %w", s.ref, err)
	}
	r.shares[s.ref] = share
	return nil
}

// linearStep computes add-n, sub or neg on a server's shares: no messages.
type linearStep struct{ node *graph.Node }

func (s *linearStep) String() string { return fmt.Sprintf("local %s", s.node) }

func (s *linearStep) exec(ctx context.Context, r *runner) error {
	if s.node.Kind() == graph.KindAddN {
		return s.addN(r)
	}
	ins := make([]pond.Share, len(s.node.Inputs()))
	for i, in := range s.node.Inputs() {
		sh, err := r.share(in)
		if err != nil {
			return err
		}
		ins[i] = sh
	}
	// The result is computed inside a message buffer, so that sending it
	// to the output player later needs no copy.
	dst := r.messageShare(s.node.Outputs()[0].Size())
	switch s.node.Kind() {
	case graph.KindSub:
		ops.Sub(dst, ins[0], ins[1])
	case graph.KindNeg:
		ops.Neg(dst, ins[0])
	}
	r.shares[graph.Ref{Node: s.node}] = dst
	return nil
}

// addN sums the inputs' shares: those held as tensors first, then the
// mask streams of those held as seeds, added in cache-sized chunks so that
// no seeded share is ever written out whole.
func (s *linearStep) addN(r *runner) error {
	var xs [][]uint64
	type seeded struct {
		seed pond.Seed
		d    pond.Domain
	}
	var streams []seeded
	for _, in := range s.node.Inputs() {
		if seed, ok := r.seeds[in]; ok {
			streams = append(streams, seeded{seed, r.domain(in)})
			continue
		}
		sh, err := r.share(in)
		if err != nil {
			return err
		}
		xs = append(xs, sh)
	}
	// The result is computed inside a message buffer, so that sending it
	// to the output player later needs no copy.
	dst := r.messageShare(s.node.Outputs()[0].Size())
	par.For(len(dst), 1, func(lo, hi int) {
		part := make([][]uint64, len(xs))
		for i, x := range xs {
			part[i] = x[lo:hi]
		}
		ops.AddN(dst[lo:hi], part...)
	})
	for _, st := range streams {
		pond.AddSeedShare(dst, st.seed, st.d)
	}
	r.shares[graph.Ref{Node: s.node}] = dst
	return nil
}

// mulPublicStep multiplies a server's share by a public constant and
// truncates: locally, or interactively with server0 sending to server1.
type mulPublicStep struct {
	node  *graph.Node
	c     uint64
	party int
	local bool
	peer  string
	edge  uint64
}

func (s *mulPublicStep) String() string {
	switch {
	case s.local:
		return fmt.Sprintf("local %s (constant %g, local truncation)", s.node, s.node.Constant())
	case s.party == 0:
		return fmt.Sprintf("local %s (constant %g), truncation: send masked share -> %s (edge %d)", s.node, s.node.Constant(), s.peer, s.edge)
	default:
		return fmt.Sprintf("local %s (constant %g), truncation: recv masked share from %s (edge %d)", s.node, s.node.Constant(), s.peer, s.edge)
	}
}

func (s *mulPublicStep) exec(ctx context.Context, r *runner) error {
	in := s.node.Inputs()[0]
	x, err := r.share(in)
	if err != nil {
		return err
	}
	prod := r.shareBuf(len(x))
	defer r.pool.putUint64s(prod)
	pond.MulPublic(prod, x, s.c)
	out := r.shareBuf(len(x))
	ref := graph.Ref{Node: s.node}
	r.shares[ref] = out // released with the iteration, even on error
	msg := pond.TruncationMessage{Masked: r.shareBuf(len(x))[:0]}
	defer func() { r.pool.putUint64s(msg.Masked) }()
	switch {
	case s.local:
		r.proto.TruncateLocal(s.party, out, prod)
	case s.party == 0:
		if err := r.proto.TruncateSend(r.rng, r.domain(ref), out, prod, &msg); err != nil {
			return err
		}
		if err := r.send(ctx, s.peer, s.edge, pond.SeedSize+8+8*len(out), &msg); err != nil {
			return err
		}
	default:
		if err := r.recv(ctx, s.peer, s.edge, &msg); err != nil {
			return err
		}
		if err := r.proto.TruncateReceive(r.domain(ref), out, prod, &msg); err != nil {
			return fmt.Errorf("%s: %w", s.node, err)
		}
	}
	return nil
}

// sendShareStep sends a server's share to the output player. last says
// that no later step of the server uses the share.
type sendShareStep struct {
	ref  graph.Ref
	to   string
	edge uint64
	last bool
}

func (s *sendShareStep) String() string {
	return fmt.Sprintf("send share of %s -> %s (edge %d)", s.ref, s.to, s.edge)
}

func (s *sendShareStep) exec(ctx context.Context, r *runner) error {
	sh, err := r.share(s.ref)
	if err != nil {
		return err
	}
	if s.last && len(sh) > 0 {
		// The share is not used again here: hand over the message it was
		// computed in, if it was.
		if b, ok := r.backing[&sh[0]]; ok {
			delete(r.backing, &sh[0])
			delete(r.shares, s.ref)
			if err := r.t.SendOwned(ctx, s.to, r.key(s.edge), b); err != nil {
				return fmt.Errorf("sending to %q: %w", s.to, err)
			}
			return nil
		}
	}
	return r.send(ctx, s.to, s.edge, 8+8*len(sh), sh)
}

// revealStep receives both servers' shares of every output tensor on the
// output player, reveals them and calls the output function.
type revealStep struct {
	node    *graph.Node
	targets []revealTarget
	servers [2]string
	edges   [][2]uint64
}

func (s *revealStep) String() string {
	var b []byte
	b = fmt.Appendf(b, "reveal %s:", s.node)
	for i, t := range s.targets {
		b = fmt.Appendf(b, " %s from %s (edge %d) + %s (edge %d)", t.ref, s.servers[0], s.edges[i][0], s.servers[1], s.edges[i][1])
		if t.divisor != 0 {
			b = fmt.Appendf(b, " then / %g in the clear", t.divisor)
		}
		if i < len(s.targets)-1 {
			b = append(b, ';')
		}
	}
	return string(b)
}

func (s *revealStep) exec(ctx context.Context, r *runner) error {
	values := make([]*tensor.Dense, len(s.targets))
	for i, t := range s.targets {
		n := t.ref.Shape().Size()
		s0, err := r.recvShare(ctx, s.servers[0], s.edges[i][0], n)
		if err != nil {
			return fmt.Errorf("share of %s: %w", t.ref, err)
		}
		s1, err := r.recvShare(ctx, s.servers[1], s.edges[i][1], n)
		if err != nil {
			r.releaseShare(s0)
			return fmt.Errorf("share of %s: %w", t.ref, err)
		}
		divisor := 1.0
		if t.divisor != 0 {
			divisor = t.divisor // a division done in the clear, after the reveal
		}
		out := make([]float64, n)
		err = r.proto.RevealQuotient(out, s0, s1, divisor)
		r.releaseShare(s0)
		r.releaseShare(s1)
		if err != nil {
			return fmt.Errorf("%s: %w", t.ref, err)
		}
		values[i] = tensor.New(tensor.WithShape(shapeOf(s.node.Inputs()[i].Shape())...), tensor.WithBacking(out))
	}
	if err := s.node.OutputFunc()(ctx, values); err != nil {
		return fmt.Errorf("%s: %w", s.node, err)
	}
	return nil
}

// sendPublicStep sends a public tensor to another player. The tensor is
// encoded once for all its receivers; last says that no later step sends
// it, so the encoding goes with this message instead of being copied.
type sendPublicStep struct {
	ref  graph.Ref
	to   string
	edge uint64
	last bool
}

func (s *sendPublicStep) String() string {
	return fmt.Sprintf("send public %s -> %s (edge %d)", s.ref, s.to, s.edge)
}

func (s *sendPublicStep) exec(ctx context.Context, r *runner) error {
	b, ok := r.wire[s.ref]
	if !ok {
		v, ok := r.public[s.ref]
		if !ok {
			return fmt.Errorf("public %s missing on %q (plan bug)", s.ref, r.player)
		}
		t := &publicTensor{Shape: s.ref.Shape(), Data: v}
		var err error
		if b, err = t.AppendBinary(r.pool.byteBuf(t.size())); err != nil {
			return err
		}
		r.wire[s.ref] = b // encoded once, however many players it goes to
	}
	if !s.last {
		return r.sendBytes(ctx, s.to, s.edge, b)
	}
	delete(r.wire, s.ref)
	if err := r.t.SendOwned(ctx, s.to, r.key(s.edge), b); err != nil {
		return fmt.Errorf("sending to %q: %w", s.to, err)
	}
	return nil
}

// recvPublicStep receives a public tensor from its holder.
type recvPublicStep struct {
	ref  graph.Ref
	from string
	edge uint64
}

func (s *recvPublicStep) String() string {
	return fmt.Sprintf("recv public %s from %s (edge %d)", s.ref, s.from, s.edge)
}

func (s *recvPublicStep) exec(ctx context.Context, r *runner) error {
	b, err := r.t.Recv(ctx, s.from, r.key(s.edge))
	if err != nil {
		return fmt.Errorf("receiving from %q: %w", s.from, err)
	}
	var t publicTensor
	if err := t.decodeInPlace(b); err != nil { // b is ours to give up
		return fmt.Errorf("message from %q (edge %d): %w", s.from, s.edge, err)
	}
	if !t.Shape.Equal(s.ref.Shape()) {
		return fmt.Errorf("public %s from %q has shape %v, want %v", s.ref, s.from, t.Shape, s.ref.Shape())
	}
	r.public[s.ref] = t.Data
	return nil
}
