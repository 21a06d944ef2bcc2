package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/session"
	"github.com/shareflow/shareflow/session/transport"
)

// A round is one attempt at a training step: the model owner picks a
// cohort of data owners, sends them the model, and updates the model with
// the mean of the gradients of those that answered (the survivors) — or,
// when fewer than --min-owners answered, skips the round and leaves the
// model as it was. The round number counts every round run, skipped or
// not; the step counts the model's updates, and training ends when it
// reaches --iterations.

// roundRecord is what the model owner records of one round: one line of
// --round-log.
type roundRecord struct {
	// Round is the round's number, from 1; it never repeats in one round
	// log, also across a resume.
	Round uint64 `json:"round"`
	// Step is the number of model updates after the round.
	Step int `json:"step"`
	// Cohort names the data owners invited to the round, sorted.
	Cohort []string `json:"cohort"`
	// Survivors names those whose gradients entered the mean, sorted.
	Survivors []string `json:"survivors"`
	// Dropped maps each invited owner that did not make it to why.
	Dropped map[string]string `json:"dropped"`
	// Skipped is why the round was skipped, or empty when it updated the
	// model.
	Skipped string `json:"skipped,omitempty"`
	// BytesSent counts the bytes every player sent in the round, as far
	// as this process sees them (all players in a run in one process,
	// this player's links across hosts).
	BytesSent uint64 `json:"bytes_sent"`
	// Seconds is the round's wall-clock time.
	Seconds float64 `json:"seconds"`
}

// roundStats sums up the rounds of a run, for its summary. It is kept in
// the checkpoint, so that a resumed run's summary covers the whole run.
type roundStats struct {
	Rounds    int `json:"rounds"`
	Skipped   int `json:"skipped"`
	Dropouts  int `json:"dropouts"`
	Invited   int `json:"invited"`   // sum of cohort sizes
	Survivors int `json:"survivors"` // sum of survivor counts
}

func (s *roundStats) add(r roundRecord) {
	s.Rounds++
	if r.Skipped != "" {
		s.Skipped++
	}
	s.Dropouts += len(r.Dropped)
	s.Invited += len(r.Cohort)
	s.Survivors += len(r.Survivors)
}

// String formats the statistics for the run's summary.
func (s roundStats) String() string {
	if s.Rounds == 0 {
		return "no rounds"
	}
	return fmt.Sprintf("%d rounds, %d skipped; mean cohort %.1f data owners, mean survivors %.1f; %d dropouts",
		s.Rounds, s.Skipped, float64(s.Invited)/float64(s.Rounds), float64(s.Survivors)/float64(s.Rounds), s.Dropouts)
}

// errTooManySkipped ends a run after --max-skipped consecutive skipped
// rounds.
var errTooManySkipped = errors.New("too many consecutive skipped rounds")

// skipTracker counts consecutive skipped rounds and the owners missing
// from them, and fails the run after max of them.
type skipTracker struct {
	max     int
	inARow  int
	missing map[string]bool
}

// note records r and returns an error wrapping errTooManySkipped when it
// was the max-th skipped round in a row.
func (k *skipTracker) note(r roundRecord) error {
	if r.Skipped == "" {
		k.inARow, k.missing = 0, nil
		return nil
	}
	k.inARow++
	if k.missing == nil {
		k.missing = map[string]bool{}
	}
	for name := range r.Dropped {
		k.missing[name] = true
	}
	if k.inARow < k.max {
		return nil
	}
	missing := make([]string, 0, len(k.missing))
	for name := range k.missing {
		missing = append(missing, name)
	}
	sort.Strings(missing)
	return fmt.Errorf("%w: %d rounds in a row (--max-skipped %d), the last because %s; missing owners: %s",
		errTooManySkipped, k.inARow, k.max, r.Skipped, strings.Join(quoteAll(missing), ", "))
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fmt.Sprintf("%q", n)
	}
	return out
}

// roundLog appends the records of --round-log, one JSON object a line. It
// is not safe for concurrent use.
type roundLog struct {
	path string
	f    *os.File
}

