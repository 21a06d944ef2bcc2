// Package transport moves opaque messages between players.
//
// A message is addressed by the player it goes to and a Key, the rendezvous
// of one send with its one receive. A receiver asks for the message from a
// given sender under a given key; messages may arrive in any order and wait
// in a mailbox until they are asked for. Send never waits for the receiver to
// ask, so players that follow one global order of steps cannot deadlock.
//
// A Mailbox holds one player's messages until they are asked for. It can
// bound, per sender, what waits unread, in bytes (SetPendingLimit, each
// message charged its real cost as Charge says) and in messages
// (SetPendingCount), holding a sender that runs ahead back rather than
// failing it; it can refuse messages under sessions the player does not
// run (Expect); and it drops the iterations the player forgot (Forget).
//
// A sender's messages come in epochs, one per connection: when its
// connection breaks the transport fails the epoch (Mailbox.FailFrom), so
// that receives waiting for it fail promptly with an error matching
// ErrPeerGone, and when the sender connects again a new epoch starts
// (Mailbox.Rejoin) in which its messages are received again.
//
// Transports whose peers come and go while they run implement Membership:
// data owners that dial in and join the next round after they connect
// (open membership), and peers that reconnect after a loss. Members lists
// the dial-in peers connected now, Connected says whether messages can
// travel to and from a peer now, and MembershipChanged wakes a caller at
// the next change:
//
//	for {
//		changed := t.MembershipChanged() // before reading, so no change is missed
//		if len(t.Members()) >= want {
//			break
//		}
//		select {
//		case <-changed:
//		case <-ctx.Done():
//			return ctx.Err()
//		}
//	}
//
// Memory is the in-process implementation: it copies every payload, so
// players share no memory, exactly as if they ran on separate hosts, and
// Memory.Connect and Memory.Disconnect simulate joins, dropouts and
// reconnections. The gRPC implementation for players on separate hosts
// lives in a subpackage.
package transport

import (
	"context"
	"errors"
	"fmt"
)

// Key names one message of one run: the session it belongs to, the iteration
// and the edge of the compiled plan it carries. A Key is used once per
// (sender, receiver) pair; using it twice is a programming error that Send
// reports.
type Key struct {
	Session   string
	Iteration uint64
	Edge      uint64
}

// String formats the key as session/iteration/edge.
func (k Key) String() string {
	return fmt.Sprintf("%s/%d/%d", k.Session, k.Iteration, k.Edge)
}

// Transport is one player's endpoint. Implementations are safe for
// concurrent use.
type Transport interface {
	// Send queues payload for player to under key and returns without
	// waiting for the receiver. The caller may reuse payload afterwards.
	Send(ctx context.Context, to string, key Key, payload []byte) error
	// Recv blocks until the message sent by from under key arrives, ctx is
	// done, or the transport fails; it returns the payload, which the caller
	// owns.
	Recv(ctx context.Context, from string, key Key) ([]byte, error)
	// Close releases the endpoint. Pending and later Recv calls fail with
	// ErrClosed.
	Close() error
}

// Mover is implemented by transports that can take a payload over
// instead of copying it. After SendOwned the caller must not touch payload
// again: ownership moves with the message, so sender and receiver still
// share no memory.
type Mover interface {
	SendOwned(ctx context.Context, to string, key Key, payload []byte) error
}

// Membership is implemented by transports whose peers may join, leave and
// come back while they run. Implementations are safe for concurrent use.
type Membership interface {
	// Members returns, sorted, the dial-in peers connected to this
	// player now: players that reach it over connections they open
	// themselves, such as data owners the config does not list. A
	// player that only dials out has none.
	Members() []string
	// Connected reports whether messages can travel between this player
	// and peer now, both ways.
	Connected(peer string) bool
	// MembershipChanged returns a channel that is closed at the next
	// change of Members or Connected. Take it before reading them, then
	// wait on it, so that no change goes unseen.
	MembershipChanged() <-chan struct{}
}

var (
	// ErrPeerGone is matched (errors.Is) by the errors of receives and
	// sends that failed because the peer left: it closed, its
	// connection broke, or it was disconnected. A session may drop such
	// a peer from a round rather than stop.
	ErrPeerGone = errors.New("transport: peer gone")
	// ErrClosed is returned by operations on a closed transport.
	ErrClosed = errors.New("transport: closed")
	// ErrUnknownPlayer is returned when a message names a player the
	// transport cannot reach.
	ErrUnknownPlayer = errors.New("transport: unknown player")
	// ErrDuplicate is returned when a key is used twice between the same
	// pair of players.
	ErrDuplicate = errors.New("transport: duplicate message key")
	// ErrBacklog is returned when a message waited for room in a mailbox
	// whose sender already had as many unread messages or bytes as the
	// limits allow, and its context ended first.
	ErrBacklog = errors.New("transport: too many unread messages")
	// ErrUnexpected is returned for a message under a session the
	// receiving mailbox does not expect (see Mailbox.Expect).
	ErrUnexpected = errors.New("transport: message under an unexpected session")
)
