package transport

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPendingLimitHoldsASenderBack: bytes a sender has waiting unread are
// bounded; a delivery past the bound waits until receiving or forgetting
// frees room, or gives up with ErrBacklog when its context ends; each
// sender has its own bound.
func TestPendingLimitHoldsASenderBack(t *testing.T) {
	m := NewMailbox()
	// Room for 10 payload bytes in two messages; a message also counts
	// its session id ("s") and slotCost.
	const perMessage = 1 + slotCost
	m.SetPendingLimit(10 + 2*perMessage)
	ctx := context.Background()
	k := func(it, e uint64) Key { return Key{Session: "s", Iteration: it, Edge: e} }

	require.NoError(t, m.Deliver(ctx, "a", k(0, 0), make([]byte, 6)))
	require.NoError(t, m.Deliver(ctx, "a", k(0, 1), make([]byte, 4)))
	require.NoError(t, m.Deliver(ctx, "b", k(0, 0), make([]byte, 10+perMessage)), "each sender has its own bound")

	// Past the bound: the delivery waits, and a receive lets it in.
	delivered := make(chan error, 1)
	go func() { delivered <- m.Deliver(ctx, "a", k(1, 0), make([]byte, 6)) }()
	select {
	case err := <-delivered:
		t.Fatalf("delivery past the bound returned at once: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	_, err := m.Recv(ctx, "a", k(0, 0))
	require.NoError(t, err)
	require.NoError(t, <-delivered, "a receive frees room")

	// Forgetting an iteration frees room too.
	go func() { delivered <- m.Deliver(ctx, "a", k(1, 1), make([]byte, 4)) }()
	time.Sleep(10 * time.Millisecond)
	m.Forget("s", 0)
	require.NoError(t, <-delivered, "forgetting an iteration frees room")

	// A delivery that finds no room in time gives up, named.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	err = m.Deliver(short, "a", k(2, 0), make([]byte, 1))
	require.ErrorIs(t, err, ErrBacklog)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), fmt.Sprintf(`player "a" has %d bytes waiting`, 10+2*perMessage))
	got, err := m.Recv(ctx, "a", k(1, 0))
	require.NoError(t, err, "the sender is not failed: what it sent is handed out")
	assert.Len(t, got, 6)

	// A message larger than the bound is taken once nothing else waits.
	_, err = m.Recv(ctx, "a", k(1, 1))
	require.NoError(t, err)
	require.NoError(t, m.Deliver(ctx, "a", k(3, 0), make([]byte, 1000)))
}

// TestEmptyMessagesCountToo: a sender cannot fill memory with empty
// messages under ever new keys; each costs its slot.
func TestEmptyMessagesCountToo(t *testing.T) {
	m := NewMailbox()
	m.SetPendingLimit(10 * slotCost)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var err error
	n := 0
	for ; n < 1000 && err == nil; n++ {
		err = m.Deliver(ctx, "a", Key{Session: "junk", Edge: uint64(n)}, nil)
	}
	require.ErrorIs(t, err, ErrBacklog)
	assert.Less(t, n, 11, "empty messages delivered before the bound held")
}

// TestWaitingDeliveryEndsWithTheMailbox: a delivery waiting for room
// returns when the mailbox or its sender fails.
func TestWaitingDeliveryEndsWithTheMailbox(t *testing.T) {
	ctx := context.Background()
	k := Key{Session: "s", Edge: 1}
	for _, failSender := range []bool{false, true} {
		m := NewMailbox()
		m.SetPendingLimit(4)
		require.NoError(t, m.Deliver(ctx, "a", Key{Session: "s"}, make([]byte, 4)))
		delivered := make(chan error, 1)
		go func() { delivered <- m.Deliver(ctx, "a", k, make([]byte, 4)) }()
		time.Sleep(10 * time.Millisecond)
		gone := errors.New("gone")
		if failSender {
			m.FailFrom("a", gone)
		} else {
			m.Fail(gone)
		}
		select {
		case err := <-delivered:
			assert.ErrorIs(t, err, gone, "sender failed: %v", failSender)
		case <-time.After(5 * time.Second):
			t.Fatalf("delivery still waiting after the failure (sender failed: %v)", failSender)
		}
	}
}