// openRoundLog opens path for appending, creating it if need be, and
// returns the number of the last round it records (0 for a new or empty
// log), so that a resumed run numbers its rounds after it. A last line cut
// short by a crash is ended, so the next record starts on a line of its
// own.
func openRoundLog(path string) (*roundLog, uint64, error) {
	last, complete, err := lastRecordedRound(path)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, 0, fmt.Errorf("round log: %w", err)
	}
	if !complete {
		if _, err := f.Write([]byte("\n")); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("round log %s: %w", path, err)
		}
	}
	return &roundLog{path: path, f: f}, last, nil
}

// roundLogTail is how much of the end of a round log openRoundLog reads
// to find the last round: more than any one record.
const roundLogTail = 1 << 20

// lastRecordedRound returns the round of the last complete record of the
// round log at path (0 when there is none) and whether the file ends with
// a complete line. Lines that are not records are passed over.
func lastRecordedRound(path string) (last uint64, complete bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, true, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("round log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, false, fmt.Errorf("round log: %w", err)
	}
	from := max(0, st.Size()-roundLogTail)
	b := make([]byte, st.Size()-from)
	if _, err := f.ReadAt(b, from); err != nil && !errors.Is(err, io.EOF) {
		return 0, false, fmt.Errorf("round log %s: %w", path, err)
	}
	complete = len(b) == 0 || b[len(b)-1] == '\n'
	lines := bytes.Split(b, []byte("\n"))
	if !complete {
		lines = lines[:len(lines)-1]
	}
	for i := len(lines) - 1; i >= 0; i-- {
		var r struct {
			Round *uint64 `json:"round"`
		}
		if json.Unmarshal(lines[i], &r) == nil && r.Round != nil {
			return *r.Round, complete, nil
		}
	}
	return 0, complete, nil
}

// write appends r as one line, with one write, so that a crash leaves at
// most the last line cut short.
func (l *roundLog) write(r roundRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("round log %s: %w", l.path, err)
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("round log %s: %w", l.path, err)
	}
	return nil
}

// Close syncs and closes the log; closing it again does nothing.
func (l *roundLog) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Sync()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	if err != nil {
		return fmt.Errorf("round log %s: %w", l.path, err)
	}
	return nil
}

// logRound writes the short per-round line of the slog output: at Info
// when the round lost an owner or was skipped, or when every round is of
// interest (a cohort run); at Debug otherwise, so that a classic run's
// output is not a line per iteration.
func logRound(log *slog.Logger, r roundRecord, everyRound bool) {
	level := slog.LevelDebug
	if everyRound || len(r.Dropped) > 0 || r.Skipped != "" {
		level = slog.LevelInfo
	}
	attrs := []slog.Attr{
		slog.Uint64("round", r.Round),
		slog.Int("step", r.Step),
		slog.Int("cohort", len(r.Cohort)),
		slog.Int("survivors", len(r.Survivors)),
		slog.Float64("seconds", r.Seconds),
	}
	if len(r.Dropped) > 0 {
		names := make([]string, 0, len(r.Dropped))
		for n := range r.Dropped {
			names = append(names, n)
		}
		sort.Strings(names)
		attrs = append(attrs, slog.String("dropped", strings.Join(names, ",")))
	}
	msg := "round"
	if r.Skipped != "" {
		msg = "round skipped"
		attrs = append(attrs, slog.String("reason", r.Skipped))
	}
	log.LogAttrs(context.Background(), level, msg, attrs...)
}

// rounder runs one round of training and says who took part. survivors
// are indices into the run's data owners that this process hosts (nil
// across hosts), for the training curve.
type rounder interface {
	round(ctx context.Context, n uint64) (r roundRecord, survivors []int, err error)
}

// fixedRounds runs the classic program: every data owner in every round,
// with the graph of buildGraph, in which a missing owner fails the round
// (and the run).
type fixedRounds struct {
	names []string
	step  func(ctx context.Context) error
	stats func() []session.LinkStats // nil in plaintext
	mo    *ModelOwner
	local bool
}

