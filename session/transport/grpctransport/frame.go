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
	// frameHeaderMax is the size of the longest frame header: everything
	// but the chunk.
	frameHeaderMax = frameFixedBytes + MaxSessionBytes
	// helloBytesMin is the size of a Hello with an empty name.
	helloBytesMin = 1 + 1 + 32
	// helloBytesMax is the size of a Hello with the longest name.
	helloBytesMax = helloBytesMin + players.MaxNameLength
	// maxWireMessage bounds one gRPC message: the largest frame, which
	// travels as it is (see frameCodec). Servers and clients set their
	// gRPC message size limits to it, so that gRPC refuses a longer one
	// before reading it.
	maxWireMessage = frameHeaderMax + MaxChunkBytes
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
	return checkFrame(len(f.Key.Session), f.Total, f.Offset, uint64(len(f.Chunk)))
}

// checkFrame reports whether a frame with a session id of sl bytes, a
// message of total bytes and a chunk of n bytes at offset is consistent.
func checkFrame(sl int, total, offset, n uint64) error {
	switch {
	case sl > MaxSessionBytes:
		return fmt.Errorf("%w: session id of %d bytes, limit %d", ErrMalformed, sl, MaxSessionBytes)
	case n > MaxChunkBytes:
		return fmt.Errorf("%w: chunk of %d bytes, limit %d", ErrMalformed, n, MaxChunkBytes)
	case total == 0:
		if offset != 0 || n != 0 {
			return fmt.Errorf("%w: empty message with offset %d and chunk of %d bytes", ErrMalformed, offset, n)
		}
	case offset >= total:
		return fmt.Errorf("%w: offset %d not below message length %d", ErrMalformed, offset, total)
	case n == 0:
		return fmt.Errorf("%w: empty chunk at offset %d of a %d-byte message", ErrMalformed, offset, total)
	case n > total-offset:
		return fmt.Errorf("%w: chunk of %d bytes at offset %d overruns message length %d", ErrMalformed, n, offset, total)
	}
	return nil
}

// AppendBinary appends the frame's encoding to b.
func (f *Frame) AppendBinary(b []byte) ([]byte, error) {
	if err := f.check(); err != nil {
		return b, err
	}
	b = slices.Grow(b, f.headerLen()+len(f.Chunk))
	b = f.appendHeader(b)
	return append(b, f.Chunk...), nil
}

// headerLen returns the size of the frame's encoding without its chunk.
func (f *Frame) headerLen() int { return frameFixedBytes + len(f.Key.Session) }

// appendHeader appends the frame's encoding up to its chunk to b. The
// caller has checked the frame.
func (f *Frame) appendHeader(b []byte) []byte {
	b = append(b, wireVersion)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(f.Key.Session)))
	b = append(b, f.Key.Session...)
	b = binary.LittleEndian.AppendUint64(b, f.Key.Iteration)
	b = binary.LittleEndian.AppendUint64(b, f.Key.Edge)
	b = binary.LittleEndian.AppendUint64(b, f.Total)
	b = binary.LittleEndian.AppendUint64(b, f.Offset)
	return binary.LittleEndian.AppendUint32(b, uint32(len(f.Chunk)))
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
	g, hl, err := decodeHeader(data[:min(len(data), frameHeaderMax)], len(data))
	if err != nil {
		return err
	}
	g.Chunk = data[hl:]
	*f = g
	return nil
}

// decodeHeader decodes a frame of size bytes from its first bytes, head,
// which hold the whole frame or at least its frameHeaderMax first bytes.
// It returns the frame without its chunk and the size of its header; the
// chunk is the rest of the frame, size minus that. It checks every length
// the frame announces against size before trusting it.
func decodeHeader(head []byte, size int) (f Frame, headerLen int, err error) {
	if size < frameFixedBytes {
		return Frame{}, 0, fmt.Errorf("%w: frame of %d bytes, shorter than its %d-byte header", ErrMalformed, size, frameFixedBytes)
	}
	if len(head) < min(size, frameHeaderMax) {
		panic("grpctransport: decodeHeader given too short a head") // a bug in the caller
	}
	if head[0] != wireVersion {
		return Frame{}, 0, fmt.Errorf("%w: frame version %d, want %d", ErrMalformed, head[0], wireVersion)
	}
	sl := int(binary.LittleEndian.Uint16(head[1:]))
	if sl > MaxSessionBytes {
		return Frame{}, 0, fmt.Errorf("%w: session id of %d bytes, limit %d", ErrMalformed, sl, MaxSessionBytes)
	}
	headerLen = frameFixedBytes + sl
	if size < headerLen {
		return Frame{}, 0, fmt.Errorf("%w: frame of %d bytes cannot hold its %d-byte session id", ErrMalformed, size, sl)
	}
	rest := head[3:]
	f.Key.Session = string(rest[:sl])
	rest = rest[sl:]
	f.Key.Iteration = binary.LittleEndian.Uint64(rest[0:])
	f.Key.Edge = binary.LittleEndian.Uint64(rest[8:])
	f.Total = binary.LittleEndian.Uint64(rest[16:])
	f.Offset = binary.LittleEndian.Uint64(rest[24:])
	cl := uint64(binary.LittleEndian.Uint32(rest[32:]))
	if n := uint64(size - headerLen); cl != n {
		return Frame{}, 0, fmt.Errorf("%w: frame announces a %d-byte chunk but carries %d bytes", ErrMalformed, cl, n)
	}
	if err := checkFrame(sl, f.Total, f.Offset, cl); err != nil {
		return Frame{}, 0, err
	}
	return f, headerLen, nil
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
