package grpctransport

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
	// Let the sender get as far ahead as it can: until server1 holds as
	// many unread messages as its bound takes (PendingMessages of them
	// minus one, since each also counts its slot) and stops reading.
	require.Eventually(t, func() bool { return ts["server1"].Stats()["server0"].RecvMessages >= PendingMessages-1 }, 10*time.Second, time.Millisecond)
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
	case <-testCtx(t).Done():
		t.Fatal("Send still blocked long after its deadline")
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

// TestClientRefusesWrongServer: a client whose peer presents another
// player's certificate gives up at once, naming the player it meant to
// reach, the address, and the player the certificate names; it does not
// dial again.
func TestClientRefusesWrongServer(t *testing.T) {
	n := newNetwork(t, three...)
	// An hour: a client that retried would still be retrying when the
	// test's context ends.
	cfg := n.config(t, nil, `"connect_timeout": "1h"`)
	logs := map[string]*logSink{"server1": newLogSink(), "server2": newLogSink()}
	s1 := n.start(t, cfg, "server1", Options{Logger: slog.New(logs["server1"])})
	s2 := n.start(t, cfg, "server2", Options{Logger: slog.New(logs["server2"])})
	// server0 has server1 and server2 swapped: it dials server2 when it
	// means server1.
	swapped := map[string]string{"server0": n.addrs["server0"], "server1": n.addrs["server2"], "server2": n.addrs["server1"]}
	s0 := n.start(t, n.config(t, swapped, `"connect_timeout": "1h"`), "server0", Options{})
	ctx := testCtx(t)
	err := s0.Connect(ctx)
	require.Error(t, err)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Connect retried instead of failing at once")
	assert.ErrorIs(t, err, players.ErrPeerCertificate)
	var ce *ConnectError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "server1", ce.Player)
	assert.Equal(t, n.addrs["server2"], ce.Address)
	assert.Contains(t, err.Error(), fmt.Sprintf(`grpctransport: waiting for player "server1" at %s: players: server0 refuses server: certificate names player "server2", want "server1"`, n.addrs["server2"]))
	assert.Contains(t, err.Error(), fmt.Sprintf(`grpctransport: waiting for player "server2" at %s: players: server0 refuses server: certificate names player "server1", want "server2"`, n.addrs["server1"]))
	// The link stays failed: a Send fails at once with the same error.
	err = s0.Send(ctx, "server1", transport.Key{Session: "s"}, []byte("x"))
	assert.ErrorIs(t, err, players.ErrPeerCertificate)

	// Each server saw one TLS handshake, which the client broke off, and
	// no other once everything is closed.
	refused := func(r logRecord) bool { return r.msg == "refused a connection" && r.level == slog.LevelWarn }
	for name, sink := range logs {
		r := sink.wait(t, refused)
		assert.Contains(t, r.attrs["reason"], "the client refused this player's certificate (tls: bad certificate)", name)
	}
	for _, tr := range []*Transport{s0, s1, s2} {
		require.NoError(t, tr.Close())
	}
	for name, sink := range logs {
		assert.Len(t, sink.find(refused), 1, "%s: handshakes refused", name)
	}
}

// TestServerRefusalFailsConnectAtOnce: a client whose certificate the
// server refuses learns it from a TLS alert and gives up at once, and the
// server logs why.
func TestServerRefusalFailsConnectAtOnce(t *testing.T) {
	n := newNetwork(t, three...)
	// server1 runs with a player list that lacks server0.
	without0 := map[string]string{"server1": n.addrs["server1"], "server2": n.addrs["server2"]}
	sink := newLogSink()
	n.start(t, n.config(t, without0, ""), "server1", Options{Logger: slog.New(sink)})
	n.start(t, n.config(t, nil, ""), "server2", Options{})
	s0 := n.start(t, n.config(t, nil, `"connect_timeout": "1h"`), "server0", Options{})

	err := s0.Connect(testCtx(t))
	require.Error(t, err)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Connect retried instead of failing at once")
	assert.Contains(t, err.Error(), fmt.Sprintf(`grpctransport: waiting for player "server1" at %s: the peer refused the TLS connection (tls: bad certificate); its log says why`, n.addrs["server1"]))
	assert.NotContains(t, err.Error(), `"server2"`, "server2 let server0 in")

	r := sink.wait(t, func(r logRecord) bool { return r.msg == "refused a connection" })
	assert.Equal(t, `players: server1 refuses client: certificate names player "server0", which is not in the config`, r.attrs["reason"])
}

