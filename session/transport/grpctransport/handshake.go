package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/shareflow/shareflow/players"
)

// Bounds on the connections a player's server holds before they prove
// who they are. Past them a new connection is closed at once, and logged.
// Each connection in its handshake costs a goroutine and a few kilobytes,
// for at most Options.HandshakeTimeout; a host that opens connections and
// never speaks holds at most MaxHandshakesPerIP of them. A player that
// finds no room is closed like any other, and its Connect dials again.
const (
	// MaxHandshakes is how many incoming connections may be in their TLS
	// handshake at once.
	MaxHandshakes = 64
	// MaxHandshakesPerIP is how many of those may come from one IP
	// address.
	MaxHandshakesPerIP = 8
)

// Refused connections are logged at most refusalBurst at once and then
// one per refusalEvery; the lines left out are counted on the next line
// logged and on Close.
const (
	refusalBurst = 10
	refusalEvery = time.Second
)

// gate wraps the server's listener. It keeps every accepted connection
// until it is closed, so that Close can cut those that never finish their
// handshake instead of waiting out their deadline, and it admits at most
// MaxHandshakes handshakes at once, MaxHandshakesPerIP per address. It is
// safe for concurrent use.
type gate struct {
	net.Listener

	mu     sync.Mutex
	closed bool
	conns  map[*gateConn]struct{} // accepted and not closed
	active int                    // connections in their handshake
	perIP  map[string]int
}

func newGate(lis net.Listener) *gate {
	return &gate{Listener: lis, conns: make(map[*gateConn]struct{}), perIP: make(map[string]int)}
}

// Accept returns the next connection, kept until it is closed.
func (g *gate) Accept() (net.Conn, error) {
	c, err := g.Listener.Accept()
	if err != nil {
		return nil, err
	}
	gc := &gateConn{Conn: c, g: g}
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

// admit takes a handshake slot for a connection from ip, or says why
// there is none. The caller calls release(ip) when the handshake is over.
func (g *gate) admit(ip string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.active >= MaxHandshakes:
		return fmt.Errorf("%d connections are in their handshake already (MaxHandshakes)", g.active)
	case g.perIP[ip] >= MaxHandshakesPerIP:
		return fmt.Errorf("%d connections from %s are in their handshake already (MaxHandshakesPerIP)", g.perIP[ip], ip)
	}
	g.active++
	g.perIP[ip]++
	return nil
}

func (g *gate) release(ip string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	if g.perIP[ip]--; g.perIP[ip] == 0 {
		delete(g.perIP, ip)
	}
}

// gateConn is an accepted connection that leaves its gate when closed.
type gateConn struct {
	net.Conn
	g    *gate
	once sync.Once
}

func (c *gateConn) Close() error {
	c.once.Do(func() {
		c.g.mu.Lock()
		delete(c.g.conns, c)
		c.g.mu.Unlock()
	})
	return c.Conn.Close()
}

// hostOf returns the IP address of addr, or addr itself.
func hostOf(addr net.Addr) string {
	if a, ok := addr.(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return addr.String()
}

// guardedCreds wraps the server's credentials: each handshake needs a slot
// of the gate, and each one that fails is logged with the remote address
// and the reason. gRPC bounds the handshake by its connection timeout,
// Options.HandshakeTimeout.
type guardedCreds struct {
	credentials.TransportCredentials
	gate    *gate
	log     *refusalLog
	timeout time.Duration
}

func (c *guardedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	remote := raw.RemoteAddr()
	ip := hostOf(remote)
	if err := c.gate.admit(ip); err != nil {
		raw.Close()
		c.log.refused(slog.LevelWarn, remote, err.Error())
		return nil, nil, err
	}
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	c.gate.release(ip)
	if err != nil {
		c.logFailure(remote, err)
	}
	return conn, info, err
}

// logFailure logs a failed server handshake, unless this player cut it
// short by closing.
func (c *guardedCreds) logFailure(remote net.Addr, err error) {
	var ne net.Error
	var op *net.OpError
	switch {
	case errors.Is(err, net.ErrClosed):
		// Close cut it.
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

// refusalLog logs refused connections through a token bucket, so that a
// flood of them cannot flood the log. It is safe for concurrent use.
type refusalLog struct {
	log *slog.Logger

	mu         sync.Mutex
	now        func() time.Time
	tokens     float64
	last       time.Time
	suppressed int // refusals not logged since the last line
}

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, now: time.Now, tokens: refusalBurst, last: time.Now()}
}

// refused logs one refused connection from remote, if the bucket allows.
// The line carries the count of refusals left out before it.
func (r *refusalLog) refused(level slog.Level, remote net.Addr, reason string) {
	if !r.log.Enabled(context.Background(), level) {
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
	attrs := []any{"remote", remote.String(), "reason", reason}
	if n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	r.log.Log(context.Background(), level, "refused a connection", attrs...)
}

// flush logs how many refusals were left out since the last line.
func (r *refusalLog) flush() {
	r.mu.Lock()
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		r.log.Warn("refused connections not logged", "suppressed", n)
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
