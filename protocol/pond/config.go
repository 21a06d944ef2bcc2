package pond

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Truncation selects how a product of two fixed-point numbers is brought
// back to the fixed-point scale.
type Truncation int

const (
	// Interactive truncation (the default, as in TF Encrypted) costs one
	// message from server0 to server1 and is always within one unit in the
	// last place, provided values stay in range. Server1 sees the value
	// masked statistically: the mask has StatGap more bits than the value.
	Interactive Truncation = iota
	// Local truncation (SecureML) costs no message. Each element is within
	// one unit in the last place except with probability below
	// 2^(IntBits+2·FracBits+1-64), when it is wildly wrong.
	Local
)

// String names the mode.
func (t Truncation) String() string {
	switch t {
	case Interactive:
		return "interactive"
	case Local:
		return "local"
	}
	return fmt.Sprintf("Truncation(%d)", int(t))
}

// Defaults of Config. In Z_2^64 the integer bits default to what the ring
// leaves once the fractional bits (twice, for a product) and the
// statistical gap are taken: 62 − 2·16 − 20 = 10, so |x| < 1024 by
// default. In Z_2^32 they default to 30 − FracBits: a sum of two values
// still fits (package session derives the bound from the largest sum its
// plan forms).
const (
	DefaultFracBits = 16
	DefaultStatGap  = 20
)

