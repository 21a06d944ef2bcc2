package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
)

// The gRPC service, written by hand (there is no .proto file): every
// message is a Hello or a Frame in its own encoding, with no protobuf
// around it (see frameCodec). The service's version in its name is that of
// the wire as a whole; the frame encoding carries its own (wireVersion,
// and codecName).
const (
	serviceName   = "shareflow.transport.v2.Transport"
	helloMethod   = "/" + serviceName + "/Hello"
	messageMethod = "/" + serviceName + "/Messages"
	// oldServiceName is the service of shareflow before v2, whose messages
	// were google.protobuf.BytesValue wrapping a Hello or a Frame. A
	// server answers its calls with codes.FailedPrecondition, so that an
	// older player learns why it cannot connect.
	oldServiceName = "shareflow.transport.v1.Transport"
	// playerHeader is the metadata key under which a client states the
	// player it claims to be.
	playerHeader = "shareflow-player"
	// acceptedHeader is the header a server sends, naming itself, when
	// it accepts a message stream; a stream it refuses ends with a
	// status instead.
	acceptedHeader = "shareflow-accepted"
	// contentType is the content-type of the service's calls.
	contentType = "application/grpc+" + codecName
)

// handler is what the service needs of its implementation.
type handler interface {
	hello(ctx context.Context, in *inMsg) (*Hello, error)
	messages(stream grpc.ServerStream) error
	refuseOld(ctx context.Context) error
}

// serviceDesc describes the two methods, in the notation of a .proto file
// though the messages are not protobuf (see frameCodec):
//
//	rpc Hello(Hello) returns (Hello);
//	rpc Messages(stream Frame) returns (stream Frame);
//
// Messages carries Frames from client to server for as long as the client
// lives. The server answers with the header acceptedHeader once it takes
// the stream. From a client with an address in the config it sends
// nothing more, and ends the stream with a status only when it refuses
// the stream (the client has one open already) or a frame, or shuts down,
// so the client learns of a broken link by its pending receive. To a
// client that only dials out it sends its own Frames on the stream, and
// an empty message as goodbye when it closes, after which the client
// half-closes the stream in turn.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*handler)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Hello",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(inMsg)
			if err := dec(in); err != nil {
				return nil, err
			}
			defer in.release()
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

// oldServiceDesc answers the calls of players that run shareflow before
// v2 with a refusal that says so; it reads none of their messages.
var oldServiceDesc = grpc.ServiceDesc{
	ServiceName: oldServiceName,
	HandlerType: (*handler)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Hello",
		Handler: func(srv any, ctx context.Context, _ func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			return nil, srv.(handler).refuseOld(ctx)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Messages",
		Handler:       func(srv any, stream grpc.ServerStream) error { return srv.(handler).refuseOld(stream.Context()) },
		ClientStreams: true,
		ServerStreams: true,
	}},
}

// refuseOld refuses a call of the service before v2.
func (t *Transport) refuseOld(ctx context.Context) error {
	who, err := t.identify(ctx)
	if err != nil {
		t.log.Warn("refused a connection", "address", remoteAddr(ctx), "error", err)
		return err
	}
	err = status.Errorf(codes.FailedPrecondition,
		"player %q speaks shareflow's wire v2 (%s, %s) and %q an older one (%s): run the same shareflow version on every host",
		t.self, serviceName, contentType, who, oldServiceName)
	t.log.Warn("refused a player running an older shareflow", "peer", who, "address", remoteAddr(ctx), "error", err)
	return err
}

