package session

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"unsafe"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/internal/le"
	"github.com/shareflow/shareflow/internal/par"
	"github.com/shareflow/shareflow/ops"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
)

// step is one instruction of a player's plan.
//
// Every step declares the values of its player it reads and writes. The
// compiler derives everything about buffers from these declarations and
// from nothing else: whether a read is the value's last use on the
// player, and so whether the step may give the value's buffer away (to a
// user's function or to the transport), and whether the plan's data flow
// holds together (checkDataflow). TestStepsDeclareWhatTheyTouch checks
// the declarations against what exec does, for every step type.
type step interface {
	exec(ctx context.Context, r *runner) error
	String() string
	// reads lists every value exec may read, in a fixed order; a value
	// may appear more than once. A value in both reads and writes is read
	// if present and created if not.
	reads() []value
	// writes lists every value exec may create.
	writes() []value
	// setLast tells the step which of its reads (by position) are the
	// last use of the value on its player (see markLastUses).
	setLast(last []bool)
}

// lastUse records which of a step's reads are last uses; every step
// embeds it.
type lastUse struct{ last []bool }

func (l *lastUse) setLast(last []bool) { l.last = last }

// isLast reports whether read i of the step is the last use of its value
// on the player, so that the step may give the value's buffer away.
// Before the compiler has said so, nothing is.
func (l *lastUse) isLast(i int) bool { return i < len(l.last) && l.last[i] }

// valueKind is the kind of a value a player holds during an iteration.
type valueKind uint8

const (
	// publicValue is a plaintext tensor (runner.public).
	publicValue valueKind = iota + 1
	// shareValue is a server's share of a private tensor, held as a
	// tensor or as the seed it arrived as (runner.shares, runner.seeds).
	shareValue
	// wireValue is the encoding of a public tensor for the wire, made once
	// for all the players it goes to (runner.wire).
	wireValue
	// tripleValue is a server's share of the Beaver triple of a private
	// product, named by the product's ref (runner.triples).
	tripleValue
	// uploadValue is what a server gathered of one upload of a round's
	// members, named by the upload's id: its sum (roundState.sums).
	uploadValue
)

func (k valueKind) String() string {
	switch k {
	case publicValue:
		return "public"
	case shareValue:
		return "share"
	case wireValue:
		return "encoding"
	case tripleValue:
		return "triple"
	case uploadValue:
		return "members' shares"
	}
	return fmt.Sprintf("valueKind(%d)", uint8(k))
}

// value names one value a player holds during an iteration.
type value struct {
	kind valueKind
	ref  graph.Ref
}

func (v value) String() string { return fmt.Sprintf("%s of %s", v.kind, v.ref) }

// values returns a value of kind for each of refs.
func values(kind valueKind, refs ...graph.Ref) []value {
	out := make([]value, len(refs))
	for i, ref := range refs {
		out[i] = value{kind, ref}
	}
	return out
}

// outputs returns the refs of every output of n.
func outputs(n *graph.Node) []graph.Ref {
	refs := make([]graph.Ref, len(n.Outputs()))
	for i := range refs {
		refs[i] = graph.Ref{Node: n, Index: i}
	}
	return refs
}

// runner executes one player's steps for one iteration. It holds the
// player's values: public tensors it holds, and, on a server, its shares.
// Steps reach the values only through its accessors, which report each
// access to trace when it is set (tests).
type runner struct {
	player  string
	proto   *pond.Protocol
	t       *counting
	rng     io.Reader
	session string
	iter    uint64
	public  map[graph.Ref][]float64
	shares  map[graph.Ref]pond.Share
	seeds   map[graph.Ref]pond.SeededShare  // input shares not yet expanded (see share)
	wired   map[graph.Ref][]byte            // Z_2^32: masked inputs as their messages' 4-byte words, not yet widened (see share)
	msgs    map[graph.Ref][]byte            // Z_2^32: shares held as the message that will carry them (a round's sums), not yet widened
	wire    map[graph.Ref][]byte            // encoded public tensors (views of them, see wireView), sent to several players
	triples map[graph.Ref]*pond.TripleShare // triples of private products, by product
	backing map[*uint64][]byte              // messages that shares are views of
	pool    *pool
	trace   func(v value, write bool)
	round   *roundState // the round, in a plan for rounds of a cohort
	terms   int         // in Z_2^32, the most inputs a sum of the plan adds (ring.go)
}

