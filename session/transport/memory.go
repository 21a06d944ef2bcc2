package transport

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Memory is an in-process network of players. Each player gets its own
// endpoint from Endpoint; a payload is copied on Send, so players share no
// memory. A Memory is safe for concurrent use.
type Memory struct {
	mu        sync.Mutex
	mailboxes map[string]*Mailbox
}

// NewMemory returns a network connecting the named players.
func NewMemory(players ...string) *Memory {
	m := &Memory{mailboxes: make(map[string]*Mailbox, len(players))}
	for _, p := range players {
		m.mailboxes[p] = NewMailbox()
	}
	return m
}

// Endpoint returns player's endpoint, or an error wrapping ErrUnknownPlayer.
func (m *Memory) Endpoint(player string) (*MemoryEndpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	box, ok := m.mailboxes[player]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPlayer, player)
	}
	return &MemoryEndpoint{net: m, self: player, box: box}, nil
}

func (m *Memory) mailbox(player string) (*Mailbox, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.mailboxes[player]
	return b, ok
}

// MemoryEndpoint is one player's end of a Memory network. It is safe for
// concurrent use.
type MemoryEndpoint struct {
	net  *Memory
	self string
	box  *Mailbox
}

var _ Transport = (*MemoryEndpoint)(nil)

// Mailbox returns the endpoint's own mailbox, for callers that forget
// finished iterations.
func (e *MemoryEndpoint) Mailbox() *Mailbox { return e.box }

// Send copies payload into the mailbox of player to.
func (e *MemoryEndpoint) Send(ctx context.Context, to string, key Key, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	box, ok := e.net.mailbox(to)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownPlayer, to)
	}
	return box.Deliver(ctx, e.self, key, slices.Clone(payload))
}

// SendOwned hands payload over to player to without copying it; the
// caller must not use payload afterwards.
func (e *MemoryEndpoint) SendOwned(ctx context.Context, to string, key Key, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	box, ok := e.net.mailbox(to)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownPlayer, to)
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