// The rings Pond computes in (Config.Ring).
const (
	// Ring64 is Z_2^64, the default: every step of the protocol, products
	// and truncation included.
	Ring64 = 64
	// Ring32 is Z_2^32, for computations that only add: private inputs,
	// sums, differences, public constants added, and reveals. A share
	// travels as 4 bytes an element instead of 8. It has no room for the
	// doubled fractional bits of a product, so MulPublic and truncation
	// are Ring64's alone.
	Ring32 = 32
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("pond: invalid config")

// Config is Pond's fixed-point configuration. The zero value means the
// defaults; New checks it.
type Config struct {
	// FracBits is the number of fractional bits: values are stored as
	// round(x · 2^FracBits). Resolution is 2^-FracBits (1.5e-5 for 16).
	FracBits int
	// IntBits bounds every value the computation handles: |x| < 2^IntBits.
	// Inputs outside the range are refused; sums and products must stay
	// inside it too, which the protocol cannot check without revealing.
	// Zero means 62 − 2·FracBits − StatGap.
	IntBits int
	// StatGap is the statistical security, in bits, of the masks of
	// interactive truncation (TF Encrypted uses 20).
	StatGap int
	// Truncation is the truncation protocol.
	Truncation Truncation
	// MaskPRG is the derivation of mask streams from seeds (zero means
	// DefaultMaskPRG, AES-128-CTR). Every player of a run must use the
	// same; Protocol.Domain puts it in the domains of a run.
	MaskPRG MaskPRG
	// Ring is the bit width of the ring the shares live in: Ring64 or
	// Ring32. Zero means Ring64 to this package; package session reads
	// zero as "choose for each plan" and picks Ring32 where the plan only
	// adds (see session.Options.Protocol). In Z_2^32 the shares are held
	// in memory as uint64 words too, of which only the low 32 bits count:
	// dropping the high 32 bits maps Z_2^64 onto Z_2^32 and keeps every sum
	// and difference, so the same kernels compute in both rings, and the
	// reduction happens where a share leaves a player (AppendShare,
	// PutWords) or is revealed.
	Ring int
}

func (c Config) withDefaults() Config {
	if c.FracBits == 0 {
		c.FracBits = DefaultFracBits
	}
	if c.StatGap == 0 {
		c.StatGap = DefaultStatGap
	}
	if c.Ring == 0 {
		c.Ring = Ring64
	}
	if c.IntBits == 0 {
		if c.Ring == Ring32 {
			c.IntBits = 30 - c.FracBits
		} else {
			c.IntBits = 62 - 2*c.FracBits - c.StatGap
		}
	}
	c.MaskPRG = c.MaskPRG.resolve()
	return c
}

func (c Config) validate() error {
	switch {
	case c.FracBits < 1 || c.FracBits > 30:
		return fmt.Errorf("%w: FracBits is %d, want 1 to 30", ErrConfig, c.FracBits)
	case c.Ring != Ring64 && c.Ring != Ring32:
		return fmt.Errorf("%w: Ring is %d, want %d (Z_2^64) or %d (Z_2^32)", ErrConfig, c.Ring, Ring64, Ring32)
	case c.StatGap < 8 || c.StatGap > 40:
		return fmt.Errorf("%w: StatGap is %d, want 8 to 40", ErrConfig, c.StatGap)
	case c.IntBits < 1 && c.Ring == Ring32:
		return fmt.Errorf("%w: IntBits is %d: with FracBits %d the ring Z_2^32 leaves no integer bits (30 − FracBits); use fewer fractional bits",
			ErrConfig, c.IntBits, c.FracBits)
	case c.IntBits < 1:
		return fmt.Errorf("%w: IntBits is %d: with FracBits %d and StatGap %d no integer bits are left (62 − 2·FracBits − StatGap); use fewer fractional bits",
			ErrConfig, c.IntBits, c.FracBits, c.StatGap)
	case c.Truncation != Interactive && c.Truncation != Local:
		return fmt.Errorf("%w: unknown Truncation %d", ErrConfig, int(c.Truncation))
	case c.MaskPRG != MaskAES256 && c.MaskPRG != MaskAES128:
		return fmt.Errorf("%w: unknown MaskPRG %d, want %d (%v) or %d (%v)",
			ErrConfig, c.MaskPRG, MaskAES256, MaskAES256, MaskAES128, MaskAES128)
	}
	if c.Ring == Ring32 {
		// One value must leave room for a sum of two: |x·2^f| < 2^30.
		if need := c.IntBits + c.FracBits; need > 30 {
			return fmt.Errorf("%w: IntBits %d + FracBits %d = %d bits, but the ring Z_2^32 leaves 30 for a value that is added to another",
				ErrConfig, c.IntBits, c.FracBits, need)
		}
		return nil
	}
	if need := c.IntBits + 2*c.FracBits + c.StatGap; need > 62 {
		return fmt.Errorf("%w: IntBits %d + 2·FracBits %d + StatGap %d = %d bits, but the ring Z_2^64 leaves 62 for a truncated product",
			ErrConfig, c.IntBits, 2*c.FracBits, c.StatGap, need)
	}
	return nil
}

// Bound returns the exclusive bound on the magnitude of every value, 2^IntBits.
func (c Config) Bound() float64 { return math.Ldexp(1, c.IntBits) }

// Resolution returns the value of one unit in the last place, 2^-FracBits.
func (c Config) Resolution() float64 { return math.Ldexp(1, -c.FracBits) }

// configVersion is the first byte of a Config's encoding. Change it, and
// the encoding, whenever a field is added.
// Version 1 had no MaskPRG (its streams were MaskAES256's); version 2 no
// Ring (it was Z_2^64).
const configVersion = 3

// configFields is the number of fields a Config encodes.
const configFields = 6

// configSize is the length of a Config's encoding: the version, then six
// uint32 fields.
const configSize = 1 + configFields*4

// AppendBinary appends the canonical encoding of c to b: a version byte,
// then FracBits, IntBits, StatGap, Truncation, MaskPRG and Ring as little-endian
// uint32s, with the defaults filled in, so that two configurations encode
// alike exactly when they compute alike (Config{} and the defaults spelt
// out, say). Package session hashes it into a plan's fingerprint, so that hosts
// configured differently refuse to run together instead of computing
// garbage.
func (c Config) AppendBinary(b []byte) ([]byte, error) {
	c = c.withDefaults()
	b = append(b, configVersion)
	for _, v := range [...]int{c.FracBits, c.IntBits, c.StatGap, int(c.Truncation), int(c.MaskPRG), c.Ring} {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return b, nil
}

// MarshalBinary returns the canonical encoding of c (see AppendBinary).
func (c Config) MarshalBinary() ([]byte, error) {
	return c.AppendBinary(make([]byte, 0, configSize))
}

// UnmarshalBinary decodes a configuration encoded by AppendBinary and
// checks it as New does.
func (c *Config) UnmarshalBinary(data []byte) error {
	if len(data) != configSize {
		return fmt.Errorf("%w: config of %d bytes, want %d", ErrWire, len(data), configSize)
	}
	if data[0] != configVersion {
		return fmt.Errorf("%w: config encoding version %d, want %d", ErrWire, data[0], configVersion)
	}
	var f [configFields]int
	for i := range f {
		v := binary.LittleEndian.Uint32(data[1+4*i:])
		if v > math.MaxInt32 {
			return fmt.Errorf("%w: config field %d is %d", ErrWire, i, v)
		}
		f[i] = int(v)
	}
	if f[4] > math.MaxUint8 {
		return fmt.Errorf("%w: config MaskPRG is %d", ErrWire, f[4])
	}
	got := Config{FracBits: f[0], IntBits: f[1], StatGap: f[2], Truncation: Truncation(f[3]), MaskPRG: MaskPRG(f[4]), Ring: f[5]}
	if err := got.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrWire, err)
	}
	*c = got
	return nil
}
