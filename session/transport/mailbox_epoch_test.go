package transport

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMailboxRejoin: a failure ends the sender's epoch, failing the
// receives pending then and those started before it rejoins; Rejoin starts
// a new epoch in which receives work again; messages that arrived stay
// receivable, and a new connection's message replaces an old one under
// the same key.
func TestMailboxRejoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		box := NewMailbox()
		k := func(e uint64) Key { return Key{Session: "s", Edge: e} }
		n, failed := box.Epoch("b")
		assert.Equal(t, uint64(0), n)
		assert.False(t, failed)
		assert.Equal(t, uint64(0), box.Rejoin("b"), "a first connection starts no new epoch")

		require.NoError(t, box.Deliver(ctx, "b", k(1), []byte("kept")))
		require.NoError(t, box.Deliver(ctx, "b", k(2), []byte("old")))
		require.NoError(t, box.Deliver(ctx, "b", k(3), []byte("taken")))
		_, err := box.Recv(ctx, "b", k(3))
		require.NoError(t, err)

		pending := make(chan error, 1)
		go func() {
			_, err := box.Recv(ctx, "b", k(9))
			pending <- err
		}()
		synctest.Wait()
		errLost := errors.New("b's connection broke")
		box.FailFrom("b", errLost)
		// b comes back before the pending receive has even woken: it
		// still fails, with the error of the epoch it waited in.
		assert.Equal(t, uint64(1), box.Rejoin("b"))
		assert.ErrorIs(t, <-pending, errLost)
		n, failed = box.Epoch("b")
		assert.Equal(t, uint64(1), n)
		assert.False(t, failed)

		// In the new epoch: receives wait and complete; a key received in
		// the old epoch is new again; an old unread message gives way to
		// the new one under its key, its charge with it; the other old
		// message is still there.
		got := make(chan []byte, 1)
		go func() {
			b, err := box.Recv(ctx, "b", k(10))
			assert.NoError(t, err)
			got <- b
		}()
		synctest.Wait()
		require.NoError(t, box.Deliver(ctx, "b", k(10), []byte("new")))
		assert.Equal(t, []byte("new"), <-got)
		require.NoError(t, box.Deliver(ctx, "b", k(3), []byte("again")))
		require.NoError(t, box.Deliver(ctx, "b", k(2), []byte("replaced")))
		count, bytes := box.Unread("b")
		assert.Equal(t, 3, count, "k1 (old), k2 (new), k3 (new)")
		assert.Equal(t, Charge(k(1), []byte("kept"))+Charge(k(2), []byte("replaced"))+Charge(k(3), []byte("again")), bytes)
		for e, want := range map[uint64]string{1: "kept", 2: "replaced", 3: "again"} {
			b, err := box.Recv(ctx, "b", k(e))
			require.NoError(t, err)
			assert.Equal(t, want, string(b))
		}
		// Within an epoch a key is still used once.
		assert.ErrorIs(t, box.Deliver(ctx, "b", k(2), nil), ErrDuplicate)
		count, bytes = box.Unread("b")
		assert.Zero(t, count)
		assert.Zero(t, bytes)
	})
}

// TestMailboxFailEpoch: a late failure of an old connection leaves the
// new one alone.
func TestMailboxFailEpoch(t *testing.T) {
	ctx := context.Background()
	box := NewMailbox()
	first := box.Rejoin("b")
	box.FailEpoch("b", first, errors.New("first connection ended"))
	second := box.Rejoin("b")
	require.Equal(t, first+1, second)
	box.FailEpoch("b", first, errors.New("first connection's other half ended late"))
	require.NoError(t, box.Deliver(ctx, "b", Key{Session: "s"}, []byte("x")), "the second epoch is alive")
	_, failed := box.Epoch("b")
	assert.False(t, failed)
	errSecond := errors.New("second connection ended")
	box.FailEpoch("b", second, errSecond)
	_, err := box.Recv(ctx, "b", Key{Session: "s", Edge: 1})
	assert.ErrorIs(t, err, errSecond)
}

// TestReservationOfAnEndedEpoch: a message half assembled when its
// sender's connection ended is dropped, even if the sender is back, and
// its room is given back.
func TestReservationOfAnEndedEpoch(t *testing.T) {
	ctx := context.Background()
	box := NewMailbox()
	key := Key{Session: "s"}
	res, err := box.Reserve(ctx, "b", key, 100)
	require.NoError(t, err)
	box.FailFrom("b", errors.New("gone"))
	box.Rejoin("b")
	err = res.Deliver(make([]byte, 100))
	assert.ErrorContains(t, err, "gone")
	count, bytes := box.Unread("b")
	assert.Zero(t, count)
	assert.Zero(t, bytes)

	res, err = box.Reserve(ctx, "b", key, 100)
	require.NoError(t, err)
	box.FailFrom("b", errors.New("gone again"))
	box.Rejoin("b")
	res.Cancel()
	count, _ = box.Unread("b")
	assert.Zero(t, count)
	require.NoError(t, box.Deliver(ctx, "b", key, []byte("whole")), "the new connection's message under the same key")
}
