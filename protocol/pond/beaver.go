package pond

import (
	"errors"
	"fmt"
	"io"

	"github.com/shareflow/shareflow/ops"
)

// Private products with Beaver triples from the crypto producer, as TF
// Encrypted's Pond runs them: a third player, server2, which sees no input
// and no output, draws a triple (a, b, c = a·b) and sends each compute
// server its share. The servers open e = x − a and f = y − b to each
// other and compute their shares of x·y = c + e·b + a·f + e·f locally.

// ProductKind is the kind of private product a triple serves.
type ProductKind uint8

// The products.
const (
	// ProductMul is the element-wise product x·y of two tensors of N
	// elements each.
	ProductMul ProductKind = 1
	// ProductMatMul is the matrix product of x (M×K) and y (K×N), both
	// row-major.
	ProductMatMul ProductKind = 2
	// ProductSquare is the element-wise square x·x of a tensor of N
	// elements. Its triple is a square pair (a, a²): no b, no f.
	ProductSquare ProductKind = 3
)

// String names the product.
func (p ProductKind) String() string {
	switch p {
	case ProductMul:
		return "mul"
	case ProductMatMul:
		return "matmul"
	case ProductSquare:
		return "square"
	}
	return fmt.Sprintf("ProductKind(%d)", int(p))
}

// The purposes of the mask streams of triples: a seed of server0 expands
// to (a0, b0, c0), a seed of server1 to (a1, b1). They are apart from the
// purposes of inputs and truncation (1 to 3), and server1's differ from
// server0's, so even a seed drawn twice by a broken source would not give
// the two servers the same stream.
const (
	purposeTriple0A Purpose = 0x41 + iota
	purposeTriple0B
	purposeTriple0C
	purposeTriple1A
	purposeTriple1B
)

// MaxTripleElements bounds each tensor of a triple (2^30 elements, 8 GiB),
// so that no shape a plan or a peer names makes a server allocate without
// limit.
const MaxTripleElements = 1 << 30

// ErrShape is wrapped by the error of an invalid TripleShape.
var ErrShape = errors.New("pond: invalid product shape")

// ErrTripleUsed is returned when a triple is opened a second time, or
// finished before it is opened. A triple must serve one product only: two
// openings x − a and x' − a would reveal x − x'.
var ErrTripleUsed = errors.New("pond: triple already used")

// TripleShape is the kind and the dimensions of one private product, which
// fix the shapes of its triple and of every message. For ProductMul and
// ProductSquare only N is used (M and K are zero); for ProductMatMul x is
// M×K, y is K×N and the product M×N.
type TripleShape struct {
	Kind    ProductKind
	M, K, N int
}

// MulShape is the shape of an element-wise product of n elements.
func MulShape(n int) TripleShape { return TripleShape{Kind: ProductMul, N: n} }

// SquareShape is the shape of an element-wise square of n elements.
func SquareShape(n int) TripleShape { return TripleShape{Kind: ProductSquare, N: n} }

// MatMulShape is the shape of the matrix product of an m×k and a k×n matrix.
func MatMulShape(m, k, n int) TripleShape {
	return TripleShape{Kind: ProductMatMul, M: m, K: k, N: n}
}

// Validate reports, wrapping ErrShape, an unknown product, a dimension
// below one, dimensions set that the product does not use, or a tensor of
// more than MaxTripleElements.
func (s TripleShape) Validate() error {
	switch s.Kind {
	case ProductMul, ProductSquare:
		if s.M != 0 || s.K != 0 {
			return fmt.Errorf("%w: %v of %d elements has M = %d and K = %d, want 0", ErrShape, s.Kind, s.N, s.M, s.K)
		}
		if s.N < 1 || s.N > MaxTripleElements {
			return fmt.Errorf("%w: %v of %d elements, want 1 to %d", ErrShape, s.Kind, s.N, MaxTripleElements)
		}
	case ProductMatMul:
		if s.M < 1 || s.K < 1 || s.N < 1 {
			return fmt.Errorf("%w: matmul %d×%d · %d×%d has a dimension below 1", ErrShape, s.M, s.K, s.K, s.N)
		}
		for _, d := range [][2]int{{s.M, s.K}, {s.K, s.N}, {s.M, s.N}} {
			if d[0] > MaxTripleElements/d[1] {
				return fmt.Errorf("%w: matmul %d×%d · %d×%d has a %d×%d tensor, over %d elements",
					ErrShape, s.M, s.K, s.K, s.N, d[0], d[1], MaxTripleElements)
			}
		}
	default:
		return fmt.Errorf("%w: unknown product %d", ErrShape, int(s.Kind))
	}
	return nil
}

// String writes the shape as mul[N], square[N] or matmul[M×K·K×N].
func (s TripleShape) String() string {
	if s.Kind == ProductMatMul {
		return fmt.Sprintf("matmul[%d×%d·%d×%d]", s.M, s.K, s.K, s.N)
	}
	return fmt.Sprintf("%v[%d]", s.Kind, s.N)
}

