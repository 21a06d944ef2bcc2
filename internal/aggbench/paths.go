package aggbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
	"github.com/shareflow/shareflow/session/transport/grpctransport"
)

// transportPath is the aggregation path: grpctransport as a session uses
// it. A session's sends give their buffers back to its pool once Send
// returns; here each message slot keeps its buffer.
type transportPath struct {
	t    *grpctransport.Transport
	bufs map[int][]byte
}

func newTransportPath(ctx context.Context, cfg *players.Config, self string, ln net.Listener, o Options) (*transportPath, error) {
	t, err := grpctransport.New(cfg, self, grpctransport.Options{Listener: ln, ChunkBytes: o.ChunkBytes})
	if err != nil {
		return nil, err
	}
	if err := t.Connect(ctx); err != nil {
		t.Close()
		return nil, err
	}
	return &transportPath{t: t, bufs: make(map[int][]byte)}, nil
}

func (p *transportPath) buffer(slot, n int) []byte { return slotBuffer(p.bufs, slot, n) }

func (p *transportPath) send(ctx context.Context, to string, key transport.Key, b []byte) error {
	return p.t.Send(ctx, to, key, b)
}

func (p *transportPath) recv(ctx context.Context, from string, key transport.Key, size int) ([]byte, error) {
	b, err := p.t.Recv(ctx, from, key)
	if err == nil && len(b) != size {
		err = fmt.Errorf("aggbench: %s from %q is %d bytes, want %d", key, from, len(b), size)
	}
	return b, err
}

func (p *transportPath) forget(it uint64) { p.t.Mailbox().Forget(session, it) }

func (p *transportPath) close() error { return p.t.Close() }

// Raw gRPC: one bidi stream per ordered pair of players that exchange
// messages, each message sent as gRPC messages of at most ChunkBytes.
const (
	rawService = "aggbench.Raw"
	rawMethod  = "/" + rawService + "/Stream"
	// rawWindow is the flow-control window of both paths: what
	// grpctransport opens with the default max_message_bytes.
	rawWindow = 16 << 20
	// rawMaxMessage bounds a gRPC message of the raw path.
	rawMaxMessage = grpctransport.MaxChunkBytes
)

// rawCodec sends a rawOut as it lies, and copies what it receives into a
// *rawIn's buffer. It is safe for concurrent use.
type rawCodec struct{}

// rawOut is a piece of a message to send.
type rawOut []byte

// rawIn is where a received piece goes: dst, of which it filled n bytes.
type rawIn struct {
	dst []byte
	n   int
}

func (rawCodec) Name() string { return "aggbench-raw" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(rawOut)
	if !ok {
		return nil, fmt.Errorf("aggbench: raw codec cannot send a %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawIn)
	if !ok {
		return fmt.Errorf("aggbench: raw codec cannot receive a %T", v)
	}
	if n := data.Len(); n > len(m.dst) {
		return fmt.Errorf("aggbench: raw message of %d bytes, %d expected", n, len(m.dst))
	}
	m.n = data.CopyTo(m.dst)
	return nil
}

// rawHandler is the raw service's implementation.
type rawHandler interface {
	stream(grpc.ServerStream) error
}

var rawDesc = grpc.ServiceDesc{
	ServiceName: rawService,
	HandlerType: (*rawHandler)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		Handler:       func(srv any, s grpc.ServerStream) error { return srv.(rawHandler).stream(s) },
		ClientStreams: true,
		ServerStreams: true,
	}},
}

// rawPath is the raw path of one player: a gRPC server whose streams
// bring it its peers' messages, and a stream to each peer it sends to.
type rawPath struct {
	self   string
	chunk  int
	server *grpc.Server
	conns  []*grpc.ClientConn
	out    map[string]grpc.ClientStream
	stop   func() bool
	bufs   map[int][]byte

	mu      sync.Mutex
	in      map[string]*rawStream
	arrived chan struct{} // closed when a stream arrives
}

// rawStream is a peer's stream to this player; its handler returns when
// done is closed.
type rawStream struct {
	s    grpc.ServerStream
	done chan struct{}
}

// receivers returns the players self sends to.
func receivers(self string, names []string) []string {
	switch {
	case self == players.ModelOwner:
		return filter(names, func(n string) bool { return n != self })
	case players.RoleOf(self) == players.RoleDataOwner:
		return servers[:]
	case self == servers[0] || self == servers[1]:
		return []string{players.ModelOwner}
	}
	return nil
}

// filter returns the names keep keeps.
func filter(names []string, keep func(string) bool) []string {
	var out []string
	for _, n := range names {
		if keep(n) {
			out = append(out, n)
		}
	}
	return out
}

