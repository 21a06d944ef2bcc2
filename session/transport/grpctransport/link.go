package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shareflow/shareflow/session/transport"
)

// link is the connection this player dials to one peer with an address,
// and the stream on it. Between two players with addresses the stream
// carries this player's messages only; for a player that only dials out
// (bidi) it carries the peer's messages to this player too.
type link struct {
	name, addr string
	conn       *grpc.ClientConn
	bidi       bool

	// sem is held by whoever uses the stream: one Send, Connect, a
	// reconnection or Close at a time. It guards stream.
	sem    chan struct{}
	stream grpc.ClientStream

	// goodbye is set when the peer closed in good order: it closed its
	// own stream to us, or said goodbye on ours; the end of ours is then
	// expected.
	goodbye atomic.Bool
	// lost is set when a stream to or from the peer broke without an
	// orderly close, and cleared when the peer is back.
	lost atomic.Bool
	// up is set while a stream is open and has not ended.
	up atomic.Bool
	// conns counts the connections made to the peer (see alertConn).
	conns atomic.Uint64
	// kick, with room for one, cuts short a reconnection's backoff: the
	// peer greeted this player, so it is back (see peerIsBack).
	kick chan struct{}

	mu          sync.Mutex
	err         error              // why the link is down; nil while up or before it was first opened
	permanent   bool               // err is one reconnecting cannot mend
	refusal     error              // a TLS-level refusal retrying cannot mend
	gen         uint64             // counts the streams opened
	epoch       uint64             // the peer's epoch the current stream belongs to
	streamConn  uint64             // the connection the current stream was opened on (conns then)
	cancel      context.CancelFunc // cancels the current stream
	monitorDone chan struct{}      // closed when the current stream's monitor exits
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

// failure returns why the link is down, if it is, and whether that is for
// good.
func (l *link) failure() (err error, permanent bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err, l.permanent
}

// fail records err as why stream generation gen of the link ended,
// unless a reason is recorded already or a later stream is open. It
// returns the reason recorded.
func (l *link) fail(gen uint64, err error, permanent bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil && l.gen == gen {
		l.err, l.permanent = err, permanent
	}
	if l.err == nil {
		return err
	}
	return l.err
}

// connDown cancels the current stream if it runs on connection seq,
// which broke: its monitor may be waiting for room in the mailbox rather
// than reading, and so would not see the end of the stream.
func (l *link) connDown(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streamConn == seq && l.cancel != nil {
		l.cancel()
	}
}

// await waits until the link to l is up: it opens it if it never was,
// and waits for a reconnection if it was lost. A link that failed for
// good fails at once.
func (t *Transport) await(ctx context.Context, l *link, start time.Time) error {
	for {
		changed := t.changed.Wait()
		err, permanent := l.failure()
		switch {
		case err == nil:
			if err := l.acquire(ctx); err != nil {
				return &ConnectError{Player: l.name, Address: l.addr, Err: err}
			}
			err := t.open(ctx, l, start)
			l.release()
			if err == nil || !errors.Is(err, transport.ErrPeerGone) {
				return err
			}
			// Lost meanwhile: wait for the reconnection.
		case permanent:
			return err
		case l.up.Load():
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return &ConnectError{Player: l.name, Address: l.addr, Err: fmt.Errorf("the link was lost and is not back within %s: %w (%v)", time.Since(start).Round(time.Millisecond), context.Cause(ctx), err)}
		}
	}
}

// open greets the peer and opens the stream to it, unless that is done,
// retrying until ctx ends. A link that is down fails at once with its
// failure. The caller holds l.sem.
func (t *Transport) open(ctx context.Context, l *link, start time.Time) error {
	if err, _ := l.failure(); err != nil {
		return err
	}
	if l.stream != nil {
		return nil
	}
	wait := 25 * time.Millisecond
	for {
		if err := t.greet(ctx, l, start); err != nil {
			return err
		}
		err := t.openStream(ctx, l)
		if err == nil || !transientRefusal(err) {
			return err
		}
		// The peer refused the stream for now: our earlier stream has
		// not ended on its side yet, or it has as many members as it
		// takes.
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return &ConnectError{Player: l.name, Address: l.addr, Err: fmt.Errorf("the peer did not take the stream within %s: %w (last error: %v)", time.Since(start).Round(time.Millisecond), context.Cause(ctx), err)}
		case <-timer.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// transientRefusal reports whether err is a refusal of a stream that may
// be lifted: codes.AlreadyExists (the peer still holds our earlier
// stream) or codes.ResourceExhausted (it has all the members it takes).
func transientRefusal(err error) bool {
	switch status.Code(err) {
	case codes.AlreadyExists, codes.ResourceExhausted:
		return true
	}
	return false
}

// greet sends Hello until the peer answers or ctx ends.
func (t *Transport) greet(ctx context.Context, l *link, start time.Time) error {
	wait := 25 * time.Millisecond
	var last error
	for {
		err, retry := t.hello1(ctx, l)
		if err == nil || !retry {
			return err
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

// hello1 greets the peer once. It reports whether trying again may help:
// not after a refusal, by the peer or of its certificate, which fails the
// link for good (see giveUp).
func (t *Transport) hello1(ctx context.Context, l *link) (err error, retry bool) {
	ctx = metadata.AppendToOutgoingContext(ctx, playerHeader, t.self)
	out := new(inMsg)
	err = l.conn.Invoke(ctx, helloMethod, &Hello{Player: t.self, Fingerprint: t.fingerprint}, out)
	if err == nil {
		var h Hello
		b, err := out.small("hello", helloBytesMax)
		out.release()
		if err == nil {
			err = h.UnmarshalBinary(b)
		}
		if err != nil {
			return &ConnectError{Player: l.name, Address: l.addr, Err: err}, false
		}
		if h.Player != l.name {
			return &ConnectError{Player: l.name, Address: l.addr, Err: fmt.Errorf("the address answers as player %q", h.Player)}, false
		}
		if h.Fingerprint != t.fingerprint {
			return &ConnectError{Player: l.name, Address: l.addr, Err: errors.New("the peer runs with a different player list (config fingerprints differ)")}, false
		}
		return nil, false
	}
	if r := l.refused(); r != nil {
		return t.giveUp(l, r), false
	}
	switch status.Code(err) {
	case codes.Unimplemented:
		return &ConnectError{Player: l.name, Address: l.addr, Err: fmt.Errorf("the peer does not speak shareflow's wire v2 (%s); does it run an older shareflow? Run the same version on every host: %w", serviceName, err)}, false
	case codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition, codes.InvalidArgument:
		return &ConnectError{Player: l.name, Address: l.addr, Err: fmt.Errorf("refused by the peer: %w", err)}, false
	}
	return err, true
}

// giveUp fails the link to l for good after a refusal at the TLS level,
// and closes its connection so that gRPC stops redialling.
func (t *Transport) giveUp(l *link, refusal error) error {
	err := &ConnectError{Player: l.name, Address: l.addr, Err: refusal}
	l.mu.Lock()
	if l.err == nil || !l.permanent {
		l.err, l.permanent = err, true
	}
	first := l.err
	l.mu.Unlock()
	l.conn.Close()
	t.log.Warn("gave up on peer at the TLS handshake", "peer", l.name, "address", l.addr, "error", refusal)
	return first
}

// openStream opens the message stream to l and waits, within ctx, for
// the peer to accept it (acceptedHeader) or refuse it; then it starts the
// stream's monitor and marks the link up. The caller holds l.sem.
func (t *Transport) openStream(ctx context.Context, l *link) error {
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
	if err == nil {
		stop := context.AfterFunc(ctx, cancel)
		var md metadata.MD
		md, err = stream.Header()
		if !stop() {
			err = fmt.Errorf("waiting for the peer to accept the stream: %w", context.Cause(ctx))
		} else if err == nil && len(md.Get(acceptedHeader)) == 0 {
			// Refused: the status says why.
			if err = recvDiscard(stream); err == nil || errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: player %q ended the stream before accepting it", ErrProtocol, l.name)
			}
		}
	}
	if err != nil {
		cancel()
		t.wg.Done()
		return &ConnectError{Player: l.name, Address: l.addr, Err: fmt.Errorf("opening the message stream: %w", err)}
	}
	// The peer's messages to this player begin a new epoch when they
	// come on this stream; otherwise the stream belongs to the epoch of
	// the peer's own stream to this player.
	var epoch uint64
	if l.bidi {
		epoch = t.box.Rejoin(l.name)
	} else {
		epoch, _ = t.box.Epoch(l.name)
	}
	done := make(chan struct{})
	l.mu.Lock()
	l.gen++
	gen := l.gen
	l.cancel, l.monitorDone, l.epoch = cancel, done, epoch
	l.streamConn = l.conns.Load()
	l.err, l.permanent = nil, false
	l.mu.Unlock()
	l.stream = stream
	if l.bidi {
		l.goodbye.Store(false)
		l.lost.Store(false)
	}
	l.up.Store(true)
	t.changed.Signal()
	go t.monitor(l, stream, gen, epoch, done)
	t.log.Debug("peer link open", "peer", l.name, "address", l.addr, "epoch", epoch)
	return nil
}

// monitor waits for the end of stream number gen to l, delivering what
// the peer sends on it if the link is bidi. Its end means the link is
// down: closed by us, closed or refused by the peer, or broken. Unless we
// are closing, receives from the peer of that epoch then fail, and a link
// that was lost or closed by the peer is dialled again.
func (t *Transport) monitor(l *link, stream grpc.ClientStream, gen, epoch uint64, done chan struct{}) {
	defer t.wg.Done()
	defer close(done)
	var err error
	if l.bidi {
		err = t.receive(l, stream, gen, epoch)
	} else {
		err = recvDiscard(stream)
	}
	l.up.Store(false)
	t.changed.Signal()
	if t.isClosing() {
		return
	}
	permanent := false
	switch {
	case err == nil:
		err, permanent = fmt.Errorf("%w: player %q sent on the message stream", ErrProtocol, l.name), true
	case errors.Is(err, io.EOF):
		err = fmt.Errorf("%w: player %q ended the stream from %q", ErrPeerClosed, l.name, t.self)
	case errors.Is(err, ErrProtocol), errors.Is(err, ErrTooLarge), errors.Is(err, ErrMalformed),
		errors.Is(err, transport.ErrDuplicate), errors.Is(err, transport.ErrUnexpected):
		permanent = true // refused here: the peer sent what it must not
	default:
		switch status.Code(err) {
		case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Unknown:
			err = fmt.Errorf("%w: stream from %q to player %q at %s: %w", ErrPeerLost, t.self, l.name, l.addr, err)
		default:
			err, permanent = fmt.Errorf("%w: player %q at %s: %w", ErrRejected, l.name, l.addr, err), true
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
	err = l.fail(gen, err, permanent)
	t.box.FailEpoch(l.name, epoch, err)
	l.mu.Lock()
	permanent = l.permanent
	l.mu.Unlock()
	if !permanent {
		t.goroutine(func() { t.reconnect(l) })
	}
}

// receive delivers the frames the peer sends on a bidi stream to this
// player's mailbox, until the stream ends; it returns the error that
// ended it. A message whose room in the mailbox is not free waits, which
// holds the peer back by flow control. An empty gRPC message is the
// peer's goodbye: it is closing, and this player closes its side in turn.
func (t *Transport) receive(l *link, stream grpc.ClientStream, gen, epoch uint64) error {
	a := assembler{from: l.name, self: t.self, max: uint64(t.cfg.MaxMessageBytes()), box: t.box}
	defer a.cancel()
	ctx := stream.Context()
	stats := t.stats.of(l.name)
	in := new(inMsg)
	for {
		err := stream.RecvMsg(in)
		if err != nil {
			if a.res != nil && errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: player %q ended its stream in the middle of message %s", ErrProtocol, l.name, a.key)
			}
			return err
		}
		if in.len() == 0 {
			in.release()
			if a.res != nil {
				return fmt.Errorf("%w: player %q said goodbye in the middle of message %s", ErrProtocol, l.name, a.key)
			}
			t.goodbye(l, stream, gen, epoch)
			continue
		}
		n, done, err := a.add(ctx, in)
		in.release()
		if err != nil {
			if t.isClosing() {
				continue // the mailbox is closed: read to the end
			}
			if errors.Is(err, transport.ErrDuplicate) {
				err = fmt.Errorf("%w: player %q sent a message twice: %w", ErrProtocol, l.name, err)
			}
			if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrProtocol) || errors.Is(err, ErrMalformed) || errors.Is(err, transport.ErrUnexpected) {
				t.log.Warn("refused a message", "peer", l.name, "error", err)
			}
			// The stream is of no more use: cancel it, so that the peer
			// learns it too.
			l.mu.Lock()
			if l.gen == gen && l.cancel != nil {
				l.cancel()
			}
			l.mu.Unlock()
			return err
		}
		if done {
			stats.recvMessages.Add(1)
			stats.recvBytes.Add(uint64(n))
		}
	}
}

// goodbye handles the peer's goodbye on a bidi stream: the link is down
// from now on, receives of the peer's messages that have not arrived
// fail, and this player closes its side so that the peer's Close need not
// wait for it.
func (t *Transport) goodbye(l *link, stream grpc.ClientStream, gen, epoch uint64) {
	l.goodbye.Store(true)
	err := l.fail(gen, fmt.Errorf("%w: player %q closed its transport", ErrPeerClosed, l.name), false)
	t.box.FailEpoch(l.name, epoch, err)
	t.log.Debug("peer said goodbye", "peer", l.name)
	if l.acquire(stream.Context()) == nil {
		if l.stream == stream {
			stream.CloseSend()
		}
		l.release()
	}
}

// peerIsBack is called when the peer greets this player: it is back, so
// a reconnection waiting out its backoff, or the next one to start, dials
// it at once. A kick left over from a greeting while the link was up only
// makes the next reconnection's first attempt come sooner.
func (l *link) peerIsBack() {
	select {
	case l.kick <- struct{}{}:
	default: // a kick is pending already
	}
}

// awaitReady makes gRPC dial l's peer now, skipping the backoff gRPC
// keeps of its own for the connection, and waits a little for the
// connection to be ready: a call on a connection still marked as failing
// would fail at once.
func (t *Transport) awaitReady(l *link) {
	l.conn.ResetConnectBackoff()
	ctx, cancel := context.WithTimeout(t.stopping, t.cfg.ConnectTimeout())
	defer cancel()
	for s := l.conn.GetState(); s != connectivity.Ready && s != connectivity.Shutdown; s = l.conn.GetState() {
		if s == connectivity.Idle {
			l.conn.Connect()
		}
		if !l.conn.WaitForStateChange(ctx, s) {
			return // the redial that follows says why
		}
	}
}

// reconnect dials l again after its stream ended, with capped
// exponential backoff and jitter, until the link is up, fails for good,
// or Close starts. A greeting from the peer (peerIsBack) ends the wait at
// once: a restarted player is redialled as soon as it is heard from, not
// after a backoff of up to ReconnectMax.
func (t *Transport) reconnect(l *link) {
	wait := t.reconnectMin
	for attempt := 1; ; attempt++ {
		timer := time.NewTimer(t.jitter(wait))
		select {
		case <-t.stopping.Done():
			timer.Stop()
			return
		case <-timer.C:
			wait = min(2*wait, t.reconnectMax)
		case <-l.kick:
			// The peer greeted us: it is back, dial it now and start the
			// backoff afresh should that fail. gRPC keeps a backoff of its
			// own for the connection, which would fail the call at once.
			timer.Stop()
			wait = t.reconnectMin
			t.awaitReady(l)
		}
		ctx, cancel := context.WithTimeout(t.stopping, t.cfg.ConnectTimeout())
		err, retry := t.redial(ctx, l)
		cancel()
		switch {
		case err == nil:
			t.log.Info("peer link reconnected", "peer", l.name, "address", l.addr, "attempts", attempt)
			return
		case t.isClosing():
			return
		case !retry:
			l.mu.Lock()
			l.err, l.permanent = err, true
			l.mu.Unlock()
			t.changed.Signal()
			t.log.Warn("gave up reconnecting to peer", "peer", l.name, "address", l.addr, "attempts", attempt, "error", err)
			return
		}
		t.log.Debug("reconnecting to peer", "peer", l.name, "address", l.addr, "attempt", attempt, "error", err)
	}
}

// redial greets l once and opens a new stream. It reports whether trying
// again may help.
func (t *Transport) redial(ctx context.Context, l *link) (err error, retry bool) {
	if err, retry := t.hello1(ctx, l); err != nil {
		return err, retry
	}
	if err := l.acquire(ctx); err != nil {
		return err, true
	}
	defer l.release()
	if err := t.openStream(ctx, l); err != nil {
		code := status.Code(err)
		return err, transientRefusal(err) || code == codes.Unavailable || code == codes.Canceled || code == codes.DeadlineExceeded || ctx.Err() != nil
	}
	return nil, false
}

// recvDiscard receives one message on stream and gives it back to gRPC
// unread.
func recvDiscard(stream grpc.ClientStream) error {
	m := new(inMsg)
	err := stream.RecvMsg(m)
	m.release()
	return err
}

// sendOnLink sends one message on the stream to l, opening it first if it
// never was.
func (t *Transport) sendOnLink(ctx context.Context, l *link, key transport.Key, payload []byte) error {
	if err, _ := l.failure(); err != nil {
		return fmt.Errorf("grpctransport: sending %s to %q: %w", key, l.name, err)
	}
	if err := l.acquire(ctx); err != nil {
		return fmt.Errorf("grpctransport: sending %s to %q: %w", key, l.name, err)
	}
	defer l.release()
	if t.isClosing() {
		return fmt.Errorf("grpctransport: player %q: %w", t.self, transport.ErrClosed)
	}
	if err := t.open(ctx, l, time.Now()); err != nil {
		return fmt.Errorf("grpctransport: sending %s to %q: %w", key, l.name, err)
	}
	l.mu.Lock()
	gen, cancel := l.gen, l.cancel
	l.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { t.abandon(l, gen, cancel, key, context.Cause(ctx)) })
	defer stop() // a second call, after the one below, does nothing
	if err := t.sendFrames(l.stream, key, payload); err != nil {
		if errors.Is(err, ErrMalformed) {
			return fmt.Errorf("grpctransport: sending %s to %q: %w", key, l.name, err)
		}
		return t.sendFailed(l, gen, key, err)
	}
	if !stop() {
		// ctx ended as the last frame went: the stream is cancelled, and
		// the message may not arrive.
		return t.sendFailed(l, gen, key, context.Cause(ctx))
	}
	return nil
}

// abandon gives up stream gen of the link to l in the middle of sending
// key, because the Send's context ended: it records why and cancels the
// stream, which ends a SendMsg held by flow control. The link is then
// dialled again.
func (t *Transport) abandon(l *link, gen uint64, cancel context.CancelFunc, key transport.Key, cause error) {
	if t.isClosing() {
		return
	}
	l.fail(gen, fmt.Errorf("%w: gave up sending %s to player %q at %s in the middle of the message: %w", ErrPeerLost, key, l.name, l.addr, cause), false)
	cancel()
}

// sendFailed turns a failed SendMsg on stream gen into the link's
// failure. On io.EOF the stream ended and the reason is in its status,
// which the monitor receives.
func (t *Transport) sendFailed(l *link, gen uint64, key transport.Key, err error) error {
	l.mu.Lock()
	done, epoch := l.monitorDone, l.epoch
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
	lerr := l.fail(gen, fmt.Errorf("%w: sending to player %q at %s: %w", ErrPeerLost, l.name, l.addr, err), false)
	t.box.FailEpoch(l.name, epoch, lerr)
	return fmt.Errorf("grpctransport: sending %s to %q: %w", key, l.name, lerr)
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
