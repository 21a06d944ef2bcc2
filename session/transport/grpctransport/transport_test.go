package grpctransport

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
)

// network is a set of players on loopback with a dev PKI: one reserved
// listener per player and the certificates for them.
type network struct {
	names   []string
	addrs   map[string]string
	lns     map[string]net.Listener
	certDir string
}

func newNetwork(t *testing.T, names ...string) *network {
	t.Helper()
	n := &network{names: names, addrs: make(map[string]string), lns: make(map[string]net.Listener)}
	var specs []players.CertSpec
	for _, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { ln.Close() })
		n.lns[name] = ln
		n.addrs[name] = ln.Addr().String()
		specs = append(specs, players.CertSpec{Player: name, Hosts: []string{"127.0.0.1"}})
	}
	n.certDir = filepath.Join(t.TempDir(), "certs")
	_, err := players.GenerateDevPKI(n.certDir, specs, players.DevPKIOptions{})
	require.NoError(t, err)
	return n
}

// config returns a config of the network's players at addrs (the
// network's own addresses when nil), with extra settings appended to the
// JSON object.
func (n *network) config(t *testing.T, addrs map[string]string, extra string) *players.Config {
	t.Helper()
	if addrs == nil {
		addrs = n.addrs
	}
	var b strings.Builder
	b.WriteString(`{"players": {`)
	i := 0
	for name, addr := range addrs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q: %q", name, addr)
		i++
	}
	b.WriteString("}")
	if !strings.Contains(extra, "connect_timeout") {
		b.WriteString(`, "connect_timeout": "5s"`)
	}
	insecureMode := strings.Contains(extra, `"insecure": true`)
	if !insecureMode {
		fmt.Fprintf(&b, ", %q: %q", "cert_dir", n.certDir)
	}
	if extra != "" {
		b.WriteString(", ")
		b.WriteString(extra)
	}
	b.WriteString("}")
	cfg, err := players.ParseConfig([]byte(b.String()), filepath.Join(t.TempDir(), "hosts.json"))
	require.NoError(t, err)
	return cfg
}

// start runs player name on its reserved listener.
func (n *network) start(t *testing.T, cfg *players.Config, name string, opts Options) *Transport {
	t.Helper()
	if opts.Listener == nil {
		opts.Listener = n.lns[name]
	}
	tr, err := New(cfg, name, opts)
	require.NoError(t, err)
	t.Cleanup(func() { tr.Close() })
	return tr
}

// startAll runs every player of the network with cfg and connects them.
func (n *network) startAll(t *testing.T, cfg *players.Config, opts Options) map[string]*Transport {
	t.Helper()
	out := make(map[string]*Transport)
	for _, name := range n.names {
		out[name] = n.start(t, cfg, name, opts)
	}
	connectAll(t, out)
	return out
}

