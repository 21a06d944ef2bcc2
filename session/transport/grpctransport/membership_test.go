package grpctransport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
)

// federation is the hostmap of issue 9: the servers, the crypto producer
// and the model owner; data owners join with certificates of their own.
var federation = []string{"server0", "server1", "server2", "model-owner"}

// mint issues certificates for players the config does not list, with the
// network's CA.
func (n *network) mint(t *testing.T, names ...string) {
	t.Helper()
	specs := make([]players.CertSpec, len(names))
	for i, name := range names {
		specs[i] = players.CertSpec{Player: name}
	}
	_, err := players.IssueCerts(n.certDir, specs, players.DevPKIOptions{})
	require.NoError(t, err)
}

// raw returns the config of the JSON members given, with the network's
// certificates.
func (n *network) raw(t *testing.T, members string) *players.Config {
	t.Helper()
	data := fmt.Sprintf(`{%s, "cert_dir": %q}`, members, n.certDir)
	if !strings.Contains(members, "connect_timeout") {
		data = fmt.Sprintf(`{%s, "cert_dir": %q, "connect_timeout": "5s"}`, members, n.certDir)
	}
	cfg, err := players.ParseConfig([]byte(data), filepath.Join(t.TempDir(), "hosts.json"))
	require.NoError(t, err)
	return cfg
}

// fast makes links reconnect quickly, for tests.
func fast(opts Options) Options {
	opts.ReconnectMin, opts.ReconnectMax = 5*time.Millisecond, 50*time.Millisecond
	return opts
}

// member starts data owner name, which the config does not list, and
// connects it.
func member(t *testing.T, cfg *players.Config, name string, opts Options) *Transport {
	t.Helper()
	opts = fast(opts)
	opts.Rand = rand.New(rand.NewPCG(uint64(len(name)), 9)) // reproducible jitter
	m, err := New(cfg, name, opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	require.NoError(t, m.Connect(testCtx(t)))
	return m
}

// waitChange waits until cond holds, checking it at every membership
// change of tr.
func waitChange(t *testing.T, ctx context.Context, tr transport.Membership, what string, cond func() bool) {
	t.Helper()
	for {
		changed := tr.MembershipChanged()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, context.Cause(ctx))
		}
	}
}

// exchange sends a message each way between a and b under key and checks
// both arrive.
func exchange(t *testing.T, ctx context.Context, a, b *Transport, key transport.Key) {
	t.Helper()
	for _, p := range [][2]*Transport{{a, b}, {b, a}} {
		from, to := p[0], p[1]
		msg := randomBytes(key.Edge, 3000)
		require.NoError(t, from.Send(ctx, to.self, key, msg), "%s -> %s", from.self, to.self)
		got, err := to.Recv(ctx, from.self, key)
		require.NoError(t, err, "%s -> %s", from.self, to.self)
		require.True(t, bytes.Equal(msg, got), "%s -> %s: garbled", from.self, to.self)
	}
}

// listeningSockets returns the inodes of the TCP sockets this process
// holds in the LISTEN state: the sockets of /proc/self/net/tcp and tcp6
// in state 0A whose inode is one of the process's open files.
func listeningSockets(t *testing.T) map[string]bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	mine := make(map[string]bool)
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, "socket:[") {
			mine[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	out := make(map[string]bool)
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && fields[3] == "0A" && mine[fields[9]] {
				out[fields[9]] = true
			}
		}
		f.Close()
	}
	return out
}

