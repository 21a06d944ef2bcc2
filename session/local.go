package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
)

// ErrClosed is returned by Run on a closed session.
var ErrClosed = errors.New("session: closed")

// PlayerError is the error of one player in an iteration.
type PlayerError struct {
	Player    string
	Iteration uint64
	Err       error
}

func (e *PlayerError) Error() string {
	return fmt.Sprintf("player %q, iteration %d: %v", e.Player, e.Iteration, e.Err)
}

func (e *PlayerError) Unwrap() error { return e.Err }

// base holds what every kind of session shares: the graph, its protocol,
// compiled plans and the iteration counter.
type base struct {
	g      *graph.Graph
	opts   Options
	proto  *pond.Protocol
	rand   playerRand
	log    *slog.Logger
	stats  *counters
	mu     sync.Mutex // guards plans, iteration, closed and serialises Run
	plans  map[*graph.Op]*Plan
	pool   *pool // buffers reused across iterations
	iter   uint64
	closed bool
	// trace, when set (by tests, before the first Run), is told of every
	// access of every step to its player's values.
	trace func(player string, s step, v value, write bool)
	// timing, when set (by benchmarks, before the first Run), is told how
	// long each step took. It is called from every player's goroutine.
	timing func(player string, s step, d time.Duration)
	// roundHeld, when set (by benchmarks, before the first Run), is told
	// after each round on a server the most its gather step held at once
	// of members' masked tensors and its sums, in bytes.
	roundHeld func(player string, peak int64)

	co     coordinator // the rounds this player coordinates, guarded by mu
	lastMu sync.Mutex  // guards last
	last   RoundInfo
}

func newBase(g *graph.Graph, opts Options, log *slog.Logger) (*base, error) {
	if g == nil {
		return nil, errors.New("session: nil graph")
	}
	if err := g.Err(); err != nil {
		return nil, fmt.Errorf("session: graph has build errors: %w", err)
	}
	proto, err := pond.New(opts.Protocol)
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	rng := opts.Rand
	if rng == nil {
		rng = rand.Reader
	}
	if opts.SessionID == "" {
		var id [8]byte
		if _, err := io.ReadFull(rng, id[:]); err != nil {
			return nil, fmt.Errorf("session: drawing a session id: %w", err)
		}
		opts.SessionID = hex.EncodeToString(id[:])
	}
	pr, err := newPlayerRand(opts.Rand)
	if err != nil {
		return nil, err
	}
	if s := opts.servers(); s[0] == "" || s[1] == "" || s[0] == s[1] {
		return nil, fmt.Errorf("session: servers %q and %q must be two distinct players", s[0], s[1])
	}
	if cp, s := opts.CryptoProducer, opts.servers(); cp != "" && (cp == s[0] || cp == s[1]) {
		return nil, fmt.Errorf("session: crypto producer %q must not be a compute server (servers %q and %q)", cp, s[0], s[1])
	}
	if opts.Rounds, err = opts.Rounds.withDefaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &base{g: g, opts: opts, proto: proto, rand: pr, log: log, stats: newCounters(), plans: map[*graph.Op]*Plan{}, pool: newPool()}, nil
}

// plan returns the compiled plan of op; b.mu must be held.
func (b *base) plan(op *graph.Op) (*Plan, error) {
	if p, ok := b.plans[op]; ok {
		return p, nil
	}
	p, err := compile(b.g, op, b.proto, b.opts)
	if err != nil {
		return nil, err
	}
	b.plans[op] = p
	return p, nil
}

// Plan returns the compiled plan of op: what every player does and sends
// in each iteration.
func (b *base) Plan(op *graph.Op) (*Plan, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.plan(op)
}

// runnable returns the plan of op for a Run; b.mu must be held.
func (b *base) runnable(op *graph.Op) (*Plan, error) {
	if b.closed {
		return nil, ErrClosed
	}
	return b.plan(op)
}

// runPlayer executes player's steps of plan for one iteration. The
// player's random stream must have been made (b.rand.prepare) before.
func (b *base) runPlayer(ctx context.Context, plan *Plan, player string, t *counting, iter uint64) error {
	r := b.newRunner(plan, player, t, iter, b.opts.SessionID)
	defer r.release()
	for _, s := range plan.steps[player] {
		if err := b.execStep(ctx, r, player, s); err != nil {
			return err
		}
	}
	return nil
}

