package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/shareflow/shareflow/players"
)

// Bounds on the connections a player's server holds before they prove
// who they are. Each connection in its handshake costs a goroutine and a
// few kilobytes, for at most Options.HandshakeTimeout.
//
// The handshakes in progress are shared fairly among the addresses they
// come from (an IPv4 address, or an IPv6 /64, which one host can fill
// with addresses of its own). When all MaxHandshakes slots are taken, a
// new connection from an address that holds fewer of them than another
// address does (by two or more) takes the slot of that address's oldest
// handshake, which is cut; failing that, it takes the oldest slot of all
// if that handshake has run for more than a fifth of
// Options.HandshakeTimeout (a second by default), longer than a peer's
// handshake takes even across the world. Otherwise it is closed, and its
// client dials again, as gRPC clients do. So a host that opens
// connections and never speaks cannot keep a player's peers out: it holds
// slots only while no other address needs them, and to keep a newcomer
// from an address of its own out, an attacker must hold every slot from
// MaxHandshakes addresses, renewing each one within a second. One address
// may in any case hold at most handshakesPerAddress of the slots (see
// there), so that all of a config's players (or data owners behind one
// NAT) may start at once from one host without being refused.
const (
	// MaxHandshakes is how many incoming connections may be in their TLS
	// handshake at once.
	MaxHandshakes = 64
	// MinHandshakesPerAddress is the least number of those one address
	// (IPv4, or IPv6 /64) may hold, however small the config.
	MinHandshakesPerAddress = 8
	// MaxConnsPerPlayer is how many connections one player, as its
	// verified certificate names it, may hold open to a player's server
	// once their handshake is over. A correct peer holds one, and two for
	// a moment when it dials again while this player has not yet seen its
	// old connection die. Past it the player's oldest connection that
	// does not carry its message stream is closed, and logged.
	MaxConnsPerPlayer = 2
)

// handshakesPerAddress is how many connections from one address a player
// of cfg takes in their handshake at once: as many as the config lists
// other players, plus max_members with open membership, since all of them
// may start at once from one host, or from behind one NAT; at least
// MinHandshakesPerAddress, at most half of MaxHandshakes.
func handshakesPerAddress(cfg *players.Config) int {
	n := cfg.Len() - 1
	if cfg.OpenMembership() {
		n += cfg.MaxMembers()
	}
	return min(max(n, MinHandshakesPerAddress), MaxHandshakes/2)
}

// Lines about refused connections, and about the streams of peers, are
// logged at most refusalBurst at once and then one per refusalEvery; the
// lines left out are counted on the next line logged and on Close.
const (
	refusalBurst = 10
	refusalEvery = time.Second
)

// gate wraps the server's listener. It keeps every accepted connection
// until it is closed, so that Close can cut those that never finish their
// handshake instead of waiting out their deadline; it shares the
// handshake slots fairly among addresses (see MaxHandshakes), and holds
// each player to MaxConnsPerPlayer connections. It is safe for concurrent
// use.
type gate struct {
	net.Listener
	perAddress int           // handshakes one address may have in progress
	stale      time.Duration // a handshake older than this may lose its slot to any newcomer
	// carrier returns the remote address of the connection that carries
	// player's message stream, or "" if it has none open.
	carrier func(player string) string

	mu      sync.Mutex
	closed  bool
	conns   map[*gateConn]struct{} // accepted and not closed
	active  int                    // connections in their handshake
	shaking map[string][]*gateConn // per address group, the connections in their handshake, oldest first
	players map[string][]*gateConn // per player, its connections past the handshake, oldest first
	now     func() time.Time
}

func newGate(lis net.Listener, perAddress int, stale time.Duration) *gate {
	return &gate{
		Listener: lis, perAddress: perAddress, stale: stale,
		carrier: func(string) string { return "" },
		conns:   make(map[*gateConn]struct{}),
		shaking: make(map[string][]*gateConn),
		players: make(map[string][]*gateConn),
		now:     time.Now,
	}
}

// Accept returns the next connection, kept until it is closed.
func (g *gate) Accept() (net.Conn, error) {
	c, err := g.Listener.Accept()
	if err != nil {
		return nil, err
	}
	gc := &gateConn{Conn: c, g: g, group: groupOf(c.RemoteAddr())}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	g.conns[gc] = struct{}{}
	return gc, nil
}

// shut closes the listener and every connection it accepted. The gRPC
// server then has nothing left to wait for.
func (g *gate) shut() {
	g.mu.Lock()
	g.closed = true
	conns := make([]*gateConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	g.Listener.Close()
	for _, c := range conns {
		c.Close()
	}
}

// cut closes the accepted connections whose remote address is addr: the
// connection of one peer, whose streams then end.
func (g *gate) cut(addr string) {
	g.mu.Lock()
	var found []*gateConn
	for c := range g.conns {
		if c.RemoteAddr().String() == addr {
			found = append(found, c)
		}
	}
	g.mu.Unlock()
	for _, c := range found {
		c.Close()
	}
}

// open returns how many accepted connections are not closed yet.
func (g *gate) open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// connsOf returns how many connections player holds past their handshake.
func (g *gate) connsOf(player string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.players[player])
}

