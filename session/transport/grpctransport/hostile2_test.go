package grpctransport

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
)

// TestIssue8ConnectionsAndHellosOfAPlayerAreBounded: a client holding
// data-owner-0's valid certificate opens 40 connections to server0 and,
// on each, four Hellos announced at the largest gRPC message and never
// finished (the reviewer's attack took 163 MiB of server0's heap). Past
// the TLS handshake a player holds at most MaxConnsPerPlayer connections,
// the newest closing its oldest, and at most maxHellosPerPlayer Hellos in
// progress, the others refused before gRPC reads them; those that are
// taken end at their deadline (HandshakeTimeout). server0's heap stays
// within what that allows, server1's messages arrive meanwhile, and
// nothing of the attack stays once it is over.
func TestIssue8ConnectionsAndHellosOfAPlayerAreBounded(t *testing.T) {
	const maxMessage = 2 << 20
	const helloDeadline = 2 * time.Second
	n := newNetwork(t, "server0", "server1", "data-owner-0")
	cfg := n.config(t, nil, fmt.Sprintf(`"max_message_bytes": %d`, maxMessage))
	sink := newLogSink()
	victim := n.start(t, cfg, "server0", Options{Logger: slog.New(sink), HandshakeTimeout: helloDeadline})
	legit := n.start(t, cfg, "server1", Options{})
	ctx := testCtx(t)
	addr := victim.Addr().String()
	box := victim.Mailbox()
	var seq uint64
	exchange := func(what string) {
		t.Helper()
		key := transport.Key{Session: "legit", Edge: seq}
		payload := randomBytes(seq, maxMessage/2)
		seq++
		require.NoError(t, legit.Send(ctx, "server0", key, payload), what)
		got, err := box.Recv(ctx, "server1", key)
		require.NoError(t, err, what)
		require.True(t, bytes.Equal(payload, got), "%s: message %s garbled", what, key)
	}
	exchange("before the attack")
	baseline := heapObjectBytes()

	const conns, hellos = 40, 4
	var attack []*h2Conn
	for range conns {
		h := dialH2(t, ctx, cfg, "data-owner-0", addr)
		for range hellos {
			_ = h.halfMessage(helloMethod, "data-owner-0", maxWireMessage, maxWireMessage-1024)
		}
		h.sync(ctx) // server0 has read it all, or closed the connection
		select {
		case <-h.done: // closed by server0: let go of it, so as not to count it in the heap
			h.close()
		default:
			attack = append(attack, h)
		}
	}
	defer func() {
		for _, h := range attack {
			h.close()
		}
	}()
	during := heapObjectBytes()
	exchange("during the attack")
	assert.LessOrEqual(t, victim.gate.connsOf("data-owner-0"), MaxConnsPerPlayer)
	assert.LessOrEqual(t, victim.hellos.inProgress("data-owner-0"), maxHellosPerPlayer)
	// What the documentation allows a player besides its message stream:
	// its Hellos in progress, each at most one gRPC message, and the
	// buffers of its connections (here those of the attacker's end too,
	// which shares this heap): 4 MiB for them is generous.
	bound := uint64(maxHellosPerPlayer*maxWireMessage + 4<<20)
	t.Logf("heap: %.1f MiB before %d connections × %d half-sent Hellos, %.1f MiB during them (bound %.1f MiB over the baseline)",
		mib(baseline), conns, hellos, mib(during), mib(bound))
	assert.Less(t, during, baseline+bound)

	closed := sink.find(func(r logRecord) bool { return r.msg == "closed a connection" })
	require.NotEmpty(t, closed, "the connections past MaxConnsPerPlayer are closed, and logged")
	assert.Equal(t, "data-owner-0", closed[0].attrs["peer"])
	assert.Contains(t, closed[0].attrs["reason"], "a player may hold 2 (MaxConnsPerPlayer)")
	assert.Contains(t, closed[0].attrs["remote"], "127.0.0.1:")
	refused := sink.find(func(r logRecord) bool {
		return r.msg == "refused a connection" && strings.Contains(r.attrs["reason"], "Hellos are in progress")
	})
	require.NotEmpty(t, refused, "Hellos past maxHellosPerPlayer are refused, and logged")
	assert.Contains(t, refused[0].attrs["remote"], "127.0.0.1:")
	assert.LessOrEqual(t, len(sink.find(func(r logRecord) bool { return r.level >= slog.LevelWarn })), 2*refusalBurst,
		"the lines are rate-limited")

	// The Hellos taken end at their deadline, and say so.
	waitFor(t, ctx, "the half-sent Hellos to reach their deadline", func() bool {
		return victim.hellos.inProgress("data-owner-0") == 0
	})
	sink.wait(t, func(r logRecord) bool {
		return r.msg == "refused a connection" && r.attrs["reason"] == "no whole Hello within 2s (HandshakeTimeout)"
	})
	for _, h := range attack {
		h.close()
	}
	waitFor(t, ctx, "server0 to see the attacker's connections closed", func() bool {
		return victim.gate.connsOf("data-owner-0") == 0
	})
	exchange("after the attack")
	after := heapObjectBytes()
	t.Logf("heap: %.1f MiB after the attack", mib(after))
	assert.Less(t, after, baseline+4<<20, "the attack left memory behind")
}