// TestIssue9DataOwnersDialOut: with a hostmap that lists only the servers,
// the crypto producer and the model owner, a data owner holding a
// certificate from the federation's CA connects to every listed player
// without listening anywhere, and messages travel both ways on the
// connections it opened.
func TestIssue9DataOwnersDialOut(t *testing.T) {
	n := newNetwork(t, federation...)
	n.mint(t, "data-owner-0", "data-owner-1")
	cfg := n.config(t, nil, "")
	require.True(t, cfg.OpenMembership(), "a hostmap without data owners admits them")
	ts := n.startAll(t, cfg, fast(Options{}))
	ctx := testCtx(t)

	before := listeningSockets(t)
	require.Len(t, before, len(federation), "the listed players' listeners are seen")
	do := map[string]*Transport{}
	for _, name := range []string{"data-owner-0", "data-owner-1"} {
		do[name] = member(t, cfg, name, Options{})
		assert.Nil(t, do[name].Addr(), "a data owner has no address")
	}
	for _, name := range federation {
		for d, m := range do {
			exchange(t, ctx, m, ts[name], transport.Key{Session: "s", Edge: uint64(len(name))})
			assert.True(t, m.Connected(name), "%s to %s", d, name)
			assert.True(t, ts[name].Connected(d), "%s to %s", name, d)
		}
		assert.Equal(t, []string{"data-owner-0", "data-owner-1"}, ts[name].Members(), name)
	}
	assert.Equal(t, before, listeningSockets(t), "the data owners opened no listening socket")
	assert.Empty(t, do["data-owner-0"].Members())
	st := ts["server0"].Stats()["data-owner-1"]
	assert.Equal(t, LinkStats{SentMessages: 1, SentBytes: 3000, RecvMessages: 1, RecvBytes: 3000}, st)

	// Data owners have no path to each other, and say so.
	err := do["data-owner-0"].Send(ctx, "data-owner-1", transport.Key{Session: "s"}, nil)
	assert.ErrorIs(t, err, transport.ErrUnknownPlayer)
	assert.ErrorContains(t, err, "no connection between them")
	_, err = do["data-owner-0"].Recv(ctx, "data-owner-1", transport.Key{Session: "s"})
	assert.ErrorIs(t, err, transport.ErrUnknownPlayer)
	// A listed player reaches no name its config does not admit.
	assert.ErrorIs(t, ts["server0"].Send(ctx, "server9", transport.Key{Session: "s"}, nil), transport.ErrUnknownPlayer)

	// A server waits for a data owner that has not dialled in yet, and
	// the message arrives once it has.
	n.mint(t, "data-owner-2")
	sent := make(chan error, 1)
	go func() {
		sent <- ts["server1"].Send(ctx, "data-owner-2", transport.Key{Session: "late"}, []byte("welcome"))
	}()
	late := member(t, cfg, "data-owner-2", Options{})
	require.NoError(t, <-sent)
	got, err := late.Recv(ctx, "server1", transport.Key{Session: "late"})
	require.NoError(t, err)
	assert.Equal(t, "welcome", string(got))
}

// TestIssue9MemberLeavesAndRejoins: a data owner whose transport closes
// leaves the listed players' Members; receives waiting for it fail at
// once; a new transport under the same identity joins again, and messages
// flow again, in a new epoch. The same after a crash.
func TestIssue9MemberLeavesAndRejoins(t *testing.T) {
	for _, mode := range []string{"close", "kill"} {
		t.Run(mode, func(t *testing.T) {
			n := newNetwork(t, "server0", "server1")
			n.mint(t, "data-owner-3")
			cfg := n.config(t, nil, "")
			ts := n.startAll(t, cfg, fast(Options{}))
			s0 := ts["server0"]
			ctx := testCtx(t)

			m := member(t, cfg, "data-owner-3", Options{})
			waitChange(t, ctx, s0, "data-owner-3 to join", func() bool { return slices.Equal(s0.Members(), []string{"data-owner-3"}) })
			exchange(t, ctx, m, s0, transport.Key{Session: "s", Iteration: 0})
			first, _ := s0.Mailbox().Epoch("data-owner-3")

			pending := make(chan error, 1)
			waiting := newWaitingCtx(ctx)
			go func() {
				_, err := s0.Recv(waiting, "data-owner-3", transport.Key{Session: "s", Iteration: 1})
				pending <- err
			}()
			<-waiting.waiting
			if mode == "close" {
				require.NoError(t, m.Close())
			} else {
				m.kill()
			}
			err := <-pending
			require.Error(t, err)
			assert.ErrorIs(t, err, transport.ErrPeerGone)
			assert.NotErrorIs(t, err, context.DeadlineExceeded)
			waitChange(t, ctx, s0, "data-owner-3 to leave", func() bool { return len(s0.Members()) == 0 })
			assert.False(t, s0.Connected("data-owner-3"))
			err = s0.Send(ctx, "data-owner-3", transport.Key{Session: "s", Iteration: 1}, []byte("x"))
			assert.ErrorIs(t, err, transport.ErrPeerGone, "a send to a member that left fails at once")
			if mode == "kill" {
				assert.Equal(t, []string{"data-owner-3"}, s0.LostPeers())
			} else {
				assert.Empty(t, s0.LostPeers())
			}

			again := member(t, cfg, "data-owner-3", Options{})
			waitChange(t, ctx, s0, "data-owner-3 to join again", func() bool { return slices.Equal(s0.Members(), []string{"data-owner-3"}) })
			second, failed := s0.Mailbox().Epoch("data-owner-3")
			assert.Equal(t, first+1, second)
			assert.False(t, failed)
			assert.Empty(t, s0.LostPeers())
			exchange(t, ctx, again, s0, transport.Key{Session: "s", Iteration: 2})
			exchange(t, ctx, again, ts["server1"], transport.Key{Session: "s", Iteration: 2})
		})
	}
}