// admit takes a handshake slot for c, or says why there is none. It may
// take the slot of another connection in its handshake, which it returns,
// no longer in the gate's count, for the caller to close (see
// MaxHandshakes). The caller calls release(c) when c's handshake is over.
func (g *gate) admit(c *gateConn) (cut *gateConn, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	mine := len(g.shaking[c.group])
	if mine >= g.perAddress {
		return nil, fmt.Errorf("%d connections from %s are in their handshake already, the most one address may have", mine, c.group)
	}
	if g.active >= MaxHandshakes {
		if cut = g.victim(mine, now); cut == nil {
			return nil, fmt.Errorf("%d connections are in their handshake already (MaxHandshakes), none of them old or from an address that holds more", g.active)
		}
		g.drop(cut)
	}
	c.start = now
	g.shaking[c.group] = append(g.shaking[c.group], c)
	g.active++
	return cut, nil
}

// victim returns the handshake whose slot a newcomer from an address
// holding mine slots takes, or nil: the oldest of the address holding the
// most (of those, the one whose oldest is oldest), if it holds two or
// more than mine; else the oldest of all, if it is stale. g.mu is held.
func (g *gate) victim(mine int, now time.Time) *gateConn {
	var most, oldest *gateConn
	count := 0
	for _, list := range g.shaking {
		if len(list) == 0 {
			continue
		}
		if len(list) > count || len(list) == count && list[0].start.Before(most.start) {
			most, count = list[0], len(list)
		}
		if oldest == nil || list[0].start.Before(oldest.start) {
			oldest = list[0]
		}
	}
	switch {
	case count >= mine+2:
		return most
	case oldest != nil && now.Sub(oldest.start) > g.stale:
		return oldest
	}
	return nil
}

// release gives back c's handshake slot, unless another connection took
// it.
func (g *gate) release(c *gateConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.drop(c)
}

// drop removes c from the handshakes in progress, if it is there. g.mu is
// held.
func (g *gate) drop(c *gateConn) {
	list := g.shaking[c.group]
	i := slices.Index(list, c)
	if i < 0 {
		return
	}
	g.active--
	if list = slices.Delete(list, i, i+1); len(list) == 0 {
		delete(g.shaking, c.group)
	} else {
		g.shaking[c.group] = list
	}
}

// enlist records that c's handshake proved it to be player's, and returns
// the connections of player to close so that it holds at most
// MaxConnsPerPlayer: its oldest ones, but never the one that carries its
// message stream.
func (g *gate) enlist(c *gateConn, player string) (extra []*gateConn) {
	keep := g.carrier(player)
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.conns[c]; !ok {
		return nil // closed already
	}
	c.player = player
	list := append(g.players[player], c)
	for len(list) > MaxConnsPerPlayer {
		i := slices.IndexFunc(list, func(o *gateConn) bool { return o.RemoteAddr().String() != keep })
		extra = append(extra, list[i])
		list = slices.Delete(list, i, i+1)
	}
	g.players[player] = list
	return extra
}

// gateConn is an accepted connection that leaves its gate when closed.
type gateConn struct {
	net.Conn
	g      *gate
	group  string    // its address group (see groupOf)
	start  time.Time // when its handshake began
	player string    // whose it is, once its handshake is over
	once   sync.Once
}

func (c *gateConn) Close() error {
	c.once.Do(func() {
		g := c.g
		g.mu.Lock()
		delete(g.conns, c)
		g.drop(c)
		if c.player != "" {
			list := slices.DeleteFunc(g.players[c.player], func(o *gateConn) bool { return o == c })
			if len(list) == 0 {
				delete(g.players, c.player)
			} else {
				g.players[c.player] = list
			}
		}
		g.mu.Unlock()
	})
	return c.Conn.Close()
}

