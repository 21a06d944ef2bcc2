package transport

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPendingLimitHoldsASenderBack: bytes a sender has waiting unread are
// bounded; a delivery past the bound waits until receiving or forgetting
// frees room, or gives up with ErrBacklog when its context ends; each
// sender has its own bound.
func TestPendingLimitHoldsASenderBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMailbox()
		k := func(it, e uint64) Key { return Key{Session: "s", Iteration: it, Edge: e} }
		// Room for 10 payload bytes in two messages; a message also
		// counts its session id ("s") and MessageOverhead.
		perMessage := Charge(k(0, 0), nil)
		m.SetPendingLimit(10 + 2*perMessage)
		ctx := context.Background()

		require.NoError(t, m.Deliver(ctx, "a", k(0, 0), make([]byte, 6)))
		require.NoError(t, m.Deliver(ctx, "a", k(0, 1), make([]byte, 4)))
		require.NoError(t, m.Deliver(ctx, "b", k(0, 0), make([]byte, 10+perMessage)), "each sender has its own bound")
		n, b := m.Unread("a")
		assert.Equal(t, 2, n)
		assert.Equal(t, 10+2*perMessage, b)

		// Past the bound: the delivery waits, and a receive lets it in.
		delivered := make(chan error, 1)
		go func() { delivered <- m.Deliver(ctx, "a", k(1, 0), make([]byte, 6)) }()
		synctest.Wait()
		require.Equal(t, 1, m.waitingNow(), "the delivery past the bound waits")
		_, err := m.Recv(ctx, "a", k(0, 0))
		require.NoError(t, err)
		require.NoError(t, <-delivered, "a receive frees room")

		// Forgetting an iteration frees room too.
		go func() { delivered <- m.Deliver(ctx, "a", k(1, 1), make([]byte, 4)) }()
		synctest.Wait()
		require.Equal(t, 1, m.waitingNow())
		m.Forget("s", 0)
		require.NoError(t, <-delivered, "forgetting an iteration frees room")

		// A delivery that finds no room in time gives up, named.
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		err = m.Deliver(short, "a", k(2, 0), make([]byte, 1))
		require.ErrorIs(t, err, ErrBacklog)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), fmt.Sprintf(`player "a" has 2 messages (%d bytes) waiting`, 10+2*perMessage))
		got, err := m.Recv(ctx, "a", k(1, 0))
		require.NoError(t, err, "the sender is not failed: what it sent is handed out")
		assert.Len(t, got, 6)

		// A message larger than the bound is taken once nothing else waits.
		_, err = m.Recv(ctx, "a", k(1, 1))
		require.NoError(t, err)
		require.NoError(t, m.Deliver(ctx, "a", k(3, 0), make([]byte, 1000)))
		_, err = m.Recv(ctx, "a", k(3, 0))
		require.NoError(t, err)
		n, b = m.Unread("a")
		assert.Zero(t, n)
		assert.Zero(t, b)
	})
}

// TestPendingCountBoundsEmptyMessages: a sender cannot fill memory with
// empty messages under ever new keys: each is charged what it costs, and
// their number is bounded on its own.
func TestPendingCountBoundsEmptyMessages(t *testing.T) {
	for _, byCount := range []bool{false, true} {
		t.Run(fmt.Sprintf("count=%v", byCount), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := NewMailbox()
				if byCount {
					m.SetPendingCount(10)
				} else {
					m.SetPendingLimit(10 * Charge(Key{Session: "junk"}, nil))
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				var err error
				n := 0
				for ; n < 1000 && err == nil; n++ {
					err = m.Deliver(ctx, "a", Key{Session: "junk", Edge: uint64(n)}, nil)
				}
				require.ErrorIs(t, err, ErrBacklog)
				assert.Equal(t, 11, n, "empty messages tried before the bound held")
				count, _ := m.Unread("a")
				assert.Equal(t, 10, count)
			})
		})
	}
}