// XLen is the number of elements of x, and of a and e.
func (s TripleShape) XLen() int {
	if s.Kind == ProductMatMul {
		return s.M * s.K
	}
	return s.N
}

// YLen is the number of elements of y, and of b and f: zero for a square.
func (s TripleShape) YLen() int {
	switch s.Kind {
	case ProductMatMul:
		return s.K * s.N
	case ProductSquare:
		return 0
	}
	return s.N
}

// ZLen is the number of elements of the product, and of c.
func (s TripleShape) ZLen() int {
	if s.Kind == ProductMatMul {
		return s.M * s.N
	}
	return s.N
}

// Triple0Size is the size in bytes of the crypto producer's message to
// server0: its seed, 32 bytes, whatever the shape.
func (s TripleShape) Triple0Size() int { return SeedSize }

// Triple1Size is the size in bytes of the crypto producer's message to
// server1: its seed, then c1 as a Share, 32 + 8 + 8·ZLen.
func (s TripleShape) Triple1Size() int { return SeedSize + 8 + 8*s.ZLen() }

// OpeningSize is the size in bytes of the opening each server sends the
// other: e and f as Shares, 8 + 8·XLen + 8 + 8·YLen.
func (s TripleShape) OpeningSize() int { return 16 + 8*s.XLen() + 8*s.YLen() }

// TripleMessage0 is what the crypto producer sends server0 for one
// product: one seed, which expands to server0's whole share (a0, b0, c0)
// of the triple. On the wire: the seed's 32 bytes.
type TripleMessage0 struct {
	Seed Seed
}

// TripleMessage1 is what the crypto producer sends server1 for one
// product: a seed, which expands to (a1, b1), and c1 = c − c0 in full. On
// the wire: the seed, then C as a Share.
type TripleMessage1 struct {
	Seed Seed
	C    Share
}

// Producer is the crypto producer's (server2's) step: it draws triples.
// It sees no input and no output; what it sends is a function of the
// shape, the domain and its randomness only. It keeps scratch buffers
// between calls, so drawing triples of one shape over and over does not
// allocate. A Producer is not safe for concurrent use; the zero value is
// ready.
type Producer struct {
	a, b, c0 []uint64
}

// Triple draws a triple for one product of shape s in domain d (the
// product's session, iteration and tensor; its purpose is ignored) and
// sets the messages to server0 and server1. Two fresh seeds come from rng,
// which must be cryptographic (crypto/rand.Reader) outside tests. to1.C
// is reused when it has the capacity.
//
// a = a0 + a1 and b = b0 + b1 are the two seeds' streams, c = a·b (the
// matrix product for ProductMatMul, a² for ProductSquare) and c1 = c − c0,
// c0 being server0's stream.
func (p *Producer) Triple(rng io.Reader, d Domain, s TripleShape, to0 *TripleMessage0, to1 *TripleMessage1) error {
	return p.TripleSplit(rng, d, s, to0, to1, Serial)
}

// resize returns s with n elements, reusing its storage when it has the
// capacity. The elements are not cleared.
func resize[S ~[]uint64](s S, n int) S {
	if cap(s) >= n {
		return s[:n]
	}
	return make(S, n)
}

// tripleState is where a TripleShare is in its one use.
type tripleState uint8

const (
	tripleEmpty  tripleState = iota // never set by Expand
	tripleReady                     // expanded, not opened
	tripleOpened                    // opened, not finished
	tripleUsed                      // finished
)

// TripleShare is one server's share of one triple, set by
// TripleMessage0.Expand on server0 or TripleMessage1.Expand on server1,
// which also record which server holds it. It serves one product: Open
// refuses a second opening with ErrTripleUsed. Expand into the same
// TripleShare for the next product reuses its buffers. A TripleShare is
// not safe for concurrent use.
type TripleShare struct {
	shape   TripleShape
	party   Server
	state   tripleState
	a, b, c Share
}

// Shape returns the shape of the product the triple serves.
func (t *TripleShare) Shape() TripleShape { return t.shape }

// Party returns the server that holds the share.
func (t *TripleShare) Party() Server { return t.party }

// Expand is server0's step on receiving its triple message for a product
// of shape s in domain d (its purpose is ignored): it sets t to
// (a0, b0, c0), the seed's streams. It fails only on an invalid shape.
func (m *TripleMessage0) Expand(t *TripleShare, d Domain, s TripleShape) error {
	if err := s.Validate(); err != nil {
		return err
	}
	t.set(0, s)
	d.Purpose = purposeTriple0A
	Expand(t.a, m.Seed, d)
	d.Purpose = purposeTriple0B
	Expand(t.b, m.Seed, d)
	d.Purpose = purposeTriple0C
	Expand(t.c, m.Seed, d)
	return nil
}

