package multihost

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/session"
	"github.com/shareflow/shareflow/session/transport"
)

var key = OutcomeKey("example")

// network returns the outcomes of players names on an in-process network.
func network(t *testing.T, names ...string) map[string]Outcomes {
	t.Helper()
	net := transport.NewMemory(names...)
	out := map[string]Outcomes{}
	for _, n := range names {
		ep, err := net.Endpoint(n)
		require.NoError(t, err)
		out[n] = Outcomes{Transport: ep, Key: key, Players: names, Self: n}
	}
	return out
}

func TestOutcomeKey(t *testing.T) {
	assert.Equal(t, transport.Key{Session: "example/outcome/v1"}, key)
}

// TestOutcomes runs the end-of-run exchange between three players on an
// in-process network: all succeed; one fails; one says nothing in time;
// one sends what no honest player sends.
func TestOutcomes(t *testing.T) {
	ctx := context.Background()

	t.Run("all succeed", func(t *testing.T) {
		o := network(t, "a", "b", "c")
		for _, n := range []string{"a", "b", "c"} {
			o[n].Tell(ctx, nil)
		}
		for _, n := range []string{"a", "b", "c"} {
			assert.NoError(t, o[n].Await(ctx), n)
		}
	})

	t.Run("one fails", func(t *testing.T) {
		o := network(t, "a", "b", "c")
		o["a"].Tell(ctx, nil)
		o["b"].Tell(ctx, errors.New("secure training, iteration 7: lost \"x\"\x1b[2J"))
		o["c"].Tell(ctx, nil)
		err := o["a"].Await(ctx)
		assert.EqualError(t, err, "the run failed on 1 of the other 2 players:\n  \"b\" failed: secure training, iteration 7: lost \"x\"?[2J")
		assert.NoError(t, o["b"].Await(ctx), "b failed itself and knows it")
	})

	t.Run("a long reason is cut on a rune boundary", func(t *testing.T) {
		o := network(t, "a", "b", "c")
		reason := "x" + strings.Repeat("é", MaxOutcomeReason) // é is two bytes: the limit falls inside one
		o["b"].Tell(ctx, errors.New(reason))
		o["c"].Tell(ctx, nil)
		err := o["a"].Await(ctx)
		require.Error(t, err)
		assert.True(t, strings.HasSuffix(err.Error(), `"b" failed: `+reason[:MaxOutcomeReason-1]), "cut before the split rune")
		assert.NotContains(t, err.Error(), "?", "no rune was split")
	})

	t.Run("a failure is told after ctx ended", func(t *testing.T) {
		o := network(t, "a", "b")
		done, cancel := context.WithCancel(ctx)
		cancel()
		o["b"].Tell(done, errors.New("deadline"))
		assert.EqualError(t, o["a"].Await(ctx), "the run failed on 1 of the other 1 players:\n  \"b\" failed: deadline")
	})

	t.Run("no word in time", func(t *testing.T) {
		o := network(t, "a", "b", "c")
		o["b"].Tell(ctx, nil)
		// The deadline passes once b's word is in, while a waits for c's.
		wait, cancel := context.WithCancelCause(ctx)
		a := o["a"]
		a.Transport = &recvHook{Transport: a.Transport, from: "b", then: func() {
			cancel(errors.New("not done 20s after \"a\" finished its last iteration"))
		}}
		err := a.Await(wait)
		assert.EqualError(t, err, "the run failed on 1 of the other 2 players:\n  \"c\": no word: not done 20s after \"a\" finished its last iteration")
	})

	t.Run("went away", func(t *testing.T) {
		net := transport.NewMemory("a", "b")
		ep, err := net.Endpoint("a")
		require.NoError(t, err)
		net.Disconnect("b")
		err = Outcomes{Transport: ep, Key: key, Players: []string{"a", "b"}, Self: "a"}.Await(ctx)
		require.Error(t, err)
		assert.Contains(t, err.Error(), `"b" went away without a word: `)
	})

	t.Run("malformed", func(t *testing.T) {
		o := network(t, "a", "b", "c")
		require.NoError(t, o["b"].Transport.Send(ctx, "a", key, nil))
		require.NoError(t, o["c"].Transport.Send(ctx, "a", key, append([]byte{outcomeFailed}, make([]byte, MaxOutcomeReason+1)...)))
		err := o["a"].Await(ctx)
		assert.EqualError(t, err, "the run failed on 2 of the other 2 players:\n"+
			"  \"b\" sent a malformed outcome of 0 bytes\n"+
			fmt.Sprintf("  \"c\" sent a malformed outcome of %d bytes", MaxOutcomeReason+2))
	})
}

