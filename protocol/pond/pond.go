package pond

import (
	"fmt"
	"io"
	"math"

	"github.com/shareflow/shareflow/ops"
)

// Protocol is Pond between two compute servers, configured once. Its
// methods compute one player's local step and return what that player
// sends; they touch no network and keep no state between calls, so a
// Protocol is safe for concurrent use.
type Protocol struct {
	cfg    Config
	scale  float64 // 2^FracBits
	bound  float64 // 2^IntBits
	ring32 bool    // the ring is Z_2^32: only the low 32 bits of a word count
}

// New checks cfg, fills in its defaults and returns the protocol.
func New(cfg Config) (*Protocol, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Protocol{cfg: cfg, scale: math.Ldexp(1, cfg.FracBits), bound: cfg.Bound(), ring32: cfg.Ring == Ring32}, nil
}

// signed returns the integer a word of the ring stands for: its two's
// complement value, of the low 32 bits in Z_2^32.
func (p *Protocol) signed(v uint64) int64 {
	if p.ring32 {
		return int64(int32(uint32(v)))
	}
	return int64(v)
}

// require64 panics when the protocol computes in Z_2^32, which has no
// room for a product's doubled fractional bits: a bug of the caller, who
// planned a product in the wrong ring.
func (p *Protocol) require64(step string) {
	if p.ring32 {
		panic(fmt.Sprintf("pond: %s needs the ring Z_2^64, but the configuration's is Z_2^32", step))
	}
}

// Config returns the configuration in force, defaults filled in.
func (p *Protocol) Config() Config { return p.cfg }

// Domain returns the domain of a tensor in a run, with the configuration's
// mask derivation (Config.MaskPRG); the steps set the purpose. Every
// player of a run must build its domains this way, so that they all derive
// the same streams.
func (p *Protocol) Domain(session string, iteration, tensor uint64) Domain {
	return Domain{Session: session, Iteration: iteration, Tensor: tensor, PRG: p.cfg.MaskPRG, Ring: p.cfg.Ring}
}

// checkDomain panics when d derives its streams otherwise than the
// configuration says: a bug of the caller, who built d without Domain, and
// whose peers would derive other streams.
func (p *Protocol) checkDomain(step string, d Domain) {
	if d.PRG.resolve() != p.cfg.MaskPRG {
		panic(fmt.Sprintf("pond: %s: domain with mask PRG %v, but the configuration's is %v (build domains with Protocol.Domain)",
			step, d.PRG.resolve(), p.cfg.MaskPRG))
	}
	if d.word32() != p.ring32 {
		panic(fmt.Sprintf("pond: %s: domain of ring %d, but the configuration's is Z_2^%d (build domains with Protocol.Domain)",
			step, d.Ring, p.cfg.Ring))
	}
}

// Server is a compute server's role in Pond. The two roles differ only in
// the asymmetric steps (truncation); package session maps each role to a
// player.
type Server uint8

// The two roles.
const (
	Server0 Server = 0 // sends in interactive truncation
	Server1 Server = 1 // receives in interactive truncation
)

// String names the role.
func (s Server) String() string {
	switch s {
	case Server0:
		return "server0"
	case Server1:
		return "server1"
	}
	return fmt.Sprintf("Server(%d)", uint8(s))
}

// Product is one server's share of a value that carries 2·FracBits
// fractional bits, as MulPublic leaves it: it awaits truncation, and
// means nothing at the fixed-point scale until TruncateSend and
// TruncateReceive, or TruncateLocal, bring it back to a Share. It is a
// type of its own so that the compiler refuses to add it to a Share or to
// reveal it.
type Product []uint64

// SeededShare is a server's share of a private input held as what the
// input owner sent it: the seed of the input's mask stream, and the
// input's domain. The share is the stream itself; keeping the seed
// instead costs 32 bytes rather than 8 per element, and a sum can add the
// stream straight into its result (AddToAt). A SeededShare is a value and
// safe for concurrent use.
type SeededShare struct {
	Seed   Seed
	Domain Domain // the purpose is set to PurposeInput by the methods
}

// ExpandAt sets dst to elements [off, off+len(dst)) of the share. Calls on
// disjoint ranges together write the whole share. off must be even.
func (s SeededShare) ExpandAt(dst Share, off int) {
	s.Domain.Purpose = PurposeInput
	ExpandAt(dst, s.Seed, s.Domain, off)
}

// AddToAt adds elements [off, off+len(dst)) of the share to dst, without
// writing the share out. off must be even.
func (s SeededShare) AddToAt(dst Share, off int) {
	s.Domain.Purpose = PurposeInput
	AddExpandAt(dst, s.Seed, s.Domain, off)
}

