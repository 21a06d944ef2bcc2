package pond

import (
	"errors"
	"fmt"
	"math"
)

// RangeError reports an input element that cannot be encoded: NaN, an
// infinity, or a magnitude at or above the configured bound.
type RangeError struct {
	Index int     // position of the element in the flattened tensor
	Value float64 // the element
	Bound float64 // 2^IntBits
}

func (e *RangeError) Error() string {
	if math.IsNaN(e.Value) || math.IsInf(e.Value, 0) {
		return fmt.Sprintf("pond: element %d is %v, which has no fixed-point encoding", e.Index, e.Value)
	}
	return fmt.Sprintf("pond: element %d is %g, outside the fixed-point range (-%g, %g)", e.Index, e.Value, e.Bound, e.Bound)
}

// Encode sets dst to the fixed-point encoding of x: round(x · 2^FracBits)
// to nearest, in two's complement. It refuses NaN, infinities and
// |x| ≥ 2^IntBits with a *RangeError naming the first bad element, and
// then leaves dst unspecified. The encoding error is at most half a unit
// in the last place, 2^-(FracBits+1).
func (p *Protocol) Encode(dst []uint64, x []float64) error {
	if len(dst) != len(x) {
		panic(fmt.Sprintf("pond: Encode: dst has %d elements, x has %d", len(dst), len(x)))
	}
	scale, bound := p.scale, p.bound
	for i, v := range x {
		// The negated comparison also catches NaN.
		if !(math.Abs(v) < bound) {
			return &RangeError{Index: i, Value: v, Bound: bound}
		}
		dst[i] = uint64(int64(math.RoundToEven(v * scale)))
	}
	return nil
}

// Decode sets dst to the values encoded in x (of the low 32 bits of each
// word in Z_2^32).
func (p *Protocol) Decode(dst []float64, x []uint64) {
	if len(dst) != len(x) {
		panic(fmt.Sprintf("pond: Decode: dst has %d elements, x has %d", len(dst), len(x)))
	}
	inv := 1 / p.scale
	for i, v := range x {
		dst[i] = float64(p.signed(v)) * inv
	}
}

// ErrConstant is wrapped by every error of EncodeConstant: a public
// constant that the configuration cannot hold.
var ErrConstant = errors.New("pond: constant does not fit the fixed-point configuration")

// EncodeConstant encodes a public constant for MulPublic. It fails, with
// an error wrapping ErrConstant, when c is not finite, out of range
// (|c| ≥ 2^IntBits), or so small in magnitude that it encodes to zero
// (|c| ≤ 2^-(FracBits+1)).
func (p *Protocol) EncodeConstant(c float64) (uint64, error) {
	var e [1]uint64
	if err := p.Encode(e[:], []float64{c}); err != nil {
		return 0, fmt.Errorf("%w: %g is outside the fixed-point range (-%g, %g)", ErrConstant, c, p.bound, p.bound)
	}
	if e[0] == 0 && c != 0 {
		return 0, fmt.Errorf("%w: %g is below the fixed-point resolution %g and would encode to zero", ErrConstant, c, p.cfg.Resolution())
	}
	return e[0], nil
}
