package grpctransport

import (
	"context"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
)

var (
	// ErrTooLarge is returned for a message above the config's
	// max_message_bytes, by the sender before sending and by the receiver
	// before allocating.
	ErrTooLarge = errors.New("grpctransport: message too large")
	// ErrPeerClosed is the failure of receives from a player that closed
	// its transport. It matches transport.ErrPeerGone.
	ErrPeerClosed error = &goneError{"grpctransport: peer closed"}
	// ErrPeerLost is the failure of receives from, and sends to, a player
	// whose connection broke. It matches transport.ErrPeerGone.
	ErrPeerLost error = &goneError{"grpctransport: connection to peer lost"}
	// ErrRejected is the failure of a link whose peer refused what was
	// sent to it.
	ErrRejected = errors.New("grpctransport: peer rejected the stream")
	// ErrProtocol is returned for a peer that breaks the wire protocol.
	ErrProtocol = errors.New("grpctransport: protocol violation")
)

// goneError is a sentinel error that also matches transport.ErrPeerGone.
type goneError struct{ msg string }

func (e *goneError) Error() string { return e.msg }

// Is reports whether target is transport.ErrPeerGone.
func (e *goneError) Is(target error) bool { return target == transport.ErrPeerGone }

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

// Horizon is how many iterations of a session a peer's messages may be
// ahead of this player (transport.Mailbox.SetHorizon): past the first
// iteration it has not forgotten, or the last it asked for a message of.
// A peer further ahead is held back like one past PendingMessages; a
// message under an iteration this player will never reach never enters
// its mailbox. So what a peer leaves unread is within the iterations the
// player's session is about to run, and forgotten with them.
const Horizon = 4

// ConnectError reports a player that could not be reached, or that
// refused this one, while connecting.
type ConnectError struct {
	// Player and Address name the peer.
	Player, Address string
	// Err is the last error seen.
	Err error
}

// Error formats the error as `grpctransport: waiting for player "P" at
// ADDR: cause`, or, for a player that only dials out (no Address),
// `grpctransport: waiting for player "P" to dial in: cause`.
func (e *ConnectError) Error() string {
	if e.Address == "" {
		return fmt.Sprintf("grpctransport: waiting for player %q to dial in: %v", e.Player, e.Err)
	}
	return fmt.Sprintf("grpctransport: waiting for player %q at %s: %v", e.Player, e.Address, e.Err)
}

// Unwrap returns the cause.
func (e *ConnectError) Unwrap() error { return e.Err }

// Options tunes a Transport. The zero value is ready to use.
type Options struct {
	// Listener is where the player's server accepts peers. Nil means
	// listen on the player's listen address from the config. Tests pass a
	// listener on 127.0.0.1:0. The Transport closes it. A player that
	// only dials out takes none.
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
	// after it) of each incoming connection, and the arrival of each Hello
	// a peer sends; zero means 5 s. A connection that has not finished its
	// handshake by then is closed, a Hello's stream ended, and either is
	// logged. Close does not wait for them.
	HandshakeTimeout time.Duration
	// KeepaliveTime and KeepaliveTimeout set how often an idle connection
	// is probed and how long a probe may go unanswered before the peer
	// counts as lost; zero means 10 s each. gRPC raises a KeepaliveTime
	// below 10 s to 10 s.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the wait before each attempt to
	// reconnect a link that was lost: it starts at ReconnectMin and
	// doubles up to ReconnectMax, and each wait is drawn uniformly from
	// the upper half of its bound, so that the players that lost a peer
	// at the same moment do not all call it at once when it comes back.
	// Zero means 250 ms and 30 s.
	ReconnectMin, ReconnectMax time.Duration
	// Rand draws those waits; nil means a ChaCha8 generator seeded from
	// crypto/rand. The Transport uses it under a lock of its own, so give
	// each Transport its own.
	Rand *rand.Rand
}