// TestIssue8RefusalsAfterTLSAreRateLimited: 500 second message streams
// under server1's identity and 500 Hellos claiming to be server1 with
// data-owner-0's certificate made 1000 warnings in a tenth of a second,
// and the Hello refusals did not say where they came from. They go
// through the refusal limiter now, which logs refusalBurst lines and
// counts the rest (its clock is frozen here, so no tokens come back),
// and every line names the remote address.
func TestIssue8RefusalsAfterTLSAreRateLimited(t *testing.T) {
	n := newNetwork(t, "server0", "server1", "data-owner-0")
	cfg := n.config(t, nil, "")
	sink := newLogSink()
	victim := n.start(t, cfg, "server0", Options{Logger: slog.New(sink)})
	legit := n.start(t, cfg, "server1", Options{})
	freeze(victim.refusals)
	ctx := testCtx(t)
	addr := victim.Addr().String()
	key := transport.Key{Session: "s"}
	require.NoError(t, legit.Send(ctx, "server0", key, []byte("hello")), "server1's stream is open")

	const each = 500
	second := dialAs(t, cfg, "server1", addr)
	for i := range each {
		s, err := openStream(ctx, second, "server1")
		require.NoError(t, err)
		err = s.RecvMsg(new(inMsg))
		require.Equal(t, codes.AlreadyExists, status.Code(err), "stream %d: %v", i, err)
	}
	impostor := dialAs(t, cfg, "data-owner-0", addr)
	req := &Hello{Player: "server1", Fingerprint: cfg.Fingerprint()}
	for i := range each {
		hctx := metadata.AppendToOutgoingContext(ctx, playerHeader, "server1")
		err := impostor.Invoke(hctx, helloMethod, req, new(inMsg))
		require.Equal(t, codes.PermissionDenied, status.Code(err), "hello %d: %v", i, err)
	}
	got, err := victim.Recv(ctx, "server1", key)
	require.NoError(t, err)
	assert.Equal(t, []byte("hello"), got, "server1's own stream carries on")
	require.NoError(t, victim.Close())

	warnings := sink.find(func(r logRecord) bool { return r.level >= slog.LevelWarn && r.msg != "refused connections not logged" })
	assert.Len(t, warnings, refusalBurst)
	for _, r := range warnings {
		remote := r.attrs["remote"] + r.attrs["address"]
		assert.Contains(t, remote, "127.0.0.1:", "%s: %v", r.msg, r.attrs)
	}
	summary := sink.find(func(r logRecord) bool { return r.msg == "refused connections not logged" })
	require.Len(t, summary, 1)
	assert.Equal(t, fmt.Sprint(2*each-refusalBurst), summary[0].attrs["suppressed"])

}

// TestIssue8BrokenStreamsAreRateLimited: a member that connects and
// breaks its stream again and again cannot flood the log with "peer
// stream broken": those lines go through a rate limiter (frozen here),
// and Close counts the ones left out.
func TestIssue8BrokenStreamsAreRateLimited(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	n.mint(t, "data-owner-0")
	cfg := n.config(t, nil, "")
	sink := newLogSink()
	victim := n.start(t, cfg, "server0", Options{Logger: slog.New(sink)})
	freeze(victim.events)
	ctx := testCtx(t)
	const loops = 3 * refusalBurst
	for i := range loops {
		conn := dialAs(t, cfg, "data-owner-0", victim.Addr().String())
		s, err := openStream(ctx, conn, "data-owner-0")
		require.NoError(t, err)
		_, err = s.Header()
		require.NoError(t, err, "loop %d: the stream is accepted", i)
		conn.Close() // no goodbye: the stream breaks
		waitFor(t, ctx, "server0 to see the stream end", func() bool { return victim.in.openStreams() == 0 })
	}
	require.NoError(t, victim.Close())
	broken := sink.find(func(r logRecord) bool { return r.msg == "peer stream broken" })
	assert.Len(t, broken, refusalBurst)
	summary := sink.find(func(r logRecord) bool { return r.msg == "peer stream events not logged" })
	require.Len(t, summary, 1)
	assert.Equal(t, fmt.Sprint(loops-refusalBurst), summary[0].attrs["suppressed"])
}

