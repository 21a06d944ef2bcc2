package grpctransport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
)

// Wire limits.
const (
	// MaxChunkBytes is the largest piece of a message one frame carries
	// (1 MiB). Longer messages are split into several frames.
	MaxChunkBytes = 1 << 20
	// MaxSessionBytes is the longest session id a Key may carry on the
	// wire.
	MaxSessionBytes = 1024

	// wireVersion is the version byte of Frame and Hello encodings.
	wireVersion = 1
	// frameFixedBytes is the size of a frame without session and chunk:
	// version, session length, iteration, edge, total, offset, chunk
	// length.
	frameFixedBytes = 1 + 2 + 8 + 8 + 8 + 8 + 4
	// helloBytesMin is the size of a Hello with an empty name.
	helloBytesMin = 1 + 1 + 32
	// maxWireMessage bounds one gRPC message: the largest frame plus the
	// protobuf wrapper around it. Servers and clients set their gRPC
	// message size limits to it.
	maxWireMessage = frameFixedBytes + MaxSessionBytes + MaxChunkBytes + 16
)

// ErrMalformed is wrapped by every error about bytes that do not decode.
var ErrMalformed = errors.New("grpctransport: malformed wire data")

// Frame is one gRPC message of a message stream: the piece Chunk of the
// message sent under Key, which is Total bytes long, starting at Offset.
// A message of Total bytes travels as consecutive frames with offsets 0,
// len(chunk 0), ... up to Total; an empty message is one frame with an
// empty chunk.
//
// Encoding, little-endian:
//
//	u8      version (1)
//	u16     len(Key.Session), at most MaxSessionBytes
//	[]byte  Key.Session
//	u64     Key.Iteration
//	u64     Key.Edge
//	u64     Total
//	u64     Offset
//	u32     len(Chunk), at most MaxChunkBytes and Total-Offset; zero only
//	        when Total is zero
//	[]byte  Chunk
//
// Nothing may follow the chunk. A Frame is a plain value; it is not safe
// for concurrent mutation.
type Frame struct {
	Key    transport.Key
	Total  uint64
	Offset uint64
	Chunk  []byte
}

// check reports whether the frame's fields are consistent.
func (f *Frame) check() error {
	n := uint64(len(f.Chunk))
	switch {
	case len(f.Key.Session) > MaxSessionBytes:
		return fmt.Errorf("%w: session id of %d bytes, limit %d", ErrMalformed, len(f.Key.Session), MaxSessionBytes)
	case n > MaxChunkBytes:
		return fmt.Errorf("%w: chunk of %d bytes, limit %d", ErrMalformed, n, MaxChunkBytes)
	case f.Total == 0:
		if f.Offset != 0 || n != 0 {
			return fmt.Errorf("%w: empty message with offset %d and chunk of %d bytes", ErrMalformed, f.Offset, n)
		}
	case f.Offset >= f.Total:
		return fmt.Errorf("%w: offset %d not below message length %d", ErrMalformed, f.Offset, f.Total)
	case n == 0:
		return fmt.Errorf("%w: empty chunk at offset %d of a %d-byte message", ErrMalformed, f.Offset, f.Total)
	case n > f.Total-f.Offset:
		return fmt.Errorf("%w: chunk of %d bytes at offset %d overruns message length %d", ErrMalformed, n, f.Offset, f.Total)
	}
	return nil
}

// AppendBinary appends the frame's encoding to b.
func (f *Frame) AppendBinary(b []byte) ([]byte, error) {
	if err := f.check(); err != nil {
		return b, err
	}
	b = slices.Grow(b, frameFixedBytes+len(f.Key.Session)+len(f.Chunk))
	b = append(b, wireVersion)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(f.Key.Session)))
	b = append(b, f.Key.Session...)
	b = binary.LittleEndian.AppendUint64(b, f.Key.Iteration)
	b = binary.LittleEndian.AppendUint64(b, f.Key.Edge)
	b = binary.LittleEndian.AppendUint64(b, f.Total)
	b = binary.LittleEndian.AppendUint64(b, f.Offset)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(f.Chunk)))
	return append(b, f.Chunk...), nil
}

// MarshalBinary returns the frame's encoding.
func (f *Frame) MarshalBinary() ([]byte, error) {
	return f.AppendBinary(nil)
}