// Transport is one player's endpoint of a gRPC network of players. It
// implements transport.Transport and transport.Membership, and is safe
// for concurrent use.
//
// A player with an address in the config serves its peers there and
// dials each peer with an address once; every such link carries one
// long-lived stream of frames, one way. A player without one (a data
// owner the config does not list, or one listed without an address)
// listens nowhere: it dials every player with an address, and each of
// those links carries frames both ways, so that the player's own
// connections bring it its messages.
//
// Its life: New starts the server (so peers may connect in any order),
// Connect waits until every listed peer answers, Send and Recv move
// messages, Close drains and stops everything. A link that is lost, or
// whose peer closed, is dialled again in the background with backoff
// (Options.ReconnectMin); a peer that dials in may leave and come back.
// Each comeback starts a new epoch of the peer's messages (see
// transport.Mailbox.Rejoin).
type Transport struct {
	cfg         *players.Config
	self        string
	dialOnly    bool // self listens nowhere
	insecure    bool
	fingerprint [32]byte
	log         *slog.Logger
	chunk       int
	closeWait   time.Duration

	reconnectMin, reconnectMax time.Duration
	randMu                     sync.Mutex
	rand                       *rand.Rand

	box      *transport.Mailbox
	gate     *gate    // the server's listener; nil for a player that only dials out
	refusals *rateLog // refused connections, Hellos and streams
	events   *rateLog // streams of peers that broke or were refused
	hellos   helloCount
	helloMax time.Duration // how long a Hello may take to arrive
	server   *grpc.Server  // nil for a player that only dials out
	links    map[string]*link
	stats    statsTable
	in       inbound           // the peers' streams to this player
	changed  transport.Changes // Members or Connected changed

	life   context.Context // canceled at the end of Close; parent of all streams
	cancel context.CancelFunc
	// stopping is canceled as soon as Close starts, to cut short Connect,
	// reconnections and Sends waiting to start.
	stopping context.Context
	stop     context.CancelFunc

	mu      sync.Mutex // guards closing and wg.Add
	closing bool
	wg      sync.WaitGroup // serve goroutine, stream monitors, reconnections
	once    sync.Once
}

var (
	_ transport.Transport  = (*Transport)(nil)
	_ transport.Membership = (*Transport)(nil)
)

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

// statsTable holds the counts of every peer that exchanged messages. The
// zero value is ready to use; it is safe for concurrent use. Its entries
// are bounded by the names the config admits: listed players, and data
// owners with certificates from the CA.
type statsTable struct {
	mu sync.Mutex
	m  map[string]*linkStats
}

// of returns the counts of peer, made on first use.
func (s *statsTable) of(peer string) *linkStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]*linkStats)
	}
	st, ok := s.m[peer]
	if !ok {
		st = new(linkStats)
		s.m[peer] = st
	}
	return st
}