// TestMessageOverheadCoversTheHeap measures what an empty message waiting
// in a mailbox costs on the heap, under a session id allocated for it as a
// transport's decoder does, at table sizes just past a growth (the
// costliest per entry): Charge must cover it, and not by more than twice.
func TestMessageOverheadCoversTheHeap(t *testing.T) {
	for _, sl := range []int{1, 4, 49, 897, 1024} {
		session := []byte(strings.Repeat("s", sl))
		worst := 0.0
		for _, n := range []int{897, 1000, 1793, 4096} {
			m := NewMailbox()
			before := heapObjectBytes()
			for i := range n {
				require.NoError(t, m.Deliver(context.Background(), "a", Key{Session: string(session), Iteration: uint64(i)}, nil))
			}
			per := float64(heapObjectBytes()-before) / float64(n)
			runtime.KeepAlive(m)
			worst = max(worst, per)
		}
		charged := float64(Charge(Key{Session: string(session)}, nil))
		t.Logf("session of %d bytes: %.0f bytes per message at worst, charged %.0f", sl, worst, charged)
		assert.LessOrEqual(t, worst, charged, "session of %d bytes", sl)
		assert.Greater(t, worst, charged/2, "session of %d bytes: charged more than twice the cost", sl)
	}
}

// heapObjectBytes returns the bytes of live heap objects after a GC.
func heapObjectBytes() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestWaitingDeliveryEndsWithTheMailbox: a delivery waiting for room
// returns when the mailbox or its sender fails.
func TestWaitingDeliveryEndsWithTheMailbox(t *testing.T) {
	for _, failSender := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			m := NewMailbox()
			m.SetPendingCount(1)
			require.NoError(t, m.Deliver(ctx, "a", Key{Session: "s"}, make([]byte, 4)))
			delivered := make(chan error, 1)
			go func() { delivered <- m.Deliver(ctx, "a", Key{Session: "s", Edge: 1}, make([]byte, 4)) }()
			synctest.Wait()
			require.Equal(t, 1, m.waitingNow())
			gone := errors.New("gone")
			if failSender {
				m.FailFrom("a", gone)
			} else {
				m.Fail(gone)
			}
			assert.ErrorIs(t, <-delivered, gone, "sender failed: %v", failSender)
		})
	}
}

// TestExpectConfinesSessions: once a mailbox expects sessions, it refuses
// messages under others, drops those that came before, and wakes
// deliveries under them that waited for room.
func TestExpectConfinesSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := NewMailbox()
		m.SetPendingCount(2)
		require.NoError(t, m.Deliver(ctx, "a", Key{Session: "junk"}, []byte("x")))
		require.NoError(t, m.Deliver(ctx, "a", Key{Session: "run", Edge: 1}, []byte("y")))
		waiting := make(chan error, 1)
		go func() { waiting <- m.Deliver(ctx, "a", Key{Session: "junk", Edge: 1}, nil) }()
		synctest.Wait()

		m.Expect("run", "hello")
		err := <-waiting
		require.ErrorIs(t, err, ErrUnexpected)
		assert.Contains(t, err.Error(), `session "junk" is not one this player runs`)
		n, _ := m.Unread("a")
		assert.Equal(t, 1, n, "the message under junk is dropped")
		require.ErrorIs(t, m.Deliver(ctx, "a", Key{Session: "junk", Edge: 2}, nil), ErrUnexpected)
		_, err = m.Reserve(ctx, "a", Key{Session: "junk", Edge: 3}, 10)
		require.ErrorIs(t, err, ErrUnexpected)

		require.NoError(t, m.Deliver(ctx, "a", Key{Session: "hello"}, []byte("h")))
		got, err := m.Recv(ctx, "a", Key{Session: "run", Edge: 1})
		require.NoError(t, err)
		assert.Equal(t, []byte("y"), got)
		m.Expect("later")
		require.NoError(t, m.Deliver(ctx, "a", Key{Session: "later"}, nil), "Expect adds sessions")
	})
}