// TestIssue9ListedPeerRestarts: a server killed mid-run is dialled again
// in the background; once a new transport for it runs on the same
// address, the link is back, and messages flow both ways. Receives
// pending when it died failed at once; sends in between failed at once.
func TestIssue9ListedPeerRestarts(t *testing.T) {
	for _, mode := range []string{"close", "kill"} {
		t.Run(mode, func(t *testing.T) {
			n := newNetwork(t, three...)
			cfg := n.config(t, nil, "")
			ts := n.startAll(t, cfg, fast(Options{}))
			s0 := ts["server0"]
			ctx := testCtx(t)
			exchange(t, ctx, s0, ts["server1"], transport.Key{Session: "s"})

			pending := make(chan error, 1)
			waiting := newWaitingCtx(ctx)
			go func() {
				_, err := s0.Recv(waiting, "server1", transport.Key{Session: "s", Iteration: 1})
				pending <- err
			}()
			<-waiting.waiting
			if mode == "close" {
				require.NoError(t, ts["server1"].Close())
			} else {
				ts["server1"].kill()
			}
			assert.ErrorIs(t, <-pending, transport.ErrPeerGone)
			waitChange(t, ctx, s0, "server0 to see server1 gone", func() bool { return !s0.Connected("server1") })
			require.Eventually(t, func() bool {
				return s0.Send(ctx, "server1", transport.Key{Session: "s", Iteration: 1}, []byte("x")) != nil
			}, 5*time.Second, time.Millisecond, "sends to a dead peer fail")

			ln, err := net.Listen("tcp", n.addrs["server1"])
			require.NoError(t, err)
			s1 := n.start(t, cfg, "server1", fast(Options{Listener: ln}))
			require.NoError(t, s1.Connect(ctx))
			for _, name := range []string{"server0", "server2"} {
				waitChange(t, ctx, ts[name], name+" to reconnect to server1", func() bool { return ts[name].Connected("server1") })
			}
			epoch, failed := s0.Mailbox().Epoch("server1")
			assert.Equal(t, uint64(1), epoch)
			assert.False(t, failed)
			assert.Empty(t, s0.LostPeers())
			exchange(t, ctx, s0, s1, transport.Key{Session: "s", Iteration: 2})
			exchange(t, ctx, ts["server2"], s1, transport.Key{Session: "s", Iteration: 2})
		})
	}
}

