package transport

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMailboxFailFrom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		box := NewMailbox()
		errGone := errors.New("link to b lost")
		k1 := Key{Session: "s", Iteration: 1, Edge: 1}
		k2 := Key{Session: "s", Iteration: 1, Edge: 2}

		// A message that arrived before the failure is still handed out.
		require.NoError(t, box.Deliver(context.Background(), "b", k1, []byte("early")))

		pending := make(chan error, 1)
		go func() {
			_, err := box.Recv(context.Background(), "b", k2)
			pending <- err
		}()
		synctest.Wait()
		require.Equal(t, 1, box.receivingNow(), "the receive waits")
		box.FailFrom("b", errGone)

		err := <-pending
		assert.ErrorIs(t, err, errGone)
		assert.Contains(t, err.Error(), `from "b"`)

		got, err := box.Recv(context.Background(), "b", k1)
		require.NoError(t, err)
		assert.Equal(t, []byte("early"), got)

		_, err = box.Recv(context.Background(), "b", Key{Session: "s", Iteration: 2})
		assert.ErrorIs(t, err, errGone, "later Recv fails too")
		assert.ErrorIs(t, box.Deliver(context.Background(), "b", Key{Session: "s", Iteration: 3}, nil), errGone, "later Deliver refused")

		// The first error wins.
		box.FailFrom("b", errors.New("second"))
		_, err = box.Recv(context.Background(), "b", Key{Session: "s", Iteration: 4})
		assert.ErrorIs(t, err, errGone)

		// Other senders are unaffected.
		require.NoError(t, box.Deliver(context.Background(), "c", k2, []byte("c")))
		got, err = box.Recv(context.Background(), "c", k2)
		require.NoError(t, err)
		assert.Equal(t, []byte("c"), got)

		// Fail of the whole mailbox still works afterwards.
		box.Fail(ErrClosed)
		_, err = box.Recv(context.Background(), "c", k1)
		assert.ErrorIs(t, err, ErrClosed)
	})
}
