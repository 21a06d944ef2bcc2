package grpctransport

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shareflow/shareflow/session/transport"
)

// TestCodecMarshalFrame: on the wire a frame is its own encoding, a copy
// of its chunk.
func TestCodecMarshalFrame(t *testing.T) {
	for _, size := range []int{0, 1, 1000, 5000, MaxChunkBytes} {
		chunk := randomBytes(uint64(size), size)
		f := Frame{Key: transport.Key{Session: "sess", Iteration: 3, Edge: 9}, Total: uint64(size) + 7, Offset: 7, Chunk: chunk}
		if size == 0 {
			f.Total, f.Offset = 0, 0
		}
		want, err := f.MarshalBinary()
		require.NoError(t, err)
		out, err := frameCodec{}.Marshal(&f)
		require.NoError(t, err, "size %d", size)
		assert.Equal(t, want, out.Materialize(), "size %d", size)
		for _, b := range out {
			d := b.ReadOnlyData()
			assert.False(t, size > 0 && unsafe.SliceData(d[len(d)-size:]) == unsafe.SliceData(chunk), "size %d: the chunk is not copied", size)
		}
		out.Free()
	}
	_, err := frameCodec{}.Marshal(&Frame{Total: 1})
	assert.ErrorIs(t, err, ErrMalformed)
	_, err = frameCodec{}.Marshal(&wrapperspb.BytesValue{})
	assert.ErrorContains(t, err, "cannot send a *wrapperspb.BytesValue")
	out, err := frameCodec{}.Marshal(goodbye{})
	require.NoError(t, err)
	assert.Zero(t, out.Len())
}

// TestSendPool: buffers come back in their class, and sizes past the
// largest class are not pooled.
func TestSendPool(t *testing.T) {
	var p sendPool
	for _, n := range []int{1025, 2048, 2049, maxWireMessage} {
		b := p.Get(n)
		assert.Len(t, *b, n)
		c, ok := sendClass(n)
		require.True(t, ok, n)
		assert.Equal(t, 1<<(c+sendClassMin), cap(*b), n)
		p.Put(b)
	}
	b := p.Get(4 << 20)
	assert.Len(t, *b, 4<<20)
	_, ok := sendClass(4 << 20)
	assert.False(t, ok)
	p.Put(b) // dropped, not pooled
}

// split returns data as a BufferSlice cut every step bytes (a last
// shorter piece included); step 0 means one buffer.
func split(data []byte, step int) mem.BufferSlice {
	if step <= 0 || step >= len(data) {
		return mem.BufferSlice{mem.SliceBuffer(data)}
	}
	var s mem.BufferSlice
	for len(data) > 0 {
		n := min(step, len(data))
		s = append(s, mem.SliceBuffer(data[:n]))
		data = data[n:]
	}
	return s
}

// decodeSplit decodes data as the receiver does, from gRPC buffers cut
// every step bytes, and returns the frame with its chunk copied out.
func decodeSplit(data []byte, step int) (Frame, error) {
	var m inMsg
	if err := (frameCodec{}).Unmarshal(split(data, step), &m); err != nil {
		return Frame{}, err
	}
	defer m.release()
	f, hl, err := m.frame()
	if err != nil {
		return Frame{}, err
	}
	f.Chunk = make([]byte, m.len()-hl)
	copyAt(f.Chunk, m.data, hl)
	return f, nil
}

// TestDecodeFromBuffers: the receiver's decoding from gRPC's buffers,
// however they are cut, agrees with Frame.UnmarshalBinary, on good frames
// and on every malformed one of TestFrameRejects.
func TestDecodeFromBuffers(t *testing.T) {
	good := []Frame{
		{Key: transport.Key{Session: "s", Iteration: 1, Edge: 2}, Total: 0, Chunk: []byte{}},
		{Key: transport.Key{Session: strings.Repeat("x", MaxSessionBytes)}, Total: 100, Offset: 50, Chunk: randomBytes(1, 50)},
		{Key: transport.Key{Session: "abc"}, Total: 3 << 20, Offset: 1 << 20, Chunk: randomBytes(2, MaxChunkBytes)},
	}
	for _, f := range good {
		data, err := f.MarshalBinary()
		require.NoError(t, err)
		for _, step := range []int{0, 1, 2, 3, 7, 40, 16 << 10} {
			g, err := decodeSplit(data, step)
			require.NoError(t, err, "step %d", step)
			assert.Equal(t, f, g, "step %d", step)
		}
	}

	frame, err := (&Frame{Key: transport.Key{Session: "s"}, Total: 4, Chunk: []byte{1, 2, 3, 4}}).MarshalBinary()
	require.NoError(t, err)
	bad := map[string][]byte{
		"empty":        nil,
		"short":        frame[:frameFixedBytes-1],
		"version":      append([]byte{2}, frame[1:]...),
		"session over": append([]byte{1, 0xff, 0xff}, frame[3:]...),
		"trailing":     append(bytes.Clone(frame), 0),
		"truncated":    frame[:len(frame)-1],
	}
	for name, data := range bad {
		var f Frame
		want := f.UnmarshalBinary(data)
		require.ErrorIs(t, want, ErrMalformed, name)
		for _, step := range []int{0, 1, 5} {
			_, err := decodeSplit(data, step)
			assert.Equal(t, want, err, "%s, step %d", name, step)
		}
	}
}