// TestIssue9MemberReconnectsToARestartedServer: a data owner that loses
// its connection because a server restarted dials again with backoff and
// rejoins.
func TestIssue9MemberReconnectsToARestartedServer(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	n.mint(t, "data-owner-0")
	cfg := n.config(t, nil, "")
	ts := n.startAll(t, cfg, fast(Options{}))
	ctx := testCtx(t)
	m := member(t, cfg, "data-owner-0", Options{})
	exchange(t, ctx, m, ts["server0"], transport.Key{Session: "s"})

	ts["server0"].kill()
	waitChange(t, ctx, m, "the data owner to lose server0", func() bool { return !m.Connected("server0") })
	assert.True(t, m.Connected("server1"), "the other link is untouched")
	_, err := m.Recv(ctx, "server0", transport.Key{Session: "s", Iteration: 1})
	assert.ErrorIs(t, err, transport.ErrPeerGone, "receives fail at once while the link is down")

	ln, err := net.Listen("tcp", n.addrs["server0"])
	require.NoError(t, err)
	s0 := n.start(t, cfg, "server0", fast(Options{Listener: ln}))
	require.NoError(t, s0.Connect(ctx))
	waitChange(t, ctx, s0, "the data owner to rejoin", func() bool { return slices.Equal(s0.Members(), []string{"data-owner-0"}) })
	waitChange(t, ctx, m, "the data owner to see server0 back", func() bool { return m.Connected("server0") })
	exchange(t, ctx, m, s0, transport.Key{Session: "s", Iteration: 2})
}

// TestIssue9CloseSaysGoodbyeToMembers: a server that closes tells its
// members goodbye on their streams; they learn it as a close, not a loss,
// and the server's Close does not wait for its deadline.
func TestIssue9CloseSaysGoodbyeToMembers(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	n.mint(t, "data-owner-0")
	cfg := n.config(t, nil, "")
	// An hour: were Close to wait for the member until its deadline, the
	// test's context would end first.
	ts := n.startAll(t, cfg, fast(Options{CloseTimeout: time.Hour}))
	ctx := testCtx(t)
	m := member(t, cfg, "data-owner-0", Options{})
	msg := randomBytes(1, 3<<20)
	require.NoError(t, ts["server0"].Send(ctx, "data-owner-0", transport.Key{Session: "bye"}, msg))
	pending := make(chan error, 1)
	waiting := newWaitingCtx(ctx)
	go func() {
		_, err := m.Recv(waiting, "server0", transport.Key{Session: "bye", Edge: 1})
		pending <- err
	}()
	<-waiting.waiting
	closed := make(chan error, 1)
	go func() { closed <- ts["server0"].Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("Close waited for its deadline")
	}
	err := <-pending
	assert.ErrorIs(t, err, ErrPeerClosed)
	assert.Empty(t, m.LostPeers(), "an orderly close is no loss")
	got, err := m.Recv(ctx, "server0", transport.Key{Session: "bye"})
	require.NoError(t, err, "what was sent before Close arrives")
	assert.True(t, bytes.Equal(msg, got))
}

// TestIssue9ListedDataOwnerWithoutAddress: a fixed federation may list a
// data owner without an address; it dials out only, and the listed
// players' Connect waits for it to dial in.
func TestIssue9ListedDataOwnerWithoutAddress(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	n.mint(t, "data-owner-0")
	cfg := n.raw(t, fmt.Sprintf(`"players": {"server0": %q, "server1": %q, "data-owner-0": {}}`, n.addrs["server0"], n.addrs["server1"]))
	require.False(t, cfg.Listens("data-owner-0"))
	require.False(t, cfg.OpenMembership(), "a data owner is listed")
	ts := map[string]*Transport{
		"server0": n.start(t, cfg, "server0", Options{}),
		"server1": n.start(t, cfg, "server1", Options{}),
	}
	do, err := New(cfg, "data-owner-0", Options{})
	require.NoError(t, err)
	t.Cleanup(func() { do.Close() })
	ts["data-owner-0"] = do
	connectAll(t, ts)
	ctx := testCtx(t)
	exchange(t, ctx, do, ts["server0"], transport.Key{Session: "s"})
	exchange(t, ctx, do, ts["server1"], transport.Key{Session: "s"})
	assert.Equal(t, []string{"data-owner-0"}, ts["server0"].Members())

	// A listed player's Connect names a dial-in player that never came.
	n2 := newNetwork(t, "server0")
	cfg2 := n2.raw(t, fmt.Sprintf(`"players": {"server0": %q, "data-owner-0": {}}, "connect_timeout": "200ms"`, n2.addrs["server0"]))
	err = n2.start(t, cfg2, "server0", Options{}).Connect(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `grpctransport: waiting for player "data-owner-0" to dial in: it did not dial in within`)
	_, err = New(cfg2, "data-owner-0", Options{Listener: n2.lns["server0"]})
	assert.ErrorContains(t, err, "only dials out and takes no Options.Listener")
}

