package session

import (
	"errors"
	"fmt"
	"slices"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/internal/le"
)

// ErrWire is wrapped by every error decoding a message.
var ErrWire = errors.New("session: malformed message")

// publicTensor is a plaintext tensor on the wire: its float64 elements,
// little-endian, and nothing else. Both ends know the tensor's shape from
// the plan, so the receiver checks the message's length against it. The
// message holds exactly the tensor's memory where the byte order allows:
// the sender sends the tensor as it lies (wireView) and the receiver uses
// the message where it lies (decodeInPlace), so that a public tensor is
// copied only by the transport.
type publicTensor struct {
	Shape graph.Shape
	Data  []float64
}

// AppendBinary appends the encoding of t to b.
func (t *publicTensor) AppendBinary(b []byte) ([]byte, error) {
	if t.Shape.Size() != len(t.Data) {
		return nil, fmt.Errorf("session: cannot encode tensor of shape %v with %d elements", t.Shape, len(t.Data))
	}
	n := len(b)
	b = slices.Grow(b, t.size())[:n+t.size()]
	le.PutFloat64s(b[n:], t.Data)
	return b, nil
}

// size returns the length of t's encoding.
func (t *publicTensor) size() int { return 8 * len(t.Data) }

// MarshalBinary encodes t.
func (t *publicTensor) MarshalBinary() ([]byte, error) {
	return t.AppendBinary(make([]byte, 0, t.size()))
}

// UnmarshalBinary decodes data into t, whose Shape must be set to the
// shape the plan expects: the length is checked against it before
// anything is allocated.
func (t *publicTensor) UnmarshalBinary(data []byte) error {
	if err := t.checkSize(data); err != nil {
		return err
	}
	t.Data = make([]float64, t.Shape.Size())
	le.Float64s(t.Data, data)
	return nil
}

// checkSize checks that data holds exactly a tensor of t.Shape.
func (t *publicTensor) checkSize(data []byte) error {
	if want := 8 * uint64(t.Shape.Size()); uint64(len(data)) != want {
		return fmt.Errorf("%w: tensor of shape %v needs %d bytes, got %d", ErrWire, t.Shape, want, len(data))
	}
	return nil
}

// decodeInPlace decodes, into a t whose Shape is set, a message the
// caller owns and gives up: where the byte order and alignment allow, the
// elements are used where they lie, without a copy.
func (t *publicTensor) decodeInPlace(data []byte) error {
	if err := t.checkSize(data); err != nil {
		return err
	}
	if w, ok := le.Words(data); ok {
		t.Data = le.AsFloat64s(w)
		return nil
	}
	return t.UnmarshalBinary(data)
}

// wireView returns the encoding of the public tensor v as a view of v's
// own memory, where the byte order allows (ok is false elsewhere, and
// for an empty v).
func wireView(v []float64) (b []byte, ok bool) {
	if len(v) == 0 {
		return nil, false
	}
	return le.Bytes(le.Float64Words(v))
}
