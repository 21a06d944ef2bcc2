package pond

import (
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/shareflow/shareflow/internal/par"
	"github.com/shareflow/shareflow/ops"
)

// Protocol is Pond between two compute servers, configured once. Its
// methods compute one player's local step and return what that player
// sends; they touch no network and keep no state between calls, so a
// Protocol is safe for concurrent use.
type Protocol struct {
	cfg   Config
	scale float64 // 2^FracBits
	bound float64 // 2^IntBits
}

// New checks cfg, fills in its defaults and returns the protocol.
func New(cfg Config) (*Protocol, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Protocol{cfg: cfg, scale: math.Ldexp(1, cfg.FracBits), bound: cfg.Bound()}, nil
}

// Config returns the configuration in force, defaults filled in.
func (p *Protocol) Config() Config { return p.cfg }

// ShareInput is the input owner's step of private input: it draws a fresh
// seed from rng, expands it into a mask r in domain d, sets masked to
// x − r and returns the seed. The seed goes to one server, whose share is
// r (see Expand); masked goes to the other. Either alone is uniformly
// random, independent of x. x holds encoded values (see Encode).
func (p *Protocol) ShareInput(rng io.Reader, d Domain, masked Share, x []uint64) (Seed, error) {
	if len(masked) != len(x) {
		panic(fmt.Sprintf("pond: ShareInput: masked has %d elements, x has %d", len(masked), len(x)))
	}
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
// does, with a *RangeError.
func (p *Protocol) EncodeAndShare(rng io.Reader, d Domain, masked Share, x []float64) (Seed, error) {
	if len(masked) != len(x) {
		panic(fmt.Sprintf("pond: EncodeAndShare: masked has %d elements, x has %d", len(masked), len(x)))
	}
	seed, err := NewSeed(rng)
	if err != nil {
		return seed, err
	}
	d.Purpose = PurposeInput
	// The mask is drawn a cache-sized chunk at a time and used at once,
	// so each word goes to memory once, as part of the result. Large
	// tensors are split across cores; the first bad element is reported.
	var mu sync.Mutex
	var bad *RangeError
	scale, bound := p.scale, p.bound
	par.For(len(x), maskChunk, func(lo, hi int) {
		stream := newMaskStreamAt(seed, d, lo)
		for off := lo; off < hi; off += maskChunk {
			m := masked[off:min(off+maskChunk, hi)]
			stream.read(m)
			for i, v := range x[off : off+len(m)] {
				if !(math.Abs(v) < bound) {
					mu.Lock()
					if bad == nil || off+i < bad.Index {
						bad = &RangeError{Index: off + i, Value: v, Bound: bound}
					}
					mu.Unlock()
					return
				}
				m[i] = uint64(int64(math.RoundToEven(v*scale))) - m[i]
			}
		}
	})
	if bad != nil {
		clear(masked)
		return Seed{}, bad
	}
	return seed, nil
}

// SeedShare is the step of the server that received an input's seed: it
// sets dst to its share, the mask stream of seed in domain d.
func SeedShare(dst Share, seed Seed, d Domain) {
	d.Purpose = PurposeInput
	Expand(dst, seed, d)
}

// AddSeedShare adds the share of the input whose seed is seed (see
// SeedShare) to dst, without materializing the share: a server summing
// private inputs saves writing and reading back a whole tensor.
func AddSeedShare(dst Share, seed Seed, d Domain) {
	d.Purpose = PurposeInput
	AddExpand(dst, seed, d)
}

// MulPublic sets dst = x · c for a constant encoded by EncodeConstant. The
// product carries 2·FracBits fractional bits: truncate it before further
// use (TruncateSend/TruncateReceive or TruncateLocal).
func MulPublic(dst, x Share, c uint64) { ops.Scale(dst, x, c) }

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
func (p *Protocol) TruncateSend(rng io.Reader, d Domain, dst, x0 Share, msg *TruncationMessage) error {
	if len(dst) != len(x0) {
		panic(fmt.Sprintf("pond: TruncateSend: dst has %d elements, x0 has %d", len(dst), len(x0)))
	}
	k, f := p.truncBits(), uint(p.cfg.FracBits)
	maskBits := k + 1 + uint(p.cfg.StatGap)

	rSeed, err := NewSeed(rng)
	if err != nil {
		return err
	}
	if msg.Seed, err = NewSeed(rng); err != nil {
		return err
	}
	if cap(msg.Masked) >= len(x0) {
		msg.Masked = msg.Masked[:len(x0)]
	} else {
		msg.Masked = make(Share, len(x0))
	}

	r := msg.Masked // r is built in place, then turned into c0
	d.Purpose = PurposeTruncation
	Expand(r, rSeed, d)
	d.Purpose = PurposeRerandom
	Expand(dst, msg.Seed, d)
	mask := uint64(1)<<maskBits - 1
	offset := uint64(1) << k
	for i := range r {
		ri := r[i] & mask
		dst[i] -= ri >> f
		r[i] = x0[i] + ri + offset
	}
	return nil
}

// TruncateReceive is server1's step of interactive truncation: from its
// share x1 and server0's message it sets its new share dst to
// ⌊(x1 + c0) / 2^f⌋ − 2^(k−f) − d. The two new shares add up to ⌊x / 2^f⌋
// or one more.
func (p *Protocol) TruncateReceive(d Domain, dst, x1 Share, msg *TruncationMessage) error {
	if len(msg.Masked) != len(x1) {
		return fmt.Errorf("pond: truncation message has %d elements, want %d", len(msg.Masked), len(x1))
	}
	if len(dst) != len(x1) {
		panic(fmt.Sprintf("pond: TruncateReceive: dst has %d elements, x1 has %d", len(dst), len(x1)))
	}
	k, f := p.truncBits(), uint(p.cfg.FracBits)
	d.Purpose = PurposeRerandom
	Expand(dst, msg.Seed, d)
	offset := uint64(1) << (k - f)
	for i := range dst {
		c := x1[i] + msg.Masked[i]
		dst[i] = c>>f - offset - dst[i]
	}
	return nil
}

// TruncateLocal is either server's step of local (SecureML) truncation:
// server0 shifts its share arithmetically, server1 negates, shifts and
// negates. party is 0 or 1.
func (p *Protocol) TruncateLocal(party int, dst, x Share) {
	f := uint(p.cfg.FracBits)
	switch party {
	case 0:
		ops.ShiftRightArith(dst, x, f)
	case 1:
		ops.Neg(dst, x)
		ops.ShiftRightArith(dst, dst, f)
		ops.Neg(dst, dst)
	default:
		panic(fmt.Sprintf("pond: TruncateLocal: party %d, want 0 or 1", party))
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
// it.
func (p *Protocol) RevealQuotient(dst []float64, s0, s1 Share, d float64) error {
	if len(s0) != len(dst) || len(s1) != len(dst) {
		return fmt.Errorf("pond: reveal: shares have %d and %d elements, want %d", len(s0), len(s1), len(dst))
	}
	if d == 0 || math.IsNaN(d) || math.IsInf(d, 0) {
		return fmt.Errorf("pond: reveal: divisor %v must be a finite non-zero number", d)
	}
	div := p.scale * d
	par.For(len(dst), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst[i] = float64(int64(s0[i]+s1[i])) / div
		}
	})
	return nil
}
