package grpctransport

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shareflow/shareflow/session/transport"
)

// dialIn is the connection of a peer that dialled in to this player: a
// data owner the config does not list, or a player it lists without an
// address. Its one message stream carries the peer's messages to this
// player and this player's messages to the peer, so that the peer needs
// no listening port.
type dialIn struct {
	name, addr string
	stream     grpc.ServerStream
	epoch      uint64 // of the peer's messages on this stream

	// sem is held by whoever sends on the stream: one Send, or Close's
	// goodbye, at a time. It guards buf. It is held until the stream is
	// accepted, and for good once the handler is done with the stream.
	sem chan struct{}
	buf []byte
	// ended is set when the handler is done with the stream; a sender
	// that finds it set must not touch the stream.
	ended atomic.Bool
	done  chan struct{} // closed once ended is set and the handler holds sem
}

// sendToDialIn sends one message to peer to, which dials in, on the
// stream it opened. If it has not dialled in yet, sendToDialIn waits for
// it, within ctx; if its last stream ended, it fails at once. When ctx
// ends in the middle of the message, the peer's connection is cut: the
// peer sees it lost, and dials again.
func (t *Transport) sendToDialIn(ctx context.Context, to string, key transport.Key, payload []byte) error {
	d, err := t.waitDialIn(ctx, to)
	if err != nil {
		return fmt.Errorf("grpctransport: sending %s to %q: %w", key, to, err)
	}
	select {
	case d.sem <- struct{}{}:
	case <-d.done:
		return fmt.Errorf("grpctransport: sending %s to %q: %w", key, to, t.dialInGone(to))
	case <-ctx.Done():
		return fmt.Errorf("grpctransport: sending %s to %q: %w", key, to, context.Cause(ctx))
	}
	defer func() { <-d.sem }()
	if d.ended.Load() {
		return fmt.Errorf("grpctransport: sending %s to %q: %w", key, to, t.dialInGone(to))
	}
	stop := context.AfterFunc(ctx, func() {
		t.log.Warn("cut a peer's connection: a send to it did not finish in time", "peer", d.name, "address", d.addr, "error", context.Cause(ctx))
		t.cut(d)
	})
	defer stop()
	total := uint64(len(payload))
	for off := 0; ; {
		n := min(t.chunk, len(payload)-off)
		f := Frame{Key: key, Total: total, Offset: uint64(off), Chunk: payload[off : off+n]}
		var err error
		if d.buf, err = f.AppendBinary(d.buf[:0]); err != nil {
			return fmt.Errorf("grpctransport: sending %s to %q: %w", key, to, err)
		}
		if err := d.stream.SendMsg(&wrapperspb.BytesValue{Value: d.buf}); err != nil {
			if ctx.Err() != nil {
				err = context.Cause(ctx) // the connection was cut for it
			}
			return fmt.Errorf("grpctransport: sending %s to %q: %w: the stream of player %q from %s: %w", key, to, ErrPeerLost, to, d.addr, err)
		}
		off += n
		if off == len(payload) {
			break
		}
	}
	if !stop() {
		return fmt.Errorf("grpctransport: sending %s to %q: %w: gave up in the middle of the message: %w", key, to, ErrPeerLost, context.Cause(ctx))
	}
	return nil
}

// waitDialIn returns the connection of peer, which dials in, waiting
// within ctx for it to dial in if it never has; if its last stream ended,
// it fails at once with why.
func (t *Transport) waitDialIn(ctx context.Context, peer string) (*dialIn, error) {
	for {
		changed := t.changed.Wait()
		d, gone := t.in.current(peer)
		switch {
		case d != nil:
			return d, nil
		case gone != nil:
			return nil, gone
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("player %q has not dialled in: %w", peer, context.Cause(ctx))
		}
	}
}

// dialInGone returns why the last stream of peer ended.
func (t *Transport) dialInGone(peer string) error {
	if _, gone := t.in.current(peer); gone != nil {
		return gone
	}
	return fmt.Errorf("%w: the stream of player %q ended", ErrPeerLost, peer)
}

// finish ends the use of d's stream by senders, before its handler
// returns: a Send that still holds the stream has its connection cut, so
// that it does not write on the stream after the handler is gone.
func (t *Transport) finish(d *dialIn) {
	d.ended.Store(true)
	select {
	case d.sem <- struct{}{}:
	default:
		t.cut(d)
		d.sem <- struct{}{}
	}
	close(d.done)
}

// farewell tells the peer of d goodbye, for Close: after the messages
// already sent to it, an empty message, to which the peer answers by
// closing its side of the stream. It waits until deadline for that, and
// cuts the connection if it does not come.
func (t *Transport) farewell(d *dialIn, deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	select {
	case d.sem <- struct{}{}:
		if !d.ended.Load() {
			stop := context.AfterFunc(ctx, func() { t.cut(d) })
			d.stream.SendMsg(&wrapperspb.BytesValue{})
			stop()
		}
		<-d.sem
	case <-d.done:
		return
	case <-ctx.Done():
	}
	select {
	case <-d.done:
	case <-ctx.Done():
		t.cut(d)
	}
}

// cut closes the connection d's stream came on.
func (t *Transport) cut(d *dialIn) {
	if t.gate != nil {
		t.gate.cut(d.addr)
	}
}
