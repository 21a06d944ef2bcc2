package transport_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/shareflow/shareflow/session/transport"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestChanges(t *testing.T) {
	var c transport.Changes
	c.Signal() // nobody waits: not remembered
	a, b := c.Wait(), c.Wait()
	assert.False(t, closed(a), "no change since Wait")
	c.Signal()
	assert.True(t, closed(a))
	assert.True(t, closed(b), "every waiter is woken")
	next := c.Wait()
	assert.False(t, closed(next), "a Wait after the Signal waits for the next")
	c.Signal()
	assert.True(t, closed(next))
}

// TestChangesConcurrent signals and waits from many goroutines (run with
// -race): every waiter taken before the last Signal is woken.
func TestChangesConcurrent(t *testing.T) {
	var c transport.Changes
	var wg sync.WaitGroup
	waits := make(chan (<-chan struct{}), 100)
	for range 100 {
		wg.Go(func() {
			waits <- c.Wait()
			c.Signal()
		})
	}
	wg.Wait()
	close(waits)
	for ch := range waits {
		assert.True(t, closed(ch))
	}
}
