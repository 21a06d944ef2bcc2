package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
)

var (
	// ErrTooLarge is returned for a message above the config's
	// max_message_bytes, by the sender before sending and by the receiver
	// before allocating.
	ErrTooLarge = errors.New("grpctransport: message too large")
	// ErrPeerClosed is the failure of receives from a player that closed
	// its transport.
	ErrPeerClosed = errors.New("grpctransport: peer closed")
	// ErrPeerLost is the failure of receives from, and sends to, a player
	// whose connection broke.
	ErrPeerLost = errors.New("grpctransport: connection to peer lost")
	// ErrRejected is the failure of a link whose peer refused what was
	// sent to it.
	ErrRejected = errors.New("grpctransport: peer rejected the stream")
	// ErrProtocol is returned for a peer that breaks the wire protocol.
	ErrProtocol = errors.New("grpctransport: protocol violation")
)

// InsecureWarning is what a Transport in insecure mode logs and returns
// from Warnings. Commands should print it where the user sees it.
const InsecureWarning = "INSECURE: players talk in plaintext without authentication; " +
	"anyone on the network can read the shares and impersonate a player. " +
	"Use this only for trying things out."

// PendingMessages is how many max_message_bytes a peer may have waiting,
// delivered but not yet received or being reassembled, counted as
// transport.Charge says. Past that, this player stops reading the peer's
// stream until it has received enough (transport.Mailbox.Deliver), and
// gRPC's flow control holds the peer's sends: a peer running iterations
// ahead is slowed down, and cannot fill this player's memory.
const PendingMessages = 4

// PendingCount is how many messages, whatever their size, a peer may
// have waiting, delivered but not yet received, or being assembled. Past
// it this player stops reading the peer's stream as past PendingMessages:
// a peer cannot fill its memory with small or empty messages either.
const PendingCount = 4096

// ConnectError reports a player that could not be reached, or that
// refused this one, while connecting.
type ConnectError struct {
	// Player and Address name the peer.
	Player, Address string
	// Err is the last error seen.
	Err error
}

// Error formats the error as `grpctransport: waiting for player "P" at
// ADDR: cause`.
func (e *ConnectError) Error() string {
	return fmt.Sprintf("grpctransport: waiting for player %q at %s: %v", e.Player, e.Address, e.Err)
}

// Unwrap returns the cause.
func (e *ConnectError) Unwrap() error { return e.Err }