// UnmarshalBinary decodes data into f. f.Chunk is a copy; data is not
// retained.
func (f *Frame) UnmarshalBinary(data []byte) error {
	if err := f.decode(data); err != nil {
		return err
	}
	f.Chunk = slices.Clone(f.Chunk)
	if f.Chunk == nil {
		f.Chunk = []byte{}
	}
	return nil
}

// decode is UnmarshalBinary without the copy: f.Chunk aliases data.
func (f *Frame) decode(data []byte) error {
	if len(data) < frameFixedBytes {
		return fmt.Errorf("%w: frame of %d bytes, shorter than its %d-byte header", ErrMalformed, len(data), frameFixedBytes)
	}
	if data[0] != wireVersion {
		return fmt.Errorf("%w: frame version %d, want %d", ErrMalformed, data[0], wireVersion)
	}
	sl := int(binary.LittleEndian.Uint16(data[1:]))
	if sl > MaxSessionBytes {
		return fmt.Errorf("%w: session id of %d bytes, limit %d", ErrMalformed, sl, MaxSessionBytes)
	}
	if len(data) < frameFixedBytes+sl {
		return fmt.Errorf("%w: frame of %d bytes cannot hold its %d-byte session id", ErrMalformed, len(data), sl)
	}
	rest := data[3:]
	session := string(rest[:sl])
	rest = rest[sl:]
	var g Frame
	g.Key = transport.Key{
		Session:   session,
		Iteration: binary.LittleEndian.Uint64(rest[0:]),
		Edge:      binary.LittleEndian.Uint64(rest[8:]),
	}
	g.Total = binary.LittleEndian.Uint64(rest[16:])
	g.Offset = binary.LittleEndian.Uint64(rest[24:])
	cl := uint64(binary.LittleEndian.Uint32(rest[32:]))
	rest = rest[36:]
	if cl != uint64(len(rest)) {
		return fmt.Errorf("%w: frame announces a %d-byte chunk but carries %d bytes", ErrMalformed, cl, len(rest))
	}
	g.Chunk = rest
	if err := g.check(); err != nil {
		return err
	}
	*f = g
	return nil
}

// Hello is the greeting a player sends when it first reaches a peer, and
// the peer's answer: who is speaking and a fingerprint of its player list
// (players.Config.Fingerprint), so that players started with different
// player lists stop at once.
//
// Encoding:
//
//	u8        version (1)
//	u8        len(Player), at most players.MaxNameLength
//	[]byte    Player
//	[32]byte  Fingerprint
//
// A Hello is a plain value.
type Hello struct {
	Player      string
	Fingerprint [32]byte
}

// AppendBinary appends the hello's encoding to b.
func (h *Hello) AppendBinary(b []byte) ([]byte, error) {
	if err := players.CheckName(h.Player); err != nil {
		return b, fmt.Errorf("%w: hello: %w", ErrMalformed, err)
	}
	b = append(b, wireVersion, byte(len(h.Player)))
	b = append(b, h.Player...)
	return append(b, h.Fingerprint[:]...), nil
}

// MarshalBinary returns the hello's encoding.
func (h *Hello) MarshalBinary() ([]byte, error) {
	return h.AppendBinary(make([]byte, 0, helloBytesMin+len(h.Player)))
}

// UnmarshalBinary decodes data into h; data is not retained.
func (h *Hello) UnmarshalBinary(data []byte) error {
	if len(data) < helloBytesMin {
		return fmt.Errorf("%w: hello of %d bytes, shorter than %d", ErrMalformed, len(data), helloBytesMin)
	}
	if data[0] != wireVersion {
		return fmt.Errorf("%w: hello version %d, want %d (players run different shareflow versions?)", ErrMalformed, data[0], wireVersion)
	}
	n := int(data[1])
	if n > players.MaxNameLength {
		return fmt.Errorf("%w: hello name of %d bytes, limit %d", ErrMalformed, n, players.MaxNameLength)
	}
	if len(data) != helloBytesMin+n {
		return fmt.Errorf("%w: hello of %d bytes, want %d for a %d-byte name", ErrMalformed, len(data), helloBytesMin+n, n)
	}
	name := string(data[2 : 2+n])
	if err := players.CheckName(name); err != nil {
		return fmt.Errorf("%w: hello: %w", ErrMalformed, err)
	}
	h.Player = name
	copy(h.Fingerprint[:], data[2+n:])
	return nil
}
