package transport

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMemoryMembership: a data owner the network does not list joins,
// exchanges messages, drops out (receives waiting for it fail at once,
// sends to it fail), and comes back in a new epoch; listed players see
// each change.
func TestMemoryMembership(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		net := NewMemory("server0", "server1")
		s0, err := net.Endpoint("server0")
		require.NoError(t, err)
		assert.Empty(t, s0.Members())
		_, err = net.Endpoint("data-owner-7")
		assert.ErrorIs(t, err, ErrUnknownPlayer)

		changed := s0.MembershipChanged()
		do, err := net.Connect("data-owner-7")
		require.NoError(t, err)
		<-changed
		assert.Equal(t, []string{"data-owner-7"}, s0.Members())
		assert.Empty(t, do.Members(), "a member has no dial-in peers")
		assert.True(t, s0.Connected("data-owner-7"))
		assert.True(t, do.Connected("server0"))
		joined, err := net.Connect("data-owner-7")
		require.NoError(t, err)
		assert.Same(t, do.Mailbox(), joined.Mailbox(), "connecting a connected player changes nothing")

		key := Key{Session: "s", Edge: 1}
		require.NoError(t, do.Send(ctx, "server0", key, []byte("gradient")))
		b, err := s0.Recv(ctx, "data-owner-7", key)
		require.NoError(t, err)
		assert.Equal(t, "gradient", string(b))
		require.NoError(t, s0.Send(ctx, "data-owner-7", key, []byte("model")))

		// The member drops out while server0 waits for its next message.
		pending := make(chan error, 1)
		go func() {
			_, err := s0.Recv(ctx, "data-owner-7", Key{Session: "s", Edge: 2})
			pending <- err
		}()
		synctest.Wait()
		changed = s0.MembershipChanged()
		require.NoError(t, net.Disconnect("data-owner-7"))
		<-changed
		assert.ErrorIs(t, <-pending, ErrPeerGone)
		assert.Empty(t, s0.Members())
		assert.False(t, s0.Connected("data-owner-7"))
		assert.ErrorIs(t, s0.Send(ctx, "data-owner-7", key, nil), ErrPeerGone)
		assert.ErrorIs(t, do.Send(ctx, "server0", Key{Session: "s", Edge: 3}, nil), ErrPeerGone)
		_, err = do.Recv(ctx, "server1", key)
		assert.ErrorIs(t, err, ErrPeerGone, "the member's own receives fail too")
		b, err = do.Recv(ctx, "server0", key)
		require.NoError(t, err, "what arrived before is still handed out")
		assert.Equal(t, "model", string(b))
		require.NoError(t, net.Disconnect("data-owner-7"), "a second disconnect does nothing")

		// It comes back: a new epoch, and messages flow again.
		changed = s0.MembershipChanged()
		do, err = net.Connect("data-owner-7")
		require.NoError(t, err)
		<-changed
		assert.Equal(t, []string{"data-owner-7"}, s0.Members())
		n, failed := s0.Mailbox().Epoch("data-owner-7")
		assert.Equal(t, uint64(1), n)
		assert.False(t, failed)
		require.NoError(t, do.Send(ctx, "server0", Key{Session: "s", Edge: 2}, []byte("back")))
		b, err = s0.Recv(ctx, "data-owner-7", Key{Session: "s", Edge: 2})
		require.NoError(t, err)
		assert.Equal(t, "back", string(b))
		require.NoError(t, s0.Send(ctx, "data-owner-7", Key{Session: "s", Edge: 4}, []byte("hello again")))
		b, err = do.Recv(ctx, "server0", Key{Session: "s", Edge: 4})
		require.NoError(t, err)
		assert.Equal(t, "hello again", string(b))
	})
}

// TestMemoryListedRestart: a listed player that crashes and restarts (its
// endpoint closed, then connected again) comes back with an empty
// mailbox, and the others receive from it again.
func TestMemoryListedRestart(t *testing.T) {
	ctx := context.Background()
	net := NewMemory("server0", "server1")
	s0, err := net.Endpoint("server0")
	require.NoError(t, err)
	s1, err := net.Endpoint("server1")
	require.NoError(t, err)
	require.NoError(t, s0.Send(ctx, "server1", Key{Session: "s"}, []byte("unread")))
	require.NoError(t, net.Disconnect("server1"))
	require.NoError(t, s1.Close())
	assert.False(t, s0.Connected("server1"))
	_, err = s0.Recv(ctx, "server1", Key{Session: "s"})
	assert.ErrorIs(t, err, ErrPeerGone)
	assert.Empty(t, s0.Members(), "listed players are no members")

	s1, err = net.Connect("server1")
	require.NoError(t, err)
	assert.True(t, s0.Connected("server1"))
	count, _ := s1.Mailbox().Unread("server0")
	assert.Zero(t, count, "a restarted player starts empty")
	require.NoError(t, s1.Send(ctx, "server0", Key{Session: "s"}, []byte("restarted")))
	b, err := s0.Recv(ctx, "server1", Key{Session: "s"})
	require.NoError(t, err)
	assert.Equal(t, "restarted", string(b))
	assert.ErrorIs(t, net.Disconnect("nobody"), ErrUnknownPlayer)
	_, err = net.Connect("")
	assert.Error(t, err)
}