// TestOtherCAFailsAtOnce: hosts that run with different CAs refuse each
// other at once, and the error says so in the words of
// docs/RUNNING.md's troubleshooting table.
func TestOtherCAFailsAtOnce(t *testing.T) {
	n := newNetwork(t, three...)
	other := *n
	other.certDir = filepath.Join(t.TempDir(), "other")
	_, err := players.GenerateDevPKI(other.certDir, []players.CertSpec{{Player: "server1", Hosts: []string{"127.0.0.1"}}}, players.DevPKIOptions{})
	require.NoError(t, err)
	n.start(t, other.config(t, nil, ""), "server1", Options{})
	n.start(t, n.config(t, nil, ""), "server2", Options{})
	s0 := n.start(t, n.config(t, nil, `"connect_timeout": "1h"`), "server0", Options{})

	err = s0.Connect(testCtx(t))
	require.Error(t, err)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Connect retried instead of failing at once")
	assert.ErrorIs(t, err, players.ErrPeerCertificate)
	assert.Contains(t, err.Error(), fmt.Sprintf(`grpctransport: waiting for player "server1" at %s: players: server0 refuses server "server1": x509: certificate signed by unknown authority`, n.addrs["server1"]))
	assert.NotContains(t, err.Error(), `"server2"`)
}

func TestConnectMissingPeer(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, `"connect_timeout": "500ms"`)
	n.lns["server2"].Close() // server2 never starts
	s0 := n.start(t, cfg, "server0", Options{})
	n.start(t, cfg, "server1", Options{})

	err := s0.Connect(context.Background())
	require.Error(t, err)
	// A missing peer is waited for until connect_timeout, not given up on.
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "no answer within")
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
	// b's address accepts connections, but nobody answers on them; a would
	// wait an hour.
	a := n.start(t, n.config(t, nil, `"connect_timeout": "1h"`), "a", Options{})
	connected := make(chan error, 1)
	go func() { connected <- a.Connect(context.Background()) }()
	c := acceptOne(t, n.lns["b"]) // a is dialling b
	defer c.Close()
	require.NoError(t, a.Close())
	select {
	case err := <-connected:
		assert.ErrorIs(t, err, transport.ErrClosed)
	case <-testCtx(t).Done():
		t.Fatal("Connect did not stop")
	}
}

// acceptOne returns the next connection on ln, failing the test if none
// comes within a safety margin.
func acceptOne(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	require.NoError(t, ln.(*net.TCPListener).SetDeadline(time.Now().Add(15*time.Second)))
	c, err := ln.Accept()
	require.NoError(t, err)
	return c
}

func TestConnectAnyOrder(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, "")
	// server1 and server2 start late, on the addresses the config names:
	// first server0 dials them, and finds nobody there to answer.
	s0 := n.start(t, cfg, "server0", Options{})
	connected := make(chan error, 1)
	go func() { connected <- s0.Connect(context.Background()) }()
	for _, name := range []string{"server1", "server2"} {
		acceptOne(t, n.lns[name]).Close()
		n.lns[name].Close()
	}
	ts := map[string]*Transport{"server0": s0}
	for _, name := range []string{"server1", "server2"} {
		ln, err := net.Listen("tcp", n.addrs[name])
		require.NoError(t, err)
		ts[name] = n.start(t, cfg, name, Options{Listener: ln})
	}
	delete(ts, "server0")
	connectAll(t, ts)
	require.NoError(t, <-connected) // within connect_timeout
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
	if t.gate != nil {
		t.gate.shut()
	}
	t.closeConns()
	if t.server != nil {
		t.server.Stop()
	}
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
			waiting := newWaitingCtx(ctx)
			go func() {
				_, err := ts["server0"].Recv(waiting, "server1", transport.Key{Session: "s", Edge: 2})
				pending <- err
			}()
			<-waiting.waiting
			if mode == "close" {
				require.NoError(t, ts["server1"].Close())
			} else {
				ts["server1"].kill()
			}
			err := <-pending
			require.Error(t, err)
			assert.NotErrorIs(t, err, context.DeadlineExceeded, "the pending Recv waited for its deadline instead of learning of server1's end")
			assert.Contains(t, err.Error(), `"server1"`)
			if mode == "close" {
				assert.ErrorIs(t, err, ErrPeerClosed)
				assert.Empty(t, ts["server0"].LostPeers(), "an orderly close is no loss")
			} else {
				assert.ErrorIs(t, err, ErrPeerLost)
				assert.Eventually(t, func() bool { return slices.Equal(ts["server0"].LostPeers(), []string{"server1"}) }, 5*time.Second, time.Millisecond)
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

// waitingCtx is a context that tells when someone starts waiting on it:
// Done is what a select that blocks on it asks for.
type waitingCtx struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func newWaitingCtx(ctx context.Context) *waitingCtx {
	return &waitingCtx{Context: ctx, waiting: make(chan struct{})}
}

func (c *waitingCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
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

// logSink is a slog.Handler that keeps every record, at every level, for
// tests that look for, or wait for, a log line. It is safe for concurrent
// use.
type logSink struct {
	*logStore
	attrs []slog.Attr
}

type logStore struct {
	mu      sync.Mutex
	records []logRecord
	changed chan struct{} // closed and replaced at each record
}

// logRecord is one line: its level, message and attributes as strings.
type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newLogSink() *logSink {
	return &logSink{logStore: &logStore{changed: make(chan struct{})}}
}

func (h *logSink) Enabled(context.Context, slog.Level) bool { return true }

func (h *logSink) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: make(map[string]string)}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, rec)
	close(h.changed)
	h.changed = make(chan struct{})
	return nil
}