func connectAll(t *testing.T, ts map[string]*Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(ts))
	for _, tr := range ts {
		wg.Go(func() { errs <- tr.Connect(ctx) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

var three = []string{"server0", "server1", "server2"}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRoundTripSizes(t *testing.T) {
	n := newNetwork(t, three...)
	ts := n.startAll(t, n.config(t, nil, ""), Options{})
	ctx := testCtx(t)
	sizes := []int{0, 1, 1000, MaxChunkBytes - 1, MaxChunkBytes, MaxChunkBytes + 1, 5 << 20}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i, from := range three {
		for j, to := range three {
			if from == to {
				continue
			}
			wg.Go(func() {
				for e, size := range sizes {
					key := transport.Key{Session: "s", Iteration: uint64(i), Edge: uint64(e)}
					if err := ts[from].Send(ctx, to, key, randomBytes(uint64(i*100+j*10+e), size)); err != nil {
						errs <- err
					}
				}
			})
			wg.Go(func() {
				for e, size := range sizes {
					key := transport.Key{Session: "s", Iteration: uint64(i), Edge: uint64(e)}
					got, err := ts[to].Recv(ctx, from, key)
					if err != nil {
						errs <- err
						continue
					}
					if !bytes.Equal(got, randomBytes(uint64(i*100+j*10+e), size)) {
						errs <- fmt.Errorf("%s -> %s: message of %d bytes corrupted (got %d bytes)", from, to, size, len(got))
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}

	total := 0
	for _, s := range sizes {
		total += s
	}
	st := ts["server0"].Stats()
	assert.Equal(t, LinkStats{SentMessages: uint64(len(sizes)), SentBytes: uint64(total), RecvMessages: uint64(len(sizes)), RecvBytes: uint64(total)}, st["server1"])
}

func TestOutOfOrderAndSmallChunks(t *testing.T) {
	n := newNetwork(t, "a", "b")
	ts := n.startAll(t, n.config(t, nil, ""), Options{ChunkBytes: 1000})
	ctx := testCtx(t)
	const count = 40

	// Receives start before the sends, in the opposite order.
	results := make(chan error, count)
	for e := count - 1; e >= 0; e-- {
		go func() {
			key := transport.Key{Session: "o", Iteration: 1, Edge: uint64(e)}
			got, err := ts["b"].Recv(ctx, "a", key)
			if err == nil && !bytes.Equal(got, randomBytes(uint64(e), 2500+e)) {
				err = fmt.Errorf("edge %d corrupted", e)
			}
			results <- err
		}()
	}
	// Concurrent senders interleave whole messages on the one stream.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for e := g; e < count; e += 4 {
				key := transport.Key{Session: "o", Iteration: 1, Edge: uint64(e)}
				assert.NoError(t, ts["a"].Send(ctx, "b", key, randomBytes(uint64(e), 2500+e)))
			}
		})
	}
	wg.Wait()
	for range count {
		assert.NoError(t, <-results)
	}

	// A message that arrived long before it is asked for.
	key := transport.Key{Session: "o", Iteration: 2}
	require.NoError(t, ts["b"].Send(ctx, "a", key, []byte("early")))
	require.Eventually(t, func() bool { return ts["a"].Stats()["b"].RecvMessages == 1 }, 5*time.Second, 5*time.Millisecond)
	got, err := ts["a"].Recv(ctx, "b", key)
	require.NoError(t, err)
	assert.Equal(t, []byte("early"), got)

	// Duplicate keys are refused by the receiver, which then fails the link.
	require.NoError(t, ts["b"].Send(ctx, "a", transport.Key{Session: "o", Iteration: 3}, []byte("x")))
	_ = ts["b"].Send(ctx, "a", transport.Key{Session: "o", Iteration: 3}, []byte("y"))
	_, err = ts["a"].Recv(ctx, "b", transport.Key{Session: "o", Iteration: 4})
	assert.ErrorIs(t, err, ErrProtocol)
	assert.ErrorContains(t, err, "twice")
}

func TestSelfAndUnknown(t *testing.T) {
	n := newNetwork(t, "a", "b")
	cfg := n.config(t, nil, "")
	a := n.start(t, cfg, "a", Options{})
	ctx := testCtx(t)
	key := transport.Key{Session: "s"}
	msg := []byte("to myself")
	require.NoError(t, a.Send(ctx, "a", key, msg))
	msg[0] = 'X' // Send copies
	got, err := a.Recv(ctx, "a", key)
	require.NoError(t, err)
	assert.Equal(t, "to myself", string(got))

	assert.ErrorIs(t, a.Send(ctx, "mallory", key, nil), transport.ErrUnknownPlayer)
	_, err = a.Recv(ctx, "mallory", key)
	assert.ErrorIs(t, err, transport.ErrUnknownPlayer)
	err = a.Send(ctx, "b", transport.Key{Session: strings.Repeat("s", MaxSessionBytes+1)}, nil)
	assert.ErrorContains(t, err, "session id")

	_, err = New(cfg, "mallory", Options{})
	assert.ErrorIs(t, err, players.ErrUnknownPlayer)
	_, err = New(cfg, "b", Options{ChunkBytes: MaxChunkBytes + 1})
	assert.ErrorContains(t, err, "ChunkBytes")
	_, err = New(nil, "b", Options{})
	assert.Error(t, err)
}

func TestTooLarge(t *testing.T) {
	n := newNetwork(t, three...)
	ctx := testCtx(t)
	// server0 allows 8 MiB; server1 and server2 only 1 MiB.
	big := n.config(t, nil, `"max_message_bytes": 8388608`)
	small := n.config(t, nil, `"max_message_bytes": 1048576`)
	ts := map[string]*Transport{
		"server0": n.start(t, big, "server0", Options{}),
		"server1": n.start(t, small, "server1", Options{}),
		"server2": n.start(t, small, "server2", Options{}),
	}
	connectAll(t, ts)

	// The sender refuses what is above its own limit, before sending.
	err := ts["server1"].Send(ctx, "server0", transport.Key{Session: "s"}, make([]byte, 1<<20+1))
	require.ErrorIs(t, err, ErrTooLarge)
	assert.Contains(t, err.Error(), `to "server0" is 1048577 bytes, above the limit of 1048576`)
	// ... and the link is still fine.
	require.NoError(t, ts["server1"].Send(ctx, "server0", transport.Key{Session: "s"}, []byte("ok")))
	got, err := ts["server0"].Recv(ctx, "server1", transport.Key{Session: "s"})
	require.NoError(t, err)
	assert.Equal(t, "ok", string(got))

	// The receiver refuses a message announcing more than its limit.
	_ = ts["server0"].Send(ctx, "server1", transport.Key{Session: "s", Edge: 1}, make([]byte, 2<<20))
	_, err = ts["server1"].Recv(ctx, "server0", transport.Key{Session: "s", Edge: 1})
	require.ErrorIs(t, err, ErrTooLarge)
	assert.Contains(t, err.Error(), `from player "server0" to "server1" is 2097152 bytes, above the limit of 1048576`)
	// The sender learns why its link failed.
	require.Eventually(t, func() bool {
		err = ts["server0"].Send(ctx, "server1", transport.Key{Session: "s", Edge: 2}, []byte("x"))
		return err != nil
	}, 5*time.Second, 10*time.Millisecond)
	assert.ErrorIs(t, err, ErrRejected)
	assert.Contains(t, err.Error(), "above the limit")
	assert.Contains(t, err.Error(), `"server1"`)

	// Other links are unaffected.
	require.NoError(t, ts["server0"].Send(ctx, "server2", transport.Key{Session: "s"}, make([]byte, 1<<20)))
	_, err = ts["server2"].Recv(ctx, "server0", transport.Key{Session: "s"})
	require.NoError(t, err)
}

// TestSenderAheadIsHeldBack: a peer that sends more than the receiver's
// bound on unread bytes (PendingMessages × max_message_bytes) before the
// receiver asks for any is slowed down by flow control, not failed, and
// every message arrives intact.
func TestSenderAheadIsHeldBack(t *testing.T) {
	n := newNetwork(t, three...)
	ctx := testCtx(t)
	cfg := n.config(t, nil, `"max_message_bytes": 1048576`)
	ts := n.startAll(t, cfg, Options{})
	connectAll(t, ts)

	const count = 3 * PendingMessages // three times the bound
	sent := make(chan error, 1)
	go func() {
		for i := range count {
			key := transport.Key{Session: "ahead", Iteration: uint64(i)}
			if err := ts["server0"].Send(ctx, "server1", key, randomBytes(uint64(i), 1<<20)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	time.Sleep(200 * time.Millisecond) // let the sender get as far ahead as it can
	for i := range count {
		got, err := ts["server1"].Recv(ctx, "server0", transport.Key{Session: "ahead", Iteration: uint64(i)})
		require.NoError(t, err, "message %d", i)
		require.Equal(t, randomBytes(uint64(i), 1<<20), got, "message %d", i)
	}
	require.NoError(t, <-sent)
}

// TestSendHeldBackHonoursItsContext: a Send held by flow control because
// the receiver reads nothing returns when its context ends, and the link
// then fails on both sides instead of hanging.
func TestSendHeldBackHonoursItsContext(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, `"max_message_bytes": 1048576`)
	ts := n.startAll(t, cfg, Options{})
	connectAll(t, ts)

	ctx, cancel := context.WithTimeout(testCtx(t), 500*time.Millisecond)
	defer cancel()
	sent := make(chan error, 1)
	go func() {
		for i := range 1000 { // far more than the receiver's bound and gRPC's windows
			key := transport.Key{Session: "stuck", Iteration: uint64(i)}
			if err := ts["server0"].Send(ctx, "server1", key, make([]byte, 1<<20)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	var err error
	select {
	case err = <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("Send still blocked 10 s after its deadline of 0.5 s")
	}
	require.Error(t, err, "a thousand megabytes went to a player that reads nothing")
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	// The receiver learns that nothing more comes from server0.
	recvCtx, cancel2 := context.WithTimeout(testCtx(t), 5*time.Second)
	defer cancel2()
	for i := 0; ; i++ {
		_, err := ts["server1"].Recv(recvCtx, "server0", transport.Key{Session: "stuck", Iteration: uint64(i)})
		if err != nil {
			assert.NotErrorIs(t, err, context.DeadlineExceeded, "the receiver waited for the deadline instead of learning of the link's end")
			break
		}
	}
}

// rawHello greets server s at addr with hand-made credentials and claim,
// the way a misbehaving client would.
func rawHello(t *testing.T, addr string, creds credentials.TransportCredentials, claim string) error {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if claim != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, playerHeader, claim)
	}
	name := claim
	if name == "" {
		name = "server0"
	}
	req, err := (&Hello{Player: name}).MarshalBinary()
	require.NoError(t, err)
	return conn.Invoke(ctx, helloMethod, &wrapperspb.BytesValue{Value: req}, new(wrapperspb.BytesValue))
}

func TestServerRefusesClients(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, "")
	s1 := n.start(t, cfg, "server1", Options{})
	addr := s1.Addr().String()

	id0, err := cfg.LoadIdentity("server0")
	require.NoError(t, err)
	good, err := id0.ClientTLS("server1")
	require.NoError(t, err)

	// The well-behaved client gets through the TLS layer (and then fails
	// only on the fingerprint it did not send).
	err = rawHello(t, addr, credentials.NewTLS(good), "server0")
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)

	t.Run("no certificate", func(t *testing.T) {
		c := good.Clone()
		c.Certificates = nil
		err := rawHello(t, addr, credentials.NewTLS(c), "server0")
		require.Error(t, err)
		assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		_, err := players.GenerateDevPKI(other, []players.CertSpec{{Player: "server0", Hosts: []string{"127.0.0.1"}}}, players.DevPKIOptions{})
		require.NoError(t, err)
		certFile, keyFile := players.CertFiles(other, "server0")
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		require.NoError(t, err)
		c := good.Clone()
		c.Certificates = nil
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
		err = rawHello(t, addr, credentials.NewTLS(c), "server0")
		require.Error(t, err)
		assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	})
	t.Run("claims another player", func(t *testing.T) {
		err := rawHello(t, addr, credentials.NewTLS(good), "server2")
		require.Error(t, err)
		assert.Equal(t, codes.PermissionDenied, status.Code(err))
		assert.Contains(t, err.Error(), `client certificate names player "server0" but the client claims to be "server2"`)
	})
	t.Run("claims nobody", func(t *testing.T) {
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(good)))
		require.NoError(t, err)
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := conn.NewStream(ctx, &serviceDesc.Streams[0], messageMethod)
		require.NoError(t, err)
		err = stream.RecvMsg(new(wrapperspb.BytesValue))
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	})
	t.Run("plaintext client", func(t *testing.T) {
		err := rawHello(t, addr, insecure.NewCredentials(), "server0")
		require.Error(t, err)
		assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	})
	// Nothing got through.
	assert.Zero(t, s1.Stats()["server0"].RecvMessages)
}

func TestClientRefusesWrongServer(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, `"connect_timeout": "500ms"`)
	n.start(t, cfg, "server1", Options{})
	n.start(t, cfg, "server2", Options{})
	// server0 has server1 and server2 swapped: it dials server2 when it
	// means server1.
	swapped := map[string]string{"server0": n.addrs["server0"], "server1": n.addrs["server2"], "server2": n.addrs["server1"]}
	s0 := n.start(t, n.config(t, swapped, `"connect_timeout": "500ms"`), "server0", Options{})
	err := s0.Connect(context.Background())
	require.Error(t, err)
	var ce *ConnectError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, err.Error(), `waiting for player "server1" at `+n.addrs["server2"])
	assert.Contains(t, err.Error(), "not server1", "the TLS check names the wrong server")
}

func TestConnectMissingPeer(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, `"connect_timeout": "500ms"`)
	n.lns["server2"].Close() // server2 never starts
	s0 := n.start(t, cfg, "server0", Options{})
	n.start(t, cfg, "server1", Options{})

	start := time.Now()
	err := s0.Connect(context.Background())
	elapsed := time.Since(start)
	require.Error(t, err)
	assert.Less(t, elapsed, 2*time.Second)
	assert.GreaterOrEqual(t, elapsed, 400*time.Millisecond)
	var ce *ConnectError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "server2", ce.Player)
	assert.Equal(t, n.addrs["server2"], ce.Address)
	assert.Contains(t, err.Error(), fmt.Sprintf("waiting for player %q at %s", "server2", n.addrs["server2"]))
	assert.Contains(t, err.Error(), "connection refused")
	assert.NotContains(t, err.Error(), `"server1"`, "server1 was reachable")
}

