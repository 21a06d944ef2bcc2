package transport

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A key received in one epoch of a sender is received again in the next:
// a receive made before the new message arrives waits for it, rather than
// failing as a second receive of the old one. Peers repeat their hello on
// every connection under one key.
func TestRecvAfterRejoinWaitsForTheNewEpoch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMailbox()
		ctx := context.Background()
		key := Key{Session: "hello", Edge: 1}
		require.NoError(t, m.Deliver(ctx, "peer", key, []byte("first")))
		got, err := m.Recv(ctx, "peer", key)
		require.NoError(t, err)
		assert.Equal(t, "first", string(got))
		_, err = m.Recv(ctx, "peer", key)
		assert.ErrorIs(t, err, ErrDuplicate, "a second receive in the same epoch is a bug")

		m.FailFrom("peer", errors.New("connection lost"))
		m.Rejoin("peer")
		done := make(chan []byte, 1)
		go func() {
			b, err := m.Recv(ctx, "peer", key)
			assert.NoError(t, err)
			done <- b
		}()
		synctest.Wait()
		require.Equal(t, 1, m.receivingNow(), "the receive waits for the new epoch's message")
		require.NoError(t, m.Deliver(ctx, "peer", key, []byte("second")))
		assert.Equal(t, "second", string(<-done))
	})
}
