package transport

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
)

// Mailbox holds the messages that reached one player until it asks for them.
// Transports build on it: whatever carries a message hands it to Deliver
// (or, for a message it assembles from pieces, reserves room with Reserve
// first), and Recv waits for it. A Mailbox is safe for concurrent use.
//
// What a sender may leave unread is bounded, per sender, by
// SetPendingLimit (bytes) and SetPendingCount (messages); Expect confines
// deliveries to the sessions this player runs, and Forget drops finished
// iterations.
//
// A sender's messages come in epochs, one per connection: FailFrom ends
// the current epoch when the connection breaks (its pending and later
// receives fail), and Rejoin starts the next when the sender connects
// again (receives wait for its messages again). Messages that arrived
// are handed out whatever their epoch.
type Mailbox struct {
	mu     sync.Mutex
	slots  map[slotKey]slot
	done   map[string]uint64 // per session: iterations up to this one are forgotten
	expect map[string]bool   // sessions taken; nil: every session
	err    error             // set once by Fail or Close
	closed chan struct{}
	// senders holds, per sender, its failure and what it has waiting.
	senders map[string]*sender
	// limit and count bound, per sender, the charged bytes and the number
	// of messages delivered but not yet received, reservations included
	// (0: no bound).
	limit int64
	count int
	// waiting counts the deliveries and reservations waiting for room,
	// receiving the receives waiting for a message; tests read them.
	waiting, receiving int
	// peak is the most slots the table held since it was last compacted.
	peak int
}

// sender is the state of one sending player.
type sender struct {
	cur *epoch // the sender's current connection
	// bytes and count are what the sender has waiting unread or reserved:
	// charged bytes (see MessageOverhead) and messages.
	bytes int64
	count int
	// room, when not nil, is closed and dropped when some of the sender's
	// bytes are received, forgotten or released; deliveries waiting for
	// room wait on it.
	room chan struct{}
}

// epoch is one connection of a sender: from its Rejoin (or the first
// use of the sender) to its failure.
type epoch struct {
	n      uint64
	err    error         // set once, before failed is closed
	failed chan struct{} // closed by FailFrom or FailEpoch
}

type slotKey struct {
	from string
	key  Key
}

// slot is one message, delivered or awaited.
type slot struct {
	payload []byte
	cost    int64         // what the message counts against its sender while unread
	ready   chan struct{} // made by a waiting Recv; closed when the message arrives
	epoch   uint64        // the sender's epoch the message arrived in
	arrived bool
	taken   bool
}

// MessageOverhead is what the mailbox charges a message besides its
// payload and session id: its slot and map entry, with the table's spare
// capacity, and the smallest allocation of a session id. It is measured
// (TestMessageOverheadCoversTheHeap), so that a sender of empty messages
// under ever new keys is charged what they really cost.
const MessageOverhead = 320

// Charge is what a message under key with payload counts against its
// sender's bounds while it waits unread: the payload's capacity, the
// session id's length and an eighth more (for the allocator's rounding),
// and MessageOverhead.
func Charge(key Key, payload []byte) int64 {
	return charge(key, cap(payload))
}

// charge is the charge of a message of size bytes under key.
func charge(key Key, size int) int64 {
	n := int64(len(key.Session))
	return int64(size) + n + n/8 + MessageOverhead
}

// NewMailbox returns an empty mailbox that takes messages under any
// session, with no bound on what a sender may leave unread.
func NewMailbox() *Mailbox {
	return &Mailbox{
		slots:   make(map[slotKey]slot),
		done:    make(map[string]uint64),
		closed:  make(chan struct{}),
		senders: make(map[string]*sender),
	}
}

// SetPendingLimit bounds the bytes one sender may have waiting in the
// mailbox, delivered but not yet asked for, or reserved: a peer cannot
// fill this player's memory with messages nobody reads. A message is
// charged as Charge says. A delivery past the bound waits until this
// player has received or forgotten enough of that sender's messages (see
// Deliver). A single message larger than the bound is taken once nothing
// else from its sender waits. Zero means no bound.
func (m *Mailbox) SetPendingLimit(bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.limit = bytes
	m.wakeAll() // waiting deliveries check the new bound
}

// SetPendingCount bounds the number of messages one sender may have
// waiting in the mailbox, delivered but not yet asked for, or reserved,
// whatever their size. Past it a delivery waits as it does past the
// pending limit. Zero means no bound.
func (m *Mailbox) SetPendingCount(messages int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.count = messages
	m.wakeAll()
}

