package grpctransport

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
)

// TestIssue8HostilePeer: a client holding valid player certificates
// attacks a real player, server0, on loopback, while server1 exchanges
// messages with it as a real peer: a second stream under server1's
// identity, a flood of empty messages under ever new keys (under a session
// server0 does not run, and under the one it runs), and half-sent messages
// of the largest size on many streams. server0's heap stays within the
// bounds the package documents, server1's messages arrive intact, and
// once the attacker has left and server0 has forgotten the iteration the
// attacker's messages named, nothing of the attack stays. An attacker
// that comes back starts a new epoch of its messages, with nothing of its
// half-sent ones.
func TestIssue8HostilePeer(t *testing.T) {
	const maxMessage = 2 << 20 // so that the per-peer bound is 8 MiB
	n := newNetwork(t, "server0", "server1", "data-owner-0", "data-owner-1", "data-owner-2")
	cfg := n.config(t, nil, fmt.Sprintf(`"max_message_bytes": %d`, maxMessage))
	var logs syncBuffer
	victim := n.start(t, cfg, "server0", Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	legit := n.start(t, cfg, "server1", Options{})
	box := victim.Mailbox()
	box.Expect("legit") // as a session does for the sessions it runs
	ctx := testCtx(t)
	addr := victim.Addr().String()

	// server1's messages: iteration 0 before, during and after the attack.
	var seq uint64
	exchange := func(what string) {
		t.Helper()
		for range 4 {
			key := transport.Key{Session: "legit", Edge: seq}
			payload := randomBytes(seq, maxMessage/2)
			seq++
			require.NoError(t, legit.Send(ctx, "server0", key, payload), what)
			got, err := victim.Recv(ctx, "server1", key)
			require.NoError(t, err, what)
			require.True(t, bytes.Equal(payload, got), "%s: message %s garbled", what, key)
		}
	}
	exchange("before the attack")
	baseline := heapObjectBytes()

	// 1. A second stream under server1's identity is refused, named, and
	// leaves server1's own stream alone.
	second := dialAs(t, cfg, "server1", addr)
	s, err := openStream(ctx, second, "server1")
	require.NoError(t, err)
	_ = sendFrame(s, Frame{Key: transport.Key{Session: "legit", Iteration: 7}})
	err = s.RecvMsg(new(wrapperspb.BytesValue))
	assert.Equal(t, codes.AlreadyExists, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), `refuses a second message stream from player "server1"`)
	second.Close()
	assert.Contains(t, logs.String(), `msg="refused a message stream" player=server0 peer=server1 address=127.0.0.1:`)
	assert.Contains(t, logs.String(), "second message stream")
	exchange("after a second stream under server1's identity")

	// 2. Empty messages under a session server0 does not run: the first
	// is refused, and the stream with it.
	junk := dialAs(t, cfg, "data-owner-0", addr)
	s, err = openStream(ctx, junk, "data-owner-0")
	require.NoError(t, err)
	for e := uint64(0); err == nil && e < 1000; e++ {
		err = sendFrame(s, Frame{Key: transport.Key{Session: "junk", Edge: e}})
	}
	err = s.RecvMsg(new(wrapperspb.BytesValue))
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), `session "junk" is not one this player runs`)
	count, _ := box.Unread("data-owner-0")
	assert.Zero(t, count)

	// 3. Empty messages under the session server0 runs, from a player
	// that has no stream open: taken until PendingCount wait unread, then
	// gRPC flow control holds the sender.
	flood := dialAs(t, cfg, "data-owner-1", addr)
	floodCtx, stopFlood := context.WithCancel(ctx)
	s, err = openStream(floodCtx, flood, "data-owner-1")
	require.NoError(t, err)
	flooding := make(chan uint64, 1)
	go func() {
		var e uint64
		for ; sendFrame(s, Frame{Key: transport.Key{Session: "legit", Iteration: 1, Edge: e}}) == nil; e++ {
		}
		flooding <- e
	}()
	waitFor(t, ctx, "the flood to reach the bound on unread messages", func() bool {
		count, _ := box.Unread("data-owner-1")
		return count == PendingCount
	})
	emptyCharge := transport.Charge(transport.Key{Session: "legit"}, nil)

	// 4. Half-sent messages of the largest size: the first stream's is
	// reserved against the sender's bound, the other streams are refused.
	partial := dialAs(t, cfg, "data-owner-2", addr)
	const streams, chunk = 8, 256 << 10
	sendPartial := func(s grpc.ClientStream, e uint64) error {
		key := transport.Key{Session: "legit", Iteration: 1, Edge: e}
		var err error
		for off := 0; err == nil && off < maxMessage-chunk; off += chunk {
			err = sendFrame(s, Frame{Key: key, Total: maxMessage, Offset: uint64(off), Chunk: make([]byte, chunk)})
		}
		return err
	}
	first, err := openStream(ctx, partial, "data-owner-2")
	require.NoError(t, err)
	require.NoError(t, sendPartial(first, 0))
	waitFor(t, ctx, "the first half-sent message to arrive", func() bool {
		return victim.in.framesFrom("data-owner-2") == maxMessage/chunk-1
	})
	refusedBefore := victim.in.refused.Load()
	for i := 1; i < streams; i++ {
		s, err := openStream(ctx, partial, "data-owner-2")
		require.NoError(t, err)
		_ = sendPartial(s, uint64(i))
		err = s.RecvMsg(new(wrapperspb.BytesValue))
		require.Equal(t, codes.AlreadyExists, status.Code(err), "stream %d: %v", i, err)
	}
	assert.Equal(t, refusedBefore+streams-1, victim.in.refused.Load())
	count, charged := box.Unread("data-owner-2")
	assert.Equal(t, 1, count, "the half-sent message counts")
	assert.Equal(t, transport.Charge(transport.Key{Session: "legit"}, make([]byte, maxMessage)), charged)

	// The victim's heap, all attacks in place, stays within what the
	// package documents per peer: PendingMessages × max_message_bytes of
	// charged messages (here at most PendingCount empty ones for
	// data-owner-1, one reserved message for data-owner-2), plus what
	// gRPC holds of a stream it does not read (its window, at most
	// 16 MiB), for each of the two attackers still connected.
	during := heapObjectBytes()
	bound := 2 * (PendingMessages*maxMessage + 16<<20)
	exchange("during the attack")
	t.Logf("heap: %.1f MiB before the attack, %.1f MiB during it (bound %.1f MiB over the baseline); flood: %d empty messages charged %d bytes each",
		mib(baseline), mib(during), mib(uint64(bound)), PendingCount, emptyCharge)
	assert.Less(t, during, baseline+uint64(bound))

	// The attacker leaves.
	stopFlood()
	flood.Close()
	partial.Close()
	junk.Close()
	sentBeforeHeld := <-flooding
	waitFor(t, ctx, "server0 to end the attacker's streams", func() bool {
		return victim.in.openStreams() == 1 // server1's
	})
	count, charged = box.Unread("data-owner-2")
	assert.Zero(t, count, "the half-sent message's room is given back")
	assert.Zero(t, charged)
	// ... and a player whose stream ended may come back, in a new epoch
	// of its messages, holding nothing of the old one.
	epoch, failed := box.Epoch("data-owner-2")
	assert.True(t, failed, "the attacker's stream ended its epoch")
	again := dialAs(t, cfg, "data-owner-2", addr)
	s, err = openStream(ctx, again, "data-owner-2")
	require.NoError(t, err)
	md, err := s.Header()
	require.NoError(t, err)
	assert.Equal(t, []string{"server0"}, md.Get(acceptedHeader), "the stream is accepted")
	next, failed := box.Epoch("data-owner-2")
	assert.Equal(t, epoch+1, next)
	assert.False(t, failed)
	count, charged = box.Unread("data-owner-2")
	assert.Zero(t, count)
	assert.Zero(t, charged)
	again.Close()
	waitFor(t, ctx, "server0 to end the returning stream", func() bool {
		return victim.in.openStreams() == 1
	})
	// The flood under the running session cannot be told from
	// data-owner-1's own messages: it stays, within its bound, until
	// server0 forgets the iteration it named, as a session does once the
	// iteration is done.
	count, _ = box.Unread("data-owner-1")
	assert.Equal(t, PendingCount, count)
	exchange("after the attack")
	box.Forget("legit", 1)
	for _, p := range []string{"data-owner-0", "data-owner-1", "data-owner-2", "server1"} {
		count, charged := box.Unread(p)
		assert.Zero(t, count, p)
		assert.Zero(t, charged, p)
	}
	after := heapObjectBytes()
	t.Logf("heap: %.1f MiB after the attack (%d empty messages were sent before flow control held the flood)", mib(after), sentBeforeHeld)
	assert.Less(t, after, baseline+2<<20, "the attack left memory behind")
}

