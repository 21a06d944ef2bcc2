package grpctransport

import (
	"bytes"
	"encoding"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/session/transport"
)

var (
	_ encoding.BinaryMarshaler   = (*Frame)(nil)
	_ encoding.BinaryUnmarshaler = (*Frame)(nil)
	_ encoding.BinaryAppender    = (*Frame)(nil)
	_ encoding.BinaryMarshaler   = (*Hello)(nil)
	_ encoding.BinaryUnmarshaler = (*Hello)(nil)
)

func TestFrameRoundTrip(t *testing.T) {
	frames := []Frame{
		{Key: transport.Key{Session: "s", Iteration: 1, Edge: 2}, Total: 0, Offset: 0, Chunk: []byte{}},
		{Key: transport.Key{Session: "", Iteration: 1<<64 - 1, Edge: 7}, Total: 3, Offset: 0, Chunk: []byte("abc")},
		{Key: transport.Key{Session: "sess-Ω", Iteration: 9, Edge: 1 << 40}, Total: 10, Offset: 4, Chunk: []byte("xyz")},
		{Key: transport.Key{Session: strings.Repeat("x", MaxSessionBytes)}, Total: MaxChunkBytes * 3, Offset: MaxChunkBytes, Chunk: bytes.Repeat([]byte{7}, MaxChunkBytes)},
	}
	for _, f := range frames {
		data, err := f.MarshalBinary()
		require.NoError(t, err)
		assert.Len(t, data, frameFixedBytes+len(f.Key.Session)+len(f.Chunk))
		var g Frame
		require.NoError(t, g.UnmarshalBinary(data))
		assert.Equal(t, f, g)
		// UnmarshalBinary copies the chunk.
		if len(data) > 0 && len(g.Chunk) > 0 {
			data[len(data)-1] ^= 0xff
			assert.Equal(t, f.Chunk, g.Chunk)
		}
		// AppendBinary appends.
		pre := []byte("prefix")
		out, err := f.AppendBinary(pre)
		require.NoError(t, err)
		assert.Equal(t, "prefix", string(out[:6]))
	}
}

func TestFrameGolden(t *testing.T) {
	f := Frame{Key: transport.Key{Session: "ab", Iteration: 1, Edge: 2}, Total: 5, Offset: 3, Chunk: []byte{0xaa, 0xbb}}
	data, err := f.MarshalBinary()
	require.NoError(t, err)
	want := []byte{
		1,    // version
		2, 0, // session length
		'a', 'b',
		1, 0, 0, 0, 0, 0, 0, 0, // iteration
		2, 0, 0, 0, 0, 0, 0, 0, // edge
		5, 0, 0, 0, 0, 0, 0, 0, // total
		3, 0, 0, 0, 0, 0, 0, 0, // offset
		2, 0, 0, 0, // chunk length
		0xaa, 0xbb,
	}
	assert.Equal(t, want, data)
}

func TestFrameRejects(t *testing.T) {
	bad := []Frame{
		{Key: transport.Key{Session: strings.Repeat("x", MaxSessionBytes+1)}, Total: 1, Chunk: []byte{1}},
		{Total: MaxChunkBytes + 1, Chunk: make([]byte, MaxChunkBytes+1)},
		{Total: 0, Offset: 1},
		{Total: 0, Chunk: []byte{1}},
		{Total: 2, Offset: 2, Chunk: []byte{1}},
		{Total: 2, Offset: 0},
		{Total: 2, Offset: 1, Chunk: []byte{1, 2}},
	}
	for _, f := range bad {
		_, err := f.MarshalBinary()
		assert.ErrorIs(t, err, ErrMalformed, "%+v", f)
	}

	good, err := (&Frame{Key: transport.Key{Session: "s"}, Total: 4, Chunk: []byte{1, 2, 3, 4}}).MarshalBinary()
	require.NoError(t, err)
	mutate := func(fn func(b []byte) []byte) []byte { return fn(bytes.Clone(good)) }
	cases := map[string][]byte{
		"empty":         nil,
		"short":         good[:frameFixedBytes-1],
		"version":       mutate(func(b []byte) []byte { b[0] = 2; return b }),
		"session len":   mutate(func(b []byte) []byte { b[1], b[2] = 0xff, 0xff; return b }),
		"session over":  mutate(func(b []byte) []byte { b[1] = 200; return b }),
		"chunk len":     mutate(func(b []byte) []byte { b[len(b)-5] = 9; return b }),
		"trailing":      append(bytes.Clone(good), 0),
		"truncated":     good[:len(good)-1],
		"total small":   mutate(func(b []byte) []byte { b[3+1+16] = 3; return b }),
		"huge chunklen": mutate(func(b []byte) []byte { copy(b[len(b)-8:len(b)-4], []byte{0xff, 0xff, 0xff, 0xff}); return b }),
	}
	for name, data := range cases {
		var f Frame
		assert.ErrorIs(t, f.UnmarshalBinary(data), ErrMalformed, name)
	}
}

