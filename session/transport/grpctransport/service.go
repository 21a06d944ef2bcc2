package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
)

// The gRPC service, written by hand (there is no .proto file): every
// message is a google.protobuf.BytesValue carrying a Hello or a Frame.
const (
	serviceName   = "shareflow.transport.v1.Transport"
	helloMethod   = "/" + serviceName + "/Hello"
	messageMethod = "/" + serviceName + "/Messages"
	// playerHeader is the metadata key under which a client states the
	// player it claims to be.
	playerHeader = "shareflow-player"
)

// handler is what the service needs of its implementation.
type handler interface {
	hello(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
	messages(stream grpc.ServerStream) error
}

// serviceDesc describes the two methods:
//
//	rpc Hello(BytesValue) returns (BytesValue);           // Hello both ways
//	rpc Messages(stream BytesValue) returns (stream BytesValue);
//
// Messages carries Frames from client to server for as long as the client
// lives; the server never sends on it and ends it with a status only when
// it refuses the stream (the client has one open already) or a frame, or
// shuts down, so the client learns of a broken link by its pending
// receive.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*handler)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Hello",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(handler).hello(ctx, in)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Messages",
		Handler:       func(srv any, stream grpc.ServerStream) error { return srv.(handler).messages(stream) },
		ClientStreams: true,
		ServerStreams: true,
	}},
}

// caller returns the player at the other end of an incoming call. With TLS
// the name comes from the verified client certificate only; the name the
// client claims in metadata must agree with it. Without TLS the claim is
// all there is.
func (t *Transport) caller(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	claims := md.Get(playerHeader)
	if len(claims) > 1 {
		return "", status.Errorf(codes.InvalidArgument, "player %q refuses the call: %d %q headers", t.self, len(claims), playerHeader)
	}
	claimed := ""
	if len(claims) == 1 {
		claimed = claims[0]
	}
	if t.insecure {
		switch {
		case claimed == "":
			return "", status.Errorf(codes.Unauthenticated, "player %q refuses the call: no %q header", t.self, playerHeader)
		case !t.cfg.Has(claimed):
			return "", status.Errorf(codes.PermissionDenied, "player %q refuses the call: %q is not a player of the config", t.self, claimed)
		case claimed == t.self:
			return "", status.Errorf(codes.PermissionDenied, "player %q refuses a call from itself", t.self)
		}
		return claimed, nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Errorf(codes.Unauthenticated, "player %q refuses the call: unknown peer", t.self)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", status.Errorf(codes.Unauthenticated, "player %q refuses the call from %s: no verified client certificate", t.self, p.Addr)
	}
	name, err := players.PlayerFromCert(info.State.VerifiedChains[0][0])
	if err != nil {
		return "", status.Errorf(codes.PermissionDenied, "player %q refuses the call from %s: %v", t.self, p.Addr, err)
	}
	switch {
	case !t.cfg.Has(name):
		return "", status.Errorf(codes.PermissionDenied, "player %q refuses the call: certificate names %q, not a player of the config", t.self, name)
	case name == t.self:
		return "", status.Errorf(codes.PermissionDenied, "player %q refuses a call from itself", t.self)
	case claimed != name:
		return "", status.Errorf(codes.PermissionDenied, "player %q refuses the call: client certificate names player %q but the client claims to be %q", t.self, name, claimed)
	}
	return name, nil
}

// hello answers a peer's greeting after checking who it is and that it
// runs with the same player list.
func (t *Transport) hello(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	from, err := t.caller(ctx)
	if err != nil {
		t.log.Warn("refused a connection", "error", err)
		return nil, err
	}
	var h Hello
	if err := h.UnmarshalBinary(in.GetValue()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "player %q: hello from %q: %v", t.self, from, err)
	}
	if h.Player != from {
		return nil, status.Errorf(codes.PermissionDenied, "player %q: hello names %q but the caller is %q", t.self, h.Player, from)
	}
	if h.Fingerprint != t.fingerprint {
		err := status.Errorf(codes.FailedPrecondition, "players %q and %q run with different player lists (config fingerprints differ); give every host the same config", t.self, from)
		t.log.Warn("refused a connection", "peer", from, "error", err)
		return nil, err
	}
	out, err := (&Hello{Player: t.self, Fingerprint: t.fingerprint}).MarshalBinary()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	t.log.Debug("hello", "peer", from)
	return &wrapperspb.BytesValue{Value: out}, nil
}