// New makes player self's endpoint and, for a player with an address,
// starts serving its peers. self is a player of cfg, or a data owner cfg
// admits without listing it (open membership, see players.Config.Admits).
// With TLS (the default) it loads and checks self's certificate, key and
// CA from cfg first, so configuration errors surface here, naming the
// files.
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
	if err := cfg.Admits(self); err != nil {
		if _, perr := cfg.Player(self); players.RoleOf(self) != players.RoleDataOwner {
			err = perr // names the players of the config
		}
		return nil, fmt.Errorf("grpctransport: %w", err)
	}
	dialOnly := !cfg.Listens(self)
	if dialOnly && opts.Listener != nil {
		return nil, fmt.Errorf("grpctransport: player %q has no address in the config, so it only dials out and takes no Options.Listener", self)
	}
	chunk := opts.ChunkBytes
	switch {
	case chunk == 0:
		chunk = MaxChunkBytes
	case chunk < 0 || chunk > MaxChunkBytes:
		return nil, fmt.Errorf("grpctransport: Options.ChunkBytes %d out of range 1..%d", chunk, MaxChunkBytes)
	}
	durations := []*time.Duration{&opts.CloseTimeout, &opts.KeepaliveTime, &opts.KeepaliveTimeout, &opts.HandshakeTimeout, &opts.ReconnectMin, &opts.ReconnectMax}
	defaults := []time.Duration{5 * time.Second, 10 * time.Second, 10 * time.Second, 5 * time.Second, 250 * time.Millisecond, 30 * time.Second}
	for i, d := range durations {
		if *d < 0 {
			return nil, fmt.Errorf("grpctransport: negative duration %s in Options", *d)
		}
		if *d == 0 {
			*d = defaults[i]
		}
	}
	if opts.ReconnectMax < opts.ReconnectMin {
		return nil, fmt.Errorf("grpctransport: Options.ReconnectMax %s is below ReconnectMin %s", opts.ReconnectMax, opts.ReconnectMin)
	}
	rng := opts.Rand
	if rng == nil {
		var seed [32]byte
		if _, err := cryptorand.Read(seed[:]); err != nil {
			return nil, fmt.Errorf("grpctransport: seeding the reconnection jitter: %w", err)
		}
		rng = rand.New(rand.NewChaCha8(seed))
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("player", self)

	t := &Transport{
		cfg:          cfg,
		self:         self,
		dialOnly:     dialOnly,
		insecure:     cfg.Insecure(),
		fingerprint:  cfg.Fingerprint(),
		log:          log,
		chunk:        chunk,
		closeWait:    opts.CloseTimeout,
		reconnectMin: opts.ReconnectMin,
		reconnectMax: opts.ReconnectMax,
		rand:         rng,
		box:          transport.NewMailbox(),
		refusals:     newRefusalLog(log),
		events:       newRateLog(log, "peer stream events"),
		helloMax:     opts.HandshakeTimeout,
		links:        make(map[string]*link),
	}
	t.in.maxMembers = cfg.MaxMembers()
	t.life, t.cancel = context.WithCancel(context.Background())
	t.stopping, t.stop = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			t.stop()
			t.cancel()
		}
	}()
	// A peer may run ahead, but not fill this player's memory with
	// messages nobody asks for.
	t.box.SetPendingLimit(PendingMessages * cfg.MaxMessageBytes())
	t.box.SetPendingCount(PendingCount)
	t.box.SetHorizon(Horizon)

	var peers []string // the players this one dials
	for _, n := range cfg.Names() {
		if n != self && cfg.Listens(n) {
			peers = append(peers, n)
		}
	}
	var serverCreds credentials.TransportCredentials
	clientCreds := make(map[string]credentials.TransportCredentials)
	if t.insecure {
		log.Warn(InsecureWarning)
		serverCreds = insecure.NewCredentials()
		for _, n := range peers {
			clientCreds[n] = insecure.NewCredentials()
		}
	} else {
		id, err := cfg.LoadIdentity(self)
		if err != nil {
			return nil, fmt.Errorf("grpctransport: player %q: %w", self, err)
		}
		serverCreds = credentials.NewTLS(id.ServerTLS())
		for _, n := range peers {
			tc, err := id.ClientTLS(n)
			if err != nil {
				return nil, fmt.Errorf("grpctransport: player %q: %w", self, err)
			}
			clientCreds[n] = credentials.NewTLS(tc)
		}
	}

	for _, n := range peers {
		addr, _ := cfg.Address(n)
		l := &link{name: n, addr: addr, bidi: dialOnly, sem: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
		clientCreds[n] = &linkCreds{TransportCredentials: clientCreds[n], l: l}
		conn, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(clientCreds[n]),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: 5 * time.Second,
			}),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: opts.KeepaliveTime, Timeout: opts.KeepaliveTimeout, PermitWithoutStream: true}),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxWireMessage), grpc.MaxCallSendMsgSize(maxWireMessage), grpc.ForceCodecV2(frameCodec{})), // codec.go
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
	if dialOnly {
		log.Debug("dialling out only", "peers", len(peers), "insecure", t.insecure)
		return t, nil
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
	t.gate = newGate(lis, handshakesPerAddress(cfg), opts.HandshakeTimeout/5)
	t.gate.carrier = t.in.streamAddr
	serverCreds = &guardedCreds{TransportCredentials: serverCreds, gate: t.gate, log: t.refusals, timeout: opts.HandshakeTimeout}
	t.server = grpc.NewServer(
		grpc.Creds(serverCreds),
		grpc.MaxRecvMsgSize(maxWireMessage),
		grpc.MaxSendMsgSize(maxWireMessage),
		// codec.go; Transport.caller checks the content-type.
		grpc.ForceServerCodecV2(frameCodec{}),
		grpc.InitialWindowSize(flowWindow(cfg)), grpc.InitialConnWindowSize(flowWindow(cfg)), grpc.MaxConcurrentStreams(maxStreamsPerConn), // window.go
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: opts.KeepaliveTime, Timeout: opts.KeepaliveTimeout}),
		grpc.ConnectionTimeout(opts.HandshakeTimeout),
		grpc.InTapHandle(t.tap),
		grpc.WaitForHandlers(true),
	)
	t.server.RegisterService(&serviceDesc, t)
	t.server.RegisterService(&oldServiceDesc, t)

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

// Addr returns the address the player's server listens on, or nil for a
// player that only dials out.
func (t *Transport) Addr() net.Addr {
	if t.gate == nil {
		return nil
	}
	return t.gate.Addr()
}