// Options tunes a Transport. The zero value is ready to use.
type Options struct {
	// Listener is where the player's server accepts peers. Nil means
	// listen on the player's listen address from the config. Tests pass a
	// listener on 127.0.0.1:0. The Transport closes it.
	Listener net.Listener
	// Logger receives connection events with a "player" attribute. Nil
	// means silent.
	Logger *slog.Logger
	// ChunkBytes is the largest piece of a message sent in one frame; zero
	// means MaxChunkBytes, the most allowed.
	ChunkBytes int
	// CloseTimeout bounds how long Close waits for peers to take the
	// messages already sent; zero means 5 s.
	CloseTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake (and the HTTP/2 preface
	// after it) of each incoming connection; zero means 5 s. A connection
	// that has not finished by then is closed, and logged. Close does not
	// wait for it.
	HandshakeTimeout time.Duration
	// KeepaliveTime and KeepaliveTimeout set how often an idle connection
	// is probed and how long a probe may go unanswered before the peer
	// counts as lost; zero means 10 s each. gRPC raises a KeepaliveTime
	// below 10 s to 10 s.
	KeepaliveTime, KeepaliveTimeout time.Duration
}

// Transport is one player's endpoint of a gRPC network of players. It
// serves its peers on one address and dials each peer once; every peer
// link carries one long-lived stream of frames. It implements
// transport.Transport and is safe for concurrent use.
//
// Its life: New starts the server (so peers may connect in any order),
// Connect waits until every peer answers, Send and Recv move messages,
// Close drains and stops everything. A Transport that lost a peer stays
// failed for that peer; start a new one to retry.
type Transport struct {
	cfg         *players.Config
	self        string
	insecure    bool
	fingerprint [32]byte
	log         *slog.Logger
	chunk       int
	closeWait   time.Duration

	box      *transport.Mailbox
	gate     *gate // the server's listener
	refusals *refusalLog
	server   *grpc.Server
	links    map[string]*link
	stats    map[string]*linkStats
	in       inbound // the peers' streams to this player

	life   context.Context // canceled at the end of Close; parent of all streams
	cancel context.CancelFunc
	// stopping is canceled as soon as Close starts, to cut short Connect
	// and Sends waiting to start.
	stopping context.Context
	stop     context.CancelFunc

	mu      sync.Mutex // guards closing and wg.Add
	closing bool
	wg      sync.WaitGroup // serve goroutine and stream monitors
	once    sync.Once
}

var _ transport.Transport = (*Transport)(nil)

// link is the outgoing side of the connection to one peer.
type link struct {
	name, addr string
	conn       *grpc.ClientConn

	// sem is held by whoever uses the stream: one Send, Connect or Close
	// at a time. It guards stream and buf.
	sem    chan struct{}
	stream grpc.ClientStream
	buf    []byte

	// goodbye is set when the peer closed its own stream to us, so that
	// the end of ours is expected.
	goodbye atomic.Bool
	// lost is set when a stream to or from the peer broke without an
	// orderly close.
	lost atomic.Bool

	mu          sync.Mutex
	err         error              // the link's failure, set once
	refusal     error              // a TLS-level refusal retrying cannot mend
	cancel      context.CancelFunc // cancels the stream
	monitorDone chan struct{}      // closed when the stream's monitor exits
}

// linkStats counts payload bytes and messages on one link.
type linkStats struct {
	sentMessages, sentBytes atomic.Uint64
	recvMessages, recvBytes atomic.Uint64
}

// LinkStats counts the messages and payload bytes exchanged with one peer
// (frame headers and TLS overhead excluded).
type LinkStats struct {
	SentMessages, SentBytes uint64
	RecvMessages, RecvBytes uint64
}

// New makes player self's endpoint and starts serving its peers. With TLS
// (the default) it loads and checks self's certificate, key and CA from
// cfg first, so configuration errors surface here, naming the files.
func New(cfg *players.Config, self string, opts Options) (_ *Transport, err error) {
	if opts.Listener != nil {
		defer func() {
			if err != nil {
				opts.Listener.Close()
			}
		}()
	}
	if cfg == nil {
		return nil, errors.New("grpctransport: nil config")
	}
	if _, err := cfg.Player(self); err != nil {
		return nil, fmt.Errorf("grpctransport: %w", err)
	}
	chunk := opts.ChunkBytes
	switch {
	case chunk == 0:
		chunk = MaxChunkBytes
	case chunk < 0 || chunk > MaxChunkBytes:
		return nil, fmt.Errorf("grpctransport: Options.ChunkBytes %d out of range 1..%d", chunk, MaxChunkBytes)
	}
	durations := []*time.Duration{&opts.CloseTimeout, &opts.KeepaliveTime, &opts.KeepaliveTimeout, &opts.HandshakeTimeout}
	defaults := []time.Duration{5 * time.Second, 10 * time.Second, 10 * time.Second, 5 * time.Second}
	for i, d := range durations {
		if *d < 0 {
			return nil, fmt.Errorf("grpctransport: negative duration %s in Options", *d)
		}
		if *d == 0 {
			*d = defaults[i]
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("player", self)

	t := &Transport{
		cfg:         cfg,
		self:        self,
		insecure:    cfg.Insecure(),
		fingerprint: cfg.Fingerprint(),
		log:         log,
		chunk:       chunk,
		closeWait:   opts.CloseTimeout,
		box:         transport.NewMailbox(),
		refusals:    newRefusalLog(log),
		links:       make(map[string]*link),
		stats:       make(map[string]*linkStats),
	}
	for _, n := range cfg.Names() {
		t.stats[n] = new(linkStats)
	}
	// A peer may run ahead, but not fill this player's memory with
	// messages nobody asks for.
	t.box.SetPendingLimit(PendingMessages * cfg.MaxMessageBytes())
	t.box.SetPendingCount(PendingCount)

	var serverCreds credentials.TransportCredentials
	clientCreds := make(map[string]credentials.TransportCredentials)
	if t.insecure {
		log.Warn(InsecureWarning)
		serverCreds = insecure.NewCredentials()
		for _, n := range cfg.Names() {
			clientCreds[n] = insecure.NewCredentials()
		}
	} else {
		id, err := cfg.LoadIdentity(self)
		if err != nil {
			return nil, fmt.Errorf("grpctransport: player %q: %w", self, err)
		}
		serverCreds = credentials.NewTLS(id.ServerTLS())
		for _, n := range cfg.Names() {
			if n == self {
				continue
			}
			tc, err := id.ClientTLS(n)
			if err != nil {
				return nil, fmt.Errorf("grpctransport: player %q: %w", self, err)
			}
			clientCreds[n] = credentials.NewTLS(tc)
		}
	}

	for _, n := range cfg.Names() {
		if n == self {
			continue
		}
		addr, _ := cfg.Address(n)
		l := &link{name: n, addr: addr, sem: make(chan struct{}, 1)}
		clientCreds[n] = &linkCreds{TransportCredentials: clientCreds[n], l: l}
		conn, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(clientCreds[n]),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: 5 * time.Second,
			}),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: opts.KeepaliveTime, Timeout: opts.KeepaliveTimeout, PermitWithoutStream: true}),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxWireMessage), grpc.MaxCallSendMsgSize(maxWireMessage)),
			grpc.WithInitialWindowSize(flowWindow(cfg)), grpc.WithInitialConnWindowSize(flowWindow(cfg)), // window.go
			grpc.WithUserAgent("shareflow/"+self),
		)
		if err != nil {
			t.closeConns()
			return nil, fmt.Errorf("grpctransport: player %q: client for player %q at %s: %w", self, n, addr, err)
		}
		l.conn = conn
		t.links[n] = l
	}

	lis := opts.Listener
	if lis == nil {
		addr, _ := cfg.ListenAddress(self)
		var err error
		lis, err = net.Listen("tcp", addr)
		if err != nil {
			t.closeConns()
			return nil, fmt.Errorf("grpctransport: player %q: listening on %s: %w", self, addr, err)
		}
	}
	t.gate = newGate(lis)
	serverCreds = &guardedCreds{TransportCredentials: serverCreds, gate: t.gate, log: t.refusals, timeout: opts.HandshakeTimeout}
	t.server = grpc.NewServer(
		grpc.Creds(serverCreds),
		grpc.MaxRecvMsgSize(maxWireMessage),
		grpc.MaxSendMsgSize(maxWireMessage),
		grpc.InitialWindowSize(flowWindow(cfg)), grpc.InitialConnWindowSize(flowWindow(cfg)), grpc.MaxConcurrentStreams(maxStreamsPerConn), // window.go
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: opts.KeepaliveTime, Timeout: opts.KeepaliveTimeout}),
		grpc.ConnectionTimeout(opts.HandshakeTimeout),
		grpc.WaitForHandlers(true),
	)
	t.server.RegisterService(&serviceDesc, t)
	t.life, t.cancel = context.WithCancel(context.Background())
	t.stopping, t.stop = context.WithCancel(context.Background())

	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		err := t.server.Serve(t.gate)
		if err != nil && !t.isClosing() {
			err = fmt.Errorf("grpctransport: server of player %q on %s stopped: %w", self, lis.Addr(), err)
			log.Error("server stopped", "error", err)
			t.box.Fail(err)
		}
	}()
	log.Debug("serving", "address", lis.Addr().String(), "insecure", t.insecure)
	return t, nil
}