// inbound tracks the message streams peers open to this player: each
// peer may have one open at a time, and none after its first has ended.
// The zero value is ready to use; it is safe for concurrent use.
type inbound struct {
	mu     sync.Mutex
	open   map[string]string         // peer → remote address of its open stream
	ended  map[string]bool           // peers whose stream has ended
	frames map[string]*atomic.Uint64 // per peer, the frames its stream delivered
	// refused counts the streams refused because their peer had one open
	// or had ended. Tests wait on it and on frames.
	refused atomic.Uint64
}

// begin registers a stream from peer from at addr and returns the
// counter of its frames, or refuses it with the status to return.
func (in *inbound) begin(self, from, addr string) (*atomic.Uint64, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if open, ok := in.open[from]; ok {
		in.refused.Add(1)
		return nil, status.Errorf(codes.AlreadyExists,
			"player %q refuses a second message stream from player %q (from %s): its stream from %s is open, and a player has one at a time (is another process using %q's certificate?)",
			self, from, addr, open, from)
	}
	if in.ended[from] {
		in.refused.Add(1)
		return nil, status.Errorf(codes.FailedPrecondition,
			"player %q refuses a message stream from player %q (from %s): its earlier stream has ended, and a player that left does not rejoin a run",
			self, from, addr)
	}
	if in.open == nil {
		in.open, in.ended, in.frames = make(map[string]string), make(map[string]bool), make(map[string]*atomic.Uint64)
	}
	in.open[from] = addr
	in.frames[from] = new(atomic.Uint64)
	return in.frames[from], nil
}

// end records that the stream of peer from has ended.
func (in *inbound) end(from string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.open, from)
	in.ended[from] = true
}

// remoteAddr returns the address of the other end of ctx's call.
func remoteAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "an unknown address"
}

// messages receives the frames of one peer's stream, reassembles messages
// and delivers them to the mailbox. A peer has one stream open at a time:
// a second one is refused without touching the first. Before it takes a
// message, or allocates room to assemble one, messages waits until the
// peer has room under the mailbox's bounds, which holds a peer that runs
// ahead back by flow control. When the stream ends, receives from that
// peer that can no longer complete fail.
func (t *Transport) messages(stream grpc.ServerStream) error {
	ctx := stream.Context()
	from, err := t.caller(ctx)
	if err != nil {
		t.log.Warn("refused a connection", "address", remoteAddr(ctx), "error", err)
		return err
	}
	addr := remoteAddr(ctx)
	frames, err := t.in.begin(t.self, from, addr)
	if err != nil {
		t.log.Warn("refused a message stream", "peer", from, "address", addr, "error", err)
		return err
	}
	defer t.in.end(from)
	t.log.Debug("peer stream open", "peer", from, "address", addr)
	a := assembler{from: from, self: t.self, max: uint64(t.cfg.MaxMessageBytes()), box: t.box}
	defer a.cancel()
	stats := t.stats[from]
	for {
		in := new(wrapperspb.BytesValue)
		err := stream.RecvMsg(in)
		if errors.Is(err, io.EOF) {
			if a.res != nil {
				err := fmt.Errorf("%w: player %q closed its stream in the middle of message %s", ErrProtocol, from, a.key)
				t.box.FailFrom(from, err)
				return status.Error(codes.InvalidArgument, err.Error())
			}
			t.log.Debug("peer stream closed", "peer", from)
			if l := t.links[from]; l != nil {
				l.goodbye.Store(true)
			}
			t.box.FailFrom(from, fmt.Errorf("%w: player %q closed its connection to %q", ErrPeerClosed, from, t.self))
			return nil
		}
		if err != nil {
			if !t.isClosing() {
				lost := fmt.Errorf("%w: connection from player %q to %q: %v", ErrPeerLost, from, t.self, err)
				t.log.Warn("peer stream broken", "peer", from, "address", addr, "error", err)
				if l := t.links[from]; l != nil {
					l.lost.Store(true)
				}
				t.box.FailFrom(from, lost)
			}
			return err
		}
		n, done, err := a.add(ctx, in.GetValue())
		switch {
		case err == nil:
		case errors.Is(err, ErrTooLarge), errors.Is(err, ErrProtocol), errors.Is(err, ErrMalformed),
			errors.Is(err, transport.ErrDuplicate), errors.Is(err, transport.ErrUnexpected):
			if errors.Is(err, transport.ErrDuplicate) {
				err = fmt.Errorf("%w: player %q sent a message twice: %w", ErrProtocol, from, err)
			}
			t.log.Warn("refused a message", "peer", from, "address", addr, "error", err)
			t.box.FailFrom(from, err)
			code := codes.InvalidArgument
			if errors.Is(err, ErrTooLarge) {
				code = codes.ResourceExhausted
			}
			return status.Error(code, err.Error())
		default:
			if !t.isClosing() {
				// Waiting for room ended with the stream, or the mailbox
				// or this sender failed: either way nothing more comes
				// from this peer.
				t.log.Warn("peer stream ended while a message waited for room", "peer", from, "address", addr, "error", err)
				t.box.FailFrom(from, fmt.Errorf("%w: connection from player %q to %q ended while a message waited for room: %v", ErrPeerLost, from, t.self, err))
			}
			return status.Errorf(codes.Unavailable, "player %q no longer takes messages from %q: %v", t.self, from, err)
		}
		frames.Add(1)
		if done {
			stats.recvMessages.Add(1)
			stats.recvBytes.Add(uint64(n))
		}
	}
}