// TestReservationCountsAgainstTheBound: room reserved for a message being
// assembled counts against its sender's bounds until the message is
// delivered or the reservation cancelled.
func TestReservationCountsAgainstTheBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := NewMailbox()
		k := Key{Session: "s"}
		m.SetPendingLimit(2 * Charge(k, make([]byte, 100)))
		r, err := m.Reserve(ctx, "a", k, 100)
		require.NoError(t, err)
		n, b := m.Unread("a")
		assert.Equal(t, 1, n)
		assert.Equal(t, Charge(k, make([]byte, 100)), b)

		// A second reservation fits; a third waits for the first.
		r2, err := m.Reserve(ctx, "a", Key{Session: "s", Edge: 1}, 100)
		require.NoError(t, err)
		third := make(chan error, 1)
		go func() {
			r3, err := m.Reserve(ctx, "a", Key{Session: "s", Edge: 2}, 100)
			if err == nil {
				r3.Cancel()
			}
			third <- err
		}()
		synctest.Wait()
		require.Equal(t, 1, m.waitingNow())
		r2.Cancel()
		require.NoError(t, <-third, "cancelling gives the room back")
		r2.Cancel() // a second Cancel does nothing
		n, _ = m.Unread("a")
		assert.Equal(t, 1, n)

		payload := make([]byte, 100)
		payload[0] = 7
		require.NoError(t, r.Deliver(payload))
		require.Error(t, r.Deliver(payload), "a reservation is used once")
		_, b = m.Unread("a")
		assert.Equal(t, Charge(k, payload), b)
		got, err := m.Recv(ctx, "a", k)
		require.NoError(t, err)
		assert.Equal(t, payload, got)

		// What Deliver refuses, Reserve refuses too.
		_, err = m.Reserve(ctx, "a", k, 1)
		require.ErrorIs(t, err, ErrDuplicate)
		r4, err := m.Reserve(ctx, "a", Key{Session: "s", Edge: 4}, 1)
		require.NoError(t, err)
		require.Error(t, r4.Deliver(make([]byte, 2)), "more than reserved")
		m.FailFrom("a", errors.New("gone"))
		_, err = m.Reserve(ctx, "a", Key{Session: "s", Edge: 5}, 1)
		require.ErrorContains(t, err, "gone")
		n, b = m.Unread("a")
		assert.Zero(t, n)
		assert.Zero(t, b)
	})
}

// TestLateMessagesCostNothing: a message of a forgotten iteration is
// dropped without charging its sender, also when it waited for room and
// its iteration was forgotten meanwhile; late messages can never use up a
// sender's bound.
func TestLateMessagesCostNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMailbox()
		m.SetPendingCount(2)
		ctx := context.Background()
		m.Forget("s", 5)
		for e := range uint64(10) {
			require.NoError(t, m.Deliver(ctx, "a", Key{Session: "s", Iteration: 3, Edge: e}, []byte("late")))
		}
		n, b := m.Unread("a")
		assert.Zero(t, n, "late messages counted")
		assert.Zero(t, b)

		// Fill the bound with iteration 6, then a delivery of iteration 7
		// waits for room; forgetting both frees the room and drops it.
		require.NoError(t, m.Deliver(ctx, "a", Key{Session: "s", Iteration: 6, Edge: 0}, []byte("x")))
		require.NoError(t, m.Deliver(ctx, "a", Key{Session: "s", Iteration: 6, Edge: 1}, []byte("y")))
		done := make(chan error, 1)
		go func() { done <- m.Deliver(ctx, "a", Key{Session: "s", Iteration: 7}, []byte("z")) }()
		synctest.Wait() // the delivery waits for room
		m.Forget("s", 7)
		require.NoError(t, <-done)
		n, b = m.Unread("a")
		assert.Zero(t, n, "a message forgotten while it waited stays charged")
		assert.Zero(t, b)
	})
}