func TestCloseStopsConnect(t *testing.T) {
	n := newNetwork(t, "a", "b")
	n.lns["b"].Close() // b never starts; a would wait 5 s
	a := n.start(t, n.config(t, nil, ""), "a", Options{})
	connected := make(chan error, 1)
	go func() { connected <- a.Connect(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	require.NoError(t, a.Close())
	select {
	case err := <-connected:
		assert.ErrorIs(t, err, transport.ErrClosed)
	case <-time.After(2 * time.Second):
		t.Fatal("Connect did not stop")
	}
	assert.Less(t, time.Since(start), time.Second, "Close did not wait for Connect's deadline")
}

func TestConnectAnyOrder(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, "")
	// server1 and server2 start late, on the addresses the config names.
	for _, name := range []string{"server1", "server2"} {
		n.lns[name].Close()
	}
	s0 := n.start(t, cfg, "server0", Options{})
	connected := make(chan error, 1)
	go func() { connected <- s0.Connect(context.Background()) }()

	time.Sleep(300 * time.Millisecond)
	ts := map[string]*Transport{"server0": s0}
	for _, name := range []string{"server1", "server2"} {
		ln, err := net.Listen("tcp", n.addrs[name])
		require.NoError(t, err)
		ts[name] = n.start(t, cfg, name, Options{Listener: ln})
	}
	delete(ts, "server0")
	connectAll(t, ts)
	select {
	case err := <-connected:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("server0 did not connect")
	}
	ctx := testCtx(t)
	require.NoError(t, ts["server2"].Send(ctx, "server0", transport.Key{Session: "late"}, []byte("hi")))
	got, err := s0.Recv(ctx, "server2", transport.Key{Session: "late"})
	require.NoError(t, err)
	assert.Equal(t, "hi", string(got))
}

func TestDifferentPlayerLists(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, `"connect_timeout": "700ms"`)
	n.start(t, cfg, "server1", Options{})
	n.start(t, cfg, "server2", Options{})
	// server0 was given a config with one more player.
	addrs := map[string]string{"extra": "127.0.0.1:1"}
	for k, v := range n.addrs {
		addrs[k] = v
	}
	s0 := n.start(t, n.config(t, addrs, `"connect_timeout": "700ms"`), "server0", Options{})
	err := s0.Connect(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "different player lists")
	assert.Contains(t, err.Error(), `waiting for player "server1"`)
}

