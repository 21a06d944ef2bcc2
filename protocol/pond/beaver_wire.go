package pond

import (
	"encoding/binary"
	"fmt"
)

// The wire forms of the messages of Beaver products. Like the rest of
// wire.go they are little-endian, length-prefixed where a length varies,
// and decoded without trusting a length: a Share announces its element
// count, which must fit the bytes that follow.

// AppendBinary appends the seed's 32 bytes to b.
func (m *TripleMessage0) AppendBinary(b []byte) ([]byte, error) { return append(b, m.Seed[:]...), nil }

// MarshalBinary encodes m as its seed's 32 bytes.
func (m *TripleMessage0) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, SeedSize))
}

// UnmarshalBinary decodes a message of exactly 32 bytes.
func (m *TripleMessage0) UnmarshalBinary(data []byte) error {
	if len(data) != SeedSize {
		return fmt.Errorf("%w: triple message to server0 of %d bytes, want %d", ErrWire, len(data), SeedSize)
	}
	copy(m.Seed[:], data)
	return nil
}

// AppendBinary appends the seed, then C as a Share, to b.
func (m *TripleMessage1) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, m.Seed[:]...)
	return m.C.AppendBinary(b)
}

// MarshalBinary encodes m.
func (m *TripleMessage1) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, SeedSize+8+8*len(m.C)))
}

// UnmarshalBinary decodes data into m, reusing C's storage when it can.
// The element count of C must match the rest of the data exactly.
func (m *TripleMessage1) UnmarshalBinary(data []byte) error {
	if len(data) < SeedSize {
		return fmt.Errorf("%w: triple message to server1 of %d bytes, shorter than its seed", ErrWire, len(data))
	}
	if err := m.C.UnmarshalBinary(data[SeedSize:]); err != nil {
		return fmt.Errorf("triple message to server1, c: %w", err)
	}
	copy(m.Seed[:], data)
	return nil
}

// AppendBinary appends E, then F, each as a Share, to b.
func (m *Opening) AppendBinary(b []byte) ([]byte, error) {
	b, err := m.E.AppendBinary(b)
	if err != nil {
		return b, err
	}
	return m.F.AppendBinary(b)
}

// MarshalBinary encodes m.
func (m *Opening) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, 16+8*len(m.E)+8*len(m.F)))
}

// UnmarshalBinary decodes data into m, reusing its storage when it can.
// Each share's element count must fit the data; nothing may follow F.
func (m *Opening) UnmarshalBinary(data []byte) error {
	n, err := shareBytes(data)
	if err != nil {
		return fmt.Errorf("opening, e: %w", err)
	}
	if err := m.E.UnmarshalBinary(data[:n]); err != nil {
		return fmt.Errorf("opening, e: %w", err)
	}
	if err := m.F.UnmarshalBinary(data[n:]); err != nil {
		return fmt.Errorf("opening, f: %w", err)
	}
	return nil
}

// shareBytes returns the length in bytes of the Share at the start of
// data, its 8-byte count included, after checking that data holds it.
func shareBytes(data []byte) (int, error) {
	if len(data) < 8 {
		return 0, fmt.Errorf("%w: share of %d bytes has no length", ErrWire, len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > uint64(len(data)-8)/8 {
		return 0, fmt.Errorf("%w: share announces %d elements but carries %d bytes", ErrWire, n, len(data)-8)
	}
	return 8 + 8*int(n), nil
}