// Mailbox returns the mailbox incoming messages land in, for callers that
// forget finished iterations or look at a peer's epochs.
func (t *Transport) Mailbox() *transport.Mailbox { return t.box }

// Warnings returns what the user must be told about this transport: the
// InsecureWarning in insecure mode, nothing otherwise.
func (t *Transport) Warnings() []string {
	if t.insecure {
		return []string{InsecureWarning}
	}
	return nil
}

// Stats returns per-peer counts of messages and payload bytes: every
// listed peer, and every data owner that dialled in.
func (t *Transport) Stats() map[string]LinkStats {
	for n := range t.links {
		t.stats.of(n)
	}
	t.stats.mu.Lock()
	defer t.stats.mu.Unlock()
	out := make(map[string]LinkStats, len(t.stats.m))
	for n, s := range t.stats.m {
		out[n] = LinkStats{
			SentMessages: s.sentMessages.Load(), SentBytes: s.sentBytes.Load(),
			RecvMessages: s.recvMessages.Load(), RecvBytes: s.recvBytes.Load(),
		}
	}
	return out
}

// Members returns, sorted, the peers that dialled in to this player and
// are connected now: data owners the config does not list, and players
// it lists without an address. A player that only dials out has none.
func (t *Transport) Members() []string { return t.in.dialIns() }

// Connected reports whether messages can travel between this player and
// peer now, both ways: for a peer this player dials, its link is up (and,
// between two players with addresses, the peer's stream to this one is
// open too); for a peer that dialled in, its stream is open.
func (t *Transport) Connected(peer string) bool {
	if l := t.links[peer]; l != nil {
		return l.up.Load() && (t.dialOnly || t.in.isOpen(peer))
	}
	return !t.dialOnly && t.in.dialIn(peer) != nil
}

// MembershipChanged returns a channel that is closed at the next change
// of Members or Connected: a peer that dials in or leaves, a link that
// breaks or is reconnected.
func (t *Transport) MembershipChanged() <-chan struct{} { return t.changed.Wait() }