// SubFromAt subtracts elements [off, off+len(dst)) of the share from
// dst, without writing the share out: a server that added the stream of
// an input it must leave out of a sum takes it back. off must be even.
func (s SeededShare) SubFromAt(dst Share, off int) {
	s.Domain.Purpose = PurposeInput
	SubExpandAt(dst, s.Seed, s.Domain, off)
}

// ShareInput is the input owner's step of private input: it draws a fresh
// seed from rng, expands it into a mask r in domain d, sets masked to
// x − r and returns the seed. The seed goes to one server, whose share is
// r (see SeedShare); masked goes to the other, as its share. Either alone
// is uniformly random, independent of x. x holds encoded values (see
// Encode).
func (p *Protocol) ShareInput(rng io.Reader, d Domain, masked Share, x []uint64) (Seed, error) {
	if len(masked) != len(x) {
		panic(fmt.Sprintf("pond: ShareInput: masked has %d elements, x has %d", len(masked), len(x)))
	}
	p.checkDomain("ShareInput", d)
	seed, err := NewSeed(rng)
	if err != nil {
		return seed, err
	}
	d.Purpose = PurposeInput
	Expand(masked, seed, d)
	ops.Sub(masked, x, masked)
	return seed, nil
}

// EncodeAndShare is Encode followed by ShareInput in one pass, without
// the intermediate encoding: it draws a seed, sets masked to
// encode(x) − r and returns the seed. It refuses bad elements as Encode
// does, with a *RangeError naming the first, and then clears masked.
func (p *Protocol) EncodeAndShare(rng io.Reader, d Domain, masked Share, x []float64) (Seed, error) {
	if len(masked) != len(x) {
		panic(fmt.Sprintf("pond: EncodeAndShare: masked has %d elements, x has %d", len(masked), len(x)))
	}
	seed, err := NewSeed(rng)
	if err != nil {
		return seed, err
	}
	if err := p.EncodeAndMaskAt(masked, x, seed, d, 0); err != nil {
		clear(masked)
		return Seed{}, err
	}
	return seed, nil
}

// EncodeAndMaskAt is the work of EncodeAndShare on elements
// [off, off+len(x)) of a tensor, with the seed drawn by the caller
// (NewSeed): it sets masked to encode(x) − r for those elements of the
// input mask r of seed in domain d. Calls on disjoint ranges with one seed
// together make one EncodeAndShare, so a caller may split a large tensor
// across cores. It refuses the first bad element of its range with a
// *RangeError whose Index counts from the start of the tensor, and leaves
// masked unspecified. off must be even.
func (p *Protocol) EncodeAndMaskAt(masked Share, x []float64, seed Seed, d Domain, off int) error {
	if len(masked) != len(x) {
		panic(fmt.Sprintf("pond: EncodeAndMaskAt: masked has %d elements, x has %d", len(masked), len(x)))
	}
	p.checkDomain("EncodeAndMaskAt", d)
	d.Purpose = PurposeInput
	// The mask is drawn a cache-sized chunk at a time and used at once,
	// so each word goes to memory once, as part of the result.
	stream := newMaskStreamAt(seed, d, off)
	scale, bound := p.scale, p.bound
	for lo := 0; lo < len(x); lo += maskChunk {
		m := masked[lo:min(lo+maskChunk, len(x))]
		stream.read(m)
		for i, v := range x[lo : lo+len(m)] {
			// The negated comparison also catches NaN.
			if !(math.Abs(v) < bound) {
				return &RangeError{Index: off + lo + i, Value: v, Bound: bound}
			}
			m[i] = uint64(int64(math.RoundToEven(v*scale))) - m[i]
		}
	}
	return nil
}

// EncodeAndSubtractAt is EncodeAndMaskAt with the mask drawn ahead: the
// input owner expanded elements [off, off+len(x)) of its input mask r into
// mask (SeededShare.ExpandAt) before x existed, and now sets masked to
// encode(x) − r in one pass. masked may be mask itself (the same slice),
// but must not otherwise overlap it. It refuses the first bad element of
// its range with a *RangeError whose Index counts from the start of the
// tensor, and leaves masked unspecified.
func (p *Protocol) EncodeAndSubtractAt(masked Share, x []float64, mask Share, off int) error {
	if len(masked) != len(x) || len(mask) != len(x) {
		panic(fmt.Sprintf("pond: EncodeAndSubtractAt: masked has %d elements, x %d, mask %d", len(masked), len(x), len(mask)))
	}
	scale, bound := p.scale, p.bound
	for i, v := range x {
		// The negated comparison also catches NaN.
		if !(math.Abs(v) < bound) {
			return &RangeError{Index: off + i, Value: v, Bound: bound}
		}
		masked[i] = uint64(int64(math.RoundToEven(v*scale))) - mask[i]
	}
	return nil
}