// TestIssue8FarFutureMessagesAreNotKept: a peer that sends messages under
// the session a player runs but at iterations it will never reach
// (MaxUint64) used to leave them in the mailbox after it left, since
// only the iterations the session forgets are dropped. The mailbox's
// horizon (Horizon) holds them back instead: the first waits for room
// in the stream's handler, so none is stored, and when the peer leaves
// nothing of them stays; its message of the current iteration does.
func TestIssue8FarFutureMessagesAreNotKept(t *testing.T) {
	n := newNetwork(t, "server0", "server1", "data-owner-0")
	cfg := n.config(t, nil, "")
	victim := n.start(t, cfg, "server0", Options{})
	box := victim.Mailbox()
	box.Expect("legit")
	ctx := testCtx(t)
	conn := dialAs(t, cfg, "data-owner-0", victim.Addr().String())
	s, err := openStream(ctx, conn, "data-owner-0")
	require.NoError(t, err)
	require.NoError(t, sendFrame(s, Frame{Key: transport.Key{Session: "legit"}, Total: 1, Chunk: []byte{1}}))
	waitFor(t, ctx, "the message of iteration 0", func() bool {
		count, _ := box.Unread("data-owner-0")
		return count == 1
	})
	const far = 100
	for e := range uint64(far) {
		require.NoError(t, sendFrame(s, Frame{Key: transport.Key{Session: "legit", Iteration: math.MaxUint64, Edge: e}, Total: 100, Chunk: make([]byte, 100)}))
	}
	waitFor(t, ctx, "the far-future messages to be held back, or stored", func() bool {
		count, _ := box.Unread("data-owner-0")
		return box.Waiting() == 1 || count > 1
	})
	count, _ := box.Unread("data-owner-0")
	assert.Equal(t, 1, count, "no far-future message is stored")

	conn.Close()
	waitFor(t, ctx, "server0 to see the stream end", func() bool { return victim.in.openStreams() == 0 })
	waitFor(t, ctx, "the held-back delivery to give up", func() bool { return box.Waiting() == 0 })
	box.Forget("legit", 0)
	count, charged := box.Unread("data-owner-0")
	assert.Zero(t, count, "nothing of the peer stays once the iteration it sent is forgotten")
	assert.Zero(t, charged)
}

// freeze stops the clock of r, so that no tokens come back.
func freeze(r *rateLog) {
	frozen := time.Unix(1, 0)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = func() time.Time { return frozen }
	r.last = frozen
}

// h2Conn is a raw HTTP/2 connection over TLS to a player's server, for
// sending what no gRPC client sends: messages announced and never
// finished. It answers the server's settings and pings, so that the
// server keeps it.
type h2Conn struct {
	t    *testing.T
	c    *tls.Conn
	fr   *http2.Framer
	wmu  sync.Mutex // guards writes to fr
	next uint32     // the next stream's id
	acks chan [8]byte
	done chan struct{} // closed when the server ends the connection
}

// dialH2 connects to the server at addr with player name's certificate
// and waits for the server's settings and connection window. The caller
// closes the connection.
func dialH2(t *testing.T, ctx context.Context, cfg *players.Config, name, addr string) *h2Conn {
	t.Helper()
	id, err := cfg.LoadIdentity(name)
	require.NoError(t, err)
	tc, err := id.ClientTLS("server0")
	require.NoError(t, err)
	tc.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", addr, tc)
	require.NoError(t, err)
	h := &h2Conn{t: t, c: c, fr: http2.NewFramer(c, c), next: 1, acks: make(chan [8]byte, 1), done: make(chan struct{})}
	_, err = c.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	require.NoError(t, h.write(func(fr *http2.Framer) error { return fr.WriteSettings() }))
	ready := make(chan struct{})
	go h.read(ready)
	select {
	case <-ready:
	case <-h.done: // closed at once: the test sees it in what follows
	case <-ctx.Done():
		t.Fatalf("no settings from %s: %v", addr, context.Cause(ctx))
	}
	return h
}

func (h *h2Conn) write(f func(*http2.Framer) error) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return f(h.fr)
}

// read reads the server's frames until the connection ends, answering
// settings and pings; it closes ready once the server's settings and
// connection window have come.
func (h *h2Conn) read(ready chan struct{}) {
	defer close(h.done)
	settings, window := false, false
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				settings = true
				h.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
			}
		case *http2.WindowUpdateFrame:
			window = window || f.StreamID == 0
		case *http2.PingFrame:
			if f.IsAck() {
				h.acks <- f.Data
			} else {
				data := f.Data
				h.write(func(fr *http2.Framer) error { return fr.WritePing(true, data) })
			}
		}
		if settings && window && ready != nil {
			close(ready)
			ready = nil
		}
	}
}