func (h *logSink) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logSink{logStore: h.logStore, attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h *logSink) WithGroup(string) slog.Handler { return h }

// find returns the records that match.
func (s *logStore) find(match func(logRecord) bool) []logRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []logRecord
	for _, r := range s.records {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

// wait returns the first record that matches, waiting for it.
func (s *logStore) wait(t *testing.T, match func(logRecord) bool) logRecord {
	t.Helper()
	ctx := testCtx(t)
	for {
		s.mu.Lock()
		for _, r := range s.records {
			if match(r) {
				s.mu.Unlock()
				return r
			}
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no such log line; got %v", s.find(func(logRecord) bool { return true }))
		}
	}
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
	before := goroutineIDs()
	run()
	// Every goroutine the second run started ends.
	ctx := testCtx(t)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		var left []string
		for id, stack := range goroutineIDs() {
			if _, ok := before[id]; !ok {
				left = append(left, stack)
			}
		}
		if len(left) == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%d goroutines left:\n%s", len(left), strings.Join(left, "\n\n"))
		}
	}
}

// goroutineIDs returns the stack of every goroutine but the caller's, by
// goroutine id.
func goroutineIDs() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n")[1:] { // the caller's comes first
		id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		out[id] = g
	}
	return out
}

func TestConnectErrorFormat(t *testing.T) {
	err := error(&ConnectError{Player: "server1", Address: "127.0.0.1:4441", Err: errors.New("boom")})
	assert.Equal(t, `grpctransport: waiting for player "server1" at 127.0.0.1:4441: boom`, err.Error())
}

// tlsDial runs a TLS handshake with addr as client cfg and returns the
// client's local address and how the server answered: in TLS 1.3 a
// refused client learns it on its first read.
func tlsDial(t *testing.T, addr string, cfg *tls.Config) (local string, err error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(15*time.Second))) // a safety net
	tc := tls.Client(c, cfg)
	err = tc.Handshake()
	if err == nil {
		_, err = tc.Read(make([]byte, 1))
	}
	return c.LocalAddr().String(), err
}

// otherCA returns a certificate for player issued by a CA of its own.
func otherCA(t *testing.T, player string) tls.Certificate {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "other")
	_, err := players.GenerateDevPKI(dir, []players.CertSpec{{Player: player, Hosts: []string{"127.0.0.1"}}}, players.DevPKIOptions{})
	require.NoError(t, err)
	certFile, keyFile := players.CertFiles(dir, player)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	return pair
}

