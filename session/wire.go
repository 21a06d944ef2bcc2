package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/internal/le"
)

// ErrWire is wrapped by every error decoding a message.
var ErrWire = errors.New("session: malformed message")

// maxRank bounds the rank of a tensor on the wire.
const maxRank = 8

// publicTensor is a plaintext tensor on the wire: rank (uint32), the
// dimensions (uint32 each), zero bytes up to a multiple of 8, then the
// float64 elements, all little-endian. The padding lets a receiver use the
// elements where they lie.
type publicTensor struct {
	Shape graph.Shape
	Data  []float64
}

// AppendBinary appends the encoding of t to b.
func (t *publicTensor) AppendBinary(b []byte) ([]byte, error) {
	if len(t.Shape) > maxRank || t.Shape.Size() != len(t.Data) {
		return nil, fmt.Errorf("session: cannot encode tensor of shape %v with %d elements", t.Shape, len(t.Data))
	}
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(t.Shape)))
	for _, d := range t.Shape {
		b = binary.LittleEndian.AppendUint32(b, uint32(d))
	}
	for (len(b)-start)%8 != 0 {
		b = append(b, 0)
	}
	n := len(b)
	b = slices.Grow(b, 8*len(t.Data))[:n+8*len(t.Data)]
	le.PutFloat64s(b[n:], t.Data)
	return b, nil
}

// headerSize returns the length of the header of a tensor of the given
// rank, padding included.
func headerSize(rank int) int { return (4 + 4*rank + 7) / 8 * 8 }

// size returns the length of t's encoding.
func (t *publicTensor) size() int { return headerSize(len(t.Shape)) + 8*len(t.Data) }

// MarshalBinary encodes t.
func (t *publicTensor) MarshalBinary() ([]byte, error) {
	return t.AppendBinary(make([]byte, 0, t.size()))
}

// UnmarshalBinary decodes data into t. Every length is checked against
// the data before anything is allocated.
func (t *publicTensor) UnmarshalBinary(data []byte) error {
	if err := t.checkHeader(data); err != nil {
		return err
	}
	t.Data = make([]float64, t.Shape.Size())
	le.Float64s(t.Data, data[headerSize(len(t.Shape)):])
	return nil
}

// checkHeader decodes and checks the shape, and checks that the data has
// exactly the length it implies; it sets t.Shape only.
func (t *publicTensor) checkHeader(data []byte) error {
	if len(data) < 4 {
		return fmt.Errorf("%w: tensor of %d bytes has no rank", ErrWire, len(data))
	}
	rank := binary.LittleEndian.Uint32(data)
	data = data[4:]
	if rank > maxRank {
		return fmt.Errorf("%w: tensor rank %d exceeds %d", ErrWire, rank, maxRank)
	}
	if len(data) < headerSize(int(rank))-4 {
		return fmt.Errorf("%w: tensor of rank %d is truncated in its header", ErrWire, rank)
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
	pad := data[4*rank : headerSize(int(rank))-4]
	for _, p := range pad {
		if p != 0 {
			return fmt.Errorf("%w: tensor header padding is not zero", ErrWire)
		}
	}
	data = data[len(pad)+4*int(rank):]
	if uint64(len(data)) != 8*size {
		return fmt.Errorf("%w: tensor of shape %v needs %d bytes of data, got %d", ErrWire, shape, 8*size, len(data))
	}
	t.Shape = shape
	return nil
}

// decodeInPlace decodes a message the caller owns and gives up: where the
// byte order and alignment allow, the elements are used where they lie,
// without a copy.
func (t *publicTensor) decodeInPlace(data []byte) error {
	if err := t.checkHeader(data); err != nil {
		return err
	}
	h := headerSize(len(t.Shape))
	if w, ok := le.Words(data[h:]); ok {
		t.Data = le.AsFloat64s(w)
		return nil
	}
	return t.UnmarshalBinary(data)
}