// TestIssue9HostileMembers: unlisted identities that are not data owners
// are refused at the TLS handshake and logged; a data owner gets one
// stream at a time; no more than max_members data owners are connected at
// once; a hostmap that lists its data owners admits no other.
func TestIssue9HostileMembers(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	n.mint(t, "data-owner-0", "data-owner-1", "data-owner-2", "server9", "model-owner-2")
	cfg := n.config(t, nil, `"max_members": 2`)
	sink := newLogSink()
	s0 := n.start(t, cfg, "server0", fast(Options{Logger: slog.New(sink)}))
	s1 := n.start(t, cfg, "server1", fast(Options{}))
	connectAll(t, map[string]*Transport{"server0": s0, "server1": s1})
	ctx := testCtx(t)
	addr := s0.Addr().String()

	t.Run("identities that are not data owners", func(t *testing.T) {
		id, err := cfg.LoadIdentity("data-owner-0")
		require.NoError(t, err)
		good, err := id.ClientTLS("server0")
		require.NoError(t, err)
		for _, name := range []string{"server9", "model-owner-2"} {
			certFile, keyFile := players.CertFiles(n.certDir, name)
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			require.NoError(t, err)
			c := good.Clone()
			c.Certificates = []tls.Certificate{pair}
			local, err := tlsDial(t, addr, c)
			require.Error(t, err, name)
			r := sink.wait(t, func(r logRecord) bool { return r.msg == "refused a connection" && r.attrs["remote"] == local })
			assert.Equal(t, slog.LevelWarn, r.level)
			assert.Contains(t, r.attrs["reason"], fmt.Sprintf("certificate names player %q, which is not in the config", name))
		}
		// Neither can a transport be made for them.
		_, err = New(cfg, "server9", Options{})
		assert.ErrorIs(t, err, players.ErrUnknownPlayer)
	})

	t.Run("one stream per data owner", func(t *testing.T) {
		conn := dialAs(t, cfg, "data-owner-0", addr)
		first, err := openStream(ctx, conn, "data-owner-0")
		require.NoError(t, err)
		md, err := first.Header()
		require.NoError(t, err)
		require.NotEmpty(t, md.Get(acceptedHeader))
		refused := s0.in.refused.Load()
		second, err := openStream(ctx, conn, "data-owner-0")
		require.NoError(t, err)
		err = recvDiscard(second)
		assert.Equal(t, codes.AlreadyExists, status.Code(err), "%v", err)
		assert.Equal(t, refused+1, s0.in.refused.Load())
		sink.wait(t, func(r logRecord) bool {
			return r.msg == "refused a message stream" && r.attrs["peer"] == "data-owner-0"
		})
		// A data owner cannot claim another's name either.
		other, err := openStream(ctx, conn, "data-owner-1")
		require.NoError(t, err)
		err = recvDiscard(other)
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		conn.Close()
		waitChange(t, ctx, s0, "data-owner-0's raw stream to end", func() bool { return len(s0.Members()) == 0 })
	})

	t.Run("max_members", func(t *testing.T) {
		m0 := member(t, cfg, "data-owner-0", Options{})
		member(t, cfg, "data-owner-1", Options{})
		short := n.config(t, nil, `"max_members": 2, "connect_timeout": "300ms"`)
		third, err := New(short, "data-owner-2", fast(Options{}))
		require.NoError(t, err)
		t.Cleanup(func() { third.Close() })
		err = third.Connect(ctx)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "max_members")
		assert.Contains(t, err.Error(), `waiting for player "server0"`)
		assert.Contains(t, err.Error(), `waiting for player "server1"`)
		r := sink.wait(t, func(r logRecord) bool {
			return r.msg == "refused a message stream" && r.attrs["peer"] == "data-owner-2"
		})
		assert.Contains(t, r.attrs["error"], "2 data owners the config does not list are connected, the most it allows (max_members)")
		assert.Equal(t, []string{"data-owner-0", "data-owner-1"}, s0.Members())
		// When one leaves, there is room again.
		require.NoError(t, m0.Close())
		waitChange(t, ctx, s0, "data-owner-0 to leave", func() bool { return len(s0.Members()) == 1 })
		waitChange(t, ctx, s1, "data-owner-0 to leave server1", func() bool { return len(s1.Members()) == 1 })
		require.NoError(t, third.Connect(ctx))
		assert.Equal(t, []string{"data-owner-1", "data-owner-2"}, s0.Members())
	})

	t.Run("closed membership", func(t *testing.T) {
		closed := n.config(t, nil, `"open_membership": false`)
		sink := newLogSink()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv, err := New(closed, "server0", Options{Listener: ln, Logger: slog.New(sink)})
		require.NoError(t, err)
		defer srv.Close()
		_, err = New(closed, "data-owner-0", Options{})
		assert.ErrorContains(t, err, "open_membership is off")
		// A data owner that uses an open config against it is refused at
		// the handshake.
		id, err := cfg.LoadIdentity("data-owner-0")
		require.NoError(t, err)
		tc, err := id.ClientTLS("server0")
		require.NoError(t, err)
		local, err := tlsDial(t, srv.Addr().String(), tc)
		require.Error(t, err)
		r := sink.wait(t, func(r logRecord) bool { return r.msg == "refused a connection" && r.attrs["remote"] == local })
		assert.Contains(t, r.attrs["reason"], "open_membership is off")
	})
}