func (f *fixedRounds) round(ctx context.Context, n uint64) (roundRecord, []int, error) {
	before := sentBytes(f.stats)
	start := time.Now()
	if err := f.step(ctx); err != nil {
		return roundRecord{}, nil, err
	}
	r := roundRecord{
		Round: n, Step: f.mo.Iteration(), Cohort: f.names, Survivors: f.names, Dropped: map[string]string{},
		BytesSent: sentBytes(f.stats) - before, Seconds: time.Since(start).Seconds(),
	}
	var all []int
	if f.local {
		all = make([]int, len(f.names))
		for i := range all {
			all[i] = i
		}
	}
	return r, all, nil
}

// sentBytes sums the bytes of every link stats reports.
func sentBytes(stats func() []session.LinkStats) uint64 {
	if stats == nil {
		return 0
	}
	var n uint64
	for _, l := range stats() {
		n += l.Bytes
	}
	return n
}

// dropoutReason is the reason the round log gives for a simulated dropout.
func dropoutReason(p float64) string {
	return fmt.Sprintf("did not answer (simulated, --dropout %g)", p)
}

// dropsOut reports whether data owner name fails to answer in round n of
// a simulation with dropout probability p. The draw depends only on the
// seed, the round and the name, so owners may draw concurrently and in any
// order, and a run is reproducible from its seed.
func dropsOut(seed, n uint64, name string, p float64) bool {
	if p <= 0 {
		return false
	}
	var key [32]byte
	h := sha256.New()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], n)
	h.Write([]byte("federated-learning/dropout/v1\x00"))
	h.Write(b[:])
	h.Write([]byte(name))
	h.Sum(key[:0])
	return rand.New(rand.NewChaCha8(key)).Float64() < p
}

// sampleStream returns the model owner's stream of random numbers for
// drawing cohorts, seeded by seed. Its state is part of the checkpoint.
func sampleStream(seed uint64) *rand.PCG { return rand.NewPCG(seed, 0x636f686f7274) } // "cohort"

// sessionRounds runs rounds of the cohort graph (buildRoundsGraph) with a
// session, on the model owner: the session picks each round's cohort,
// the servers agree on the survivors and skip a round short of
// --min-owners, and the session fails the run after --max-skipped skipped
// rounds in a row.
type sessionRounds struct {
	run     func(ctx context.Context) error // one round
	last    func() session.RoundInfo
	mo      *ModelOwner
	members *memberSet // the members hosted here, or nil
	index   map[string]int
	// ownNumbers numbers the rounds of the log with the driver's count
	// rather than the session's: a session in one process starts again
	// from round 1 when the run resumes.
	ownNumbers bool
	// seen holds every data owner invited to a round so far, to name
	// those that left when too many rounds are skipped.
	seen map[string]bool

	// Across hosts, a round that fails because a player of the plan (a
	// server) went away is not the run's end: awaitPeers waits until
	// they are back, and the round is tried again, up to maxLost times
	// in a row. Nil in one process, where no player goes away.
	awaitPeers func(ctx context.Context) error
	maxLost    int
	lost       int    // rounds lost in a row
	await      bool   // wait for the players before the next round
	numbered   uint64 // the last round number the session reported
	log        *slog.Logger
}