// halfMessage opens a stream to method, claiming to be claim, and sends
// a gRPC message announced at announce bytes of which only send come.
func (h *h2Conn) halfMessage(method, claim string, announce, send int) error {
	id := h.next
	h.next += 2
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "https"}, {":path", method}, {":authority", "server0"},
		{"content-type", "application/grpc+" + codecName}, {"te", "trailers"}, {playerHeader, claim},
	} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			return err
		}
	}
	if err := h.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true})
	}); err != nil {
		return err
	}
	body := make([]byte, 5+send)
	binary.BigEndian.PutUint32(body[1:5], uint32(announce))
	for len(body) > 0 {
		n := min(16<<10, len(body)) // the default largest frame
		if err := h.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, body[:n]) }); err != nil {
			return err
		}
		body = body[n:]
	}
	return nil
}

// sync waits until the server has read everything sent so far, as its
// answer to a ping tells, or has closed the connection.
func (h *h2Conn) sync(ctx context.Context) {
	h.t.Helper()
	if err := h.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{'s', 'y', 'n', 'c'}) }); err != nil {
		<-h.done
		return
	}
	select {
	case <-h.acks:
	case <-h.done:
	case <-ctx.Done():
		h.t.Fatalf("no answer to a ping: %v", context.Cause(ctx))
	}
}

func (h *h2Conn) close() { h.c.Close() }

// TestIssue8SixteenPlayersStartWithoutWarnings: sixteen players on one
// host dial one another at once. With a fixed limit of eight handshakes
// per address they were refused about a hundred times at start, each a
// warning; the limit now scales with the config, and they start without a
// single warning.
func TestIssue8SixteenPlayersStartWithoutWarnings(t *testing.T) {
	names := []string{"server0", "server1", "server2", "model-owner"}
	for i := range 12 {
		names = append(names, players.DataOwner(i))
	}
	n := newNetwork(t, names...)
	cfg := n.config(t, nil, "")
	sink := newLogSink()
	ts := make(map[string]*Transport)
	for _, name := range names {
		ts[name] = n.start(t, cfg, name, Options{Logger: slog.New(sink)})
	}
	connectAll(t, ts)
	warnings := sink.find(func(r logRecord) bool { return r.level >= slog.LevelWarn })
	assert.Empty(t, warnings, "a legitimate start warns of nothing")
}

// TestIssue8HandshakeSlotsAreShared: a client with eight IP addresses
// fills every handshake slot of server0 with connections that never
// speak (HandshakeTimeout is an hour here, so they do not time out). The
// slots were first come, first served: every player's Connect then
// stalled until the attacker's handshakes timed out. Now a connection
// from an address that holds fewer slots takes one from an address that
// holds more, and server1 connects at once.
func TestIssue8HandshakeSlotsAreShared(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	cfg := n.config(t, nil, "")
	victim := n.start(t, cfg, "server0", Options{HandshakeTimeout: time.Hour})
	ctx := testCtx(t)
	var attack []net.Conn
	defer func() {
		for _, c := range attack {
			c.Close()
		}
	}()
	const addrs = 8
	for i := range MaxHandshakes {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%addrs))}}
		c, err := d.DialContext(ctx, "tcp", victim.Addr().String())
		if err != nil {
			t.Skipf("this host cannot dial from 127.0.0.%d: %v", 2+i%addrs, err)
		}
		attack = append(attack, c)
	}
	waitFor(t, ctx, "the attacker to hold every handshake slot", func() bool { return victim.gate.handshakes() == MaxHandshakes })

	legit := n.start(t, cfg, "server1", Options{})
	connectAll(t, map[string]*Transport{"server0": victim, "server1": legit})
	assert.Equal(t, MaxHandshakes-1, victim.gate.handshakes(), "server1's handshake took the slot of one of the attacker's")
}

// handshakes returns how many connections are in their handshake.
func (g *gate) handshakes() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.active
}

// TestHelloSlotsComeBack: a Hello that was answered gives its slot back at
// once, so that a player greeting again and again (as a reconnecting one
// does) is never refused, and no Hello is logged as late.
func TestHelloSlotsComeBack(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	cfg := n.config(t, nil, "")
	sink := newLogSink()
	s0 := n.start(t, cfg, "server0", Options{Logger: slog.New(sink), HandshakeTimeout: time.Second})
	ctx := testCtx(t)
	conn := dialAs(t, cfg, "server1", s0.Addr().String())
	req := &Hello{Player: "server1", Fingerprint: cfg.Fingerprint()}
	for i := range 5 * maxHellosPerPlayer {
		hctx := metadata.AppendToOutgoingContext(ctx, playerHeader, "server1")
		require.NoError(t, conn.Invoke(hctx, helloMethod, req, new(inMsg)), "hello %d", i)
		waitFor(t, ctx, "the Hello's slot to come back", func() bool { return s0.hellos.inProgress("server1") == 0 })
	}
	require.NoError(t, s0.Close())
	assert.Empty(t, sink.find(func(r logRecord) bool { return r.level >= slog.LevelWarn }))
}