// kill stops t the way a crashed process would: no goodbye, connections
// cut.
func (t *Transport) kill() {
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
	t.stop()
	t.box.Fail(transport.ErrClosed)
	t.closeConns()
	t.server.Stop()
	t.cancel()
	t.wg.Wait()
}

func TestPeerGoneMidRun(t *testing.T) {
	for _, mode := range []string{"close", "kill"} {
		t.Run(mode, func(t *testing.T) {
			n := newNetwork(t, three...)
			ts := n.startAll(t, n.config(t, nil, ""), Options{})
			ctx := testCtx(t)

			// server1 sends one message, then goes away while server0
			// waits for a second one.
			require.NoError(t, ts["server1"].Send(ctx, "server0", transport.Key{Session: "s", Edge: 1}, []byte("first")))
			require.Eventually(t, func() bool { return ts["server0"].Stats()["server1"].RecvMessages == 1 }, 5*time.Second, 5*time.Millisecond)
			pending := make(chan error, 1)
			go func() {
				_, err := ts["server0"].Recv(ctx, "server1", transport.Key{Session: "s", Edge: 2})
				pending <- err
			}()
			time.Sleep(50 * time.Millisecond)
			start := time.Now()
			if mode == "close" {
				require.NoError(t, ts["server1"].Close())
			} else {
				ts["server1"].kill()
			}
			select {
			case err := <-pending:
				require.Error(t, err)
				assert.Less(t, time.Since(start), 2*time.Second)
				assert.Contains(t, err.Error(), `"server1"`)
				if mode == "close" {
					assert.ErrorIs(t, err, ErrPeerClosed)
					assert.Empty(t, ts["server0"].LostPeers(), "an orderly close is no loss")
				} else {
					assert.ErrorIs(t, err, ErrPeerLost)
					assert.Eventually(t, func() bool { return slices.Equal(ts["server0"].LostPeers(), []string{"server1"}) }, 2*time.Second, 10*time.Millisecond)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("pending Recv did not fail")
			}

			// What arrived before is still there.
			got, err := ts["server0"].Recv(ctx, "server1", transport.Key{Session: "s", Edge: 1})
			require.NoError(t, err)
			assert.Equal(t, "first", string(got))
			// Sending to the dead peer fails, naming it.
			require.Eventually(t, func() bool {
				err = ts["server0"].Send(ctx, "server1", transport.Key{Session: "s", Edge: 3}, []byte("x"))
				return err != nil
			}, 5*time.Second, 10*time.Millisecond)
			assert.Contains(t, err.Error(), `"server1"`)
			// server0 and server2 carry on.
			require.NoError(t, ts["server2"].Send(ctx, "server0", transport.Key{Session: "s"}, []byte("still here")))
			got, err = ts["server0"].Recv(ctx, "server2", transport.Key{Session: "s"})
			require.NoError(t, err)
			assert.Equal(t, "still here", string(got))
		})
	}
}

func TestCloseDeliversSentMessages(t *testing.T) {
	n := newNetwork(t, "a", "b")
	ts := n.startAll(t, n.config(t, nil, ""), Options{})
	ctx := testCtx(t)
	msg := randomBytes(7, 5<<20)
	require.NoError(t, ts["a"].Send(ctx, "b", transport.Key{Session: "bye"}, msg))
	require.NoError(t, ts["a"].Close())
	got, err := ts["b"].Recv(ctx, "a", transport.Key{Session: "bye"})
	require.NoError(t, err)
	assert.True(t, bytes.Equal(msg, got))

	// After Close: everything fails with ErrClosed, and Close is idempotent.
	require.NoError(t, ts["a"].Close())
	assert.ErrorIs(t, ts["a"].Send(ctx, "b", transport.Key{Session: "x"}, nil), transport.ErrClosed)
	_, err = ts["a"].Recv(ctx, "b", transport.Key{Session: "x"})
	assert.ErrorIs(t, err, transport.ErrClosed)
	assert.ErrorIs(t, ts["a"].Connect(ctx), transport.ErrClosed)
}

func TestInsecureMode(t *testing.T) {
	n := newNetwork(t, "a", "b")
	cfg := n.config(t, nil, `"insecure": true`)
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	ts := map[string]*Transport{
		"a": n.start(t, cfg, "a", Options{Logger: log}),
		"b": n.start(t, cfg, "b", Options{}),
	}
	connectAll(t, ts)
	assert.Equal(t, []string{InsecureWarning}, ts["a"].Warnings())
	mu.Lock()
	assert.Contains(t, logs.String(), "INSECURE")
	mu.Unlock()

	ctx := testCtx(t)
	require.NoError(t, ts["a"].Send(ctx, "b", transport.Key{Session: "p"}, []byte("plain")))
	got, err := ts["b"].Recv(ctx, "a", transport.Key{Session: "p"})
	require.NoError(t, err)
	assert.Equal(t, "plain", string(got))

	// The claimed name is all there is, but it must be a player.
	err = rawHello(t, ts["b"].Addr().String(), insecure.NewCredentials(), "mallory")
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	assert.Empty(t, (&Transport{}).Warnings())
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestNewErrors(t *testing.T) {
	n := newNetwork(t, "a", "b")
	// A config whose certificates do not exist fails in New, naming the file.
	cfg, err := n.config(t, nil, "").WithCertDir(t.TempDir())
	require.NoError(t, err)
	_, err = New(cfg, "a", Options{Listener: n.lns["a"]})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ca.pem")
	// The listener was closed with the failed transport.
	_, err = n.lns["a"].Accept()
	assert.Error(t, err)

	// Listening on the config address fails cleanly when it is taken.
	good := n.config(t, nil, "")
	_, err = New(good, "b", Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), n.addrs["b"])
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	run := func() {
		n := newNetwork(t, three...)
		cfg := n.config(t, nil, "")
		ts := make(map[string]*Transport)
		for _, name := range three {
			tr, err := New(cfg, name, Options{Listener: n.lns[name]})
			require.NoError(t, err)
			ts[name] = tr
		}
		connectAll(t, ts)
		ctx := testCtx(t)
		for _, from := range three {
			for _, to := range three {
				require.NoError(t, ts[from].Send(ctx, to, transport.Key{Session: "g"}, []byte(from)))
			}
		}
		for _, to := range three {
			for _, from := range three {
				_, err := ts[to].Recv(ctx, from, transport.Key{Session: "g"})
				require.NoError(t, err)
			}
		}
		var wg sync.WaitGroup
		for _, tr := range ts {
			wg.Go(func() { assert.NoError(t, tr.Close()) })
		}
		wg.Wait()
	}
	run() // warm up whatever gRPC starts once per process
	settle := func() int {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	before := settle()
	run()
	var after int
	deadline := time.Now().Add(5 * time.Second)
	for after = settle(); after > before && time.Now().Before(deadline); after = settle() {
	}
	if after > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before, %d after:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

func TestConnectErrorFormat(t *testing.T) {
	err := error(&ConnectError{Player: "server1", Address: "127.0.0.1:4441", Err: errors.New("boom")})
	assert.Equal(t, `grpctransport: waiting for player "server1" at 127.0.0.1:4441: boom`, err.Error())
}