// TestSendCopies: Send hands gRPC a copy, so a caller that reuses its
// buffer the moment Send returns does not change what arrives. Each
// message is one frame, which gRPC has queued but not written when Send
// returns: a Send that let gRPC read the caller's buffer would deliver
// zeros.
func TestSendCopies(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	ts := n.startAll(t, n.config(t, nil, ""), Options{})
	ctx := testCtx(t)
	buf := make([]byte, MaxChunkBytes)
	for e := range uint64(8) {
		copy(buf, randomBytes(e, len(buf)))
		require.NoError(t, ts["server0"].Send(ctx, "server1", transport.Key{Session: "s", Edge: e}, buf))
		clear(buf)
	}
	for e := range uint64(8) {
		got, err := ts["server1"].Recv(ctx, "server0", transport.Key{Session: "s", Edge: e})
		require.NoError(t, err)
		assert.True(t, bytes.Equal(randomBytes(e, len(buf)), got), "message %d changed with the sender's buffer", e)
	}
}

// TestOlderPeersRefusedClearly: a player of shareflow before wire v2
// (service shareflow.transport.v1.Transport, BytesValue messages) is told
// why it cannot connect, and the refusal is logged; a new player that
// reaches an old one says the peer does not speak v2; a client of the v2
// service that does not speak its codec is refused naming the
// content-type.
func TestOlderPeersRefusedClearly(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, "")
	sink := newLogSink()
	s1 := n.start(t, cfg, "server1", Options{Logger: slog.New(sink)})
	addr := s1.Addr().String()
	id0, err := cfg.LoadIdentity("server0")
	require.NoError(t, err)
	tc, err := id0.ClientTLS("server1")
	require.NoError(t, err)
	ctx := metadata.AppendToOutgoingContext(testCtx(t), playerHeader, "server0")

	// An old client: protobuf codec, the v1 service.
	old, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	require.NoError(t, err)
	defer old.Close()
	req, err := (&Hello{Player: "server0", Fingerprint: cfg.Fingerprint()}).MarshalBinary()
	require.NoError(t, err)
	err = old.Invoke(ctx, "/"+oldServiceName+"/Hello", &wrapperspb.BytesValue{Value: req}, new(wrapperspb.BytesValue))
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	assert.ErrorContains(t, err, `player "server1" speaks shareflow's wire v2 (shareflow.transport.v2.Transport, application/grpc+shareflow-frames-v1) and "server0" an older one (shareflow.transport.v1.Transport): run the same shareflow version on every host`)
	stream, err := old.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/"+oldServiceName+"/Messages")
	require.NoError(t, err)
	err = stream.RecvMsg(new(wrapperspb.BytesValue))
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	r := sink.wait(t, func(r logRecord) bool { return r.msg == "refused a player running an older shareflow" })
	assert.Equal(t, "server0", r.attrs["peer"])

	// A client of the v2 service that speaks protobuf.
	err = old.Invoke(ctx, helloMethod, &wrapperspb.BytesValue{Value: req}, new(wrapperspb.BytesValue))
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.ErrorContains(t, err, `player "server1" refuses the call of "server0": content-type ["application/grpc"], want "application/grpc+shareflow-frames-v1"`)

	// A new player that reaches an old one: a gRPC server with TLS that
	// knows no v2 service, as shareflow before v2.
	id2, err := cfg.LoadIdentity("server2")
	require.NoError(t, err)
	oldServer := grpc.NewServer(grpc.Creds(credentials.NewTLS(id2.ServerTLS())))
	go oldServer.Serve(n.lns["server2"])
	defer oldServer.Stop()
	s0 := n.start(t, n.config(t, nil, `"connect_timeout": "1h"`), "server0", Options{})
	err = s0.Connect(testCtx(t))
	require.Error(t, err)
	assert.ErrorContains(t, err, `grpctransport: waiting for player "server2" at `+n.addrs["server2"]+`: the peer does not speak shareflow's wire v2 (shareflow.transport.v2.Transport); does it run an older shareflow? Run the same version on every host`)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Connect retried instead of failing at once")
}