// LostPeers returns, sorted, the peers whose connection broke without an
// orderly close, and have not come back: crashed, killed or cut off. When
// a player fails, the others fail after it in a cascade; this names where
// it started.
func (t *Transport) LostPeers() []string {
	var lost []string
	for name, l := range t.links {
		if l.lost.Load() && !l.goodbye.Load() {
			lost = append(lost, name)
		}
	}
	for _, name := range t.in.lostDialIns() {
		if !slices.Contains(lost, name) {
			lost = append(lost, name)
		}
	}
	slices.Sort(lost)
	return lost
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

// goroutine runs f on a goroutine Close waits for, unless Close has
// started; it reports whether f runs.
func (t *Transport) goroutine(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.wg.Go(f)
	return true
}

// jitter returns a wait drawn uniformly from [d/2, d].
func (t *Transport) jitter(d time.Duration) time.Duration {
	t.randMu.Lock()
	defer t.randMu.Unlock()
	half := d / 2
	return half + time.Duration(t.rand.Int64N(int64(d-half)+1))
}

// Connect waits until every listed peer answers, up to the config's
// connect timeout (or ctx's deadline, if sooner), and opens the stream to
// each: the peers this player dials, and, for a player with an address,
// the listed peers without one, which dial in. Data owners the config
// does not list are not waited for. Peers may start in any order: an
// unreachable peer is retried with backoff, and a link lost since is
// waited for while it reconnects. On failure the error names each missing
// player and its address (errors.As finds a *ConnectError). A peer that
// refuses this player (different player list, or this player's
// certificate), or whose certificate this player refuses (another
// player's, or another CA's: the error then matches
// players.ErrPeerCertificate), fails at once; after a refusal at the TLS
// handshake the peer is not dialled again.
func (t *Transport) Connect(ctx context.Context) error {
	if t.isClosing() {
		return fmt.Errorf("grpctransport: player %q: %w", t.self, transport.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.ConnectTimeout())
	defer cancel()
	ctx, unbind := t.bind(ctx)
	defer unbind()
	start := time.Now()
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	for _, l := range t.links {
		wg.Go(func() {
			if err := t.await(ctx, l, start); err != nil {
				fail(err)
			}
		})
	}
	var dialIns []string
	if !t.dialOnly {
		for _, n := range t.cfg.Names() {
			if n != t.self && !t.cfg.Listens(n) {
				dialIns = append(dialIns, n)
				wg.Go(func() {
					if err := t.awaitDialIn(ctx, n, start); err != nil {
						fail(err)
					}
				})
			}
		}
	}
	wg.Wait()
	if t.isClosing() {
		return fmt.Errorf("grpctransport: player %q: %w", t.self, transport.ErrClosed)
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return errors.Join(errs...)
	}
	t.log.Info("connected to all peers", "peers", len(t.links)+len(dialIns), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// awaitDialIn waits until listed player name, which has no address, has
// dialled in.
func (t *Transport) awaitDialIn(ctx context.Context, name string, start time.Time) error {
	for {
		changed := t.changed.Wait()
		if t.in.dialIn(name) != nil {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return &ConnectError{Player: name, Err: fmt.Errorf("it did not dial in within %s: %w", time.Since(start).Round(time.Millisecond), context.Cause(ctx))}
		}
	}
}

// Send queues payload for player to under key. It connects first if
// Connect has not, and, for a peer that dials in and has not yet, waits
// for it to. It returns once the message is handed to gRPC, as a copy
// (see Wire in the package doc): the caller may reuse payload at once.
// That waits for flow control, which holds the sender back while the
// receiver has PendingMessages' worth of its messages unread. ctx bounds
// all of it: connecting, waiting for other Sends to the same player, and
// flow control. A message cannot be abandoned half-sent without breaking
// the stream, so when ctx ends in the middle of one the link is given up,
// as if the peer were lost, and reconnected. A Send to a peer whose link
// is down fails at once, naming it, while the link is dialled again in the
// background. Messages above the config's max_message_bytes are refused
// with ErrTooLarge.
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
	if err := t.reachable(to); err != nil {
		return fmt.Errorf("grpctransport: sending %s from %q: %w", key, t.self, err)
	}
	ctx, unbind := t.bind(ctx)
	defer unbind()
	var err error
	if l := t.links[to]; l != nil {
		err = t.sendOnLink(ctx, l, key, payload)
	} else {
		err = t.sendToDialIn(ctx, to, key, payload)
	}
	if err != nil {
		return err
	}
	s := t.stats.of(to)
	s.sentMessages.Add(1)
	s.sentBytes.Add(uint64(len(payload)))
	return nil
}

// reachable says why this player cannot exchange messages with peer, if
// it cannot: peer is neither a player it dials nor, for a player with an
// address, one the config lets dial in.
func (t *Transport) reachable(peer string) error {
	switch {
	case t.links[peer] != nil:
		return nil
	case t.dialOnly && (t.cfg.Has(peer) || t.cfg.Admits(peer) == nil):
		return fmt.Errorf("%w: %q: neither %q nor it has an address, so there is no connection between them", transport.ErrUnknownPlayer, peer, t.self)
	case t.dialOnly:
		return fmt.Errorf("%w: %q", transport.ErrUnknownPlayer, peer)
	}
	if err := t.cfg.Admits(peer); err != nil {
		return fmt.Errorf("%w: %q", transport.ErrUnknownPlayer, peer)
	}
	return nil
}

// Recv waits for the message player from sent under key. It fails when
// ctx ends, when the transport closes, and promptly when the link to from
// breaks or from closes before sending it (see transport.Mailbox.Recv).
func (t *Transport) Recv(ctx context.Context, from string, key transport.Key) ([]byte, error) {
	if from != t.self {
		if err := t.reachable(from); err != nil {
			return nil, fmt.Errorf("grpctransport: receiving %s at %q: %w", key, t.self, err)
		}
	}
	return t.box.Recv(ctx, from, key)
}

// Close fails pending receives with transport.ErrClosed, lets peers take
// the messages already sent (up to Options.CloseTimeout), then stops the
// server and every connection, including incoming ones still in their
// handshake. Peers that dialled in are told goodbye on their streams. It
// waits for all the transport's goroutines to end. Calling Close again
// does nothing.
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
		for _, d := range t.in.dialInConns() {
			wg.Go(func() { t.farewell(d, deadline) })
		}
		wg.Wait()
		// Connections still in their handshake are closed here rather
		// than waited for by server.Stop.
		if t.gate != nil {
			t.gate.shut()
		}
		t.closeConns()
		if t.server != nil {
			t.server.Stop()
		}
		t.cancel()
		t.wg.Wait()
		t.refusals.flush()
		t.events.flush()
		t.log.Debug("closed")
	})
	return nil
}

func (t *Transport) closeConns() {
	for _, l := range t.links {
		l.conn.Close()
	}
}
