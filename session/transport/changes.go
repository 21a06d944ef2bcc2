package transport

import "sync"

// Changes wakes those waiting for the next change, such as the next
// change of a Membership: Wait returns a channel that the next Signal
// closes. Take the channel before reading the state it guards, then wait
// on it, so that no change goes unseen. The zero value is ready to use;
// it is safe for concurrent use. It must not be copied after first use.
type Changes struct {
	mu sync.Mutex
	ch chan struct{}
}

// Wait returns a channel closed at the next Signal.
func (c *Changes) Wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

// Signal closes the channel of those waiting. A Signal with nobody
// waiting is not remembered: the next Wait waits for the next Signal.
func (c *Changes) Signal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}