// EncodeAndMaskInPlaceAt is EncodeAndMaskAt for a masked share that may
// be x's own memory, its float64s viewed as words (le.Float64Words): an
// input owner that gives its tensor up masks it where it lies and sends
// it, without a buffer of its own. masked and x must be either that one
// memory or disjoint. On a *RangeError both are left unspecified.
func (p *Protocol) EncodeAndMaskInPlaceAt(masked Share, x []float64, seed Seed, d Domain, off int) error {
	if len(masked) != len(x) {
		panic(fmt.Sprintf("pond: EncodeAndMaskInPlaceAt: masked has %d elements, x has %d", len(masked), len(x)))
	}
	p.checkDomain("EncodeAndMaskInPlaceAt", d)
	d.Purpose = PurposeInput
	stream := newMaskStreamAt(seed, d, off)
	scale, bound := p.scale, p.bound
	for lo := 0; lo < len(x); lo += maskChunk {
		m := masked[lo:min(lo+maskChunk, len(x))]
		// Each element is read before its word is written, then the mask
		// is added to the negated encoding and the sum negated: r − (−e)
		// negated is e − r, computed while the chunk is in the L1 cache.
		for i, v := range x[lo : lo+len(m)] {
			if !(math.Abs(v) < bound) {
				return &RangeError{Index: off + lo + i, Value: v, Bound: bound}
			}
			m[i] = -uint64(int64(math.RoundToEven(v * scale)))
		}
		stream.addTo(m)
		for i := range m {
			m[i] = -m[i]
		}
	}
	return nil
}

// SeedShare is the step of the server that received an input's seed: it
// sets dst to its share, the mask stream of seed in domain d.
func SeedShare(dst Share, seed Seed, d Domain) {
	SeededShare{Seed: seed, Domain: d}.ExpandAt(dst, 0)
}

// AddSeedShare adds the share of the input whose seed is seed (see
// SeedShare) to dst, without materializing the share: a server summing
// private inputs saves writing and reading back a whole tensor.
func AddSeedShare(dst Share, seed Seed, d Domain) {
	SeededShare{Seed: seed, Domain: d}.AddToAt(dst, 0)
}

// MulPublic sets dst = x · c for a constant encoded by EncodeConstant. The
// product carries 2·FracBits fractional bits: truncate it before further
// use (TruncateSend/TruncateReceive or TruncateLocal). It computes in
// Z_2^64: a Ring32 protocol has no truncation to follow it.
func MulPublic(dst Product, x Share, c uint64) { ops.Scale(dst, x, c) }

// truncBits returns k, the bit length bound of a product of two in-range
// values: |x| < 2^k with k = IntBits + 2·FracBits.
func (p *Protocol) truncBits() uint { return uint(p.cfg.IntBits + 2*p.cfg.FracBits) }

// TruncateSend is server0's step of interactive truncation of the shared
// product x = x0 + x1, |x| < 2^(IntBits+2·FracBits). Server0 draws a mask
// r of IntBits+2·FracBits+1+StatGap bits and a fresh seed; it sends
// server1 c0 = x0 + r + 2^k and the seed, and sets its new share dst to
// d − ⌊r / 2^f⌋, d being the seed's stream. msg.Masked is reused when it
// has the capacity. Server1 sees x + 2^k + r, which hides x but for a
// statistical distance of 2^-StatGap per element.
func (p *Protocol) TruncateSend(rng io.Reader, d Domain, dst Share, x0 Product, msg *TruncationMessage) error {
	if len(dst) != len(x0) {
		panic(fmt.Sprintf("pond: TruncateSend: dst has %d elements, x0 has %d", len(dst), len(x0)))
	}
	mask, err := NewSeed(rng)
	if err != nil {
		return err
	}
	if msg.Seed, err = NewSeed(rng); err != nil {
		return err
	}
	if cap(msg.Masked) >= len(x0) {
		msg.Masked = msg.Masked[:len(x0)]
	} else {
		msg.Masked = make(Masked, len(x0))
	}
	p.TruncateSendAt(dst, msg.Masked, x0, mask, msg.Seed, d, 0)
	return nil
}

// TruncateSendAt is the work of TruncateSend on elements
// [off, off+len(dst)) of a tensor, with server0's two seeds drawn by the
// caller (NewSeed, mask first, then fresh): mask is the seed of r, fresh
// the seed that goes to server1. It sets dst to server0's new share and c0
// to the message's masked share, for those elements. Calls on disjoint
// ranges with the same seeds together make one TruncateSend, so a caller
// may split a large tensor across cores. off must be even.
func (p *Protocol) TruncateSendAt(dst Share, c0 Masked, x0 Product, mask, fresh Seed, d Domain, off int) {
	if len(dst) != len(x0) || len(c0) != len(x0) {
		panic(fmt.Sprintf("pond: TruncateSendAt: dst, c0 and x0 have %d, %d and %d elements", len(dst), len(c0), len(x0)))
	}
	p.require64("TruncateSendAt")
	p.checkDomain("TruncateSendAt", d)
	k, f := p.truncBits(), uint(p.cfg.FracBits)
	maskBits := k + 1 + uint(p.cfg.StatGap)

	r := c0 // r is built in place, then turned into c0
	d.Purpose = PurposeTruncation
	ExpandAt(r, mask, d, off)
	d.Purpose = PurposeRerandom
	ExpandAt(dst, fresh, d, off)
	bits := uint64(1)<<maskBits - 1
	offset := uint64(1) << k
	for i := range r {
		ri := r[i] & bits
		dst[i] -= ri >> f
		r[i] = x0[i] + ri + offset
	}
}

