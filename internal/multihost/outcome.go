package multihost

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/shareflow/shareflow/session"
	"github.com/shareflow/shareflow/session/transport"
)

// MaxOutcomeReason bounds the reason a player gives for its failure, on
// the sending and the receiving side.
const MaxOutcomeReason = 2048

// Outcome messages: one status byte, then the reason of a failure.
const (
	outcomeSucceeded byte = 0
	outcomeFailed    byte = 1
)

// OutcomeKey returns the key of program's outcomes, the last message of a
// run across processes: every player tells every other how its part
// ended. It lives outside the session's key space, whose messages the
// session forgets after each iteration, so the program declares it
// (transport.Mailbox.Expect) before any peer connects.
func OutcomeKey(program string) transport.Key {
	return transport.Key{Session: program + "/outcome/v1"}
}

// Outcomes is one player's side of the exchange at the end of a run,
// by which every player learns whether the others' parts succeeded. It is
// safe for concurrent use as far as its Transport is.
type Outcomes struct {
	// Transport carries the outcomes.
	Transport transport.Transport
	// Key is the program's OutcomeKey.
	Key transport.Key
	// Players are every player of the run, Self among them.
	Players []string
	// Self is this player.
	Self string
}

// Tell tells every other player how this one's part of the run ended:
// runErr is nil for success, the reason otherwise, cut to
// MaxOutcomeReason bytes on a rune boundary. Sends are best effort: a
// peer that has already gone does not need to know. A failure is told
// within a second of its own, since ctx may be what failed.
func (o Outcomes) Tell(ctx context.Context, runErr error) {
	msg := OutcomeMessage(runErr)
	if runErr != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
	}
	for _, p := range o.Players {
		if p != o.Self {
			o.Transport.Send(ctx, p, o.Key, msg) // best effort, see above
		}
	}
}

// Await waits until every other player has told how its part ended, or
// has gone without telling, and returns nil only if every one succeeded.
// Otherwise the error names each player that failed, with its reason
// (its unprintable runes replaced), each that went away without a word
// (crashed, killed, cut off), each still silent when ctx ended (with
// ctx's cause) and each that sent what no honest player sends. A player
// with no part in the computation learns this way whether the run it
// waited for succeeded.
func (o Outcomes) Await(ctx context.Context) error {
	// Receive from every player at once, so that an answer that came in
	// time is taken in time, and a deadline blames only the silent.
	verdicts := make([]string, len(o.Players)) // "" for success
	var wg sync.WaitGroup
	for i, p := range o.Players {
		if p == o.Self {
			continue
		}
		wg.Go(func() {
			b, err := o.Transport.Recv(ctx, p, o.Key)
			switch {
			case err != nil && ctx.Err() != nil:
				verdicts[i] = fmt.Sprintf("%q: no word: %v", p, context.Cause(ctx))
			case err != nil:
				verdicts[i] = fmt.Sprintf("%q went away without a word: %v", p, err)
			default:
				if err := DecodeOutcome(p, b); err != nil {
					verdicts[i] = err.Error()
				}
			}
		})
	}
	wg.Wait()
	var failed []string
	for _, v := range verdicts {
		if v != "" {
			failed = append(failed, v)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("the run failed on %d of the other %d players:\n  %s", len(failed), len(o.Players)-1, strings.Join(failed, "\n  "))
	}
	return nil
}

// OutcomeMessage encodes how a player's part of the run ended, as Tell
// sends it: runErr is nil for success, the reason otherwise, cut to
// MaxOutcomeReason bytes on a rune boundary. It is for a program that
// sends its outcome itself (to the players connected now, say).
func OutcomeMessage(runErr error) []byte {
	if runErr == nil {
		return []byte{outcomeSucceeded}
	}
	reason := runErr.Error()
	if len(reason) > MaxOutcomeReason {
		n := MaxOutcomeReason
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	return append([]byte{outcomeFailed}, reason...)
}

// DecodeOutcome decodes player from's word b on how its part ended, as
// Await does: nil for success, otherwise an error naming the player and
// its reason (its unprintable runes replaced), or saying that b is not an
// outcome any honest player sends.
func DecodeOutcome(from string, b []byte) error {
	switch {
	case len(b) == 1 && b[0] == outcomeSucceeded:
		return nil
	case len(b) >= 1 && b[0] == outcomeFailed && len(b) <= 1+MaxOutcomeReason:
		return fmt.Errorf("%q failed: %s", from, printable(b[1:]))
	}
	return fmt.Errorf("%q sent a malformed outcome of %d bytes", from, len(b))
}

// Finish ends a run whose every step succeeded here: this player's part
// is done, but the run succeeded only if every player's did, since a
// player's last step may come before another's last step fails. So it
// tells the others of its success and waits to hear from them (Await).
// A player with a part waits at most within after its last step (two
// step deadlines, say: any peer's last step overlaps its own), and the
// silent are then blamed for not being done within after this player
// finished its last step, a "batch" or an "iteration"; with within zero
// (a player with no part) it waits as long as ctx allows.
func (o Outcomes) Finish(ctx context.Context, within time.Duration, step string) error {
	if within > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, within,
			fmt.Errorf("not done %v after %q finished its last %s", within, o.Self, step))
		defer cancel()
	}
	o.Tell(ctx, nil)
	return o.Await(ctx)
}

// OwnFailure returns the part of a failed step's error that is this
// player's own to tell the others: a *session.CascadeError without the
// reasons the other players gave when they stopped, which they tell
// themselves; any other error as it is.
func OwnFailure(err error) error {
	var ce *session.CascadeError
	if errors.As(err, &ce) {
		return &session.CascadeError{Err: ce.Err, Lost: ce.Lost}
	}
	return err
}

// printable returns b as text with every rune that is not printable, and
// every invalid byte, replaced, so that another player's words cannot
// move this one's terminal.
func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, string(b))
}