// TestTLSRefusalsAreLogged: every connection the server refuses at the
// TLS level gives one log line naming the remote address and the reason.
func TestTLSRefusalsAreLogged(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, "")
	sink := newLogSink()
	s1 := n.start(t, cfg, "server1", Options{Logger: slog.New(sink)})
	addr := s1.Addr().String()
	id0, err := cfg.LoadIdentity("server0")
	require.NoError(t, err)
	good, err := id0.ClientTLS("server1")
	require.NoError(t, err)

	foreign := otherCA(t, "server0")
	cases := []struct {
		name   string
		client func(*tls.Config)
		reason string
	}{
		{"no certificate", func(c *tls.Config) { c.Certificates = nil }, "tls: client didn't provide a certificate"},
		{"certificate from another CA", func(c *tls.Config) { c.Certificates = []tls.Certificate{foreign} }, "x509: certificate signed by unknown authority"},
		{"TLS 1.2", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12 }, "tls: client offered only unsupported versions"},
		{"plaintext", nil, "tls: first record does not look like a TLS handshake"},
	}
	var locals []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var local string
			if tc.client == nil {
				c, err := net.Dial("tcp", addr)
				require.NoError(t, err)
				defer c.Close()
				local = c.LocalAddr().String()
				_, err = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
				require.NoError(t, err)
			} else {
				c := good.Clone()
				tc.client(c)
				var err error
				local, err = tlsDial(t, addr, c)
				require.Error(t, err, "the server let the client in")
			}
			locals = append(locals, local)
			r := sink.wait(t, func(r logRecord) bool { return r.msg == "refused a connection" && r.attrs["remote"] == local })
			assert.Equal(t, slog.LevelWarn, r.level)
			assert.Equal(t, "server1", r.attrs["player"])
			assert.Contains(t, r.attrs["reason"], tc.reason)
		})
	}
	// One line each, no more.
	require.NoError(t, s1.Close())
	for _, local := range locals {
		assert.Len(t, sink.find(func(r logRecord) bool { return r.attrs["remote"] == local }), 1, local)
	}
	assert.Empty(t, sink.find(func(r logRecord) bool { return r.msg == "refused connections not logged" }), "nothing was left out")
}

// TestRefusalLogIsRateLimited: a flood of refused connections logs
// refusalBurst lines, then counts the ones it leaves out and reports them
// on Close. The limiter's clock is frozen, so no tokens come back.
func TestRefusalLogIsRateLimited(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, "")
	sink := newLogSink()
	s1 := n.start(t, cfg, "server1", Options{Logger: slog.New(sink)})
	frozen := time.Unix(1, 0)
	s1.refusals.mu.Lock()
	s1.refusals.now = func() time.Time { return frozen }
	s1.refusals.last = frozen
	s1.refusals.mu.Unlock()

	id0, err := cfg.LoadIdentity("server0")
	require.NoError(t, err)
	noCert, err := id0.ClientTLS("server1")
	require.NoError(t, err)
	noCert.Certificates = nil
	const refusals = 3*refusalBurst + 5
	for range refusals {
		_, err := tlsDial(t, s1.Addr().String(), noCert)
		require.Error(t, err)
	}
	require.NoError(t, s1.Close())

	lines := sink.find(func(r logRecord) bool { return r.msg == "refused a connection" })
	assert.Len(t, lines, refusalBurst)
	for _, r := range lines {
		assert.Empty(t, r.attrs["suppressed"], "nothing was left out before the first %d lines", refusalBurst)
	}
	summary := sink.find(func(r logRecord) bool { return r.msg == "refused connections not logged" })
	require.Len(t, summary, 1)
	assert.Equal(t, fmt.Sprint(refusals-refusalBurst), summary[0].attrs["suppressed"])
}

func TestRefusalLogBucket(t *testing.T) {
	sink := newLogSink()
	now := time.Unix(100, 0)
	r := newRefusalLog(slog.New(sink))
	r.now, r.last = func() time.Time { return now }, now
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4440}
	lines := func() []logRecord {
		return sink.find(func(r logRecord) bool { return r.msg == "refused a connection" })
	}

	for range refusalBurst + 3 {
		r.refused(slog.LevelWarn, remote, "test")
	}
	require.Len(t, lines(), refusalBurst)
	// A token comes back after refusalEvery; the next line says how many
	// were left out before it.
	now = now.Add(refusalEvery)
	r.refused(slog.LevelWarn, remote, "test")
	require.Len(t, lines(), refusalBurst+1)
	last := lines()[refusalBurst]
	assert.Equal(t, "3", last.attrs["suppressed"])
	assert.Equal(t, "192.0.2.1:4440", last.attrs["remote"])
	r.refused(slog.LevelWarn, remote, "test")
	assert.Len(t, lines(), refusalBurst+1, "the bucket was empty again")
	// A long quiet refills the bucket to refusalBurst, no more.
	now = now.Add(1000 * refusalEvery)
	for range refusalBurst + 1 {
		r.refused(slog.LevelWarn, remote, "test")
	}
	assert.Len(t, lines(), 2*refusalBurst+1)
	r.flush()
	summary := sink.find(func(r logRecord) bool { return r.msg == "refused connections not logged" })
	require.Len(t, summary, 1)
	assert.Equal(t, "1", summary[0].attrs["suppressed"])
	r.flush()
	assert.Len(t, sink.find(func(r logRecord) bool { return r.msg == "refused connections not logged" }), 1, "nothing more to report")

	// Lines the logger would drop take no token.
	quiet := newRefusalLog(slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})))
	for range 2 * refusalBurst {
		quiet.refused(slog.LevelDebug, remote, "test")
	}
	assert.Equal(t, float64(refusalBurst), quiet.tokens)
}