// assembler rebuilds the messages of one stream from its frames and
// delivers them to box. The frames of one message are consecutive on a
// stream. It reserves room in box before it allocates a message, so that
// the bytes of a message in transit count against the sender's bounds.
type assembler struct {
	from, self string
	max        uint64
	box        *transport.Mailbox
	key        transport.Key
	res        *transport.Reservation // room of the message being assembled; nil between messages
	buf        []byte
	got        uint64
}

// add takes one frame, which it may keep (its chunk, not copied, when it
// is a whole message). When the frame completes a message, add delivers it
// and reports done and its size. It waits while the sender has no room,
// until ctx ends.
func (a *assembler) add(ctx context.Context, data []byte) (n int, done bool, err error) {
	var f Frame
	if err := f.decode(data); err != nil {
		return 0, false, fmt.Errorf("frame from player %q: %w", a.from, err)
	}
	if a.res == nil {
		if f.Offset != 0 {
			return 0, false, fmt.Errorf("%w: player %q sent a frame at offset %d of %s without the start of the message", ErrProtocol, a.from, f.Offset, f.Key)
		}
		if f.Total > a.max {
			return 0, false, fmt.Errorf("%w: message %s from player %q to %q is %d bytes, above the limit of %d (max_message_bytes)", ErrTooLarge, f.Key, a.from, a.self, f.Total, a.max)
		}
		if uint64(len(f.Chunk)) == f.Total {
			// A whole message in one frame: its payload is the chunk, a
			// window into data, which it keeps alive; all of data is
			// charged. An empty message keeps nothing.
			var payload []byte
			size := 0
			if f.Total > 0 {
				payload, size = f.Chunk, cap(data)
			}
			res, err := a.box.Reserve(ctx, a.from, f.Key, size)
			if err != nil {
				return 0, false, err
			}
			return len(payload), true, res.Deliver(payload)
		}
		res, err := a.box.Reserve(ctx, a.from, f.Key, int(f.Total)) // Total checked against the limit above
		if err != nil {
			return 0, false, err
		}
		a.key, a.res = f.Key, res
		a.buf = make([]byte, f.Total)
		a.got = uint64(copy(a.buf, f.Chunk))
		return 0, false, nil
	}
	if f.Key != a.key || f.Total != uint64(len(a.buf)) || f.Offset != a.got {
		return 0, false, fmt.Errorf("%w: player %q sent a frame of %s (offset %d, length %d) in the middle of %s (offset %d, length %d)",
			ErrProtocol, a.from, f.Key, f.Offset, f.Total, a.key, a.got, len(a.buf))
	}
	a.got += uint64(copy(a.buf[a.got:], f.Chunk))
	if a.got < uint64(len(a.buf)) {
		return 0, false, nil
	}
	res, payload := a.res, a.buf
	a.key, a.res, a.buf, a.got = transport.Key{}, nil, nil, 0
	return len(payload), true, res.Deliver(payload)
}

// cancel drops the message being assembled, if any, and gives its room
// back.
func (a *assembler) cancel() {
	if a.res != nil {
		a.res.Cancel()
		a.key, a.res, a.buf, a.got = transport.Key{}, nil, nil, 0
	}
}
