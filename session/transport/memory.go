package transport

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Memory is an in-process network of players. Each player gets its own
// endpoint from Endpoint; a payload is copied on Send, so players share no
// memory. A Memory is safe for concurrent use.
//
// The players named to NewMemory are listed; others join with Connect, as
// data owners do under open membership, and are the Members of the listed
// players' endpoints. Disconnect cuts a player off, as a dropout or a
// crash would, and Connect brings it back in a new epoch of every mailbox
// (see Mailbox.Rejoin): one-process sessions simulate joins, leaves and
// reconnections with them.
type Memory struct {
	mu        sync.Mutex
	mailboxes map[string]*Mailbox
	listed    map[string]bool
	gone      map[string]error // players disconnected now, and the error they cause
	changed   Changes
}

// NewMemory returns a network connecting the named players.
func NewMemory(players ...string) *Memory {
	m := &Memory{
		mailboxes: make(map[string]*Mailbox, len(players)),
		listed:    make(map[string]bool, len(players)),
		gone:      make(map[string]error),
	}
	for _, p := range players {
		m.mailboxes[p] = NewMailbox()
		m.listed[p] = true
	}
	return m
}

// Endpoint returns player's endpoint, or an error wrapping ErrUnknownPlayer
// for a player that is neither listed nor has connected.
func (m *Memory) Endpoint(player string) (*MemoryEndpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	box, ok := m.mailboxes[player]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPlayer, player)
	}
	return &MemoryEndpoint{net: m, self: player, box: box}, nil
}

// Connect joins player to the network and returns its endpoint. A player
// not named to NewMemory joins as a member (a dial-in peer, see
// Membership). A player that was disconnected comes back: in every
// mailbox it starts a new epoch (Mailbox.Rejoin), so receives from it
// wait for its messages again, and so do its own receives from the
// others. A player whose endpoint was closed comes back with an empty
// mailbox, as a restarted process would. Connecting a connected player
// returns its endpoint.
func (m *Memory) Connect(player string) (*MemoryEndpoint, error) {
	if player == "" {
		return nil, errors.New("transport: connecting a player with an empty name")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	box, known := m.mailboxes[player]
	_, wasGone := m.gone[player]
	if !known || box.closedErr() != nil {
		box = NewMailbox()
		m.mailboxes[player] = box
	}
	if wasGone {
		delete(m.gone, player)
		for p, b := range m.mailboxes {
			if p != player {
				b.Rejoin(player)
				box.Rejoin(p)
			}
		}
	}
	if !known || wasGone {
		m.changed.Signal()
	}
	return &MemoryEndpoint{net: m, self: player, box: box}, nil
}

// Disconnect cuts player off the network, as a dropout or crash would:
// every player's receives of its messages that have not arrived fail
// with an error matching ErrPeerGone, at once for those pending; its own
// receives from the others fail the same way; sends to and from it fail.
// Messages that arrived are still handed out. Connect brings it back. An
// unknown player is an error wrapping ErrUnknownPlayer; disconnecting a
// disconnected player does nothing.
func (m *Memory) Disconnect(player string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	box, ok := m.mailboxes[player]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownPlayer, player)
	}
	if _, gone := m.gone[player]; gone {
		return nil
	}
	err := fmt.Errorf("transport: player %q disconnected: %w", player, ErrPeerGone)
	m.gone[player] = err
	for p, b := range m.mailboxes {
		if p != player {
			b.FailFrom(player, err)
			box.FailFrom(p, fmt.Errorf("transport: player %q lost its connection to %q: %w", player, p, ErrPeerGone))
		}
	}
	m.changed.Signal()
	return nil
}

// route returns the mailbox a message from from to to goes into, or why
// it cannot go.
func (m *Memory) route(from, to string) (*Mailbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err, gone := m.gone[from]; gone {
		return nil, err
	}
	box, ok := m.mailboxes[to]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPlayer, to)
	}
	if err, gone := m.gone[to]; gone {
		return nil, err
	}
	return box, nil
}

// MemoryEndpoint is one player's end of a Memory network. It is safe for
// concurrent use.
type MemoryEndpoint struct {
	net  *Memory
	self string
	box  *Mailbox
}

var (
	_ Transport  = (*MemoryEndpoint)(nil)
	_ Membership = (*MemoryEndpoint)(nil)
)

// Mailbox returns the endpoint's own mailbox, for callers that forget
// finished iterations.
func (e *MemoryEndpoint) Mailbox() *Mailbox { return e.box }

// Send copies payload into the mailbox of player to.
func (e *MemoryEndpoint) Send(ctx context.Context, to string, key Key, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	box, err := e.net.route(e.self, to)
	if err != nil {
		return err
	}
	return box.Deliver(ctx, e.self, key, slices.Clone(payload))
}

// SendOwned hands payload over to player to without copying it; the
// caller must not use payload afterwards.
func (e *MemoryEndpoint) SendOwned(ctx context.Context, to string, key Key, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	box, err := e.net.route(e.self, to)
	if err != nil {
		return err
	}
	return box.Deliver(ctx, e.self, key, payload)
}

var _ Mover = (*MemoryEndpoint)(nil)

// Recv waits for the message from player from under key.
func (e *MemoryEndpoint) Recv(ctx context.Context, from string, key Key) ([]byte, error) {
	return e.box.Recv(ctx, from, key)
}

// Close fails the endpoint's pending and later receives with ErrClosed.
func (e *MemoryEndpoint) Close() error {
	e.box.Fail(ErrClosed)
	return nil
}

// Members returns, sorted, the players that joined the network with
// Connect without being named to NewMemory and are connected now, as seen
// by a listed player; a member itself has none, as a player that only
// dials out has none.
func (e *MemoryEndpoint) Members() []string {
	m := e.net
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.listed[e.self] {
		return nil
	}
	var out []string
	for p := range m.mailboxes {
		if _, gone := m.gone[p]; !m.listed[p] && !gone {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Connected reports whether this player and peer are both connected, and
// one of them is listed (members reach listed players only).
func (e *MemoryEndpoint) Connected(peer string) bool {
	m := e.net
	m.mu.Lock()
	defer m.mu.Unlock()
	_, known := m.mailboxes[peer]
	_, peerGone := m.gone[peer]
	_, selfGone := m.gone[e.self]
	return known && peer != e.self && !peerGone && !selfGone && (m.listed[e.self] || m.listed[peer])
}

// MembershipChanged returns a channel closed at the next Connect or
// Disconnect that changes the network.
func (e *MemoryEndpoint) MembershipChanged() <-chan struct{} {
	return e.net.changed.Wait()
}