// newRunner returns a runner of player's steps for iteration iter, whose
// messages are keyed under session.
func (b *base) newRunner(plan *Plan, player string, t *counting, iter uint64, session string) *runner {
	return &runner{
		player: player, proto: plan.proto, terms: plan.terms, t: t, rng: b.rand.of(player),
		session: session, iter: iter,
		public: map[graph.Ref][]float64{}, shares: map[graph.Ref]pond.Share{}, seeds: map[graph.Ref]pond.SeededShare{}, wired: map[graph.Ref][]byte{}, msgs: map[graph.Ref][]byte{},
		wire: map[graph.Ref][]byte{}, triples: map[graph.Ref]*pond.TripleShare{}, backing: map[*uint64][]byte{}, pool: b.pool,
	}
}

// execStep runs step s of player, telling trace and timing when set, and
// wraps its error in a *PlayerError.
func (b *base) execStep(ctx context.Context, r *runner, player string, s step) error {
	if b.trace != nil {
		r.trace = func(v value, write bool) { b.trace(player, s, v, write) }
	}
	var start time.Time
	if b.timing != nil {
		start = time.Now()
	}
	if err := s.exec(ctx, r); err != nil {
		return &PlayerError{Player: player, Iteration: r.iter, Err: err}
	}
	if b.timing != nil {
		b.timing(player, s, time.Since(start))
	}
	return nil
}

// Local runs every player of a graph in one process, each in its own
// goroutine, talking to the others only through an in-memory transport
// that copies every message: players share no memory, exactly as if each
// ran on its own host. Methods are safe for concurrent use; iterations run
// one at a time.
type Local struct {
	*base
	net       *transport.Memory
	endpoints map[string]*transport.MemoryEndpoint
}

// NewLocal returns a session that runs g in this process. The members of
// the rounds of its cohort, if it has one, are opts.Rounds.Members, all
// hosted here.
func NewLocal(g *graph.Graph, opts Options) (*Local, error) {
	b, err := newBase(g, opts, nil)
	if err != nil {
		return nil, err
	}
	if b.opts.Rounds.MaxCohort == 0 {
		b.opts.Rounds.MaxCohort = len(b.opts.Rounds.Members) // a round invites no more
	}
	names := graphPlayers(g, b.opts)
	for _, m := range b.opts.Rounds.Members {
		if slices.Contains(names, m) {
			return nil, fmt.Errorf("session: Rounds.Members names %q, a player of the graph", m)
		}
	}
	net := transport.NewMemory(append(names, b.opts.Rounds.Members...)...)
	return &Local{base: b, net: net, endpoints: map[string]*transport.MemoryEndpoint{}}, nil
}

// WithLogger makes the session log each iteration's start and end, and
// each player's failure, to log.
func (s *Local) WithLogger(log *slog.Logger) *Local {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = log
	return s
}

// Run runs one iteration of op: every player executes its plan once. The
// first error of any player cancels the others and is returned as a
// *PlayerError naming that player. Each call runs the next iteration.
//
// For an op that aggregates a cohort, Run runs one round, as Remote.Run
// does on the coordinator, with every member of Options.Rounds.Members
// hosted here: it returns nil when the output function ran, a
// *SkippedError when the servers skipped the round, an error wrapping
// ErrTooManySkipped after RoundOptions.MaxSkipped skipped rounds in a row,
// or one wrapping ErrSurvivorMismatch. A member's function that fails
// drops that member out of the round; LastRound says who and why.
// Member functions must return when their context ends.
func (s *Local) Run(ctx context.Context, op *graph.Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	plan, err := s.runnable(op)
	if err != nil {
		return err
	}
	players := plan.players
	if plan.cohort != nil {
		players = append(slices.Clone(players), s.opts.Rounds.Members...)
	}
	for _, p := range players {
		if _, ok := s.endpoints[p]; ok {
			continue
		}
		e, err := s.net.Endpoint(p)
		if err != nil {
			return fmt.Errorf("session: %w", err) // a bug: the network has every player of the graph
		}
		s.endpoints[p] = e
	}
	if plan.cohort != nil {
		return s.runRoundOf(ctx, plan)
	}

	s.rand.prepare(plan.players...)
	iter := s.iter
	s.iter++
	s.log.Debug("iteration start", "iteration", iter, "op", op.Node().String())
	err = runAll(ctx, plan.players, func(ctx context.Context, p string) error {
		t := &counting{Transport: s.endpoints[p], self: p, c: s.stats, pool: s.pool}
		return s.runPlayer(ctx, plan, p, t, iter)
	})
	for _, e := range s.endpoints {
		e.Mailbox().Forget(s.opts.SessionID, iter)
	}
	if err != nil {
		s.log.Warn("iteration failed", "iteration", iter, "err", err)
		return err
	}
	s.log.Debug("iteration done", "iteration", iter)
	return nil
}