// rangeNote explains a *pond.RangeError in Z_2^32, whose range follows
// from the plan's sums: what the range is for, and how to widen it.
func (r *runner) rangeNote(err error) string {
	var re *pond.RangeError
	if r.terms == 0 || !errors.As(err, &re) || math.IsNaN(re.Value) || math.IsInf(re.Value, 0) {
		return ""
	}
	return fmt.Sprintf(" (the plan computes in Z_2^32, where a sum of up to %d inputs of this range cannot wrap; Options.Protocol.Ring = pond.Ring64 gives a wider range)", r.terms)
}

func (r *runner) touch(kind valueKind, ref graph.Ref, write bool) {
	if r.trace != nil {
		r.trace(value{kind, ref}, write)
	}
}

// release returns the iteration's buffers to the pool.
func (r *runner) release() {
	for ref, s := range r.shares {
		r.releaseShare(s)
		delete(r.shares, ref)
	}
	// An encoding left behind by a failed iteration may be a view of its
	// tensor (wireView), which is not the pool's to keep.
	clear(r.wire)
	for ref, t := range r.triples {
		r.pool.putTriple(t)
		delete(r.triples, ref)
	}
	clear(r.public)
	clear(r.seeds)
	for ref, b := range r.wired {
		r.pool.putBytes(b)
		delete(r.wired, ref)
	}
	for ref, b := range r.msgs {
		r.pool.putBytes(b)
		delete(r.msgs, ref)
	}
	if r.round != nil {
		r.round.releaseHeld(r)
	}
}

// publicTensor returns the public tensor ref.
func (r *runner) publicTensor(ref graph.Ref) ([]float64, error) {
	r.touch(publicValue, ref, false)
	v, ok := r.public[ref]
	if !ok {
		return nil, fmt.Errorf("public %s missing on %q (plan bug)", ref, r.player)
	}
	return v, nil
}

// takePublic returns the public tensor ref and forgets it: its last use.
func (r *runner) takePublic(ref graph.Ref) ([]float64, error) {
	v, err := r.publicTensor(ref)
	delete(r.public, ref)
	return v, err
}

// setShareMessage sets the player's share of ref to the message b (an
// 8-byte element count, then the 4-byte words of Z_2^32), which the
// runner now owns.
func (r *runner) setShareMessage(ref graph.Ref, b []byte) {
	r.touch(shareValue, ref, true)
	r.msgs[ref] = b
}

func (r *runner) setPublic(ref graph.Ref, v []float64) {
	r.touch(publicValue, ref, true)
	r.public[ref] = v
}

// encoded returns the wire encoding of the public tensor ref, if made.
func (r *runner) encoded(ref graph.Ref) ([]byte, bool) {
	r.touch(wireValue, ref, false)
	b, ok := r.wire[ref]
	return b, ok
}

func (r *runner) setEncoded(ref graph.Ref, b []byte) {
	r.touch(wireValue, ref, true)
	r.wire[ref] = b
}

// seeded returns the player's share of ref if it is still held as its
// seed.
func (r *runner) seeded(ref graph.Ref) (pond.SeededShare, bool) {
	r.touch(shareValue, ref, false)
	s, ok := r.seeds[ref]
	return s, ok
}

func (r *runner) setSeeded(ref graph.Ref, s pond.SeededShare) {
	r.touch(shareValue, ref, true)
	r.seeds[ref] = s
}

func (r *runner) setShare(ref graph.Ref, s pond.Share) {
	r.touch(shareValue, ref, true)
	r.shares[ref] = s
}

func (r *runner) setTriple(ref graph.Ref, t *pond.TripleShare) {
	r.touch(tripleValue, ref, true)
	r.triples[ref] = t
}

// takeTriple returns the server's triple for the product ref and forgets
// it: a triple serves one product. The caller gives it back to the pool.
func (r *runner) takeTriple(ref graph.Ref) (*pond.TripleShare, error) {
	r.touch(tripleValue, ref, false)
	t, ok := r.triples[ref]
	if !ok {
		return nil, fmt.Errorf("no triple for %s on %q (plan bug)", ref, r.player)
	}
	delete(r.triples, ref)
	return t, nil
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
	return r.proto.Domain(r.session, r.iter, uint64(ref.Node.ID())<<32|uint64(uint32(ref.Index)))
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
	r.touch(shareValue, ref, false)
	if s, ok := r.shares[ref]; ok {
		return s, nil
	}
	if b, ok := r.wired[ref]; ok {
		s := r.shareBuf(ref.Shape().Size())
		parallel(len(s), func(lo, hi int) { r.proto.Words(s[lo:hi], b[4*lo:4*hi]) })
		r.pool.putBytes(b)
		delete(r.wired, ref)
		r.shares[ref] = s
		return s, nil
	}
	if b, ok := r.msgs[ref]; ok {
		s := r.shareBuf(ref.Shape().Size())
		w := b[8:]
		parallel(len(s), func(lo, hi int) { r.proto.Words(s[lo:hi], w[4*lo:4*hi]) })
		r.pool.putBytes(b)
		delete(r.msgs, ref)
		r.shares[ref] = s
		return s, nil
	}
	seeded, ok := r.seeds[ref]
	if !ok {
		return nil, fmt.Errorf("no share of %s on %q (plan bug)", ref, r.player)
	}
	s := r.shareBuf(ref.Shape().Size())
	parallel(len(s), func(lo, hi int) { seeded.ExpandAt(s[lo:hi], lo) })
	r.shares[ref] = s
	delete(r.seeds, ref)
	return s, nil
}