// groupOf returns the address group of a remote address, by which
// handshake slots are shared: an IPv4 address, or the /64 of an IPv6
// address, since one host commonly holds a whole /64.
func groupOf(addr net.Addr) string {
	a, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	if v4 := a.IP.To4(); v4 != nil {
		return v4.String()
	}
	return (&net.IPNet{IP: a.IP.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
}

// guardedCreds wraps the server's credentials: each handshake needs a slot
// of the gate, each one that fails is logged with the remote address and
// the reason, and each one that succeeds counts against its player's
// connections. gRPC bounds the handshake by its connection timeout,
// Options.HandshakeTimeout.
type guardedCreds struct {
	credentials.TransportCredentials
	gate    *gate
	log     *rateLog
	timeout time.Duration
}

func (c *guardedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	remote := raw.RemoteAddr()
	gc, ok := raw.(*gateConn)
	if !ok { // not from the gate's listener: nothing to count it by
		return c.TransportCredentials.ServerHandshake(raw)
	}
	cut, err := c.gate.admit(gc)
	if cut != nil {
		cut.Close()
		c.log.refused(slog.LevelDebug, cut.RemoteAddr(), fmt.Sprintf("cut in its TLS handshake, to make room for a connection from %s (MaxHandshakes)", remote))
	}
	if err != nil {
		raw.Close()
		// Debug: the client dials again, as gRPC clients do, and a peer
		// gets in within its connect_timeout.
		c.log.refused(slog.LevelDebug, remote, err.Error())
		return nil, nil, err
	}
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	c.gate.release(gc)
	if err != nil {
		c.logFailure(remote, err)
		return conn, info, err
	}
	if player := verifiedPlayer(info); player != "" {
		for _, old := range c.gate.enlist(gc, player) {
			old.Close()
			c.log.log(slog.LevelWarn, "closed a connection", "remote", old.RemoteAddr().String(), "peer", player,
				"reason", fmt.Sprintf("player %q opened another from %s, and a player may hold %d (MaxConnsPerPlayer); this was its oldest without a message stream", player, remote, MaxConnsPerPlayer))
		}
	}
	return conn, info, err
}

// verifiedPlayer returns the player named by the verified client
// certificate in info, or "" if there is none (insecure mode).
func verifiedPlayer(info credentials.AuthInfo) string {
	ti, ok := info.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return ""
	}
	name, err := players.PlayerFromCert(ti.State.VerifiedChains[0][0])
	if err != nil {
		return ""
	}
	return name
}

// logFailure logs a failed server handshake, unless this player cut it
// short by closing.
func (c *guardedCreds) logFailure(remote net.Addr, err error) {
	var ne net.Error
	var op *net.OpError
	switch {
	case errors.Is(err, net.ErrClosed):
		// Close cut it, or a newcomer took its slot (logged then).
	case errors.Is(err, io.EOF):
		// Port scanners and health checks do this, and so does a client
		// that gave up on this player already.
		c.log.refused(slog.LevelDebug, remote, "closed before the TLS handshake")
	case errors.As(err, &ne) && ne.Timeout():
		c.log.refused(slog.LevelWarn, remote, fmt.Sprintf("no TLS handshake within %s (HandshakeTimeout)", c.timeout))
	case errors.As(err, &op) && op.Op == "remote error":
		c.log.refused(slog.LevelWarn, remote, fmt.Sprintf("the client refused this player's certificate (%v); its log says why", op.Err))
	default:
		c.log.refused(slog.LevelWarn, remote, err.Error())
	}
}

func (c *guardedCreds) Clone() credentials.TransportCredentials {
	return &guardedCreds{TransportCredentials: c.TransportCredentials.Clone(), gate: c.gate, log: c.log, timeout: c.timeout}
}

// rateLog logs through a token bucket, so that what a peer can make
// happen again and again (connections refused, streams broken) cannot
// flood the log: refusalBurst lines at once, then one per refusalEvery. It
// is safe for concurrent use.
type rateLog struct {
	out  *slog.Logger
	what string // what its lines are about, for the count of those left out

	mu         sync.Mutex
	now        func() time.Time
	tokens     float64
	last       time.Time
	suppressed int // lines not logged since the last one
}

func newRateLog(log *slog.Logger, what string) *rateLog {
	return &rateLog{out: log, what: what, now: time.Now, tokens: refusalBurst, last: time.Now()}
}

// newRefusalLog returns the rate-limited log of refused connections.
func newRefusalLog(log *slog.Logger) *rateLog { return newRateLog(log, "refused connections") }

// refused logs one refused connection from remote, if the bucket allows.
func (r *rateLog) refused(level slog.Level, remote net.Addr, reason string) {
	r.log(level, "refused a connection", "remote", remote.String(), "reason", reason)
}

// log logs msg with attrs, if the bucket allows. The line carries the
// count of lines left out before it.
func (r *rateLog) log(level slog.Level, msg string, attrs ...any) {
	if !r.out.Enabled(context.Background(), level) {
		return
	}
	r.mu.Lock()
	now := r.now()
	if d := now.Sub(r.last); d > 0 {
		r.tokens = min(refusalBurst, r.tokens+float64(d)/float64(refusalEvery))
	}
	r.last = now
	if r.tokens < 1 {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	r.tokens--
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	r.out.Log(context.Background(), level, msg, attrs...)
}

// flush logs how many lines were left out since the last one.
func (r *rateLog) flush() {
	r.mu.Lock()
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		r.out.Warn(r.what+" not logged", "suppressed", n)
	}
}

// linkCreds wraps the credentials for dialling one peer, to see a
// refusal that retrying cannot mend: this player refusing the peer's
// certificate (players.ErrPeerCertificate), or the peer refusing this
// player's with a TLS alert. It records it on the link; from then on it
// lets no handshake start, and Connect gives up on the peer at once.
type linkCreds struct {
	credentials.TransportCredentials
	l *link
}

func (c *linkCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if err := c.l.refused(); err != nil {
		raw.Close()
		return nil, nil, err
	}
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		if errors.Is(err, players.ErrPeerCertificate) {
			c.l.refuse(err)
		}
		return nil, nil, err
	}
	return &alertConn{Conn: conn, l: c.l, seq: c.l.conns.Add(1)}, info, nil
}