// runRoundOf runs the next round of plan, every player and member in a
// goroutine of its own. The round ends when the coordinator's part does:
// the others are then cancelled (a member still computing, say). An error
// of any player but a member, before then, cancels the round and is
// Run's.
func (s *Local) runRoundOf(ctx context.Context, plan *Plan) error {
	cp := plan.cohort
	members := s.opts.Rounds.Members
	s.rand.prepare(plan.players...)
	s.rand.prepare(members...)
	co := &s.co
	co.next = max(co.next, 1)
	number := co.next
	co.next++
	cohort, err := s.pick(cp.coordinator, members, number)
	if err != nil {
		return err
	}
	start := time.Now()
	before := sentBytes(s.stats, "")
	transportOf := func(p string) *counting {
		return &counting{Transport: s.endpoints[p], self: p, c: s.stats, pool: s.pool}
	}
	opts := s.opts.Rounds
	crs := &roundState{opts: opts, number: number, cohort: cohort, notify: members}
	var rest []func(context.Context) error
	for _, p := range cp.others {
		rest = append(rest, func(ctx context.Context) error {
			return s.serverRound(ctx, plan, p, transportOf(p), &roundState{opts: opts, number: number})
		})
	}
	for _, m := range members {
		rest = append(rest, func(ctx context.Context) error {
			err := s.memberRound(ctx, plan, m, transportOf(m), &roundState{opts: opts, number: number})
			if err != nil && !errors.Is(err, errNotInvited) && ctx.Err() == nil {
				s.log.Warn("member failed", "member", m, "round", number, "err", err)
			}
			return nil // a member's failure is its own, never the round's
		})
	}
	s.log.Debug("round start", "round", number, "cohort", len(cohort))
	err = runRound(ctx, func(ctx context.Context) error {
		return s.runRound(ctx, plan, plan.steps[cp.coordinator], cp.coordinator, transportOf(cp.coordinator), crs, 0)
	}, rest)
	key := roundSession(s.opts.SessionID)
	for _, e := range s.endpoints {
		e.Mailbox().Forget(key, number)
	}
	err = s.finishRound(crs, err, start, sentBytes(s.stats, "")-before)
	if err != nil {
		s.log.Warn("round not revealed", "round", number, "err", err)
	}
	return err
}

// errRoundOver cancels the players of a round still running when its
// coordinator is done.
var errRoundOver = errors.New("session: the round is over")

// runRound runs coordinator and every function of rest in goroutines of
// their own. When the coordinator returns, the others' context is
// cancelled; an error of another before then cancels everyone's and is
// returned, in preference to the coordinator's.
func runRound(ctx context.Context, coordinator func(context.Context) error, rest []func(context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg               sync.WaitGroup
		mu               sync.Mutex
		coordErr, failed error
	)
	wg.Go(func() {
		err := coordinator(ctx)
		mu.Lock()
		coordErr = err
		mu.Unlock()
		cancel(errRoundOver)
	})
	for _, f := range rest {
		wg.Go(func() {
			err := f(ctx)
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if failed == nil && ctx.Err() == nil {
				failed = err
				cancel(err)
			}
		})
	}
	wg.Wait()
	if failed != nil {
		return failed
	}
	return coordErr
}

// sentBytes returns the bytes sent on every link, or on the links from
// player if not "".
func sentBytes(c *counters, player string) uint64 {
	var n uint64
	for _, l := range c.snapshot() {
		if player == "" || l.From == player {
			n += l.Bytes
		}
	}
	return n
}

// graphPlayers returns every player a graph names, the servers, and the
// crypto producer if the graph has a private product.
func graphPlayers(g *graph.Graph, opts Options) []string {
	servers := opts.servers()
	seen := map[string]bool{servers[0]: true, servers[1]: true}
	out := []string{servers[0], servers[1]}
	for _, n := range g.Nodes() {
		p := n.Player()
		if n.Kind().PrivateProduct() {
			p = opts.cryptoProducer()
		}
		if p != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// runAll runs fn for every player in its own goroutine and waits for all.
// The first error cancels the others' context and is returned; errors the
// cancellation caused are dropped.
func runAll(ctx context.Context, players []string, fn func(context.Context, string) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, p := range players {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx, p); err != nil {
				once.Do(func() {
					first = err
					cancel(err)
				})
			}
		}()
	}
	wg.Wait()
	return first
}

// Stats returns, for every link used so far, the messages and bytes sent.
func (s *Local) Stats() []LinkStats { return s.stats.snapshot() }

// Iterations returns how many iterations have been run.
func (s *Local) Iterations() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.iter
}

// Close ends the session. No goroutine of the session outlives Close.
func (s *Local) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, e := range s.endpoints {
		e.Close()
	}
	return nil
}