// Expect declares sessions this player runs. Once any session is
// declared, the mailbox takes messages under declared sessions only: it
// refuses others with ErrUnexpected, and drops those that arrived before
// the declaration. Later calls add to the sessions taken. A player that
// declares its sessions before it starts cannot be filled with messages
// under sessions it never asks for.
func (m *Mailbox) Expect(sessions ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.expect == nil {
		m.expect = make(map[string]bool)
	}
	for _, s := range sessions {
		m.expect[s] = true
	}
	for k, s := range m.slots {
		if !m.expect[k.key.Session] && s.arrived && !s.taken {
			m.drop(k, s)
		}
	}
	m.wakeAll() // deliveries waiting under other sessions are refused now
}

// Unread returns how many messages from player from wait in the mailbox
// unread, reservations included, and the bytes they are charged.
func (m *Mailbox) Unread(from string) (messages int, bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.senders[from]; ok {
		return s.count, s.bytes
	}
	return 0, 0
}

func (m *Mailbox) sender(from string) *sender {
	s, ok := m.senders[from]
	if !ok {
		s = &sender{cur: &epoch{failed: make(chan struct{})}}
		m.senders[from] = s
	}
	return s
}

// Deliver stores payload as the message from player from under key. The
// mailbox keeps payload; the caller must not modify it afterwards, and
// should not hand over a window into a larger array it keeps (only the
// slice's capacity is charged). A second delivery under the same sender
// and key is refused with ErrDuplicate; a message under a session the
// mailbox does not expect (see Expect) with ErrUnexpected. A message of an
// iteration already forgotten is dropped. A message that arrived in an
// earlier epoch of the sender (see Rejoin) under the same key, received
// or not, gives way to the new one.
//
// When the sender already has as many unread bytes or messages as the
// pending limits allow, Deliver waits for room: this is how a sender that
// runs ahead of this player, say a data owner that only sends, is held
// back rather than failed. It gives up when ctx ends, with an error
// wrapping ErrBacklog and the context's cause, or when the mailbox or that
// sender fails. Waiting cannot deadlock as long as the receiver asks for
// each sender's messages in the order they were sent, as the session's
// plans do: what it needs next is then never behind what waits unread.
func (m *Mailbox) Deliver(ctx context.Context, from string, key Key, payload []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.forgotten(key) {
		return nil // late message of a finished iteration
	}
	c := Charge(key, payload)
	if err := m.admit(ctx, from, key, c, len(payload)); err != nil {
		return err
	}
	if m.forgotten(key) { // forgotten while it waited for room
		m.release(from, c)
		return nil
	}
	m.store(from, key, payload, c)
	return nil
}

// admit waits until sender from has room for a message charged c under
// key, and charges it. size is the payload's length, for errors. m.mu is
// held; admit releases it while it waits.
func (m *Mailbox) admit(ctx context.Context, from string, key Key, c int64, size int) error {
	for {
		if m.err != nil {
			return m.err
		}
		snd := m.sender(from)
		if err := snd.cur.err; err != nil {
			return err
		}
		if m.expect != nil && !m.expect[key.Session] {
			return fmt.Errorf("%w: %s from %q: session %q is not one this player runs", ErrUnexpected, key, from, key.Session)
		}
		if s, ok := m.slots[slotKey{from, key}]; ok && s.arrived && s.epoch == snd.cur.n {
			return fmt.Errorf("%w: %s from %q", ErrDuplicate, key, from)
		}
		if snd.count == 0 ||
			(m.limit <= 0 || snd.bytes+c <= m.limit) && (m.count <= 0 || snd.count < m.count) {
			snd.bytes += c
			snd.count++
			return nil
		}
		if snd.room == nil {
			snd.room = make(chan struct{})
		}
		room, failed := snd.room, snd.cur.failed
		count, bytes := snd.count, snd.bytes
		m.waiting++
		m.mu.Unlock()
		var err error
		select {
		case <-room:
		case <-failed:
		case <-m.closed:
		case <-ctx.Done():
			err = fmt.Errorf("%w: player %q has %d messages (%d bytes) waiting that nobody asked for; %s (%d bytes) did not fit under the limits of %d messages and %d bytes in time: %w",
				ErrBacklog, from, count, bytes, key, size, m.count, m.limit, context.Cause(ctx))
		}
		m.mu.Lock()
		m.waiting--
		if err != nil {
			return err
		}
	}
}

// forgotten reports whether key's iteration is forgotten. m.mu is held.
func (m *Mailbox) forgotten(key Key) bool {
	last, ok := m.done[key.Session]
	return ok && key.Iteration <= last
}