// TestIssue9ReconnectStorm: a data owner that connects, sends, and leaves
// in a loop, half the time closing and half the time crashing, leaves
// nothing behind at the server: no goroutine, no stream, nothing unread,
// no heap.
func TestIssue9ReconnectStorm(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	n.mint(t, "data-owner-0")
	cfg := n.config(t, nil, "")
	ts := n.startAll(t, cfg, fast(Options{}))
	s0 := ts["server0"]
	ctx := testCtx(t)
	round := func(i int) {
		m, err := New(cfg, "data-owner-0", fast(Options{}))
		require.NoError(t, err)
		require.NoError(t, m.Connect(ctx))
		key := transport.Key{Session: "storm", Iteration: uint64(i)}
		require.NoError(t, m.Send(ctx, "server0", key, randomBytes(uint64(i), 10000)))
		// A message the server never reads, under a key every round
		// uses: each connection's replaces the last one's.
		require.NoError(t, m.Send(ctx, "server0", transport.Key{Session: "storm", Edge: 1}, make([]byte, 5000)))
		got, err := s0.Recv(ctx, "data-owner-0", key)
		require.NoError(t, err)
		require.Len(t, got, 10000)
		if i%2 == 0 {
			require.NoError(t, m.Close())
		} else {
			m.kill()
		}
		waitChange(t, ctx, s0, "the data owner to leave", func() bool { return len(s0.Members()) == 0 })
		waitChange(t, ctx, ts["server1"], "the data owner to leave server1", func() bool { return len(ts["server1"].Members()) == 0 })
	}
	round(0) // warm up what gRPC starts once
	before := goroutineIDs()
	heap := heapObjectBytes()
	_, charged := s0.Mailbox().Unread("data-owner-0")
	const rounds = 40
	for i := 1; i <= rounds; i++ {
		round(i)
	}
	waitFor(t, ctx, "the goroutines of the storm to end", func() bool {
		for id := range goroutineIDs() {
			if _, ok := before[id]; !ok {
				return false
			}
		}
		return true
	})
	count, chargedAfter := s0.Mailbox().Unread("data-owner-0")
	assert.Equal(t, 1, count, "the one unread message, replaced by each connection")
	assert.Equal(t, charged, chargedAfter)
	epoch, _ := s0.Mailbox().Epoch("data-owner-0")
	assert.Equal(t, uint64(rounds), epoch, "one epoch per connection")
	assert.Equal(t, 1, s0.in.openStreams(), "server1's")
	after := heapObjectBytes()
	t.Logf("heap: %.2f MiB before %d reconnections, %.2f MiB after", mib(heap), rounds, mib(after))
	assert.Less(t, after, heap+1<<20, "the storm left memory behind")
}