func (c *linkCreds) Clone() credentials.TransportCredentials {
	return &linkCreds{TransportCredentials: c.TransportCredentials.Clone(), l: c.l}
}

// alertConn is a client connection that records a TLS alert from the
// peer on its link. In TLS 1.3 the client's handshake is over before the
// server checks the client's certificate, so a server that refuses it
// says so with an alert on the client's first read. It also tells its
// link when it breaks (connDown), since a stream's monitor that waits for
// room in the mailbox does not read, and would not learn it otherwise.
type alertConn struct {
	net.Conn
	l   *link
	seq uint64 // the link's count of connections when this one was made
}

func (c *alertConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.l.connDown(c.seq)
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "remote error" {
			c.l.refuse(fmt.Errorf("the peer refused the TLS connection (%v); its log says why", op.Err))
		}
	}
	return n, err
}

// refuse records a refusal that retrying cannot mend; the first one
// stays.
func (l *link) refuse(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refusal == nil {
		l.refusal = err
	}
}

// refused returns the refusal recorded by refuse, if any.
func (l *link) refused() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refusal
}

// maxHellosPerPlayer is how many Hellos one player may have in progress
// at once on a player's server: one per connection it may hold.
const maxHellosPerPlayer = MaxConnsPerPlayer

// helloCount counts the Hellos in progress, per player. The zero value is
// ready to use; it is safe for concurrent use.
type helloCount struct {
	mu sync.Mutex
	n  map[string]int
}

// take counts one more Hello of player, unless it has maxHellosPerPlayer
// in progress.
func (h *helloCount) take(player string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n[player] >= maxHellosPerPlayer {
		return false
	}
	if h.n == nil {
		h.n = make(map[string]int)
	}
	h.n[player]++
	return true
}

// give counts one Hello of player less.
func (h *helloCount) give(player string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n[player]--; h.n[player] <= 0 {
		delete(h.n, player)
	}
}

// inProgress returns how many Hellos of player are in progress.
func (h *helloCount) inProgress(player string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[player]
}

// tap sees each stream a peer opens, before gRPC reads any of it
// (grpc.InTapHandle; gRPC holds a lock of the connection meanwhile, so it
// must not block), and bounds Hellos, which gRPC reads whole, up to the
// largest gRPC message, before the handler sees them: a player may have
// maxHellosPerPlayer of them in progress at once, one more being refused
// with codes.ResourceExhausted, and each must arrive whole within
// Options.HandshakeTimeout, or its stream ends with
// codes.DeadlineExceeded. Both are logged (rate-limited). A caller that
// proves no identity passes, to be refused and logged by hello.
func (t *Transport) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName != helloMethod {
		return ctx, nil
	}
	from, err := t.caller(ctx)
	if err != nil {
		return ctx, nil
	}
	addr := remoteAddr(ctx)
	if !t.hellos.take(from) {
		err := status.Errorf(codes.ResourceExhausted, "player %q refuses a Hello from %q (from %s): %d of its Hellos are in progress, the most a player may have",
			t.self, from, addr, maxHellosPerPlayer)
		t.refusals.log(slog.LevelWarn, "refused a connection", "remote", addr, "peer", from, "reason", err.Error())
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, t.helloMax)
	context.AfterFunc(hctx, func() {
		cancel()
		t.hellos.give(from)
		if errors.Is(hctx.Err(), context.DeadlineExceeded) {
			t.refusals.log(slog.LevelWarn, "refused a connection", "remote", addr, "peer", from,
				"reason", fmt.Sprintf("no whole Hello within %s (HandshakeTimeout)", t.helloMax))
		}
	})
	return hctx, nil
}

// streamAddr returns the remote address of player's open message stream,
// or "" if it has none.
func (in *inbound) streamAddr(player string) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if ps, ok := in.open[player]; ok {
		return ps.addr
	}
	return ""
}
