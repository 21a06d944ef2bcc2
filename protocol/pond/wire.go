package pond

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/shareflow/shareflow/internal/le"
)

// Share is one server's additive share of a private tensor, flattened:
// the tensor is the element-wise sum of the two servers' shares mod 2^64.
// On the wire it is its element count (uint64) then the elements, all
// little-endian.
type Share []uint64

// ErrWire is wrapped by every decoding error.
var ErrWire = errors.New("pond: malformed message")

// AppendBinary appends the encoding of s to b.
func (s Share) AppendBinary(b []byte) ([]byte, error) {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	n := len(b)
	b = slices.Grow(b, 8*len(s))[:n+8*len(s)]
	le.PutUint64s(b[n:], s)
	return b, nil
}

// MarshalBinary encodes s.
func (s Share) MarshalBinary() ([]byte, error) {
	return s.AppendBinary(make([]byte, 0, 8+8*len(s)))
}

// UnmarshalBinary decodes data into s, reusing its storage when it can. The
// element count must match the data's length exactly.
func (s *Share) UnmarshalBinary(data []byte) error {
	rest, err := s.decode(data)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes after the share", ErrWire, len(rest))
	}
	return nil
}

func (s *Share) decode(data []byte) ([]byte, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("%w: share of %d bytes has no length", ErrWire, len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	data = data[8:]
	if n > uint64(len(data)/8) {
		return nil, fmt.Errorf("%w: share announces %d elements but carries %d bytes", ErrWire, n, len(data))
	}
	if uint64(cap(*s)) >= n {
		*s = (*s)[:n]
	} else {
		*s = make(Share, n)
	}
	le.Uint64s(*s, data)
	return data[8*n:], nil
}

// AppendBinary appends the seed's 32 bytes to b.
func (s Seed) AppendBinary(b []byte) ([]byte, error) { return append(b, s[:]...), nil }

// MarshalBinary encodes the seed as its 32 bytes.
func (s Seed) MarshalBinary() ([]byte, error) { return s[:], nil }

// UnmarshalBinary decodes a 32-byte seed.
func (s *Seed) UnmarshalBinary(data []byte) error {
	if len(data) != SeedSize {
		return fmt.Errorf("%w: seed of %d bytes, want %d", ErrWire, len(data), SeedSize)
	}
	copy(s[:], data)
	return nil
}

// Masked is a tensor hidden under a one-time mask, as server0 sends it in
// interactive truncation: alone it is (statistically) uniform, and it is
// no share of anything, only an input to the step it was sent for. It is a
// type of its own so that the compiler refuses to use it as a Share. On
// the wire it is encoded as a Share.
type Masked []uint64

// AppendBinary appends the encoding of m to b.
func (m Masked) AppendBinary(b []byte) ([]byte, error) { return Share(m).AppendBinary(b) }

// MarshalBinary encodes m.
func (m Masked) MarshalBinary() ([]byte, error) { return Share(m).MarshalBinary() }

// UnmarshalBinary decodes data into m, reusing its storage when it can.
func (m *Masked) UnmarshalBinary(data []byte) error {
	s := Share(*m)
	err := s.UnmarshalBinary(data)
	*m = Masked(s)
	return err
}

// TruncationMessage is what server0 sends server1 in interactive
// truncation: its masked share and the seed of server1's fresh share. On
// the wire: the seed, then Masked as a Share.
type TruncationMessage struct {
	Seed   Seed
	Masked Masked
}

// AppendBinary appends the encoding of m to b.
func (m *TruncationMessage) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, m.Seed[:]...)
	return m.Masked.AppendBinary(b)
}

// MarshalBinary encodes m.
func (m *TruncationMessage) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, SeedSize+8+8*len(m.Masked)))
}

// UnmarshalBinary decodes data into m.
func (m *TruncationMessage) UnmarshalBinary(data []byte) error {
	if len(data) < SeedSize {
		return fmt.Errorf("%w: truncation message of %d bytes", ErrWire, len(data))
	}
	copy(m.Seed[:], data)
	return m.Masked.UnmarshalBinary(data[SeedSize:])
}

// WordSize returns the bytes an element of a share takes on the wire in
// the protocol's ring: 8 in Z_2^64, 4 in Z_2^32.
func (p *Protocol) WordSize() int {
	if p.ring32 {
		return 4
	}
	return 8
}

// PutWords writes the elements of s, reduced to the ring, into b as
// little-endian words of WordSize bytes: b must hold WordSize·len(s)
// bytes. Calls on disjoint ranges of a share may run in parallel, except
// in place: in Z_2^32 b may be s's own memory viewed as bytes, and the
// elements then pack to its front (le.PutLow32s), in one call.
func (p *Protocol) PutWords(b []byte, s []uint64) {
	if p.ring32 {
		le.PutLow32s(b, s)
		return
	}
	le.PutUint64s(b, s)
}

// Words sets dst to len(dst) elements read from b, as PutWords wrote
// them: b must hold WordSize·len(dst) bytes.
func (p *Protocol) Words(dst []uint64, b []byte) {
	if p.ring32 {
		le.Uint32sTo64(dst, b)
		return
	}
	le.Uint64s(dst, b)
}

// AddWords adds to dst len(dst) elements read from b, as PutWords wrote
// them: a server adds a share it received to a sum without decoding it
// first.
func (p *Protocol) AddWords(dst []uint64, b []byte) {
	if p.ring32 {
		le.AddUint32sTo64(dst, b)
		return
	}
	le.AddUint64s(dst, b)
}

// ShareSize returns the length of the wire form of a share of n elements
// (AppendShare).
func (p *Protocol) ShareSize(n int) int { return 8 + p.WordSize()*n }

// AppendShare appends the wire form of s in the protocol's ring to b: its
// element count as a little-endian uint64, then its elements (PutWords).
// In Z_2^64 it is s.AppendBinary's encoding.
func (p *Protocol) AppendShare(b []byte, s Share) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	n := len(b)
	b = slices.Grow(b, p.WordSize()*len(s))[:n+p.WordSize()*len(s)]
	p.PutWords(b[n:], s)
	return b
}

// DecodeShare decodes the wire form of a share (AppendShare) of exactly
// len(dst) elements into dst. A count other than len(dst), or a length
// that does not match the count, is an error wrapping ErrWire: the data
// came from another player.
func (p *Protocol) DecodeShare(dst Share, data []byte) error {
	if len(data) < 8 {
		return fmt.Errorf("%w: share of %d bytes has no length", ErrWire, len(data))
	}
	if n := binary.LittleEndian.Uint64(data); n != uint64(len(dst)) {
		return fmt.Errorf("%w: share announces %d elements, want %d", ErrWire, n, len(dst))
	}
	if want := p.ShareSize(len(dst)); len(data) != want {
		return fmt.Errorf("%w: share of %d elements in Z_2^%d needs %d bytes, got %d", ErrWire, len(dst), 8*p.WordSize(), want, len(data))
	}
	p.Words(dst, data[8:])
	return nil
}