// store puts a message, already charged c to its sender, in its slot,
// in place of one of an earlier epoch. m.mu is held.
func (m *Mailbox) store(from string, key Key, payload []byte, c int64) {
	k := slotKey{from, key}
	s := m.slots[k]
	if s.arrived && !s.taken {
		m.release(from, s.cost) // an earlier connection's, unread
	}
	s.payload, s.cost, s.arrived, s.taken = payload, c, true, false
	s.epoch = m.senders[from].cur.n
	if s.ready != nil {
		close(s.ready)
		s.ready = nil
	}
	m.slots[k] = s
	m.grew()
}

// release takes back a charge of c bytes and one message from sender from
// and wakes its waiting deliveries. m.mu is held.
func (m *Mailbox) release(from string, c int64) {
	snd := m.senders[from]
	snd.bytes -= c
	snd.count--
	if snd.room != nil {
		close(snd.room)
		snd.room = nil
	}
}

// drop removes slot k, releasing what it is charged if unread. A receive
// waiting for it keeps waiting, until its context ends or the sender
// fails. m.mu is held.
func (m *Mailbox) drop(k slotKey, s slot) {
	if s.arrived && !s.taken {
		m.release(k.from, s.cost)
	}
	delete(m.slots, k)
}

// wakeAll wakes every waiting delivery to check again. m.mu is held.
func (m *Mailbox) wakeAll() {
	for _, snd := range m.senders {
		if snd.room != nil {
			close(snd.room)
			snd.room = nil
		}
	}
}

// Reservation is room set aside in a Mailbox for one message that its
// transport assembles from pieces; see Mailbox.Reserve. It must be ended
// by Deliver or Cancel. A Reservation is not safe for concurrent use.
type Reservation struct {
	m     *Mailbox
	from  string
	key   Key
	size  int
	cost  int64
	epoch *epoch // the sender's connection the message comes on
	ended bool
}

// Reserve waits, as Deliver does, until sender from has room for a message
// of size bytes under key, and sets that room aside: a transport calls it
// before it allocates a message it assembles from pieces, so that what it
// holds while the pieces arrive counts against the sender's bounds too.
// It refuses what Deliver would refuse (a duplicate key, an unexpected
// session, a failed sender or mailbox), with the same errors.
func (m *Mailbox) Reserve(ctx context.Context, from string, key Key, size int) (*Reservation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := charge(key, size)
	if err := m.admit(ctx, from, key, c, size); err != nil {
		return nil, err
	}
	return &Reservation{m: m, from: from, key: key, size: size, cost: c, epoch: m.senders[from].cur}, nil
}

// Deliver stores payload, of at most the size reserved, as the reserved
// message, without waiting, and ends the reservation. The message is
// charged for the size reserved, or the payload's capacity if larger: a
// transport that hands over a window into a larger buffer reserves that
// buffer's size. It refuses and drops what Mailbox.Deliver would, but for
// the bounds, and a message whose sender's epoch ended meanwhile: half of
// it came on a connection that is gone.
func (r *Reservation) Deliver(payload []byte) error {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.ended {
		return fmt.Errorf("transport: reservation for %s from %q used twice", r.key, r.from)
	}
	r.ended = true
	m.release(r.from, r.cost)
	if len(payload) > r.size {
		return fmt.Errorf("transport: %s from %q is %d bytes, above the %d reserved", r.key, r.from, len(payload), r.size)
	}
	snd := m.senders[r.from]
	switch {
	case m.err != nil:
		return m.err
	case r.epoch.err != nil:
		return r.epoch.err
	case snd.cur != r.epoch:
		return fmt.Errorf("transport: %s from %q: the connection it came on has ended", r.key, r.from)
	case m.expect != nil && !m.expect[r.key.Session]:
		return fmt.Errorf("%w: %s from %q: session %q is not one this player runs", ErrUnexpected, r.key, r.from, r.key.Session)
	}
	if s, ok := m.slots[slotKey{r.from, r.key}]; ok && s.arrived && s.epoch == snd.cur.n {
		return fmt.Errorf("%w: %s from %q", ErrDuplicate, r.key, r.from)
	}
	if m.forgotten(r.key) {
		return nil
	}
	c := charge(r.key, max(r.size, cap(payload)))
	snd.bytes += c
	snd.count++
	m.store(r.from, r.key, payload, c)
	return nil
}

// Cancel gives the reserved room back, for a message that will not be
// completed. Cancel after Deliver or Cancel does nothing.
func (r *Reservation) Cancel() {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.ended {
		return
	}
	r.ended = true
	m.release(r.from, r.cost)
}