// rangeAlign is the alignment of the ranges a large tensor is split into
// across cores: 8 KiB of words, even as pond's ...At functions need, and
// on page boundaries so that no two cores write one cache line.
const rangeAlign = 1024

// parallel calls f on disjoint ranges [lo, hi) that cover [0, n), on up
// to GOMAXPROCS cores when n is large (internal/par), and returns when
// all calls have. Package pond computes ranges; the session, which owns
// goroutines, decides how to split.
func parallel(n int, f func(lo, hi int)) { par.For(n, rangeAlign, f) }

// parallelErr is parallel for work that may fail: it returns the error of
// the first range, in tensor order, that failed.
func parallelErr(n int, f func(lo, hi int) error) error {
	var (
		mu      sync.Mutex
		first   error
		firstLo int
	)
	parallel(n, func(lo, hi int) {
		if err := f(lo, hi); err != nil {
			mu.Lock()
			if first == nil || lo < firstLo {
				first, firstLo = err, lo
			}
			mu.Unlock()
		}
	})
	return first
}

// callStep runs an input or local function on its player. An input whose
// read is its last use on the player is handed to the function as it is;
// any other is copied, since the function may modify what it gets.
type callStep struct {
	lastUse
	node *graph.Node
}

func (s *callStep) String() string { return fmt.Sprintf("call %s", s.node) }

func (s *callStep) reads() []value  { return values(publicValue, s.node.Inputs()...) }
func (s *callStep) writes() []value { return values(publicValue, outputs(s.node)...) }

func (s *callStep) exec(ctx context.Context, r *runner) error {
	n := s.node
	if r.round != nil && r.round.ahead != nil {
		// A member's seeds go now, and its masks are drawn while its
		// function runs.
		if err := r.round.ahead.begin(ctx); err != nil {
			return err
		}
	}
	ins := make([]*tensor.Dense, len(n.Inputs()))
	for i, in := range n.Inputs() {
		var v []float64
		var err error
		if s.isLast(i) {
			v, err = r.takePublic(in)
		} else {
			v, err = r.publicTensor(in)
			v = slices.Clone(v)
		}
		if err != nil {
			return fmt.Errorf("%s: input %s: %w", n, in, err)
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
	datas := make([][]float64, len(outs))
	for i, out := range outs {
		ref := graph.Ref{Node: n, Index: i}
		data, err := denseData(out, n.Outputs()[i])
		if err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		// Each output is given up on its own (masked where it lies, or
		// handed to a receiver), so outputs sharing memory are copied
		// apart first.
		for _, earlier := range datas[:i] {
			if overlap(data, earlier) {
				data = slices.Clone(data)
				break
			}
		}
		datas[i] = data
		r.setPublic(ref, data)
	}
	return nil
}

// overlap reports whether a and b share any memory.
func overlap(a, b []float64) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	a0, b0 := uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&b[0]))
	return a0 < b0+8*uintptr(len(b)) && b0 < a0+8*uintptr(len(a))
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
// seed to one server and the masked tensor to the other. The masked
// tensor travels as its words, little-endian, without a header: the
// server knows its length from the plan. At the tensor's last use, where
// the byte order allows, it is masked where it lies and that memory is
// the message, so the input is never copied on its owner.
type shareStep struct {
	lastUse
	ref                  graph.Ref
	seedTo, maskedTo     string
	seedEdge, maskedEdge uint64
}

func (s *shareStep) String() string {
	return fmt.Sprintf("share %s: seed -> %s (edge %d), masked -> %s (edge %d)", s.ref, s.seedTo, s.seedEdge, s.maskedTo, s.maskedEdge)
}

func (s *shareStep) reads() []value  { return values(publicValue, s.ref) }
func (s *shareStep) writes() []value { return nil }