// TestRawConnDoesNotHoldClose: a TCP connection that never starts its
// handshake does not keep Close waiting; Close closes it.
func TestRawConnDoesNotHoldClose(t *testing.T) {
	n := newNetwork(t, "a", "b")
	// An hour: were Close to wait for the connection's handshake deadline,
	// it would not return before the test's context ends.
	a := n.start(t, n.config(t, nil, ""), "a", Options{HandshakeTimeout: time.Hour})
	raw, err := net.Dial("tcp", a.Addr().String())
	require.NoError(t, err)
	defer raw.Close()
	require.Eventually(t, func() bool { return a.gate.open() == 1 }, 10*time.Second, time.Millisecond, "the server accepts the connection")

	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-testCtx(t).Done():
		t.Fatal("Close waits for a connection that never handshakes")
	}
	// The server's side of the connection is closed.
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(15*time.Second))) // a safety net
	_, err = raw.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF)
}

// TestHandshakeTimeout: the server closes a connection that does not
// finish its handshake within HandshakeTimeout, and logs it.
func TestHandshakeTimeout(t *testing.T) {
	n := newNetwork(t, "a", "b")
	sink := newLogSink()
	a := n.start(t, n.config(t, nil, ""), "a", Options{HandshakeTimeout: 50 * time.Millisecond, Logger: slog.New(sink)})
	raw, err := net.Dial("tcp", a.Addr().String())
	require.NoError(t, err)
	defer raw.Close()
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(15*time.Second))) // a safety net
	_, err = raw.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the server closed the connection")
	r := sink.wait(t, func(r logRecord) bool { return r.attrs["remote"] == raw.LocalAddr().String() })
	assert.Equal(t, "refused a connection", r.msg)
	assert.Equal(t, "no TLS handshake within 50ms (HandshakeTimeout)", r.attrs["reason"])
}

// TestHandshakesPerIPAreBounded: one address cannot hold more than
// MaxHandshakesPerIP connections in their handshake; the next one is
// closed at once, and logged.
func TestHandshakesPerIPAreBounded(t *testing.T) {
	n := newNetwork(t, "a", "b")
	sink := newLogSink()
	a := n.start(t, n.config(t, nil, ""), "a", Options{HandshakeTimeout: time.Hour, Logger: slog.New(sink)})
	conns := make(map[string]net.Conn)
	for range MaxHandshakesPerIP + 1 {
		c, err := net.Dial("tcp", a.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		conns[c.LocalAddr().String()] = c
	}
	r := sink.wait(t, func(r logRecord) bool { return r.msg == "refused a connection" })
	assert.Contains(t, r.attrs["reason"], fmt.Sprintf("%d connections from 127.0.0.1 are in their handshake already (MaxHandshakesPerIP)", MaxHandshakesPerIP))
	refused, ok := conns[r.attrs["remote"]]
	require.True(t, ok, "the line names one of the connections: %v", r.attrs)
	require.NoError(t, refused.SetReadDeadline(time.Now().Add(15*time.Second))) // a safety net
	_, err := refused.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the refused connection is closed")
	assert.Len(t, sink.find(func(r logRecord) bool { return r.msg == "refused a connection" }), 1, "the others wait for their handshake")
}

func TestGateAdmits(t *testing.T) {
	g := newGate(nil)
	ip := func(i int) string { return fmt.Sprintf("192.0.2.%d", i) }
	for i := range MaxHandshakesPerIP {
		require.NoError(t, g.admit(ip(0)), "connection %d", i)
	}
	assert.ErrorContains(t, g.admit(ip(0)), "MaxHandshakesPerIP")
	g.release(ip(0))
	require.NoError(t, g.admit(ip(0)), "a slot came free")

	for i := MaxHandshakesPerIP; i < MaxHandshakes; i++ {
		require.NoError(t, g.admit(ip(1+i/MaxHandshakesPerIP)), "connection %d", i)
	}
	assert.ErrorContains(t, g.admit(ip(200)), "64 connections are in their handshake already (MaxHandshakes)")
	g.release(ip(1))
	require.NoError(t, g.admit(ip(200)))
	assert.Equal(t, MaxHandshakes, g.active)
}
