package session

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/shareflow/shareflow/players"
)

// RoundOptions configure the rounds of an op whose output aggregates a
// cohort (graph.DefineCohort): who may take part, how long the servers
// wait, and the privacy floor the servers enforce. The zero value means
// the defaults.
type RoundOptions struct {
	// MinOwners is the privacy floor: a server never sends its share of
	// a sum over fewer survivors than this, and the round is skipped
	// instead. Zero means 2; values below 2 are refused.
	MinOwners int
	// MaxSkipped is how many rounds in a row may be skipped before Run
	// fails with ErrTooManySkipped. Zero means 10.
	MaxSkipped int
	// Sample is how many of the connected members each round's cohort
	// takes, drawn at random; 0 (or more than are connected) takes all.
	Sample int
	// MaxCohort is the most members a round's cohort may have: the
	// coordinator invites a sample of that many when more are connected,
	// and the servers refuse a larger cohort. It bounds the sums a round
	// forms, and so the input range of a plan in Z_2^32 (see
	// Options.Protocol). Zero means Sample when set; in a Local session,
	// the number of Members; otherwise MaxMembers.
	MaxCohort int
	// SampleSeed seeds the draw of every round's sample, which then
	// depends only on the seed, the round number and the members
	// connected; 0 means a seed drawn from the coordinator's random
	// source (Options.Rand, if set, makes it reproducible too).
	SampleSeed uint64
	// Deadline is how long the servers wait for a round's shares after
	// they learn of the round; a member whose shares have not all arrived
	// by then drops out of the round. Members give up their round after
	// it too. The coordinator waits as long at a round's start for both
	// servers to be connected, and skips the round without them. Zero
	// means DefaultDeadline.
	Deadline time.Duration
	// CoordinatorTimeout is how long Serve waits for a coordinator that
	// lost its connection to come back before it fails. Zero means
	// DefaultCoordinatorTimeout.
	CoordinatorTimeout time.Duration
	// Members names the members of a Local session, each run in this
	// process, and, for a Remote session over a transport that does not
	// report its members (transport.Membership), the members it may
	// invite. Remote sessions over a transport that does add the members
	// it reports.
	Members []string
}

// The defaults of RoundOptions.
const (
	DefaultMinOwners          = 2
	DefaultMaxSkipped         = 10
	DefaultDeadline           = 10 * time.Second
	DefaultCoordinatorTimeout = 2 * time.Minute
)

// withDefaults fills in the defaults and checks the options.
func (o RoundOptions) withDefaults() (RoundOptions, error) {
	if o.MinOwners == 0 {
		o.MinOwners = DefaultMinOwners
	}
	if o.MaxSkipped == 0 {
		o.MaxSkipped = DefaultMaxSkipped
	}
	if o.Deadline == 0 {
		o.Deadline = DefaultDeadline
	}
	if o.CoordinatorTimeout == 0 {
		o.CoordinatorTimeout = DefaultCoordinatorTimeout
	}
	switch {
	case o.MinOwners < 2:
		return o, fmt.Errorf("session: Rounds.MinOwners is %d: a sum over fewer than 2 owners reveals an owner's input, so at least 2 are needed", o.MinOwners)
	case o.MinOwners > MaxMembers:
		return o, fmt.Errorf("session: Rounds.MinOwners is %d, more than a round may have (%d)", o.MinOwners, MaxMembers)
	case o.MaxSkipped < 0:
		return o, fmt.Errorf("session: Rounds.MaxSkipped is %d, want at least 1 (0 means %d)", o.MaxSkipped, DefaultMaxSkipped)
	case o.Sample < 0:
		return o, fmt.Errorf("session: Rounds.Sample is %d, want 0 (every member) or more", o.Sample)
	case o.Sample > 0 && o.Sample < o.MinOwners:
		return o, fmt.Errorf("session: Rounds.Sample is %d, below Rounds.MinOwners (%d): every round would be skipped", o.Sample, o.MinOwners)
	case o.Sample > MaxMembers:
		return o, fmt.Errorf("session: Rounds.Sample is %d, more than a round may have (%d)", o.Sample, MaxMembers)
	case o.MaxCohort < 0 || o.MaxCohort > MaxMembers:
		return o, fmt.Errorf("session: Rounds.MaxCohort is %d, want 0 (the default) to %d", o.MaxCohort, MaxMembers)
	case o.MaxCohort > 0 && o.MaxCohort < o.MinOwners:
		return o, fmt.Errorf("session: Rounds.MaxCohort is %d, below Rounds.MinOwners (%d): every round would be skipped", o.MaxCohort, o.MinOwners)
	case o.Deadline < 0:
		return o, fmt.Errorf("session: Rounds.Deadline is %v, want a positive duration", o.Deadline)
	case o.CoordinatorTimeout < 0:
		return o, fmt.Errorf("session: Rounds.CoordinatorTimeout is %v, want a positive duration", o.CoordinatorTimeout)
	case len(o.Members) > MaxMembers:
		return o, fmt.Errorf("session: Rounds.Members lists %d members, more than %d", len(o.Members), MaxMembers)
	}
	seen := map[string]bool{}
	for _, m := range o.Members {
		if err := players.CheckName(m); err != nil {
			return o, fmt.Errorf("session: Rounds.Members: %w", err)
		}
		if seen[m] {
			return o, fmt.Errorf("session: Rounds.Members lists %q twice", m)
		}
		seen[m] = true
	}
	o.Members = slices.Sorted(slices.Values(o.Members))
	return o, nil
}