func (s *shareStep) exec(ctx context.Context, r *runner) error {
	var x []float64
	var err error
	if s.isLast(0) {
		x, err = r.takePublic(s.ref) // the plaintext goes no further
	} else {
		x, err = r.publicTensor(s.ref)
	}
	if err != nil {
		return err
	}
	seed, err := pond.NewSeed(r.rng)
	if err != nil {
		return fmt.Errorf("private input %s: %w", s.ref, err)
	}
	d := r.domain(s.ref)
	if r.proto.WordSize() != 8 {
		return s.execWords(ctx, r, x, seed, d)
	}
	var b []byte
	var masked pond.Share
	var inPlace bool
	if s.isLast(0) {
		b, inPlace = wireView(x)
	}
	if inPlace {
		masked = le.Float64Words(x)
		err = parallelErr(len(x), func(lo, hi int) error {
			return r.proto.EncodeAndMaskInPlaceAt(masked[lo:hi], x[lo:hi], seed, d, lo)
		})
	} else {
		// The masked share is computed straight into the message when the
		// byte order allows, saving a copy of the whole tensor.
		b, masked = r.wordsMessage(len(x))
		err = parallelErr(len(x), func(lo, hi int) error {
			return r.proto.EncodeAndMaskAt(masked[lo:hi], x[lo:hi], seed, d, lo)
		})
	}
	if err != nil {
		clear(masked)
		switch {
		case inPlace:
		case b != nil:
			r.pool.putBytes(b)
		default:
			r.pool.putUint64s(masked)
		}
		return fmt.Errorf("private input %s: %w%s", s.ref, err, r.rangeNote(err))
	}
	b = r.wordsOf(b, masked)
	if err := r.send(ctx, s.seedTo, s.seedEdge, pond.SeedSize, seed); err != nil {
		r.pool.putBytes(b)
		return err
	}
	if err := r.t.SendOwned(ctx, s.maskedTo, r.key(s.maskedEdge), b); err != nil {
		return fmt.Errorf("sending to %q: %w", s.maskedTo, err)
	}
	return nil
}