// Expand is server1's step on receiving its triple message for a product
// of shape s in domain d (its purpose is ignored): it sets t to (a1, b1),
// the seed's streams, and
// c1 from the message. It refuses, wrapping ErrWire, a c1 whose element
// count does not fit the shape.
func (m *TripleMessage1) Expand(t *TripleShare, d Domain, s TripleShape) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if len(m.C) != s.ZLen() {
		return fmt.Errorf("%w: triple for %v from the crypto producer has %d elements of c, want %d",
			ErrWire, s, len(m.C), s.ZLen())
	}
	t.set(1, s)
	d.Purpose = purposeTriple1A
	Expand(t.a, m.Seed, d)
	d.Purpose = purposeTriple1B
	Expand(t.b, m.Seed, d)
	copy(t.c, m.C)
	return nil
}

// set readies t for a product of shape s held by party, sizing its
// buffers.
func (t *TripleShare) set(party Server, s TripleShape) {
	t.shape, t.party, t.state = s, party, tripleReady
	t.a = resize(t.a, s.XLen())
	t.b = resize(t.b, s.YLen())
	t.c = resize(t.c, s.ZLen())
}

// Opening is what a server sends the other in the online step of a
// product: its shares of e = x − a and f = y − b (F is empty for a
// square). Both e and f are uniformly random whatever x and y, as a and
// b are uniform and used once. On the wire: E then F, each as a Share.
type Opening struct {
	E, F Share
}

// Open is a server's first online step of a product: from its shares x
// and y of the two factors (y is nil for a square) it sets msg to its
// shares of e = x − a and f = y − b, to send to the other server. msg's
// buffers are reused when they have the capacity. A triple opens once: a
// second Open returns ErrTripleUsed. Shares whose lengths do not fit the
// triple's shape are a bug of the caller and panic.
func (t *TripleShare) Open(msg *Opening, x, y Share) error {
	if t.state != tripleReady {
		return t.stateError("open")
	}
	if len(x) != t.shape.XLen() || len(y) != t.shape.YLen() {
		panic(fmt.Sprintf("pond: Open: %v takes x of %d and y of %d elements, got %d and %d",
			t.shape, t.shape.XLen(), t.shape.YLen(), len(x), len(y)))
	}
	t.state = tripleOpened
	msg.E = resize(msg.E, len(x))
	ops.Sub(msg.E, x, t.a)
	msg.F = resize(msg.F, len(y))
	ops.Sub(msg.F, y, t.b)
	return nil
}

// Finish is a server's second online step: from the opening it sent
// (mine) and the one it received (theirs) it sets dst to its share of the
// product x·y, of ZLen elements, awaiting truncation:
//
//	z_i = c_i + e·b_i + a_i·f, plus e·f on server0,
//
// where e and f are the sums of the two openings (for a square,
// z_i = c_i + 2·e·a_i, plus e² on server0). The product carries
// 2·FracBits fractional bits: sum it if a sum is wanted (ops.ReduceSum),
// then truncate it (TruncateSend/TruncateReceive or TruncateLocal).
//
// Finish consumes theirs, whose buffers it may overwrite (with e and f),
// and the triple. It refuses, wrapping ErrWire, an opening whose sizes do not
// fit the shape, and returns ErrTripleUsed unless the triple was opened
// and not yet finished. dst must not overlap the openings.
func (t *TripleShare) Finish(dst Product, mine, theirs *Opening) error {
	return t.FinishSplit(dst, mine, theirs, Serial)
}

// checkFinish checks what Finish needs: a triple opened and not finished,
// an opening from the peer that fits the shape (ErrWire), and an own
// opening and dst that fit it (a bug of the caller: panic).
func (t *TripleShare) checkFinish(dst Product, mine, theirs *Opening) error {
	if t.state != tripleOpened {
		return t.stateError("finish")
	}
	s := t.shape
	if len(theirs.E) != s.XLen() || len(theirs.F) != s.YLen() {
		return fmt.Errorf("%w: opening for %v from %v has %d elements of e and %d of f, want %d and %d",
			ErrWire, s, 1-t.party, len(theirs.E), len(theirs.F), s.XLen(), s.YLen())
	}
	if len(mine.E) != s.XLen() || len(mine.F) != s.YLen() {
		panic(fmt.Sprintf("pond: Finish: own opening for %v has %d elements of e and %d of f", s, len(mine.E), len(mine.F)))
	}
	if len(dst) != s.ZLen() {
		panic(fmt.Sprintf("pond: Finish: dst has %d elements, %v makes %d", len(dst), s, s.ZLen()))
	}
	return nil
}

// stateError explains why a step cannot run on t now.
func (t *TripleShare) stateError(step string) error {
	switch t.state {
	case tripleEmpty:
		return fmt.Errorf("pond: %s: the triple share was never expanded from a triple message", step)
	case tripleReady:
		return fmt.Errorf("%w: finish before open on %v's triple for %v", ErrTripleUsed, t.party, t.shape)
	case tripleOpened:
		return fmt.Errorf("%w: %v's triple for %v is already open: a triple serves one product", ErrTripleUsed, t.party, t.shape)
	}
	return fmt.Errorf("%w: %v's triple for %v already served a product", ErrTripleUsed, t.party, t.shape)
}
