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
	err    error             // set once by Fail or Close
	closed chan struct{}
	// senders holds per-sender failures set by FailFrom.
	senders map[string]*sender
}

// sender is the failure state of one sending player.
type sender struct {
	err    error         // set once, before failed is closed
	failed chan struct{} // closed by FailFrom
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
	return &Mailbox{
		slots:   make(map[slotKey]*slot),
		done:    make(map[string]uint64),
		closed:  make(chan struct{}),
		senders: make(map[string]*sender),
	}
}

func (m *Mailbox) sender(from string) *sender {
	s, ok := m.senders[from]
	if !ok {
		s = &sender{failed: make(chan struct{})}
		m.senders[from] = s
	}
	return s
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
	if snd, ok := m.senders[from]; ok && snd.err != nil {
		return snd.err
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
	snd := m.sender(from)
	m.mu.Unlock()

	select {
	case <-s.ready:
	case <-snd.failed:
		// As with Fail, a message that arrived first is still handed out.
		select {
		case <-s.ready:
		default:
			return nil, fmt.Errorf("waiting for %s from %q: %w", key, from, snd.err)
		}
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

// FailFrom makes every pending and later Recv of a message from player
// from return err (wrapped), unless that message arrived before; later
// deliveries from that player are refused with err. Transports call it
// when the link to one player breaks, so that only the receives that can
// no longer complete fail, and promptly. The first error for a player
// wins; messages from other players are unaffected.
func (m *Mailbox) FailFrom(from string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	snd := m.sender(from)
	if snd.err != nil {
		return
	}
	snd.err = err
	close(snd.failed)
}