// execWords is exec in Z_2^32: the masked tensor's 4-byte words are
// written straight into a message of their own, each core drawing the
// mask for its range in the cache (pond's EncodeAndMaskWordsAt), so that
// each element costs a read of the input and a 4-byte write.
func (s *shareStep) execWords(ctx context.Context, r *runner, x []float64, seed pond.Seed, d pond.Domain) error {
	size := r.proto.WordSize() * len(x)
	b := r.pool.byteBuf(size)[:size]
	ws := r.proto.WordSize()
	err := parallelErr(len(x), func(lo, hi int) error {
		return r.proto.EncodeAndMaskWordsAt(b[ws*lo:ws*hi], x[lo:hi], seed, d, lo)
	})
	if err != nil {
		r.pool.putBytes(b)
		return fmt.Errorf("private input %s: %w%s", s.ref, err, r.rangeNote(err))
	}
	if err := r.send(ctx, s.seedTo, s.seedEdge, pond.SeedSize, seed); err != nil {
		r.pool.putBytes(b)
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

// sumMessage returns a message for a share of n elements in Z_2^32, a
// sum kept in wire form (pond.SumWordsAt): its element count written, its
// 4-byte words not.
func (r *runner) sumMessage(n int) []byte {
	b := r.pool.byteBuf(8 + 4*n)[:8+4*n]
	binary.LittleEndian.PutUint64(b, uint64(n))
	return b
}

// wordsOf returns the message of a share's 8-byte words without a
// header (Z_2^64; Z_2^32 writes its words straight into a message, see
// shareStep.execWords): b, the message the words were computed in
// (wordsMessage, or the input's own memory, wireView), or, when b is nil,
// a message it encodes words into, giving the pooled words back.
func (r *runner) wordsOf(b []byte, words pond.Share) []byte {
	if b != nil {
		return b
	}
	size := r.proto.WordSize() * len(words)
	b = r.pool.byteBuf(size)[:size]
	r.proto.PutWords(b, words)
	r.pool.putUint64s(words)
	return b
}

// wordsMessage returns a wire buffer of n words without a header, and
// the words inside it, to be filled in place. Where the byte order does
// not allow it, b is nil and the words are a pooled buffer to encode
// afterwards.
func (r *runner) wordsMessage(n int) (b []byte, words pond.Share) {
	b = r.pool.byteBuf(8 * n)[:8*n]
	if w, ok := le.Words(b); ok && n > 0 {
		return b, w
	}
	r.pool.putBytes(b)
	return nil, r.shareBuf(n)
}

// recvWords receives a share of want elements sent as its words without
// a header (see shareStep). Where the byte order allows, the share is a
// view of the message itself, which the runner owns: no copy.
func (r *runner) recvWords(ctx context.Context, from string, edge uint64, want int) (pond.Share, error) {
	b, err := r.t.Recv(ctx, from, r.key(edge))
	if err != nil {
		return nil, fmt.Errorf("receiving from %q: %w", from, err)
	}
	if size := r.proto.WordSize() * want; len(b) != size {
		r.pool.putBytes(b)
		return nil, fmt.Errorf("message from %q (edge %d): %w: share of %d elements needs %d bytes, got %d", from, edge, ErrWire, want, size, len(b))
	}
	if w, ok := le.Words(b); ok && want > 0 && r.proto.WordSize() == 8 {
		// Not a view of a message with a share's header (r.backing): it is
		// released as words, and sent as a copy.
		return w, nil
	}
	share := r.shareBuf(want)
	r.proto.Words(share, b)
	r.pool.putBytes(b)
	return share, nil
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
	if r.proto.WordSize() == 8 && len(b) == 8+8*want && binary.LittleEndian.Uint64(b) == uint64(want) {
		if w, ok := le.Words(b[8:]); ok {
			if want > 0 {
				r.backing[&w[0]] = b
			}
			return w, nil
		}
	}
	share := r.shareBuf(want)
	err = r.proto.DecodeShare(share, b)
	r.pool.putBytes(b)
	if err != nil {
		r.pool.putUint64s(share)
		return nil, fmt.Errorf("message from %q (edge %d): %w", from, edge, err)
	}
	return share, nil
}

// reveal receives both servers' shares of a tensor of len(out) elements
// on the output player and sets out to the revealed values divided by
// divisor (1 for none). In Z_2^32 it reveals straight from the two
// messages' 4-byte words (pond.Protocol.RevealWordsQuotient); in Z_2^64
// from the shares, views of the messages where the byte order allows.
func (r *runner) reveal(ctx context.Context, out []float64, servers [2]string, edges [2]uint64, divisor float64) error {
	n := len(out)
	if r.proto.WordSize() == 8 {
		s0, err := r.recvShare(ctx, servers[0], edges[0], n)
		if err != nil {
			return err
		}
		defer r.releaseShare(s0)
		s1, err := r.recvShare(ctx, servers[1], edges[1], n)
		if err != nil {
			return err
		}
		defer r.releaseShare(s1)
		return parallelErr(n, func(lo, hi int) error {
			return r.proto.RevealQuotient(out[lo:hi], s0[lo:hi], s1[lo:hi], divisor)
		})
	}
	var msgs [2][]byte
	defer func() {
		for _, b := range msgs {
			if b != nil {
				r.pool.putBytes(b)
			}
		}
	}()
	for k := range msgs {
		b, err := r.t.Recv(ctx, servers[k], r.key(edges[k]))
		if err != nil {
			return fmt.Errorf("receiving from %q: %w", servers[k], err)
		}
		msgs[k] = b
		if size := r.proto.ShareSize(n); len(b) != size || binary.LittleEndian.Uint64(b) != uint64(n) {
			return fmt.Errorf("message from %q (edge %d): %w: share of %d elements in Z_2^32 needs %d bytes with its count, got %d",
				servers[k], edges[k], ErrWire, n, size, len(b))
		}
	}
	w0, w1 := msgs[0][8:], msgs[1][8:]
	return parallelErr(n, func(lo, hi int) error {
		return r.proto.RevealWordsQuotient(out[lo:hi], w0[4*lo:4*hi], w1[4*lo:4*hi], divisor)
	})
}

// recvSeedStep receives an input's seed on a server: its share, kept as
// the seed until used. A sum adds the expanded stream straight into its
// result; any other use expands it into a tensor (see runner.share).
type recvSeedStep struct {
	lastUse
	ref  graph.Ref
	from string
	edge uint64
}

func (s *recvSeedStep) String() string {
	return fmt.Sprintf("recv seed of %s from %s (edge %d)", s.ref, s.from, s.edge)
}

func (s *recvSeedStep) reads() []value  { return nil }
func (s *recvSeedStep) writes() []value { return values(shareValue, s.ref) }

func (s *recvSeedStep) exec(ctx context.Context, r *runner) error {
	var seed pond.Seed
	if err := r.recv(ctx, s.from, s.edge, &seed); err != nil {
		return err
	}
	r.setSeeded(s.ref, pond.SeededShare{Seed: seed, Domain: r.domain(s.ref)})
	return nil
}

// recvMaskedStep receives an input's masked tensor on a server: its share.
type recvMaskedStep struct {
	lastUse
	ref  graph.Ref
	from string
	edge uint64
}

func (s *recvMaskedStep) String() string {
	return fmt.Sprintf("recv masked %s from %s (edge %d)", s.ref, s.from, s.edge)
}

func (s *recvMaskedStep) reads() []value  { return nil }
func (s *recvMaskedStep) writes() []value { return values(shareValue, s.ref) }

func (s *recvMaskedStep) exec(ctx context.Context, r *runner) error {
	if r.proto.WordSize() != 8 {
		// Z_2^32: kept as the message's 4-byte words, which a sum adds as
		// they are; any other use widens them (runner.share).
		n := s.ref.Shape().Size()
		b, err := r.t.Recv(ctx, s.from, r.key(s.edge))
		if err != nil {
			return fmt.Errorf("masked %s: receiving from %q: %w", s.ref, s.from, err)
		}
		if len(b) != 4*n {
			r.pool.putBytes(b)
			return fmt.Errorf("masked %s: message from %q (edge %d): %w: share of %d elements in Z_2^32 needs %d bytes, got %d", s.ref, s.from, s.edge, ErrWire, n, 4*n, len(b))
		}
		r.touch(shareValue, s.ref, true)
		r.wired[s.ref] = b
		return nil
	}
	share, err := r.recvWords(ctx, s.from, s.edge, s.ref.Shape().Size())
	if err != nil {
		return fmt.Errorf("masked %s: %w", s.ref, err)
	}
	r.setShare(s.ref, share)
	return nil
}

// linearStep computes add-n, sub, neg, reduce-sum, add-bias or
// add-constant on a server's shares: no messages. Of a constant, only
// server0 adds the encoding (c); server1 keeps its share as it is.
type linearStep struct {
	lastUse
	node  *graph.Node
	c     uint64      // add-constant: the constant's encoding
	party pond.Server // add-constant: the server this step runs on
}

func (s *linearStep) String() string {
	switch s.node.Kind() {
	case graph.KindReduceSum:
		return fmt.Sprintf("local %s (axis %d)", s.node, s.node.Axis())
	case graph.KindAddConstant:
		return fmt.Sprintf("local %s (constant %g, added by %s)", s.node, s.node.Constant(), pond.Server0)
	}
	return fmt.Sprintf("local %s", s.node)
}

func (s *linearStep) reads() []value  { return values(shareValue, s.node.Inputs()...) }
func (s *linearStep) writes() []value { return values(shareValue, graph.Ref{Node: s.node}) }

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
	case graph.KindReduceSum:
		// A vector sums as one row; the ring adds exactly, so nothing is
		// truncated.
		shape := s.node.Inputs()[0].Shape()
		if len(shape) == 1 {
			ops.ReduceSum(dst, ins[0], 1, shape[0], 1)
		} else {
			ops.ReduceSum(dst, ins[0], shape[0], shape[1], s.node.Axis())
		}
	case graph.KindAddBias:
		x, b := ins[0], ins[1]
		n := len(b)
		for lo := 0; lo < len(x); lo += n {
			ops.Add(dst[lo:lo+n], x[lo:lo+n], b)
		}
	case graph.KindAddConstant:
		if s.party == pond.Server0 {
			ops.AddConst(dst, ins[0], s.c)
		} else {
			copy(dst, ins[0])
		}
	}
	r.setShare(graph.Ref{Node: s.node}, dst)
	return nil
}

