package transport

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPendingLimitStopsASenderFillingMemory: bytes a sender has waiting
// unread are bounded; receiving or forgetting them frees room; passing the
// bound fails that sender alone.
func TestPendingLimitStopsASenderFillingMemory(t *testing.T) {
	m := NewMailbox()
	m.SetPendingLimit(10)
	ctx := context.Background()
	k := func(it, e uint64) Key { return Key{Session: "s", Iteration: it, Edge: e} }

	require.NoError(t, m.Deliver("a", k(0, 0), make([]byte, 6)))
	require.NoError(t, m.Deliver("a", k(0, 1), make([]byte, 4)))
	_, err := m.Recv(ctx, "a", k(0, 0))
	require.NoError(t, err)
	require.NoError(t, m.Deliver("a", k(1, 0), make([]byte, 6)), "a receive frees room")
	m.Forget("s", 0)
	require.NoError(t, m.Deliver("a", k(1, 1), make([]byte, 4)), "forgetting an iteration frees room")

	require.NoError(t, m.Deliver("b", k(1, 0), make([]byte, 10)), "each sender has its own bound")
	err = m.Deliver("a", k(2, 0), make([]byte, 1))
	require.ErrorIs(t, err, ErrBacklog)
	assert.Contains(t, err.Error(), `player "a" has 10 bytes waiting`)

	_, err = m.Recv(ctx, "a", k(3, 0))
	assert.ErrorIs(t, err, ErrBacklog, "the sender is failed")
	got, err := m.Recv(ctx, "a", k(1, 0))
	require.NoError(t, err, "what arrived before is still handed out")
	assert.Len(t, got, 6)
	got, err = m.Recv(ctx, "b", k(1, 0))
	require.NoError(t, err)
	assert.Len(t, got, 10)
}