// Recv waits for the message from player from under key. A message that
// arrived is handed out, whatever became of its sender since. Otherwise
// Recv fails when the sender's current epoch fails (see FailFrom): at
// once if it has failed already and the sender has not rejoined. A key
// whose message was received in an earlier epoch waits for the message of
// the current one, so that peers may repeat a key on each connection.
func (m *Mailbox) Recv(ctx context.Context, from string, key Key) ([]byte, error) {
	k := slotKey{from, key}
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return nil, m.err
	}
	s := m.slots[k]
	ep := m.sender(from).cur
	if s.arrived && s.taken && s.epoch != ep.n {
		// Received in an earlier epoch of the sender: this receive is for
		// the message of the current one, which may not have come yet
		// (a peer that reconnected sends its hello again, say).
		s = slot{}
		m.slots[k] = s
	}
	if !s.arrived {
		if s.ready == nil {
			s.ready = make(chan struct{})
			m.slots[k] = s
			m.grew()
		}
		ready := s.ready
		m.receiving++
		m.mu.Unlock()
		var err error
		select {
		case <-ready:
		case <-ep.failed:
		case <-ctx.Done():
			err = context.Cause(ctx)
		case <-m.closed:
		}
		m.mu.Lock()
		m.receiving--
		s = m.slots[k]
		// A message that arrived before a failure is still handed out.
		if !s.arrived {
			switch {
			case err != nil:
			case m.err != nil:
				err = m.err
			case ep.err != nil:
				err = ep.err
			default:
				// It arrived, but Forget or Expect dropped it before it
				// was taken.
				err = errors.New("the message was dropped: its iteration is forgotten or its session not expected")
			}
			m.mu.Unlock()
			return nil, fmt.Errorf("waiting for %s from %q: %w", key, from, err)
		}
	}
	defer m.mu.Unlock()
	if s.taken {
		return nil, fmt.Errorf("%w: %s from %q received twice", ErrDuplicate, key, from)
	}
	p := s.payload
	m.release(from, s.cost)
	m.slots[k] = slot{arrived: true, taken: true, epoch: s.epoch}
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
			m.drop(k, s)
		}
	}
	// A map does not shrink: after a burst of messages (a peer far
	// ahead, or one flooding), copy what is left to a table of its size.
	if m.peak >= compactAbove && len(m.slots) <= m.peak/4 {
		m.slots = maps.Collect(maps.All(m.slots))
		m.peak = len(m.slots)
	}
}

// compactAbove is the number of slots below which Forget does not bother
// to shrink the table.
const compactAbove = 1024

// grew records the table's size after a slot was added. m.mu is held.
func (m *Mailbox) grew() { m.peak = max(m.peak, len(m.slots)) }

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

// FailFrom ends the current epoch of player from with err: every pending
// and later Recv of a message from that player returns err (wrapped),
// unless that message arrived before, and later deliveries from it are
// refused with err, until it rejoins (see Rejoin). Transports call it when
// the link to one player breaks, so that only the receives that can no
// longer complete fail, and promptly. The first error of an epoch wins;
// messages from other players are unaffected.
func (m *Mailbox) FailFrom(from string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sender(from).cur.fail(err)
}

// FailEpoch is FailFrom for a connection that may be over already: it
// ends epoch n of player from with err if that is still its current
// epoch, and does nothing if the player has rejoined since. A transport
// that learns late that an old connection broke calls it with the epoch
// that connection began (Rejoin's result), so as not to fail the new one.
func (m *Mailbox) FailEpoch(from string, n uint64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ep := m.sender(from).cur; ep.n == n {
		ep.fail(err)
	}
}

// fail ends the epoch with err, unless it has ended. The mailbox's lock
// is held.
func (e *epoch) fail(err error) {
	if e.err != nil {
		return
	}
	e.err = err
	close(e.failed)
}

// Rejoin records that player from connected: if its current epoch has
// failed, a new one starts, in which its messages are delivered and
// received again; receives that were waiting when the old one failed
// have failed, and the old epoch's messages that arrived stay until they
// are received, forgotten or replaced under the same key. If the current
// epoch has not failed (the player's first connection), it carries on.
// Rejoin returns the epoch's number, for FailEpoch: 0 until the player
// first rejoins after a failure, then 1, 2, ...
func (m *Mailbox) Rejoin(from string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	snd := m.sender(from)
	if snd.cur.err != nil {
		snd.cur = &epoch{n: snd.cur.n + 1, failed: make(chan struct{})}
	}
	return snd.cur.n
}

// Epoch returns the number of player from's current epoch and whether it
// has failed. The number changes only when the player rejoins after a
// failure, so a caller that compares it before and after an exchange
// knows whether the player's connection was the same throughout.
func (m *Mailbox) Epoch(from string) (n uint64, failed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep := m.sender(from).cur
	return ep.n, ep.err != nil
}

// closedErr returns the error the mailbox was failed with, if any.
func (m *Mailbox) closedErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}