func TestHelloRoundTrip(t *testing.T) {
	h := Hello{Player: "data-owner-0"}
	for i := range h.Fingerprint {
		h.Fingerprint[i] = byte(i)
	}
	data, err := h.MarshalBinary()
	require.NoError(t, err)
	var g Hello
	require.NoError(t, g.UnmarshalBinary(data))
	assert.Equal(t, h, g)

	_, err = (&Hello{Player: "Bad Name"}).MarshalBinary()
	assert.ErrorIs(t, err, ErrMalformed)
	for name, d := range map[string][]byte{
		"short":    data[:helloBytesMin-1],
		"trailing": append(bytes.Clone(data), 0),
		"version":  append([]byte{9}, data[1:]...),
		"long":     append([]byte{1, 200}, data[2:]...),
		"bad name": append([]byte{1, 1, 'A'}, make([]byte, 32)...),
	} {
		assert.ErrorIs(t, g.UnmarshalBinary(d), ErrMalformed, name)
	}
}

// FuzzFrame checks that decoding never panics, that every accepted
// encoding is canonical (it re-encodes to the same bytes), and that the
// receiver's decoding from gRPC's buffers, cut anywhere, agrees with
// UnmarshalBinary on every input, accepted or not.
func FuzzFrame(f *testing.F) {
	for _, fr := range []Frame{
		{Key: transport.Key{Session: "s", Iteration: 1, Edge: 2}, Total: 0},
		{Key: transport.Key{Session: "abc"}, Total: 9, Offset: 3, Chunk: []byte("xyz")},
	} {
		data, err := fr.MarshalBinary()
		require.NoError(f, err)
		f.Add(data)
	}
	f.Add([]byte{1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		var fr Frame
		err := fr.UnmarshalBinary(data)
		for _, step := range []int{0, 1, 1 + len(data)/3} {
			g, gerr := decodeSplit(data, step)
			switch {
			case (err == nil) != (gerr == nil) || err != nil && err.Error() != gerr.Error():
				t.Fatalf("from buffers of %d bytes: error %v, UnmarshalBinary's %v", step, gerr, err)
			case err == nil && !reflect.DeepEqual(fr, g):
				t.Fatalf("from buffers of %d bytes: %+v, UnmarshalBinary's %+v", step, g, fr)
			}
		}
		if err != nil {
			return
		}
		out, err := fr.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded frame does not re-encode: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", data, out)
		}
	})
}

// FuzzHello is FuzzFrame for Hello.
func FuzzHello(f *testing.F) {
	data, err := (&Hello{Player: "server0"}).MarshalBinary()
	require.NoError(f, err)
	f.Add(data)
	f.Add([]byte{1, 63})
	f.Fuzz(func(t *testing.T, data []byte) {
		var h Hello
		if err := h.UnmarshalBinary(data); err != nil {
			return
		}
		out, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded hello does not re-encode: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", data, out)
		}
	})
}