// cohortBound returns the most members a round's cohort may have: the
// smaller of MaxCohort and Sample where set, MaxMembers otherwise.
func (o RoundOptions) cohortBound() int {
	b := MaxMembers
	if o.MaxCohort > 0 {
		b = o.MaxCohort
	}
	if o.Sample > 0 {
		b = min(b, o.Sample)
	}
	return b
}

// appendFingerprint encodes the options every player of a round must
// agree on: the floor, the deadline and the cohort's bound, which the
// servers apply, and the sample and skip limit, which shape the run.
func (o RoundOptions) appendFingerprint(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(o.MinOwners))
	b = binary.LittleEndian.AppendUint64(b, uint64(o.MaxSkipped))
	b = binary.LittleEndian.AppendUint64(b, uint64(o.Sample))
	b = binary.LittleEndian.AppendUint64(b, uint64(o.cohortBound()))
	return binary.LittleEndian.AppendUint64(b, uint64(o.Deadline))
}

var (
	// ErrRoundSkipped is wrapped by the error of a round that the servers
	// skipped, revealing nothing: fewer members than RoundOptions.MinOwners
	// survived it. The error is a *SkippedError.
	ErrRoundSkipped = errors.New("session: round skipped")
	// ErrTooManySkipped is wrapped by the error of Run once
	// RoundOptions.MaxSkipped rounds in a row were skipped; it names the
	// members that were missing.
	ErrTooManySkipped = errors.New("session: too many rounds skipped")
	// ErrSurvivorMismatch is wrapped by the error of a round whose two
	// servers summed over different survivors: the coordinator reveals
	// nothing.
	ErrSurvivorMismatch = errors.New("session: the servers disagree on the survivors")
	// ErrWeight is wrapped by the reason a member drops out of a round
	// when a weight of a weighted mean is not a finite positive number.
	ErrWeight = errors.New("session: a weight must be finite and positive")
)

// SkippedError is the error of a round the servers skipped: the output
// function was not called. It wraps ErrRoundSkipped.
type SkippedError struct {
	Round   uint64
	Reason  string
	Missing []string // members of the cohort that did not survive, sorted
}

func (e *SkippedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "session: round %d skipped: %s", e.Round, e.Reason)
	if len(e.Missing) > 0 {
		fmt.Fprintf(&b, " (missing: %s)", strings.Join(quoteAll(e.Missing), ", "))
	}
	return b.String()
}

// Unwrap returns ErrRoundSkipped.
func (e *SkippedError) Unwrap() error { return ErrRoundSkipped }

// RoundInfo describes a round, as the player knows it: the coordinator
// knows it all; a server its round, cohort, survivors, the dropped and
// whether it skipped; a member its round.
type RoundInfo struct {
	Round     uint64
	Cohort    []string          // the members invited, sorted
	Survivors []string          // the members the sums cover, sorted
	Dropped   map[string]string // the other members of the cohort, and why each is missing
	Skipped   string            // why the round was skipped, or ""
	// BytesSent is what the round put on the wire: in a Local session,
	// every player's messages; in a Remote one, this player's.
	BytesSent uint64
	Duration  time.Duration
	// TotalWeight is Σw over the survivors of the op's first weighted
	// mean (graph.WeightedMean), or 0.
	TotalWeight float64
}

// sampleLabel separates the streams that draw samples from any other use
// of the seed.
const sampleLabel = "shareflow/session/sample/v1"

// sampleKey derives the key of the sample draws from a seed.
func sampleKey(seed uint64) [32]byte {
	h := sha256.New()
	h.Write([]byte(sampleLabel))
	h.Write([]byte{0})
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// sampleCohort returns k of candidates, sorted, drawn without replacement
// by a ChaCha8 stream keyed by key and the round number, or all of them
// when k is 0 or at least their number. candidates must be sorted: the
// draw then depends only on the key, the round and the candidates.
func sampleCohort(candidates []string, k int, key [32]byte, round uint64) []string {
	if k == 0 || k >= len(candidates) {
		return slices.Clone(candidates)
	}
	h := sha256.New()
	h.Write(key[:])
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], round)
	h.Write(b[:])
	var seed [32]byte
	h.Sum(seed[:0])
	rng := mrand.New(mrand.NewChaCha8(seed))
	pool := slices.Clone(candidates)
	for i := range k { // a partial Fisher–Yates shuffle
		j := i + rng.IntN(len(pool)-i)
		pool[i], pool[j] = pool[j], pool[i]
	}
	out := pool[:k]
	slices.Sort(out)
	return out
}