// TestIssue9SendToAMemberThatStopsReading: a server's send to a data
// owner that reads nothing gives up when its context ends, cutting the
// data owner's connection; the data owner dials again and rejoins.
func TestIssue9SendToAMemberThatStopsReading(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	n.mint(t, "data-owner-0")
	cfg := n.config(t, nil, `"max_message_bytes": 1048576`)
	sink := newLogSink()
	s0 := n.start(t, cfg, "server0", fast(Options{Logger: slog.New(sink)}))
	s1 := n.start(t, cfg, "server1", fast(Options{}))
	connectAll(t, map[string]*Transport{"server0": s0, "server1": s1})
	m := member(t, cfg, "data-owner-0", Options{})
	first, _ := s0.Mailbox().Epoch("data-owner-0")

	short, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	defer cancel()
	var err error
	for i := 0; err == nil && i < 1000; i++ { // far more than the data owner's bound and gRPC's windows
		err = s0.Send(short, "data-owner-0", transport.Key{Session: "flood", Iteration: uint64(i)}, make([]byte, 1<<20))
	}
	require.Error(t, err, "a thousand megabytes went to a player that reads nothing")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	sink.wait(t, func(r logRecord) bool { return r.msg == "cut a peer's connection: a send to it did not finish in time" })

	ctx := testCtx(t)
	waitChange(t, ctx, s0, "the data owner to come back", func() bool {
		n, failed := s0.Mailbox().Epoch("data-owner-0")
		return n > first && !failed && s0.Connected("data-owner-0")
	})
	waitChange(t, ctx, m, "the data owner to see server0 back", func() bool { return m.Connected("server0") })
	// What reached the data owner of the flood waits, within its bound,
	// until it is received or its iteration forgotten, as a session
	// forgets a failed round.
	m.Mailbox().Forget("flood", 1000)
	exchange(t, ctx, m, s0, transport.Key{Session: "after"})
}

// TestRestartedPeerIsRedialledWhenItGreets: a player waiting out a long
// reconnection backoff to a lost peer dials it at once when the restarted
// peer greets it, so that a restarted model owner or server is reachable
// both ways as soon as it is up, not after a backoff of up to
// ReconnectMax (here an hour, longer than the test may run).
func TestRestartedPeerIsRedialledWhenItGreets(t *testing.T) {
	n := newNetwork(t, three...)
	cfg := n.config(t, nil, "")
	slow := Options{ReconnectMin: time.Hour, ReconnectMax: time.Hour}
	ts := n.startAll(t, cfg, slow)
	s0 := ts["server0"]
	ctx := testCtx(t)
	exchange(t, ctx, s0, ts["server1"], transport.Key{Session: "s"})

	require.NoError(t, ts["server1"].Close())
	waitChange(t, ctx, s0, "server0 to see server1 gone", func() bool { return !s0.Connected("server1") })

	ln, err := net.Listen("tcp", n.addrs["server1"])
	require.NoError(t, err)
	s1 := n.start(t, cfg, "server1", fast(Options{Listener: ln}))
	require.NoError(t, s1.Connect(ctx)) // greets server0 and server2
	for _, name := range []string{"server0", "server2"} {
		waitChange(t, ctx, ts[name], name+" to redial server1 once greeted", func() bool { return ts[name].Connected("server1") })
	}
	exchange(t, ctx, s0, s1, transport.Key{Session: "s", Iteration: 2})
}