// TruncateReceive is server1's step of interactive truncation: from its
// share x1 and server0's message it sets its new share dst to
// ⌊(x1 + c0) / 2^f⌋ − 2^(k−f) − d. The two new shares add up to ⌊x / 2^f⌋
// or one more. A message of the wrong length is an error: it came from
// another player.
func (p *Protocol) TruncateReceive(d Domain, dst Share, x1 Product, msg *TruncationMessage) error {
	if len(msg.Masked) != len(x1) {
		return fmt.Errorf("pond: truncation message has %d elements, want %d", len(msg.Masked), len(x1))
	}
	if len(dst) != len(x1) {
		panic(fmt.Sprintf("pond: TruncateReceive: dst has %d elements, x1 has %d", len(dst), len(x1)))
	}
	p.TruncateReceiveAt(dst, x1, msg.Masked, msg.Seed, d, 0)
	return nil
}

// TruncateReceiveAt is the work of TruncateReceive on elements
// [off, off+len(dst)) of a tensor: fresh is the message's seed and c0 the
// message's masked share, for those elements. Calls on disjoint ranges
// together make one TruncateReceive. The caller checks the message's
// length first. off must be even.
func (p *Protocol) TruncateReceiveAt(dst Share, x1 Product, c0 Masked, fresh Seed, d Domain, off int) {
	if len(dst) != len(x1) || len(c0) != len(x1) {
		panic(fmt.Sprintf("pond: TruncateReceiveAt: dst, x1 and c0 have %d, %d and %d elements", len(dst), len(x1), len(c0)))
	}
	p.require64("TruncateReceiveAt")
	p.checkDomain("TruncateReceiveAt", d)
	k, f := p.truncBits(), uint(p.cfg.FracBits)
	d.Purpose = PurposeRerandom
	ExpandAt(dst, fresh, d, off)
	offset := uint64(1) << (k - f)
	for i := range dst {
		c := x1[i] + c0[i]
		dst[i] = c>>f - offset - dst[i]
	}
}

// TruncateLocal is either server's step of local (SecureML) truncation:
// server0 shifts its share arithmetically, server1 negates, shifts and
// negates. It works element by element, so a caller may split a tensor
// into ranges freely.
func (p *Protocol) TruncateLocal(party Server, dst Share, x Product) {
	p.require64("TruncateLocal")
	f := uint(p.cfg.FracBits)
	switch party {
	case Server0:
		ops.ShiftRightArith(dst, x, f)
	case Server1:
		ops.Neg(dst, x)
		ops.ShiftRightArith(dst, dst, f)
		ops.Neg(dst, dst)
	default:
		panic(fmt.Sprintf("pond: TruncateLocal: party %v, want Server0 or Server1", party))
	}
}

// Reveal is the output player's step: it adds the two servers' shares and
// decodes the sum into dst.
func (p *Protocol) Reveal(dst []float64, s0, s1 Share) error {
	return p.RevealQuotient(dst, s0, s1, 1)
}

// RevealQuotient is Reveal followed by a division by the public number d,
// in one pass: dst = decode(s0 + s1) / d. As 2^FracBits·d is exact, each
// element is rounded once, exactly as decoding then dividing would round
// it. It works element by element, so a caller may split a tensor into
// ranges freely.
func (p *Protocol) RevealQuotient(dst []float64, s0, s1 Share, d float64) error {
	if len(s0) != len(dst) || len(s1) != len(dst) {
		return fmt.Errorf("pond: reveal: shares have %d and %d elements, want %d", len(s0), len(s1), len(dst))
	}
	if d == 0 || math.IsNaN(d) || math.IsInf(d, 0) {
		return fmt.Errorf("pond: reveal: divisor %v must be a finite non-zero number", d)
	}
	div := p.scale * d
	if p.ring32 {
		for i := range dst {
			dst[i] = float64(int32(uint32(s0[i]+s1[i]))) / div
		}
		return nil
	}
	for i := range dst {
		dst[i] = float64(int64(s0[i]+s1[i])) / div
	}
	return nil
}