// addN sums the inputs' shares: those held as tensors, those held as the
// 4-byte words they came in (Z_2^32), and the mask streams of those held
// as seeds, added in cache-sized chunks so that no seeded share is ever
// written out whole and no received one widened. In Z_2^32, when no input
// is held widened, the sum itself stays in wire form.
func (s *linearStep) addN(r *runner) error {
	var xs []pond.Share
	var streams []pond.SeededShare
	var words [][]byte // Z_2^32: masked inputs as they came (runner.wired)
	for _, in := range s.node.Inputs() {
		if seeded, ok := r.seeded(in); ok {
			streams = append(streams, seeded)
			continue
		}
		if b, ok := r.wired[in]; ok {
			words = append(words, b)
			continue
		}
		sh, err := r.share(in)
		if err != nil {
			return err
		}
		xs = append(xs, sh)
	}
	if len(xs) == 0 && r.proto.WordSize() == 4 {
		// Z_2^32, every input as it came: the sum is kept as the message
		// that will carry it, 4 bytes an element (pond.SumWordsAt), and
		// widened only for a use other than sending (runner.share).
		n := s.node.Outputs()[0].Size()
		b := r.sumMessage(n)
		w := b[8:]
		parallel(n, func(lo, hi int) {
			clear(w[4*lo : 4*hi])
			r.proto.SumWordsAt(w[4*lo:4*hi], words, streams, lo)
		})
		r.setShareMessage(graph.Ref{Node: s.node}, b)
		return nil
	}
	// The result is computed inside a message buffer, so that sending it
	// to the output player later needs no copy. Each core sums its range
	// of every operand and of the seeds' streams in one pass over
	// cache-sized blocks (pond.Protocol.SumAt).
	dst := r.messageShare(s.node.Outputs()[0].Size())
	parallel(len(dst), func(lo, hi int) {
		part := make([]pond.Share, len(xs))
		for i, x := range xs {
			part[i] = x[lo:hi]
		}
		r.proto.SumAt(dst[lo:hi], part, words, streams, lo)
	})
	r.setShare(graph.Ref{Node: s.node}, dst)
	return nil
}