// Addr returns the address the player's server listens on.
func (t *Transport) Addr() net.Addr { return t.gate.Addr() }

// Mailbox returns the mailbox incoming messages land in, for callers that
// forget finished iterations.
func (t *Transport) Mailbox() *transport.Mailbox { return t.box }

// Warnings returns what the user must be told about this transport: the
// InsecureWarning in insecure mode, nothing otherwise.
func (t *Transport) Warnings() []string {
	if t.insecure {
		return []string{InsecureWarning}
	}
	return nil
}

// Stats returns per-peer counts of messages and payload bytes.
func (t *Transport) Stats() map[string]LinkStats {
	out := make(map[string]LinkStats, len(t.stats))
	for n, s := range t.stats {
		out[n] = LinkStats{
			SentMessages: s.sentMessages.Load(), SentBytes: s.sentBytes.Load(),
			RecvMessages: s.recvMessages.Load(), RecvBytes: s.recvBytes.Load(),
		}
	}
	return out
}

// bind returns ctx, canceled also when Close starts.
func (t *Transport) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(t.stopping, func() { cancel(transport.ErrClosed) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

func (t *Transport) isClosing() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closing
}

// Connect waits until every peer answers, up to the config's connect
// timeout (or ctx's deadline, if sooner), and opens the stream to each.
// Peers may start in any order: an unreachable peer is retried with
// backoff. On failure the error names each missing player and its address
// (errors.As finds a *ConnectError). A peer that refuses this player
// (different player list, or this player's certificate), or whose
// certificate this player refuses (another player's, or another CA's: the
// error then matches players.ErrPeerCertificate), fails at once; after a
// refusal at the TLS handshake the peer is not dialled again.
func (t *Transport) Connect(ctx context.Context) error {
	if t.isClosing() {
		return fmt.Errorf("grpctransport: player %q: %w", t.self, transport.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.ConnectTimeout())
	defer cancel()
	ctx, unbind := t.bind(ctx)
	defer unbind()
	start := time.Now()
	names := slices.Sorted(maps.Keys(t.links))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		l := t.links[n]
		wg.Go(func() {
			if err := l.acquire(ctx); err != nil {
				errs[i] = &ConnectError{Player: l.name, Address: l.addr, Err: err}
				return
			}
			defer l.release()
			errs[i] = t.open(ctx, l, start)
		})
	}
	wg.Wait()
	if t.isClosing() {
		return fmt.Errorf("grpctransport: player %q: %w", t.self, transport.ErrClosed)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	t.log.Info("connected to all peers", "peers", len(names), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

func (l *link) acquire(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (l *link) release() { <-l.sem }

// LostPeers returns, sorted, the peers whose connection broke without an
// orderly close: crashed, killed or cut off. When a player fails, the
// others fail after it in a cascade; this names where it started.
func (t *Transport) LostPeers() []string {
	var lost []string
	for name, l := range t.links {
		if l.lost.Load() && !l.goodbye.Load() {
			lost = append(lost, name)
		}
	}
	slices.Sort(lost)
	return lost
}

func (l *link) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// open greets the peer and opens the stream to it, unless that is done.
// The caller holds l.sem.
func (t *Transport) open(ctx context.Context, l *link, start time.Time) error {
	if err := l.failure(); err != nil {
		return err
	}
	if l.stream != nil {
		return nil
	}
	if err := t.greet(ctx, l, start); err != nil {
		return err
	}
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return fmt.Errorf("grpctransport: player %q: %w", t.self, transport.ErrClosed)
	}
	t.wg.Add(1)
	t.mu.Unlock()

	sctx, cancel := context.WithCancel(t.life)
	sctx = metadata.AppendToOutgoingContext(sctx, playerHeader, t.self)
	stream, err := l.conn.NewStream(sctx, &serviceDesc.Streams[0], messageMethod)
	if err != nil {
		cancel()
		t.wg.Done()
		return &ConnectError{Player: l.name, Address: l.addr, Err: fmt.Errorf("opening the message stream: %w", err)}
	}
	done := make(chan struct{})
	l.mu.Lock()
	l.cancel, l.monitorDone = cancel, done
	l.mu.Unlock()
	l.stream = stream
	go t.monitor(l, stream, done)
	t.log.Debug("peer link open", "peer", l.name, "address", l.addr)
	return nil
}

// greet sends Hello until the peer answers or ctx ends.
func (t *Transport) greet(ctx context.Context, l *link, start time.Time) error {
	req, err := (&Hello{Player: t.self, Fingerprint: t.fingerprint}).MarshalBinary()
	if err != nil {
		return err
	}
	ctx = metadata.AppendToOutgoingContext(ctx, playerHeader, t.self)
	wait := 25 * time.Millisecond
	var last error
	for {
		out := new(wrapperspb.BytesValue)
		err := l.conn.Invoke(ctx, helloMethod, &wrapperspb.BytesValue{Value: req}, out)
		if err == nil {
			var h Hello
			if err := h.UnmarshalBinary(out.GetValue()); err != nil {
				return &ConnectError{Player: l.name, Address: l.addr, Err: err}
			}
			if h.Player != l.name {
				return &ConnectError{Player: l.name, Address: l.addr, Err: fmt.Errorf("the address answers as player %q", h.Player)}
			}
			if h.Fingerprint != t.fingerprint {
				return &ConnectError{Player: l.name, Address: l.addr, Err: errors.New("the peer runs with a different player list (config fingerprints differ)")}
			}
			return nil
		}
		if r := l.refused(); r != nil {
			return t.giveUp(l, r)
		}
		switch status.Code(err) {
		case codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition, codes.InvalidArgument, codes.Unimplemented:
			return &ConnectError{Player: l.name, Address: l.addr, Err: fmt.Errorf("refused by the peer: %w", err)}
		}
		// Keep the most telling error: a connection error beats the
		// deadline that cut the last attempt short.
		if last == nil || ctx.Err() == nil {
			last = err
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return &ConnectError{Player: l.name, Address: l.addr, Err: fmt.Errorf("no answer within %s: %w (last error: %v)", time.Since(start).Round(time.Millisecond), context.Cause(ctx), last)}
		case <-timer.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// giveUp fails the link to l for good after a refusal at the TLS level,
// and closes its connection so that gRPC stops redialling. The caller
// holds l.sem.
func (t *Transport) giveUp(l *link, refusal error) error {
	err := &ConnectError{Player: l.name, Address: l.addr, Err: refusal}
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	first := l.err
	l.mu.Unlock()
	l.conn.Close()
	t.log.Warn("gave up on peer at the TLS handshake", "peer", l.name, "address", l.addr, "error", refusal)
	return first
}

// monitor waits for the end of the stream to l. The server never sends on
// it, so its end means the link is over: closed by us, closed or refused
// by the peer, or broken. Unless we are closing, receives from the peer
// then fail.
func (t *Transport) monitor(l *link, stream grpc.ClientStream, done chan struct{}) {
	defer t.wg.Done()
	defer close(done)
	err := stream.RecvMsg(new(wrapperspb.BytesValue))
	if t.isClosing() {
		return
	}
	switch {
	case err == nil:
		err = fmt.Errorf("%w: player %q sent on the message stream", ErrProtocol, l.name)
	case errors.Is(err, io.EOF):
		err = fmt.Errorf("%w: player %q ended the stream from %q", ErrPeerClosed, l.name, t.self)
	default:
		switch status.Code(err) {
		case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Unknown:
			err = fmt.Errorf("%w: stream from %q to player %q at %s: %w", ErrPeerLost, t.self, l.name, l.addr, err)
		default:
			err = fmt.Errorf("%w: player %q at %s: %w", ErrRejected, l.name, l.addr, err)
		}
	}
	if l.goodbye.Load() {
		t.log.Debug("peer link closed", "peer", l.name, "error", err)
	} else {
		t.log.Warn("peer link failed", "peer", l.name, "error", err)
		if errors.Is(err, ErrPeerLost) {
			l.lost.Store(true)
		}
	}
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
	t.box.FailFrom(l.name, err)
}

// Send queues payload for player to under key. It connects first if
// Connect has not, and it returns once the message is handed to gRPC.
// That waits for flow control, which holds the sender back while the
// receiver has PendingMessages' worth of its messages unread. ctx bounds
// all of it: connecting, waiting for other Sends to the same player, and
// flow control. A message cannot be abandoned half-sent without breaking
// the stream, so when ctx ends in the middle of one the link is given up
// and fails, as if the peer were lost. Messages above the config's
// max_message_bytes are refused with ErrTooLarge.
func (t *Transport) Send(ctx context.Context, to string, key transport.Key, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("grpctransport: sending %s to %q: %w", key, to, context.Cause(ctx))
	}
	if t.isClosing() {
		return fmt.Errorf("grpctransport: player %q: %w", t.self, transport.ErrClosed)
	}
	if int64(len(payload)) > t.cfg.MaxMessageBytes() {
		return fmt.Errorf("%w: message %s from %q to %q is %d bytes, above the limit of %d (max_message_bytes)",
			ErrTooLarge, key, t.self, to, len(payload), t.cfg.MaxMessageBytes())
	}
	if len(key.Session) > MaxSessionBytes {
		return fmt.Errorf("grpctransport: sending %s to %q: session id of %d bytes, limit %d", key, to, len(key.Session), MaxSessionBytes)
	}
	if to == t.self {
		return t.box.Deliver(ctx, t.self, key, slices.Clone(payload))
	}
	l, ok := t.links[to]
	if !ok {
		return fmt.Errorf("grpctransport: sending %s from %q: %w: %q", key, t.self, transport.ErrUnknownPlayer, to)
	}
	ctx, unbind := t.bind(ctx)
	defer unbind()
	if err := l.acquire(ctx); err != nil {
		return fmt.Errorf("grpctransport: sending %s to %q: %w", key, to, err)
	}
	defer l.release()
	if t.isClosing() {
		return fmt.Errorf("grpctransport: player %q: %w", t.self, transport.ErrClosed)
	}
	if err := t.open(ctx, l, time.Now()); err != nil {
		return fmt.Errorf("grpctransport: sending %s to %q: %w", key, to, err)
	}
	stop := context.AfterFunc(ctx, func() { t.abandon(l, key, context.Cause(ctx)) })
	defer stop() // a second call, after the one below, does nothing
	total := uint64(len(payload))
	for off := 0; ; {
		n := min(t.chunk, len(payload)-off)
		f := Frame{Key: key, Total: total, Offset: uint64(off), Chunk: payload[off : off+n]}
		var err error
		if l.buf, err = f.AppendBinary(l.buf[:0]); err != nil {
			return fmt.Errorf("grpctransport: sending %s to %q: %w", key, to, err)
		}
		if err := l.stream.SendMsg(&wrapperspb.BytesValue{Value: l.buf}); err != nil {
			return t.sendFailed(l, key, err)
		}
		off += n
		if off == len(payload) {
			break
		}
	}
	if !stop() {
		// ctx ended as the last frame went: the stream is cancelled, and
		// the message may not arrive.
		return t.sendFailed(l, key, context.Cause(ctx))
	}
	s := t.stats[to]
	s.sentMessages.Add(1)
	s.sentBytes.Add(total)
	return nil
}

// abandon gives up the link to l in the middle of sending key, because the
// Send's context ended: it records why and cancels the stream, which ends
// a SendMsg held by flow control.
func (t *Transport) abandon(l *link, key transport.Key, cause error) {
	if t.isClosing() {
		return
	}
	l.mu.Lock()
	if l.err == nil {
		l.err = fmt.Errorf("%w: gave up sending %s to player %q at %s in the middle of the message: %w", ErrPeerLost, key, l.name, l.addr, cause)
	}
	cancel := l.cancel
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// sendFailed turns a failed SendMsg into the link's failure. On io.EOF
// the stream ended and the reason is in its status, which the monitor
// receives.
func (t *Transport) sendFailed(l *link, key transport.Key, err error) error {
	l.mu.Lock()
	done := l.monitorDone
	l.mu.Unlock()
	if errors.Is(err, io.EOF) && done != nil {
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}
	if t.isClosing() {
		return fmt.Errorf("grpctransport: player %q: %w", t.self, transport.ErrClosed)
	}
	l.mu.Lock()
	if l.err == nil {
		l.err = fmt.Errorf("%w: sending to player %q at %s: %w", ErrPeerLost, l.name, l.addr, err)
	}
	lerr := l.err
	l.mu.Unlock()
	t.box.FailFrom(l.name, lerr)
	return fmt.Errorf("grpctransport: sending %s to %q: %w", key, l.name, lerr)
}

// Recv waits for the message player from sent under key. It fails when
// ctx ends, when the transport closes, and promptly when the link to from
// breaks or from closes before sending it.
func (t *Transport) Recv(ctx context.Context, from string, key transport.Key) ([]byte, error) {
	if from != t.self && t.links[from] == nil {
		return nil, fmt.Errorf("grpctransport: receiving %s at %q: %w: %q", key, t.self, transport.ErrUnknownPlayer, from)
	}
	return t.box.Recv(ctx, from, key)
}

// Close fails pending receives with transport.ErrClosed, lets peers take
// the messages already sent (up to Options.CloseTimeout), then stops the
// server and every connection, including incoming ones still in their
// handshake. It waits for all the transport's goroutines to end. Calling
// Close again does nothing.
func (t *Transport) Close() error {
	t.once.Do(func() {
		t.mu.Lock()
		t.closing = true
		t.mu.Unlock()
		t.stop()
		t.box.Fail(transport.ErrClosed)

		deadline := time.Now().Add(t.closeWait)
		var wg sync.WaitGroup
		for _, l := range t.links {
			wg.Go(func() { l.drain(deadline) })
		}
		wg.Wait()
		// Connections still in their handshake are closed here rather
		// than waited for by server.Stop.
		t.gate.shut()
		t.closeConns()
		t.server.Stop()
		t.cancel()
		t.wg.Wait()
		t.refusals.flush()
		t.log.Debug("closed")
	})
	return nil
}

// drain half-closes the stream to the peer and waits, until deadline, for
// the peer to confirm it has taken every frame; then it cancels the
// stream.
func (l *link) drain(deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if l.acquire(ctx) == nil {
		l.mu.Lock()
		done, failed := l.monitorDone, l.err != nil
		l.mu.Unlock()
		if l.stream != nil && !failed {
			if l.stream.CloseSend() == nil {
				select {
				case <-done:
				case <-ctx.Done():
				}
			}
		}
		l.release()
	}
	l.mu.Lock()
	if l.cancel != nil {
		l.cancel()
	}
	l.mu.Unlock()
}

func (t *Transport) closeConns() {
	for _, l := range t.links {
		l.conn.Close()
	}
}