func (s *sessionRounds) round(ctx context.Context, n uint64) (roundRecord, []int, error) {
	if s.members != nil {
		s.members.round.Store(n)
	}
	var err error
	var info session.RoundInfo
	for {
		if s.await {
			if err := s.awaitPeers(ctx); err != nil {
				return roundRecord{}, nil, err
			}
			s.await = false
		}
		err = s.run(ctx)
		info = s.last()
		if err == nil || s.awaitPeers == nil || ctx.Err() != nil || !errors.Is(err, transport.ErrPeerGone) ||
			errors.Is(err, session.ErrRoundSkipped) || errors.Is(err, session.ErrTooManySkipped) {
			break
		}
		s.lost++
		if s.lost > s.maxLost {
			return roundRecord{}, nil, fmt.Errorf("%d rounds in a row lost a player (--max-skipped %d): %w", s.lost, s.maxLost, err)
		}
		s.log.Warn("round lost a player; trying again once it is back", "err", err)
		s.await = true
		if info.Round > s.numbered {
			// The round had begun: record it, as a round that revealed
			// nothing.
			break
		}
	}
	if err == nil {
		s.lost = 0
	}
	numbered := info.Round > s.numbered
	s.numbered = max(s.numbered, info.Round)
	if err != nil && !errors.Is(err, session.ErrRoundSkipped) && !errors.Is(err, session.ErrTooManySkipped) && !(s.await && numbered) {
		return roundRecord{}, nil, err
	}
	if s.await && numbered && err != nil {
		info.Skipped = "lost a player: " + err.Error()
		err = nil
	}
	r := roundRecord{
		Round: info.Round, Step: s.mo.Iteration(), Cohort: info.Cohort, Survivors: info.Survivors,
		Dropped: info.Dropped, Skipped: info.Skipped, BytesSent: info.BytesSent, Seconds: info.Duration.Seconds(),
	}
	if s.ownNumbers {
		r.Round = n
	}
	if r.Dropped == nil {
		r.Dropped = map[string]string{}
	}
	if r.Cohort == nil {
		r.Cohort = []string{}
	}
	if r.Survivors == nil {
		r.Survivors = []string{}
	}
	if err != nil && r.Skipped == "" {
		r.Skipped = err.Error()
	}
	var survivors []int
	if r.Skipped == "" {
		for _, name := range r.Survivors {
			if i, ok := s.index[name]; ok {
				survivors = append(survivors, i)
			}
		}
	}
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	var gone []string
	for name := range s.seen {
		if !slices.Contains(r.Cohort, name) {
			gone = append(gone, name)
		}
	}
	for _, name := range r.Cohort {
		s.seen[name] = true
	}
	if errors.Is(err, session.ErrTooManySkipped) {
		if len(gone) > 0 {
			// The session names the members missing from the skipped
			// rounds' cohorts; those no longer connected were in none.
			sort.Strings(gone)
			err = fmt.Errorf("%w; data owners of earlier rounds no longer connected: %s", err, strings.Join(quoteAll(gone), ", "))
		}
		return r, nil, err
	}
	return r, survivors, nil
}

// plainRounds runs the rounds of a cohort in the clear, in one process:
// the reference of --compare. It samples the cohort (--sample) from the
// model owner's seeded stream, lets each invited owner drop out with
// probability --dropout, skips a round with fewer than --min-owners
// survivors, and updates the model with the (weighted) mean of the
// survivors' gradients. Its samples are drawn as the session draws them
// in spirit, not bit for bit, so with --sample the two runs of --compare
// see different cohorts. A plainRounds is not safe for concurrent use.
type plainRounds struct {
	o       options
	mo      *ModelOwner
	owners  []*DataOwner
	names   []string
	weights []float64 // examples per owner, with --weighted
	rng     *rand.PCG
	skips   skipTracker
}

// newPlainRounds returns the plain rounds of owners' federation, drawing
// cohorts from rng and checking the owners' weights against --max-weight.
func newPlainRounds(o options, mo *ModelOwner, owners []*DataOwner, rng *rand.PCG) (*plainRounds, error) {
	s := &plainRounds{o: o, mo: mo, owners: owners, rng: rng, skips: skipTracker{max: o.maxSkipped}}
	for _, d := range owners {
		s.names = append(s.names, d.Name)
		if o.weighted {
			w, err := weightOf(d, o.maxWeight)
			if err != nil {
				return nil, err
			}
			s.weights = append(s.weights, float64(w))
		}
	}
	return s, nil
}

// errWeight is wrapped by the refusal of a data owner whose weight exceeds
// --max-weight.
var errWeight = errors.New("weight above --max-weight")

// weightOf returns data owner d's weight, its number of local training
// examples, refusing one above maxWeight.
func weightOf(d *DataOwner, maxWeight int) (int, error) {
	w := d.Examples()
	if w > maxWeight {
		return 0, fmt.Errorf("%s: %w: its weight (local training examples) is %d, --max-weight is %d", d.Name, errWeight, w, maxWeight)
	}
	return w, nil
}

