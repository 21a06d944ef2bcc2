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
	// pending counts, per sender, the bytes delivered but not yet received;
	// limit bounds it (0: no bound). room[from] is closed, and dropped,
	// when bytes from that sender are received or forgotten: deliveries
	// waiting for room wait on it.
	pending map[string]int64
	limit   int64
	room    map[string]chan struct{}
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
	cost    int64 // what the message counts against its sender's bound until received
	taken   bool
}

// slotCost is what a waiting message costs besides its payload and session
// id: the slot and its map entry. Counting it stops a sender filling memory
// with empty messages under ever new keys.
const slotCost = 128

// cost is what a message counts against its sender's bound while it waits.
func cost(key Key, payload []byte) int64 {
	return int64(len(payload)) + int64(len(key.Session)) + slotCost
}

// NewMailbox returns an empty mailbox.
func NewMailbox() *Mailbox {
	return &Mailbox{
		slots:   make(map[slotKey]*slot),
		done:    make(map[string]uint64),
		closed:  make(chan struct{}),
		senders: make(map[string]*sender),
		pending: make(map[string]int64),
		room:    make(map[string]chan struct{}),
	}
}

// SetPendingLimit bounds the bytes one sender may have waiting in the
// mailbox, delivered but not yet asked for: a peer cannot fill this
// player's memory with messages nobody reads. A message counts its
// payload, its session id and a fixed slotCost. A delivery past the bound
// waits until this player has received or forgotten enough of that
// sender's messages (see Deliver). A single message larger than the bound
// is taken once nothing else from its sender waits. Zero means no bound.
func (m *Mailbox) SetPendingLimit(bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.limit = bytes
	for from := range m.room {
		m.freed(from) // waiting deliveries check the new bound
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
//
// When the sender already has as many unread bytes as the pending limit
// allows, Deliver waits for room: this is how a sender that runs ahead of
// this player, say a data owner that only sends, is held back rather than
// failed. It gives up when ctx ends, with an error wrapping ErrBacklog and
// the context's cause, or when the mailbox or that sender fails. Waiting
// cannot deadlock as long as the receiver asks for each sender's messages
// in the order they were sent, as the session's plans do: what it needs
// next is then never behind what waits unread.
func (m *Mailbox) Deliver(ctx context.Context, from string, key Key, payload []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		if m.err != nil {
			return m.err
		}
		snd := m.sender(from)
		if snd.err != nil {
			return snd.err
		}
		if last, ok := m.done[key.Session]; ok && key.Iteration <= last {
			return nil // late message of a finished iteration
		}
		if s, ok := m.slots[slotKey{from, key}]; ok {
			select {
			case <-s.ready:
				return fmt.Errorf("%w: %s from %q", ErrDuplicate, key, from)
			default:
			}
		}
		waiting := m.pending[from]
		if m.limit <= 0 || waiting == 0 || waiting+cost(key, payload) <= m.limit {
			break
		}
		room, ok := m.room[from]
		if !ok {
			room = make(chan struct{})
			m.room[from] = room
		}
		m.mu.Unlock()
		var err error
		select {
		case <-room:
		case <-snd.failed:
		case <-m.closed:
		case <-ctx.Done():
			err = fmt.Errorf("%w: player %q has %d bytes waiting that nobody asked for; %s (%d bytes) did not fit under the limit of %d in time: %w",
				ErrBacklog, from, waiting, key, len(payload), m.limit, context.Cause(ctx))
		}
		m.mu.Lock()
		if err != nil {
			return err
		}
	}
	s := m.slot(slotKey{from, key})
	s.cost = cost(key, payload)
	m.pending[from] += s.cost
	s.payload = payload
	close(s.ready)
	return nil
}

// freed wakes the deliveries from player from that wait for room. m.mu is
// held.
func (m *Mailbox) freed(from string) {
	if room, ok := m.room[from]; ok {
		close(room)
		delete(m.room, from)
	}
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
	m.pending[from] -= s.cost
	s.cost = 0
	m.freed(from)
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
	for k, s := range m.slots {
		if k.key.Session == session && k.key.Iteration <= iteration {
			m.pending[k.from] -= s.cost // zero once received
			delete(m.slots, k)
			m.freed(k.from)
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
	m.failFrom(from, err)
}

// failFrom is FailFrom with m.mu held.
func (m *Mailbox) failFrom(from string, err error) {
	snd := m.sender(from)
	if snd.err != nil {
		return
	}
	snd.err = err
	close(snd.failed)
}
