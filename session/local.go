package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	r := &runner{
		player: player, proto: b.proto, t: t, rng: b.rand.of(player),
		session: b.opts.SessionID, iter: iter,
		public: map[graph.Ref][]float64{}, shares: map[graph.Ref]pond.Share{}, seeds: map[graph.Ref]pond.SeededShare{},
		wire: map[graph.Ref][]byte{}, triples: map[graph.Ref]*pond.TripleShare{}, backing: map[*uint64][]byte{}, pool: b.pool,
	}
	defer r.release()
	for _, s := range plan.steps[player] {
		if b.trace != nil {
			r.trace = func(v value, write bool) { b.trace(player, s, v, write) }
		}
		var start time.Time
		if b.timing != nil {
			start = time.Now()
		}
		if err := s.exec(ctx, r); err != nil {
			return &PlayerError{Player: player, Iteration: iter, Err: err}
		}
		if b.timing != nil {
			b.timing(player, s, time.Since(start))
		}
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

// NewLocal returns a session that runs g in this process.
func NewLocal(g *graph.Graph, opts Options) (*Local, error) {
	b, err := newBase(g, opts, nil)
	if err != nil {
		return nil, err
	}
	return &Local{base: b, net: transport.NewMemory(graphPlayers(g, b.opts)...), endpoints: map[string]*transport.MemoryEndpoint{}}, nil
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
func (s *Local) Run(ctx context.Context, op *graph.Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	plan, err := s.runnable(op)
	if err != nil {
		return err
	}
	for _, p := range plan.players {
		if _, ok := s.endpoints[p]; ok {
			continue
		}
		e, err := s.net.Endpoint(p)
		if err != nil {
			return fmt.Errorf("session: %w", err) // a bug: the network has every player of the graph
		}
		s.endpoints[p] = e
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
