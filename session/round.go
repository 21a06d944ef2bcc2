package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
)

// The round protocol, as every player runs it (the steps are in
// cohort_steps.go, the Local and Remote drivers in local.go and
// remote_rounds.go):
//
//  1. The coordinator, the op's output player, picks the round's cohort
//     from the members connected (all, or a sample), sorted, and tells
//     the other players of the plan the round's number and cohort
//     (roundStart), and each connected member whether it is invited, and
//     at which position (roundNotice).
//  2. Each invited member sends its seed server (by position) a fresh
//     seed per upload at once (memberSeeds) and expands the masks while
//     the holders of the cohort inputs' public inputs (the model) send
//     them and its functions run. It then sends its masked server a
//     contribution message and its masked tensors, encode(x) minus the
//     mask drawn ahead. A member whose function fails sends its masked
//     server a contribution saying it dropped out, and why (and its seed
//     server an empty memberSeeds, if its seeds had not gone yet).
//  3. The seed server adds the streams of a member's seeds into its
//     running sums as they come and tells the masked server it holds
//     them (seedsHeld): the member counts as arrived there from then on.
//     The masked server adds all of a member's masked tensors once they
//     and the notice are there, and lets them go. Each server waits until
//     every member's shares arrived or failed, or until the deadline
//     after it learned of the round, then sends the other server its
//     arrived set and the digest of the cohort it was told, and receives
//     the other's. The survivors are the intersection; a seed server
//     takes back the streams of the members it holds seeds of who did
//     not survive. A server with fewer survivors than MinOwners sends the
//     coordinator a result saying it skips the round, and no share.
//     Otherwise it runs the rest of its plan on its sums, and sends the
//     coordinator its result (the survivors, and why each other member
//     is missing) and then its shares.
//  4. The coordinator reveals only if both servers sent shares over the
//     same survivors; otherwise the round is skipped (ErrRoundSkipped) or
//     aborted (ErrSurvivorMismatch), and the output function is not
//     called.

// roundSession returns the key space of the rounds of the session with
// id: the messages and mask domains of rounds stay apart from those of
// the session's fixed-owner iterations.
func roundSession(id string) string { return "shareflow/rounds/v1/" + id }

var (
	// errNotInvited ends a member's round when it is not in the cohort.
	errNotInvited = errors.New("session: not invited to the round")
	// errRunEnded ends a player's rounds when the coordinator finished.
	errRunEnded = errors.New("session: the coordinator ended the run")
)

// roundSkip is the error of a server's round that it skips.
type roundSkip struct{ reason string }

func (e *roundSkip) Error() string { return "round skipped: " + e.reason }

// roundState is one round on one player: what it was told and, on a
// server, what it gathered. It is used by one player's steps, one at a
// time (the gather step's goroutines touch only what they are given).
type roundState struct {
	opts    RoundOptions
	number  uint64
	cohort  []string // sorted
	started time.Time

	// The coordinator's.
	notify      []string // the members to notify, sorted
	serversGone []string // the servers not connected when the round began: it is skipped
	results     [2]roundResult
	totalWeight float64

	// A member's.
	member    string
	position  int
	invited   func(ctx context.Context) error // called once invited, before the round's steps go on; may be nil
	seedsSent bool                            // its seeds went to its seed server (masksAhead.begin)
	ahead     *masksAhead                     // its masks, drawn ahead

	// A server's.
	greet   func(ctx context.Context, member string) error // greets a member on first sight; nil when there is nothing to greet
	agreed  []string
	dropped map[string]string
	sums    map[graph.Ref]pond.Share // each upload summed over the survivors, until an aggregate step takes it
	msgs    map[graph.Ref][]byte     // instead, in Z_2^32: each sum as its message (roundSums.msgs)
	// record makes the round the server's LastRound; sendResultStep
	// calls it before the coordinator can learn the result, so that a
	// coordinator holding both results knows both servers recorded it.
	record func()
	// heldPeak is the most the gather step held at once of members'
	// masked tensors and its sums, in bytes (for memory benchmarks).
	heldPeak int64
}

// result returns the round's result on a server.
func (rs *roundState) result(kind uint8, reason string) roundResult {
	notes := make([]dropNote, 0, len(rs.dropped))
	for m, why := range rs.dropped {
		notes = append(notes, dropNote{Member: m, Reason: why})
	}
	slices.SortFunc(notes, func(a, b dropNote) int { return strings.Compare(a.Member, b.Member) })
	return roundResult{Round: rs.number, Kind: kind, Reason: reason, Agreed: rs.agreed, Dropped: notes}
}

// missing returns the members of the cohort not in agreed.
func (rs *roundState) missing(agreed []string) []string {
	var out []string
	for _, m := range rs.cohort {
		if _, ok := slices.BinarySearch(agreed, m); !ok {
			out = append(out, m)
		}
	}
	return out
}