// TestFinish: a player with a part waits for the others at most within,
// and then names the silent with the step it finished; every other
// player hears of its success.
func TestFinish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // safety net
	defer cancel()
	o := network(t, "a", "b", "c")
	o["b"].Tell(ctx, nil)
	err := o["a"].Finish(ctx, time.Millisecond, "batch")
	assert.EqualError(t, err, "the run failed on 1 of the other 2 players:\n  \"c\": no word: not done 1ms after \"a\" finished its last batch")

	// c, with no part (within zero), waits on ctx alone: for b's word and
	// a's, which a sent above.
	assert.NoError(t, o["c"].Finish(ctx, 0, "batch"))
	assert.NoError(t, o["b"].Await(ctx), "b heard a's and c's success")
}

func TestOwnFailure(t *testing.T) {
	plain := errors.New("batch 3: timeout")
	assert.Same(t, plain, OwnFailure(plain))

	cascade := &session.CascadeError{Err: plain, Lost: []string{"x"},
		Stopped: []session.PeerStop{{Player: "y", Reason: "its own words"}}}
	own := OwnFailure(fmt.Errorf("run: %w", cascade))
	var ce *session.CascadeError
	require.ErrorAs(t, own, &ce)
	assert.Equal(t, plain, ce.Err)
	assert.Equal(t, []string{"x"}, ce.Lost)
	assert.Empty(t, ce.Stopped, "what the others said they tell themselves")
	assert.NotContains(t, own.Error(), "its own words")
}

// recvHook is a transport that calls then after a receive from player
// from has returned.
type recvHook struct {
	transport.Transport
	from string
	then func()
}

func (h *recvHook) Recv(ctx context.Context, from string, key transport.Key) ([]byte, error) {
	b, err := h.Transport.Recv(ctx, from, key)
	if from == h.from {
		h.then()
	}
	return b, err
}

func TestOutcomeMessage(t *testing.T) {
	assert.NoError(t, DecodeOutcome("a", OutcomeMessage(nil)))
	err := DecodeOutcome("b", OutcomeMessage(errors.New("round 4: lost \"x\"\x1b[2J")))
	assert.EqualError(t, err, `"b" failed: round 4: lost "x"?[2J`, "the escape is replaced")

	reason := "x" + strings.Repeat("é", MaxOutcomeReason) // é is two bytes: the limit falls inside one
	msg := OutcomeMessage(errors.New(reason))
	assert.Len(t, msg, MaxOutcomeReason, "one status byte and the reason cut before the split rune")
	assert.EqualError(t, DecodeOutcome("b", msg), `"b" failed: `+reason[:MaxOutcomeReason-1])

	assert.EqualError(t, DecodeOutcome("c", nil), `"c" sent a malformed outcome of 0 bytes`)
	long := append([]byte{outcomeFailed}, make([]byte, MaxOutcomeReason+1)...)
	assert.EqualError(t, DecodeOutcome("c", long), fmt.Sprintf(`"c" sent a malformed outcome of %d bytes`, MaxOutcomeReason+2))
	assert.EqualError(t, DecodeOutcome("c", []byte{7}), `"c" sent a malformed outcome of 1 bytes`)
}
