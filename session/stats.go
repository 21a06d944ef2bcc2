package session

import (
	"context"
	"sort"
	"sync"

	"github.com/shareflow/shareflow/session/transport"
)

// Link is a directed connection between two players.
type Link struct{ From, To string }

// LinkStats counts what crossed one link.
type LinkStats struct {
	Link
	Messages uint64
	Bytes    uint64 // payload bytes, without transport framing
}

// counters counts messages per link. It is safe for concurrent use.
type counters struct {
	mu    sync.Mutex
	links map[Link]*LinkStats
}

func newCounters() *counters { return &counters{links: map[Link]*LinkStats{}} }

func (c *counters) add(l Link, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.links[l]
	if !ok {
		s = &LinkStats{Link: l}
		c.links[l] = s
	}
	s.Messages++
	s.Bytes += uint64(bytes)
}

// snapshot returns the counts sorted by sender then receiver.
func (c *counters) snapshot() []LinkStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]LinkStats, 0, len(c.links))
	for _, s := range c.links {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].From != out[j].From {
			return out[i].From < out[j].From
		}
		return out[i].To < out[j].To
	})
	return out
}

// counting wraps a player's transport and counts what it sends (and, when
// recv is set, what it receives).
type counting struct {
	transport.Transport
	self string
	c    *counters
	recv bool
	pool *pool // takes back what SendOwned copied instead of handing over
}

func (t *counting) Send(ctx context.Context, to string, key transport.Key, payload []byte) error {
	if err := t.Transport.Send(ctx, to, key, payload); err != nil {
		return err
	}
	t.c.add(Link{t.self, to}, len(payload))
	return nil
}

// SendOwned hands payload over when the transport can take it, and
// otherwise sends a copy and gives payload back to the pool.
func (t *counting) SendOwned(ctx context.Context, to string, key transport.Key, payload []byte) error {
	n := len(payload)
	var err error
	if m, ok := t.Transport.(transport.Mover); ok {
		err = m.SendOwned(ctx, to, key, payload)
	} else {
		err = t.Transport.Send(ctx, to, key, payload)
		if t.pool != nil {
			t.pool.putBytes(payload) // Send is done with it either way
		}
	}
	if err != nil {
		return err
	}
	t.c.add(Link{t.self, to}, n)
	return nil
}

func (t *counting) Recv(ctx context.Context, from string, key transport.Key) ([]byte, error) {
	b, err := t.Transport.Recv(ctx, from, key)
	if err == nil && t.recv {
		t.c.add(Link{from, t.self}, len(b))
	}
	return b, err
}