// releaseHeld gives back the memory a round left: a server's sums not
// taken, a member's masks not sent.
func (rs *roundState) releaseHeld(r *runner) {
	for id, s := range rs.sums {
		r.releaseShare(s)
		delete(rs.sums, id)
	}
	for id, b := range rs.msgs {
		r.pool.putBytes(b)
		delete(rs.msgs, id)
	}
	if rs.ahead != nil {
		rs.ahead.release(r)
		rs.ahead = nil
	}
}

// roundBound bounds a round on a player other than the coordinator from
// its start on: the servers' wait and exchange, and room for the rest.
func (o RoundOptions) roundBound() time.Duration { return 2*o.Deadline + o.CoordinatorTimeout }

// runRound runs player's steps of one round. The first step, which
// receives the round's start or a member's notice, waits as long as ctx
// allows; on players other than the coordinator the rest must end within
// bound.
func (b *base) runRound(ctx context.Context, plan *Plan, steps []step, player string, t *counting, rs *roundState, bound time.Duration) error {
	r := b.newRunner(plan, player, t, rs.number, roundSession(b.opts.SessionID))
	r.round = rs
	defer r.release()
	for i, s := range steps {
		if i == 1 && bound > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, bound)
			defer cancel()
		}
		if err := b.execStep(ctx, r, player, s); err != nil {
			return err
		}
	}
	return nil
}

// coordinator is the state of the rounds a coordinator runs. The
// session's lock guards it, but for last, which lastMu guards.
type coordinator struct {
	next      uint64 // the number of the next round; rounds start at 1
	skipped   int    // rounds skipped in a row
	missing   map[string]int
	sampleKey *[32]byte
}

// pick returns the round's cohort: a sample of the candidates, sorted.
// The sample's key comes from Rounds.SampleSeed or, without one, from the
// coordinator's random stream, once.
func (b *base) pick(self string, candidates []string, round uint64) ([]string, error) {
	co := &b.co
	if co.sampleKey == nil {
		seed := b.opts.Rounds.SampleSeed
		if seed == 0 {
			var buf [8]byte
			b.rand.prepare(self)
			if _, err := b.rand.of(self).Read(buf[:]); err != nil {
				return nil, fmt.Errorf("session: drawing a sample seed: %w", err)
			}
			for _, x := range buf {
				seed = seed<<8 | uint64(x)
			}
		}
		k := sampleKey(seed)
		co.sampleKey = &k
	}
	// A sample of the bound when more are connected (Sample, if set, is
	// no more than the bound).
	return sampleCohort(candidates, b.opts.Rounds.cohortBound(), *co.sampleKey, round), nil
}

// finishRound records a round the coordinator ran and turns its error
// into Run's: nil, a *SkippedError, an error wrapping ErrTooManySkipped
// once Rounds.MaxSkipped rounds in a row were skipped, or the round's
// failure.
func (b *base) finishRound(rs *roundState, err error, start time.Time, bytes uint64) error {
	info := RoundInfo{Round: rs.number, Cohort: rs.cohort, BytesSent: bytes, Duration: time.Since(start)}
	res := rs.results
	if res[0].Round == rs.number && res[1].Round == rs.number && slices.Equal(res[0].Agreed, res[1].Agreed) {
		info.Survivors = res[0].Agreed
		info.Dropped = map[string]string{}
		notAt1 := fmt.Sprintf("its shares did not all reach %s", b.opts.servers()[1])
		for _, d := range res[0].Dropped {
			info.Dropped[d.Member] = d.Reason
		}
		for _, d := range res[1].Dropped {
			if why, ok := info.Dropped[d.Member]; !ok || why == notAt1 {
				info.Dropped[d.Member] = d.Reason
			}
		}
	}
	co := &b.co
	var skip *SkippedError
	switch {
	case err == nil:
		info.TotalWeight = rs.totalWeight
		co.skipped = 0
		clear(co.missing)
	case errors.As(err, &skip):
		info.Skipped = skip.Reason
		err = skip
		co.skipped++
		if co.missing == nil {
			co.missing = map[string]int{}
		}
		for _, m := range skip.Missing {
			co.missing[m]++
		}
		if co.skipped >= b.opts.Rounds.MaxSkipped {
			err = fmt.Errorf("%w: %d rounds in a row, up to round %d; missing: %s: %w",
				ErrTooManySkipped, co.skipped, rs.number, describeMissing(co.missing, co.skipped), skip)
		}
	}
	b.lastMu.Lock()
	b.last = info
	b.lastMu.Unlock()
	return err
}