// cohort draws a round's cohort: every owner, or --sample of them drawn
// from the sample stream, as indices in ascending order.
func (s *plainRounds) cohort() []int {
	if s.o.sample == 0 || s.o.sample >= len(s.owners) {
		all := make([]int, len(s.owners))
		for i := range all {
			all[i] = i
		}
		return all
	}
	c := rand.New(s.rng).Perm(len(s.owners))[:s.o.sample]
	slices.Sort(c)
	return c
}

func (s *plainRounds) round(ctx context.Context, n uint64) (roundRecord, []int, error) {
	start := time.Now()
	cohort := s.cohort()
	r := roundRecord{Round: n, Dropped: map[string]string{}}
	var survivors []int
	for _, i := range cohort {
		r.Cohort = append(r.Cohort, s.names[i])
		if dropsOut(s.o.seed, n, s.names[i], s.o.dropout) {
			r.Dropped[s.names[i]] = dropoutReason(s.o.dropout)
			continue
		}
		survivors = append(survivors, i)
		r.Survivors = append(r.Survivors, s.names[i])
	}
	if len(survivors) < s.o.minOwners {
		r.Skipped = fmt.Sprintf("%d of %d invited data owners answered, fewer than --min-owners %d", len(survivors), len(cohort), s.o.minOwners)
		r.Step, r.Seconds = s.mo.Iteration(), time.Since(start).Seconds()
		return r, nil, s.skips.note(r)
	}
	s.skips.note(r)
	owners := make([]*DataOwner, len(survivors))
	for j, i := range survivors {
		owners[j] = s.owners[i]
	}
	step := float64(s.mo.Iteration())
	atStep := func(d *DataOwner, ctx context.Context, w []*tensor.Dense) ([]*tensor.Dense, error) {
		return d.GradientAt(ctx, w, step)
	}
	if err := plainMean(ctx, s.mo, owners, s.scales(survivors), atStep); err != nil {
		return roundRecord{}, nil, fmt.Errorf("round %d: %w", n, err)
	}
	r.Step, r.Seconds = s.mo.Iteration(), time.Since(start).Seconds()
	return r, survivors, nil
}

// scales returns the factor each survivor's gradient is multiplied by
// before the plain mean over the k survivors: k·wᵢ/Σw with --weighted, so
// that the mean is Σwᵢgᵢ/Σw; nil (no scaling) otherwise.
func (s *plainRounds) scales(survivors []int) []float64 {
	if !s.o.weighted {
		return nil
	}
	var total float64
	for _, i := range survivors {
		total += s.weights[i]
	}
	out := make([]float64, len(survivors))
	for j, i := range survivors {
		out[j] = float64(len(survivors)) * s.weights[i] / total
	}
	return out
}

// plainMean runs one step of federated averaging in the clear over owners:
// the mean of their gradients (computed by gradient), each first
// multiplied by scale[i] (nil: by 1). The owners compute concurrently, as they would on their own
// hosts.
func plainMean(ctx context.Context, mo *ModelOwner, owners []*DataOwner, scale []float64,
	gradient func(*DataOwner, context.Context, []*tensor.Dense) ([]*tensor.Dense, error)) error {
	if len(owners) == 0 {
		return errors.New("plain iteration: no data owners")
	}
	weights, err := mo.Weights(ctx, nil)
	if err != nil {
		return err
	}
	grads := make([][]*tensor.Dense, len(owners))
	errs := make([]error, len(owners))
	var wg sync.WaitGroup
	for i, o := range owners {
		wg.Go(func() { grads[i], errs[i] = gradient(o, ctx, weights) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	mean := mo.Architecture().Zeros()
	for i := range mean {
		m := mean[i].Data().([]float64)
		for k, g := range grads {
			gd, err := model.Float64s(g[i], mean[i].Shape())
			if err != nil {
				return fmt.Errorf("plain iteration: gradient %s: %w", model.ParamName(i), err)
			}
			f := 1.0
			if scale != nil {
				f = scale[k]
			}
			for j, v := range gd {
				m[j] += f * v
			}
		}
		for j := range m {
			m[j] /= float64(len(grads))
		}
	}
	return mo.UpdateModel(ctx, mean)
}
