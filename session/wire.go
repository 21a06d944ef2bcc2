package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/shareflow/shareflow/graph"
)

// ErrWire is wrapped by every error decoding a message.
var ErrWire = errors.New("session: malformed message")

// maxRank bounds the rank of a tensor on the wire.
const maxRank = 8

// publicTensor is a plaintext tensor on the wire: rank (uint32), the
// dimensions (uint32 each), then the float64 elements, all little-endian.
type publicTensor struct {
	Shape graph.Shape
	Data  []float64
}

// AppendBinary appends the encoding of t to b.
func (t *publicTensor) AppendBinary(b []byte) ([]byte, error) {
	if len(t.Shape) > maxRank || t.Shape.Size() != len(t.Data) {
		return nil, fmt.Errorf("session: cannot encode tensor of shape %v with %d elements", t.Shape, len(t.Data))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(t.Shape)))
	for _, d := range t.Shape {
		b = binary.LittleEndian.AppendUint32(b, uint32(d))
	}
	n := len(b)
	b = slices.Grow(b, 8*len(t.Data))[:n+8*len(t.Data)]
	for i, v := range t.Data {
		binary.LittleEndian.PutUint64(b[n+8*i:], math.Float64bits(v))
	}
	return b, nil
}

// size returns the length of t's encoding.
func (t *publicTensor) size() int { return 4 + 4*len(t.Shape) + 8*len(t.Data) }

// MarshalBinary encodes t.
func (t *publicTensor) MarshalBinary() ([]byte, error) {
	return t.AppendBinary(make([]byte, 0, t.size()))
}

// UnmarshalBinary decodes data into t. Every length is checked against
// the data before anything is allocated.
func (t *publicTensor) UnmarshalBinary(data []byte) error {
	if len(data) < 4 {
		return fmt.Errorf("%w: tensor of %d bytes has no rank", ErrWire, len(data))
	}
	rank := binary.LittleEndian.Uint32(data)
	data = data[4:]
	if rank > maxRank {
		return fmt.Errorf("%w: tensor rank %d exceeds %d", ErrWire, rank, maxRank)
	}
	if uint32(len(data)/4) < rank {
		return fmt.Errorf("%w: tensor of rank %d is truncated in its shape", ErrWire, rank)
	}
	shape := make(graph.Shape, rank)
	size := uint64(1)
	for i := range shape {
		d := binary.LittleEndian.Uint32(data[4*i:])
		size *= uint64(d)
		if d == 0 || d > math.MaxInt32 || size > math.MaxInt32 {
			return fmt.Errorf("%w: tensor shape dimension %d is %d (size so far %d)", ErrWire, i, d, size)
		}
		shape[i] = int(d)
	}
	data = data[4*rank:]
	if uint64(len(data)) != 8*size {
		return fmt.Errorf("%w: tensor of shape %v needs %d bytes of data, got %d", ErrWire, shape, 8*size, len(data))
	}
	t.Shape = shape
	t.Data = make([]float64, size)
	for i := range t.Data {
		t.Data[i] = math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
	}
	return nil
}