// syncBuffer is a bytes.Buffer safe for concurrent writes, for logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dialAs connects to the player at addr with player name's certificate,
// as a client that does not follow the protocol would.
func dialAs(t *testing.T, cfg *players.Config, name, addr string) *grpc.ClientConn {
	t.Helper()
	id, err := cfg.LoadIdentity(name)
	require.NoError(t, err)
	tc, err := id.ClientTLS("server0")
	require.NoError(t, err)
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(maxWireMessage)))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// openStream opens a message stream on conn, claiming to be player name.
func openStream(ctx context.Context, conn *grpc.ClientConn, name string) (grpc.ClientStream, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, playerHeader, name)
	return conn.NewStream(ctx, &serviceDesc.Streams[0], messageMethod)
}

// sendFrame sends f on s.
func sendFrame(s grpc.ClientStream, f Frame) error {
	b, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	return s.SendMsg(&wrapperspb.BytesValue{Value: b})
}

// waitFor polls cond until it holds, failing the test if ctx ends first.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// heapObjectBytes returns the bytes of live heap objects after two GCs
// (the second empties the pools the first only moved aside).
func heapObjectBytes() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// framesFrom returns how many frames the current or last stream of peer
// from delivered.
func (in *inbound) framesFrom(from string) uint64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	if c := in.frames[from]; c != nil {
		return c.Load()
	}
	return 0
}

// openStreams returns how many peers have a stream open.
func (in *inbound) openStreams() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.open)
}