// mulPublicStep multiplies a server's share by a public constant and
// truncates: locally, or interactively with server0 sending to server1.
type mulPublicStep struct {
	lastUse
	node  *graph.Node
	c     uint64
	trunc truncation
}

func (s *mulPublicStep) String() string {
	if s.trunc.local {
		return fmt.Sprintf("local %s (constant %g, local truncation)", s.node, s.node.Constant())
	}
	return fmt.Sprintf("local %s (constant %g), %s", s.node, s.node.Constant(), s.trunc)
}

func (s *mulPublicStep) reads() []value  { return values(shareValue, s.node.Inputs()[0]) }
func (s *mulPublicStep) writes() []value { return values(shareValue, graph.Ref{Node: s.node}) }

// exec multiplies and truncates a range at a time, on several cores for
// a large tensor: each core reads its range of the product while it is
// still in its cache.
func (s *mulPublicStep) exec(ctx context.Context, r *runner) error {
	x, err := r.share(s.node.Inputs()[0])
	if err != nil {
		return err
	}
	n := len(x)
	prod := pond.Product(r.shareBuf(n))
	defer r.pool.putUint64s(prod)
	out := r.shareBuf(n)
	ref := graph.Ref{Node: s.node}
	r.setShare(ref, out) // released with the iteration, even on error
	return s.trunc.run(ctx, r, s.node, out, prod, func(lo, hi int) {
		pond.MulPublic(prod[lo:hi], x[lo:hi], s.c)
	})
}

// sendShareStep sends a server's share to the output player. At the
// share's last use it hands over the message the share was computed in,
// if it was.
type sendShareStep struct {
	lastUse
	ref  graph.Ref
	to   string
	edge uint64
}

func (s *sendShareStep) String() string {
	return fmt.Sprintf("send share of %s -> %s (edge %d)", s.ref, s.to, s.edge)
}

func (s *sendShareStep) reads() []value  { return values(shareValue, s.ref) }
func (s *sendShareStep) writes() []value { return nil }

func (s *sendShareStep) exec(ctx context.Context, r *runner) error {
	if b, ok := r.msgs[s.ref]; ok { // Z_2^32: the message is made
		r.touch(shareValue, s.ref, false)
		if !s.isLast(0) {
			return r.sendBytes(ctx, s.to, s.edge, b)
		}
		delete(r.msgs, s.ref)
		if err := r.t.SendOwned(ctx, s.to, r.key(s.edge), b); err != nil {
			return fmt.Errorf("sending to %q: %w", s.to, err)
		}
		return nil
	}
	sh, err := r.share(s.ref)
	if err != nil {
		return err
	}
	if s.isLast(0) && len(sh) > 0 {
		if b, ok := r.backing[&sh[0]]; ok {
			delete(r.backing, &sh[0])
			delete(r.shares, s.ref)
			if err := r.t.SendOwned(ctx, s.to, r.key(s.edge), r.shareOf(b, sh)); err != nil {
				return fmt.Errorf("sending to %q: %w", s.to, err)
			}
			return nil
		}
	}
	return r.send(ctx, s.to, s.edge, r.proto.ShareSize(len(sh)), ringShare{r.proto, sh})
}

// ringShare is a share to encode in a plan's ring (pond.Protocol.AppendShare).
type ringShare struct {
	proto *pond.Protocol
	share pond.Share
}

func (s ringShare) AppendBinary(b []byte) ([]byte, error) {
	return s.proto.AppendShare(b, s.share), nil
}

// shareOf returns the message of a share computed inside b (shareMessage),
// in the plan's ring. In Z_2^32 its 4-byte words go into a message of
// their own, written by every core on its range (packing them in place
// could only run on one), and b goes back to the pool.
func (r *runner) shareOf(b []byte, words pond.Share) []byte {
	size := r.proto.ShareSize(len(words))
	if size == len(b) {
		return b
	}
	out := r.pool.byteBuf(size)[:size]
	copy(out, b[:8]) // the element count
	w, ws := out[8:], r.proto.WordSize()
	parallel(len(words), func(lo, hi int) { r.proto.PutWords(w[ws*lo:ws*hi], words[lo:hi]) })
	r.pool.putBytes(b)
	return out
}