// describeMissing names the members missing from skipped rounds, with
// the number of rounds each missed, most first.
func describeMissing(missing map[string]int, rounds int) string {
	if len(missing) == 0 {
		return "no member (too few members were connected, or a server was not)"
	}
	names := make([]string, 0, len(missing))
	for m := range missing {
		names = append(names, m)
	}
	slices.SortFunc(names, func(a, b string) int {
		if missing[a] != missing[b] {
			return missing[b] - missing[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(names))
	for i, m := range names {
		parts[i] = fmt.Sprintf("%q (%d of %d)", m, missing[m], rounds)
	}
	return strings.Join(parts, ", ")
}

// LastRound returns what this player knows of the last round it took
// part in: everything on the coordinator (see RoundInfo).
func (b *base) LastRound() RoundInfo {
	b.lastMu.Lock()
	defer b.lastMu.Unlock()
	return b.last
}

// serverRound runs a round on a server, or on any other player of the
// plan but the coordinator, after which a server always tells the
// coordinator how the round ended: its shares follow, it skipped, or it
// failed. It returns errRunEnded when the coordinator ended the run, the
// round's failure, or nil.
func (b *base) serverRound(ctx context.Context, plan *Plan, player string, t *counting, rs *roundState) error {
	cp := plan.cohort
	rs.record = func() { b.recordServerRound(rs, "") }
	err := b.runRound(ctx, plan, plan.steps[player], player, t, rs, rs.opts.roundBound())
	if b.roundHeld != nil && rs.heldPeak > 0 {
		b.roundHeld(player, rs.heldPeak)
	}
	party := slices.Index(cp.servers[:], player)
	if err == nil || party < 0 || rs.cohort == nil || errors.Is(err, errRunEnded) {
		b.recordServerRound(rs, "")
		return err
	}
	var skip *roundSkip
	res := rs.result(resultFailed, truncateUTF8(err.Error(), maxReason))
	if errors.As(err, &skip) {
		res = rs.result(resultSkipped, skip.reason)
		err = nil
	}
	b.recordServerRound(rs, res.Reason)
	if msg, merr := res.MarshalBinary(); merr == nil {
		nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rs.opts.Deadline)
		t.Send(nctx, cp.coordinator, transportKey(b.opts.SessionID, rs.number, cp.resultEdges[party]), msg)
		cancel()
	}
	return err
}

// recordServerRound records a round as a server knows it.
func (b *base) recordServerRound(rs *roundState, skipped string) {
	if rs.cohort == nil {
		return
	}
	b.lastMu.Lock()
	defer b.lastMu.Unlock()
	b.last = RoundInfo{Round: rs.number, Cohort: rs.cohort, Survivors: rs.agreed, Dropped: rs.dropped, Skipped: skipped}
}

// memberRound runs a round on a member. A member that fails after it was
// invited drops out: it tells both servers why (best effort), and the
// round goes on without it; that is no error of the member's. It returns
// errNotInvited, errRunEnded, an error before it was invited (say, the
// coordinator is gone), or nil.
func (b *base) memberRound(ctx context.Context, plan *Plan, member string, t *counting, rs *roundState) error {
	cp := plan.cohort
	rs.member, rs.position = member, -1
	mctx := graph.WithMember(ctx, member)
	err := b.runRound(mctx, plan, cp.member, member, t, rs, rs.opts.Deadline)
	if err == nil || rs.position < 0 || errors.Is(err, errNotInvited) || errors.Is(err, errRunEnded) || errors.Is(err, ErrMismatch) {
		return err
	}
	drop := contribution{Dropped: true, Reason: truncateUTF8(dropReason(err), maxDropReason)}
	msg, _ := drop.MarshalBinary()
	nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rs.opts.Deadline)
	defer cancel()
	// Its masked server learns why; its seed server, which holds its
	// seeds, learns it from the survivors the servers agree on, unless
	// the seeds never went: then it is told here.
	k := seedServer(rs.position)
	t.Send(nctx, cp.servers[1-k], transportKey(b.opts.SessionID, rs.number, cp.statusEdges[1-k]), msg)
	if !rs.seedsSent {
		none, _ := (&memberSeeds{Round: rs.number, Reason: drop.Reason}).MarshalBinary()
		t.Send(nctx, cp.servers[k], transportKey(b.opts.SessionID, rs.number, cp.seedEdges[k]), none)
	}
	b.log.Info("dropped out of a round", "member", member, "round", rs.number, "reason", drop.Reason)
	return nil
}

// dropReason is what a member tells the servers of why it dropped out:
// its error, without the player and round the servers know.
func dropReason(err error) string {
	var pe *PlayerError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// transportKey is the key of a round's message on edge.
func transportKey(sessionID string, round, edge uint64) transport.Key {
	return transport.Key{Session: roundSession(sessionID), Iteration: round, Edge: edge}
}
