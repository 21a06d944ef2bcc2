package transport

import (
	"context"
	"errors"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHorizonHoldsFarFutureMessagesBack: with a horizon of four
// iterations, a message is taken only below its session's frontier plus
// four; one further waits until a receive or Forget moves the frontier,
// and one that never comes within reach (iteration MaxUint64) is never
// stored: when its sender's connection ends, the sender has nothing left
// in the mailbox, although nothing of its session was forgotten past it.
func TestHorizonHoldsFarFutureMessagesBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMailbox()
		m.SetHorizon(4)
		ctx := context.Background()
		k := func(it uint64) Key { return Key{Session: "s", Iteration: it} }

		for it := range uint64(4) {
			require.NoError(t, m.Deliver(ctx, "a", k(it), []byte{byte(it)}), "iteration %d is within reach", it)
		}
		delivered := make(chan error, 1)
		go func() { delivered <- m.Deliver(ctx, "a", k(4), []byte{4}) }()
		synctest.Wait()
		require.Equal(t, 1, m.waitingNow(), "iteration 4 waits: the frontier is 0")
		got, err := m.Recv(ctx, "a", k(1))
		require.NoError(t, err)
		assert.Equal(t, []byte{1}, got)
		require.NoError(t, <-delivered, "a receive of iteration 1 brings iteration 4 within reach")

		// Forget moves the frontier past the iteration forgotten; a late
		// message below the frontier but not forgotten is still taken.
		m.Forget("s", 5)
		for _, it := range []uint64{6, 9} {
			require.NoError(t, m.Deliver(ctx, "b", k(it), nil), "iteration %d", it)
		}
		go func() { delivered <- m.Deliver(ctx, "b", k(10), nil) }()
		synctest.Wait()
		require.Equal(t, 1, m.waitingNow(), "iteration 10 waits: the frontier is 6")
		_, err = m.Recv(ctx, "b", k(9)) // moves the frontier to 9
		require.NoError(t, err)
		require.NoError(t, <-delivered)

		// Other sessions have frontiers of their own.
		require.NoError(t, m.Deliver(ctx, "a", Key{Session: "t", Iteration: 3}, nil))

		// The far future never comes: the deliveries wait until the
		// sender's connection ends, and leave nothing behind.
		before, _ := m.Unread("c")
		errs := make(chan error, 100)
		for e := range uint64(100) {
			go func() {
				errs <- m.Deliver(ctx, "c", Key{Session: "s", Iteration: math.MaxUint64, Edge: e}, make([]byte, 100))
			}()
		}
		go func() {
			res, err := m.Reserve(ctx, "c", Key{Session: "s", Iteration: 1 << 40}, 1<<20)
			if err == nil {
				res.Cancel()
			}
			errs <- err
		}()
		synctest.Wait()
		assert.Equal(t, 101, m.waitingNow(), "every far-future delivery and reservation waits")
		n, bytes := m.Unread("c")
		assert.Equal(t, before, n)
		assert.Zero(t, bytes, "nothing is stored or reserved")
		gone := errors.New("c's connection ended")
		m.FailFrom("c", gone)
		for range 101 {
			assert.ErrorIs(t, <-errs, gone)
		}
		m.Forget("s", 5)
		n, bytes = m.Unread("c")
		assert.Zero(t, n, "the far-future messages are not left behind")
		assert.Zero(t, bytes)

		// A delivery that does not come within reach in time says why.
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		err = m.Deliver(short, "d", k(1000), nil)
		require.ErrorIs(t, err, ErrAhead)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorContains(t, err, `is 4 or more iterations ahead of iteration 9 of session "s"`)
	})
}

// TestNoHorizonTakesAnyIteration: without SetHorizon (the default), a
// message of any iteration is taken at once, as before.
func TestNoHorizonTakesAnyIteration(t *testing.T) {
	m := NewMailbox()
	require.NoError(t, m.Deliver(context.Background(), "a", Key{Session: "s", Iteration: math.MaxUint64}, nil))
	n, _ := m.Unread("a")
	assert.Equal(t, 1, n)
}

// TestKeysCountsASessionsSlots: Keys counts what Forget drops.
func TestKeysCountsASessionsSlots(t *testing.T) {
	m := NewMailbox()
	ctx := context.Background()
	require.NoError(t, m.Deliver(ctx, "a", Key{Session: "s", Iteration: 0}, nil))
	require.NoError(t, m.Deliver(ctx, "a", Key{Session: "s", Iteration: 1, Edge: 1}, nil))
	require.NoError(t, m.Deliver(ctx, "a", Key{Session: "t"}, nil))
	_, err := m.Recv(ctx, "a", Key{Session: "s", Iteration: 0})
	require.NoError(t, err)
	assert.Equal(t, 2, m.Keys("s"), "a received message keeps its key until forgotten")
	m.Forget("s", 1)
	assert.Zero(t, m.Keys("s"))
	assert.Equal(t, 1, m.Keys("t"))
}