// revealStep receives both servers' shares of every output tensor on the
// output player, reveals them and calls the output function. The shares
// it receives are its own locals, no values of the player.
type revealStep struct {
	lastUse
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

func (s *revealStep) reads() []value  { return nil }
func (s *revealStep) writes() []value { return nil }

func (s *revealStep) exec(ctx context.Context, r *runner) error {
	revealed := make([]*tensor.Dense, len(s.targets))
	for i, t := range s.targets {
		n := t.ref.Shape().Size()
		divisor := 1.0
		if t.divisor != 0 {
			divisor = t.divisor // a division done in the clear, after the reveal
		}
		out := make([]float64, n)
		if err := r.reveal(ctx, out, s.servers, s.edges[i], divisor); err != nil {
			return fmt.Errorf("share of %s: %w", t.ref, err)
		}
		revealed[i] = tensor.New(tensor.WithShape(shapeOf(s.node.Inputs()[i].Shape())...), tensor.WithBacking(out))
	}
	if err := s.node.OutputFunc()(ctx, revealed); err != nil {
		return fmt.Errorf("%s: %w", s.node, err)
	}
	return nil
}

// sendPublicStep sends a public tensor to another player. Where the byte
// order allows, the tensor's memory is its encoding (wireView): every
// receiver but the last gets the transport's copy of it, and the last
// gets the memory itself when the tensor has no use left on the player,
// so that the tensor is copied once per receiver at most, by the
// transport. Elsewhere the tensor is encoded once for all its receivers,
// and the encoding goes with the last message.
type sendPublicStep struct {
	lastUse
	ref  graph.Ref
	to   string
	edge uint64
}

func (s *sendPublicStep) String() string {
	return fmt.Sprintf("send public %s -> %s (edge %d)", s.ref, s.to, s.edge)
}

// reads lists the tensor, read only to encode it, and its encoding, which
// the first send to any player creates and the last gives away.
func (s *sendPublicStep) reads() []value {
	return []value{{publicValue, s.ref}, {wireValue, s.ref}}
}
func (s *sendPublicStep) writes() []value { return values(wireValue, s.ref) }

func (s *sendPublicStep) exec(ctx context.Context, r *runner) error {
	v, err := r.publicTensor(s.ref)
	if err != nil {
		return err
	}
	b, ok := r.encoded(s.ref)
	if !ok {
		var view bool
		if b, view = wireView(v); !view {
			t := &publicTensor{Shape: s.ref.Shape(), Data: v}
			if b, err = t.AppendBinary(r.pool.byteBuf(t.size())); err != nil {
				return err
			}
		}
		r.setEncoded(s.ref, b) // encoded once, however many players it goes to
	}
	if !s.isLast(1) {
		return r.sendBytes(ctx, s.to, s.edge, b)
	}
	delete(r.wire, s.ref)
	if _, view := wireView(v); view && !s.isLast(0) {
		return r.sendBytes(ctx, s.to, s.edge, b) // the tensor is used again here
	}
	if s.isLast(0) {
		delete(r.public, s.ref) // its memory goes with the message
	}
	if err := r.t.SendOwned(ctx, s.to, r.key(s.edge), b); err != nil {
		return fmt.Errorf("sending to %q: %w", s.to, err)
	}
	return nil
}

// recvPublicStep receives a public tensor from its holder.
type recvPublicStep struct {
	lastUse
	ref  graph.Ref
	from string
	edge uint64
}

func (s *recvPublicStep) String() string {
	return fmt.Sprintf("recv public %s from %s (edge %d)", s.ref, s.from, s.edge)
}

func (s *recvPublicStep) reads() []value  { return nil }
func (s *recvPublicStep) writes() []value { return values(publicValue, s.ref) }

func (s *recvPublicStep) exec(ctx context.Context, r *runner) error {
	b, err := r.t.Recv(ctx, s.from, r.key(s.edge))
	if err != nil {
		return fmt.Errorf("receiving from %q: %w", s.from, err)
	}
	t := publicTensor{Shape: s.ref.Shape()}
	if err := t.decodeInPlace(b); err != nil { // b is ours to give up
		return fmt.Errorf("public %s: message from %q (edge %d): %w", s.ref, s.from, s.edge, err)
	}
	r.setPublic(s.ref, t.Data)
	return nil
}