// caller returns the player at the other end of an incoming call of the
// service (see identify), which must speak its codec: a call whose
// content-type is not contentType is refused with codes.InvalidArgument.
func (t *Transport) caller(ctx context.Context) (string, error) {
	who, err := t.identify(ctx)
	if err != nil {
		return "", err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if ct := md.Get("content-type"); len(ct) != 1 || ct[0] != contentType {
		return "", status.Errorf(codes.InvalidArgument, "player %q refuses the call of %q: content-type %q, want %q (players run different shareflow versions?)", t.self, who, ct, contentType)
	}
	return who, nil
}

// identify returns the player at the other end of an incoming call. With
// TLS the name comes from the verified client certificate only; the name
// the client claims in metadata must agree with it. Without TLS the claim
// is all there is.
func (t *Transport) identify(ctx context.Context) (string, error) {
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
		case t.cfg.Admits(claimed) != nil:
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
	case t.cfg.Admits(name) != nil:
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
func (t *Transport) hello(ctx context.Context, in *inMsg) (*Hello, error) {
	from, err := t.caller(ctx)
	if err != nil {
		t.refusals.log(slog.LevelWarn, "refused a connection", "remote", remoteAddr(ctx), "reason", err.Error())
		return nil, err
	}
	var h Hello
	b, err := in.small("hello", helloBytesMax)
	if err == nil {
		err = h.UnmarshalBinary(b)
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "player %q: hello from %q: %v", t.self, from, err)
	}
	if h.Player != from {
		return nil, status.Errorf(codes.PermissionDenied, "player %q: hello names %q but the caller is %q", t.self, h.Player, from)
	}
	if h.Fingerprint != t.fingerprint {
		err := status.Errorf(codes.FailedPrecondition, "players %q and %q run with different player lists (config fingerprints differ); give every host the same config", t.self, from)
		t.refusals.log(slog.LevelWarn, "refused a connection", "remote", remoteAddr(ctx), "peer", from, "reason", err.Error())
		return nil, err
	}
	t.log.Debug("hello", "peer", from)
	if l := t.links[from]; l != nil {
		// Redial it now rather than after the backoff. The kick is kept
		// even while the link looks up: this player may not yet have
		// noticed that the old connection died.
		l.peerIsBack()
	}
	return &Hello{Player: t.self, Fingerprint: t.fingerprint}, nil
}

// inbound tracks the message streams peers open to this player: each
// peer may have one open at a time, and at most maxMembers peers the
// config does not list may have one. The zero value, with maxMembers set,
// is ready to use; it is safe for concurrent use.
type inbound struct {
	maxMembers int

	mu      sync.Mutex
	open    map[string]*peerStream    // peer → its open stream
	members int                       // open streams of peers the config does not list
	frames  map[string]*atomic.Uint64 // per peer, the frames its last stream delivered
	gone    map[string]error          // peers that dialled in and left, and why
	lost    map[string]bool           // those of them whose stream broke
	// refused counts the streams refused because their peer had one open
	// or there were maxMembers members. Tests wait on it and on frames.
	refused atomic.Uint64
}

// peerStream is a peer's open message stream.
type peerStream struct {
	addr     string
	unlisted bool
	dial     *dialIn // for a peer that dialled in; nil for one with an address
}

// begin registers a stream from peer from at addr and returns the
// counter of its frames, or refuses it with the status to return.
func (in *inbound) begin(self, from, addr string, unlisted bool, d *dialIn) (*atomic.Uint64, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if open, ok := in.open[from]; ok {
		in.refused.Add(1)
		return nil, status.Errorf(codes.AlreadyExists,
			"player %q refuses a second message stream from player %q (from %s): its stream from %s is open, and a player has one at a time (is another process using %q's certificate?)",
			self, from, addr, open.addr, from)
	}
	if unlisted && in.members >= in.maxMembers {
		in.refused.Add(1)
		return nil, status.Errorf(codes.ResourceExhausted,
			"player %q refuses data owner %q (from %s): %d data owners the config does not list are connected, the most it allows (max_members)",
			self, from, addr, in.members)
	}
	if in.open == nil {
		in.open, in.frames = make(map[string]*peerStream), make(map[string]*atomic.Uint64)
		in.gone, in.lost = make(map[string]error), make(map[string]bool)
	}
	in.open[from] = &peerStream{addr: addr, unlisted: unlisted, dial: d}
	if unlisted {
		in.members++
	}
	delete(in.gone, from)
	delete(in.lost, from)
	in.frames[from] = new(atomic.Uint64)
	return in.frames[from], nil
}

// end records that the stream of peer from has ended with err; lost says
// it broke rather than closed.
func (in *inbound) end(from string, err error, lost bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	ps := in.open[from]
	delete(in.open, from)
	if ps.unlisted {
		in.members--
	}
	if ps.dial != nil {
		in.gone[from] = err
		if lost {
			in.lost[from] = true
		}
	}
}

// isOpen reports whether peer has a stream open.
func (in *inbound) isOpen(peer string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	_, ok := in.open[peer]
	return ok
}

// dialIn returns the connection of peer, if it dialled in and its stream
// is open.
func (in *inbound) dialIn(peer string) *dialIn {
	d, _ := in.current(peer)
	return d
}

// current returns the connection of peer if it dialled in and its stream
// is open, or else why its last one ended, if it had one.
func (in *inbound) current(peer string) (*dialIn, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if ps, ok := in.open[peer]; ok && ps.dial != nil {
		return ps.dial, nil
	}
	return nil, in.gone[peer]
}

// dialIns returns, sorted, the peers that dialled in and have a stream
// open.
func (in *inbound) dialIns() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []string
	for name, ps := range in.open {
		if ps.dial != nil {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// dialInConns returns the connections of the peers that dialled in and
// have a stream open.
func (in *inbound) dialInConns() []*dialIn {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []*dialIn
	for _, ps := range in.open {
		if ps.dial != nil {
			out = append(out, ps.dial)
		}
	}
	return out
}

// lostDialIns returns the peers that dialled in and whose stream broke,
// and have not come back.
func (in *inbound) lostDialIns() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []string
	for name := range in.lost {
		out = append(out, name)
	}
	return out
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
// a second one is refused without touching the first; so is a data owner
// the config does not list once max_members of them have one. Each
// stream a peer opens starts a new epoch of its messages
// (transport.Mailbox.Rejoin). Before it takes a message, or allocates
// room to assemble one, messages waits until the peer has room under the
// mailbox's bounds, which holds a peer that runs ahead back by flow
// control. When the stream ends, receives from that peer that can no
// longer complete fail. A peer without an address also gets this
// player's messages on its stream (see sendToDialIn).
func (t *Transport) messages(stream grpc.ServerStream) error {
	ctx := stream.Context()
	from, err := t.caller(ctx)
	if err != nil {
		t.refusals.log(slog.LevelWarn, "refused a connection", "remote", remoteAddr(ctx), "reason", err.Error())
		return err
	}
	addr := remoteAddr(ctx)
	unlisted := !t.cfg.Has(from)
	var d *dialIn
	if !t.cfg.Listens(from) {
		d = &dialIn{name: from, addr: addr, stream: stream, sem: make(chan struct{}, 1), done: make(chan struct{})}
		d.sem <- struct{}{} // no Send until the stream is accepted
	}
	frames, err := t.in.begin(t.self, from, addr, unlisted, d)
	if err != nil {
		t.refusals.log(slog.LevelWarn, "refused a message stream", "peer", from, "address", addr, "error", err)
		return err
	}
	epoch := t.box.Rejoin(from)
	// Whatever ends the stream ends the epoch; end says why.
	var end error
	lost := false
	defer func() {
		if end == nil {
			end = fmt.Errorf("%w: the stream of player %q to %q ended", ErrPeerClosed, from, t.self)
		}
		t.box.FailEpoch(from, epoch, end)
		if d != nil {
			t.finish(d)
		}
		t.in.end(from, end, lost)
		t.changed.Signal()
	}()
	if err := stream.SendHeader(metadata.Pairs(acceptedHeader, t.self)); err != nil {
		end, lost = fmt.Errorf("%w: connection from player %q to %q: %v", ErrPeerLost, from, t.self, err), true
		if d != nil {
			<-d.sem // finish takes it back
		}
		return err
	}
	if l := t.links[from]; l != nil {
		// The peer is back, if it had gone.
		l.goodbye.Store(false)
		l.lost.Store(false)
	}
	if d != nil {
		d.epoch = epoch
		<-d.sem // Sends may use the stream now
	}
	t.changed.Signal()
	t.log.Debug("peer stream open", "peer", from, "address", addr, "epoch", epoch, "dials_in", d != nil, "member", unlisted)
	a := assembler{from: from, self: t.self, max: uint64(t.cfg.MaxMessageBytes()), box: t.box}
	defer a.cancel()
	stats := t.stats.of(from)
	in := new(inMsg)
	for {
		err := stream.RecvMsg(in)
		if errors.Is(err, io.EOF) {
			if a.res != nil {
				end = fmt.Errorf("%w: player %q closed its stream in the middle of message %s", ErrProtocol, from, a.key)
				return status.Error(codes.InvalidArgument, end.Error())
			}
			t.log.Debug("peer stream closed", "peer", from)
			if l := t.links[from]; l != nil {
				l.goodbye.Store(true)
			}
			end = fmt.Errorf("%w: player %q closed its connection to %q", ErrPeerClosed, from, t.self)
			return nil
		}
		if err != nil {
			if !t.isClosing() {
				end, lost = fmt.Errorf("%w: connection from player %q to %q: %v", ErrPeerLost, from, t.self, err), true
				t.events.log(slog.LevelWarn, "peer stream broken", "peer", from, "address", addr, "error", err)
				if l := t.links[from]; l != nil {
					l.lost.Store(true)
				}
			}
			return err
		}
		n, done, err := a.add(ctx, in)
		in.release()
		switch {
		case err == nil:
		case errors.Is(err, ErrTooLarge), errors.Is(err, ErrProtocol), errors.Is(err, ErrMalformed),
			errors.Is(err, transport.ErrDuplicate), errors.Is(err, transport.ErrUnexpected):
			if errors.Is(err, transport.ErrDuplicate) {
				err = fmt.Errorf("%w: player %q sent a message twice: %w", ErrProtocol, from, err)
			}
			t.events.log(slog.LevelWarn, "refused a message", "peer", from, "address", addr, "error", err)
			end = err
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
				t.events.log(slog.LevelWarn, "peer stream ended while a message waited for room", "peer", from, "address", addr, "error", err)
				end, lost = fmt.Errorf("%w: connection from player %q to %q ended while a message waited for room: %v", ErrPeerLost, from, t.self, err), true
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

// add takes one frame, the message in, and copies its chunk into the
// message it reassembles; it keeps nothing of in. When the frame
// completes a message, add delivers it and reports done and its size. It
// checks the frame's header, and reserves room for a message in box,
// before it allocates the message; it waits while the sender has no room,
// until ctx ends.
func (a *assembler) add(ctx context.Context, in *inMsg) (n int, done bool, err error) {
	f, headerLen, err := in.frame()
	if err != nil {
		return 0, false, fmt.Errorf("frame from player %q: %w", a.from, err)
	}
	chunk := in.len() - headerLen
	if a.res == nil {
		if f.Offset != 0 {
			return 0, false, fmt.Errorf("%w: player %q sent a frame at offset %d of %s without the start of the message", ErrProtocol, a.from, f.Offset, f.Key)
		}
		if f.Total > a.max {
			return 0, false, fmt.Errorf("%w: message %s from player %q to %q is %d bytes, above the limit of %d (max_message_bytes)", ErrTooLarge, f.Key, a.from, a.self, f.Total, a.max)
		}
		res, err := a.box.Reserve(ctx, a.from, f.Key, int(f.Total)) // Total checked against the limit above
		if err != nil {
			return 0, false, err
		}
		if uint64(chunk) == f.Total {
			// A whole message in one frame. An empty message keeps
			// nothing.
			var payload []byte
			if f.Total > 0 {
				payload = make([]byte, f.Total)
				copyAt(payload, in.data, headerLen)
			}
			return len(payload), true, res.Deliver(payload)
		}
		a.key, a.res = f.Key, res
		a.buf = make([]byte, f.Total)
		a.got = uint64(copyAt(a.buf, in.data, headerLen))
		return 0, false, nil
	}
	if f.Key != a.key || f.Total != uint64(len(a.buf)) || f.Offset != a.got {
		return 0, false, fmt.Errorf("%w: player %q sent a frame of %s (offset %d, length %d) in the middle of %s (offset %d, length %d)",
			ErrProtocol, a.from, f.Key, f.Offset, f.Total, a.key, a.got, len(a.buf))
	}
	a.got += uint64(copyAt(a.buf[a.got:], in.data, headerLen))
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
