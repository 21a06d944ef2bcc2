package transport

import (
	"context"
	"fmt"
	"sync"
)

// Mailbox holds the messages that reached one player until it asks for them.
// Transports build on it: whatever carries a message hands it to Deliver,
// and Recv waits for it. A Mailbox is safe for concurrent use.
type Mailbox struct {
	mu     sync.Mutex
	slots  map[slotKey]*slot
	done   map[string]uint64 // per session: iterations up to this one are forgotten
	err    error // set once by Fail or Close
	closed chan struct{}
}

type slotKey struct {
	from string
	key  Key
}

type slot struct {
	ready   chan struct{} // closed when payload is set
	payload []byte
	taken   bool
}

// NewMailbox returns an empty mailbox.
func NewMailbox() *Mailbox {
	return &Mailbox{slots: make(map[slotKey]*slot), done: make(map[string]uint64), closed: make(chan struct{})}
}

func (m *Mailbox) slot(k slotKey) *slot {
	s, ok := m.slots[k]
	if !ok {
		s = &slot{ready: make(chan struct{})}
		m.slots[k] = s
	}
	return s
}

// Deliver stores payload as the message from player from under key. The
// mailbox keeps payload; the caller must not modify it afterwards. A second
// delivery under the same sender and key is refused with ErrDuplicate.
func (m *Mailbox) Deliver(from string, key Key, payload []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if last, ok := m.done[key.Session]; ok && key.Iteration <= last {
		return nil // late message of a finished iteration
	}
	s := m.slot(slotKey{from, key})
	select {
	case <-s.ready:
		return fmt.Errorf("%w: %s from %q", ErrDuplicate, key, from)
	default:
	}
	s.payload = payload
	close(s.ready)
	return nil
}

// Recv waits for the message from player from under key.
func (m *Mailbox) Recv(ctx context.Context, from string, key Key) ([]byte, error) {
	k := slotKey{from, key}
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return nil, m.err
	}
	s := m.slot(k)
	m.mu.Unlock()

	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for %s from %q: %w", key, from, context.Cause(ctx))
	case <-m.closed:
		// A message that arrived before the failure is still handed out.
		select {
		case <-s.ready:
		default:
			m.mu.Lock()
			err := m.err
			m.mu.Unlock()
			return nil, fmt.Errorf("waiting for %s from %q: %w", key, from, err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.taken {
		return nil, fmt.Errorf("%w: %s from %q received twice", ErrDuplicate, key, from)
	}
	s.taken = true
	p := s.payload
	s.payload = nil
	return p, nil
}

// Forget drops every message of the given session and iteration, received
// or not, so that a long run does not accumulate empty slots. Messages that
// arrive later for that iteration are dropped too, so a late message from a
// failed iteration cannot be mistaken for a current one.
func (m *Mailbox) Forget(session string, iteration uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if last, ok := m.done[session]; !ok || iteration > last {
		m.done[session] = iteration
	}
	for k := range m.slots {
		if k.key.Session == session && k.key.Iteration <= iteration {
			delete(m.slots, k)
		}
	}
}

// Fail makes every pending and later Recv return err (wrapped). The first
// error wins.
func (m *Mailbox) Fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return
	}
	m.err = err
	close(m.closed)
}