func newRawPath(ctx context.Context, cfg *players.Config, self string, ln net.Listener, raw map[string]string, o Options) (_ *rawPath, err error) {
	id, err := cfg.LoadIdentity(self)
	if err != nil {
		ln.Close()
		return nil, err
	}
	p := &rawPath{self: self, chunk: o.ChunkBytes, out: make(map[string]grpc.ClientStream), bufs: make(map[int][]byte),
		in: make(map[string]*rawStream), arrived: make(chan struct{})}
	p.server = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(id.ServerTLS())),
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.MaxRecvMsgSize(rawMaxMessage), grpc.MaxSendMsgSize(rawMaxMessage),
		grpc.InitialWindowSize(rawWindow), grpc.InitialConnWindowSize(rawWindow),
	)
	p.server.RegisterService(&rawDesc, p)
	go p.server.Serve(ln)
	// A blocked receive on a server stream sees only the stream's end.
	p.stop = context.AfterFunc(ctx, p.server.Stop)
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	for _, to := range receivers(self, cfg.Names()) {
		tc, err := id.ClientTLS(to)
		if err != nil {
			return nil, err
		}
		conn, err := grpc.NewClient("passthrough:///"+raw[to],
			grpc.WithTransportCredentials(credentials.NewTLS(tc)),
			grpc.WithInitialWindowSize(rawWindow), grpc.WithInitialConnWindowSize(rawWindow),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallRecvMsgSize(rawMaxMessage), grpc.MaxCallSendMsgSize(rawMaxMessage)),
		)
		if err != nil {
			return nil, fmt.Errorf("raw gRPC client for %s at %s: %w", to, raw[to], err)
		}
		p.conns = append(p.conns, conn)
		s, err := conn.NewStream(ctx, &rawDesc.Streams[0], rawMethod, grpc.WaitForReady(true))
		if err != nil {
			return nil, fmt.Errorf("raw gRPC stream to %s at %s: %w", to, raw[to], err)
		}
		p.out[to] = s
	}
	return p, nil
}

// stream takes a peer's stream, named by its verified certificate, and
// holds it open until the player is done with it.
func (p *rawPath) stream(s grpc.ServerStream) error {
	pr, _ := peer.FromContext(s.Context())
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return status.Error(codes.Unauthenticated, "no verified client certificate")
	}
	from, err := players.PlayerFromCert(info.State.VerifiedChains[0][0])
	if err != nil {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	in := &rawStream{s: s, done: make(chan struct{})}
	p.mu.Lock()
	if p.in[from] != nil {
		p.mu.Unlock()
		return status.Errorf(codes.AlreadyExists, "%s has a stream open", from)
	}
	p.in[from] = in
	close(p.arrived)
	p.arrived = make(chan struct{})
	p.mu.Unlock()
	select {
	case <-in.done:
		return nil
	case <-s.Context().Done():
		return s.Context().Err()
	}
}

// incoming returns the stream of peer from, waiting for it.
func (p *rawPath) incoming(ctx context.Context, from string) (*rawStream, error) {
	for {
		p.mu.Lock()
		in, arrived := p.in[from], p.arrived
		p.mu.Unlock()
		if in != nil {
			return in, nil
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the raw stream of %s: %w", from, context.Cause(ctx))
		}
	}
}

func (p *rawPath) buffer(slot, n int) []byte { return slotBuffer(p.bufs, slot, n) }

// slotBuffer returns the buffer of n bytes of slot in bufs, made on first
// use.
func slotBuffer(bufs map[int][]byte, slot, n int) []byte {
	if b := bufs[slot]; len(b) == n {
		return b
	}
	bufs[slot] = make([]byte, n)
	return bufs[slot]
}

func (p *rawPath) send(_ context.Context, to string, _ transport.Key, b []byte) error {
	s := p.out[to]
	if s == nil {
		return fmt.Errorf("aggbench: %s has no raw stream to %s", p.self, to)
	}
	for off := 0; off < len(b); {
		n := min(p.chunk, len(b)-off)
		if err := s.SendMsg(rawOut(b[off : off+n])); err != nil {
			return fmt.Errorf("raw send to %s: %w", to, err)
		}
		off += n
	}
	return nil
}

func (p *rawPath) recv(ctx context.Context, from string, _ transport.Key, size int) ([]byte, error) {
	in, err := p.incoming(ctx, from)
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	for off := 0; off < size; {
		m := rawIn{dst: b[off:min(off+p.chunk, size)]}
		if err := in.s.RecvMsg(&m); err != nil {
			return nil, fmt.Errorf("raw receive from %s: %w", from, err)
		}
		off += m.n
	}
	return b, nil
}

func (p *rawPath) forget(uint64) {}

// close half-closes the streams to the peers, waits for theirs to end
// (each peer does the same once it is done), and stops.
func (p *rawPath) close() error {
	var errs []error
	for _, s := range p.out {
		s.CloseSend()
	}
	p.mu.Lock()
	ins := make(map[string]*rawStream, len(p.in))
	for from, in := range p.in {
		ins[from] = in
	}
	p.mu.Unlock()
	for from, in := range ins {
		var m rawIn
		if err := in.s.RecvMsg(&m); !errors.Is(err, io.EOF) {
			errs = append(errs, fmt.Errorf("raw stream of %s did not end: %v", from, err))
		}
		close(in.done)
	}
	for to, s := range p.out {
		var m rawIn
		if err := s.RecvMsg(&m); !errors.Is(err, io.EOF) {
			errs = append(errs, fmt.Errorf("raw stream to %s ended with %v", to, err))
		}
	}
	for _, c := range p.conns {
		c.Close()
	}
	// Gracefully, so that the statuses of the streams reach the peers;
	// the end of the player's context stops it at once.
	p.server.GracefulStop()
	p.stop()
	return errors.Join(errs...)
}
