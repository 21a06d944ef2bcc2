package session

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/session/transport"
)

// ErrMismatch is returned when players on different hosts compiled
// different plans or joined different sessions.
var ErrMismatch = errors.New("session: players disagree")

// Remote runs one player's part of a graph, for programs in which every
// host runs the same code (SPMD): each builds the same graph, compiles the
// same plans and executes only its own player's steps, talking to the
// others through a transport (gRPC with mutual TLS between hosts). No
// player ever runs code another sent it: only tensors cross the wire.
//
// Before the first iteration of an op, the players exchange their session
// id and the plan's fingerprint; any difference stops every player with
// ErrMismatch before a single tensor moves. Every player must run the same
// ops, in the same order, the same number of times: that is what running
// the same program means.
//
// Methods are safe for concurrent use; iterations run one at a time.
type Remote struct {
	*base
	self   string
	t      transport.Transport
	hello  map[*graph.Op]bool
	mailer interface{ Forget(string, uint64) }
	rs     *roundsState // rounds of a cohort, once any ran
}

// NewRemote returns a session in which this process is player self and
// reaches the others through t. All players must be given the same
// Options.SessionID, protocol configuration, servers and PrivateDivision:
// the handshake refuses to run otherwise (ErrMismatch).
//
// Run one session at a time over a transport, and one op at a time in
// it: a transport that holds back a sender running ahead (as grpctransport
// does) relies on each peer's messages being received in the order they
// were sent, which holds within one plan's run but not between two runs
// interleaved on the same links.
func NewRemote(g *graph.Graph, self string, t transport.Transport, opts Options) (*Remote, error) {
	if opts.SessionID == "" {
		return nil, errors.New("session: a remote session needs an explicit SessionID shared by all players")
	}
	if t == nil {
		return nil, errors.New("session: nil transport")
	}
	b, err := newBase(g, opts, nil)
	if err != nil {
		return nil, err
	}
	s := &Remote{base: b, self: self, t: t, hello: map[*graph.Op]bool{}}
	if m, ok := t.(interface{ Mailbox() *transport.Mailbox }); ok {
		s.mailer = m.Mailbox()
		// Take messages under this session's keys only, so that a peer
		// cannot fill the mailbox under sessions nobody asks for.
		m.Mailbox().Expect(opts.SessionID, helloSession, abortSession, roundSession(opts.SessionID))
	}
	return s, nil
}

// WithLogger makes the session log iterations and failures to log.
func (s *Remote) WithLogger(log *slog.Logger) *Remote {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = log.With("player", s.self)
	return s
}

// Run runs this player's part of the next iteration of op. A player that
// has no step in op's plan returns once the handshake is done, having
// counted the iteration as every other player does, so that its later
// iterations keep the numbers (and so the message keys and mask domains)
// of the others'.
//
// For an op that aggregates a cohort, only the coordinator, op's output
// player, calls Run: each call runs one round (see Serve for the others).
// It returns nil when the output function ran, a *SkippedError when the
// servers skipped the round, an error wrapping ErrTooManySkipped after
// Options.Rounds.MaxSkipped skipped rounds in a row, or one wrapping
// ErrSurvivorMismatch; LastRound tells the round's cohort, survivors and
// dropouts. The first Run exchanges hellos with the other players of the
// plan, whose Serve must be running.
func (s *Remote) Run(ctx context.Context, op *graph.Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	plan, err := s.runnable(op)
	if err != nil {
		return err
	}
	if plan.cohort != nil {
		return s.runCohort(ctx, plan)
	}
	if !s.hello[op] {
		if err := s.handshake(ctx, s.t, plan, len(s.hello)); err != nil { // not counted: no tensor moves
			return err
		}
		s.hello[op] = true
	}
	iter := s.iter
	s.iter++ // every player counts every iteration, whether it takes part or not
	if !slices.Contains(plan.players, s.self) {
		s.log.Debug("no part in iteration", "iteration", iter)
		return nil // like the crypto producer in aggregation
	}
	s.rand.prepare(s.self)
	t := &counting{Transport: s.t, self: s.self, c: s.stats, recv: true, pool: s.pool}
	s.log.Debug("iteration start", "iteration", iter)
	err = s.runPlayer(ctx, plan, s.self, t, iter)
	if s.mailer != nil {
		s.mailer.Forget(s.opts.SessionID, iter)
	}
	if err != nil {
		err = s.explain(ctx, plan, iter, err)
		s.log.Warn("iteration failed", "iteration", iter, "err", err)
		return err
	}
	return nil
}

// abortSession is the key space of the notices a failing player sends its
// peers: why it stops.
const abortSession = "shareflow/abort/v1"

// maxReason bounds the reason a player gives when it stops.
const maxReason = 2048

// explain tells the other players why this one stops, and adds to err
// what the others said and which peers this one lost. Failures cascade: a
// server that lost a data owner stops, and the model owner then sees only
// that the server closed; the notices and lost peers say where it began.
func (s *Remote) explain(ctx context.Context, plan *Plan, iter uint64, err error) error {
	key := transport.Key{Session: abortSession, Iteration: iter}
	peers := s.opts.Players
	if len(peers) == 0 {
		peers = plan.players
	}
	reason := err.Error()
	if len(reason) > maxReason {
		reason = reason[:maxReason] + "…"
	}
	// Best effort, within a short deadline of its own: the iteration's
	// context may already be done.
	notify, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	for _, p := range peers {
		if p != s.self {
			s.t.Send(notify, p, key, []byte(reason))
		}
	}
	ce := &CascadeError{Err: err}
	listen, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), 200*time.Millisecond)
	defer cancel2()
	for _, p := range peers {
		if p == s.self {
			continue
		}
		if b, rerr := s.t.Recv(listen, p, key); rerr == nil && len(b) <= maxReason+len("…") {
			ce.Stopped = append(ce.Stopped, PeerStop{Player: p, Reason: string(b)})
		}
	}
	if l, ok := s.t.(interface{ LostPeers() []string }); ok {
		ce.Lost = l.LostPeers()
	}
	if len(ce.Lost) == 0 && len(ce.Stopped) == 0 {
		return err
	}
	return ce
}

// PeerStop is another player's notice that it stopped, and why.
type PeerStop struct {
	Player string
	Reason string
}

// CascadeError is an iteration's error on one player, with what it knew of
// the others when it failed: the peers it lost contact with (they crashed
// or were cut off) and the peers that stopped and said why. When the error
// itself names a player that merely stopped in turn, these say where the
// failure began.
type CascadeError struct {
	Err     error
	Lost    []string
	Stopped []PeerStop
}

func (e *CascadeError) Error() string {
	var b strings.Builder
	b.WriteString(e.Err.Error())
	if len(e.Lost) > 0 {
		b.WriteString(" (lost contact with ")
		b.WriteString(strings.Join(quoteAll(e.Lost), ", "))
		b.WriteString(")")
	}
	for _, p := range e.Stopped {
		fmt.Fprintf(&b, "; %q had stopped: %s", p.Player, p.Reason)
	}
	return b.String()
}

func (e *CascadeError) Unwrap() error { return e.Err }

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fmt.Sprintf("%q", n)
	}
	return out
}

// helloSession is the key space of handshakes: it cannot depend on the
// session id, since the handshake is where ids are compared.
const helloSession = "shareflow/hello/v1"

// handshake sends every other player this player's session id and plan
// fingerprint, and checks theirs. Every player of Options.Players takes
// part, even one with no step in the plan, so that no player leaves before
// all have connected.
func (s *Remote) handshake(ctx context.Context, t transport.Transport, plan *Plan, ordinal int) error {
	key := transport.Key{Session: helloSession, Iteration: uint64(ordinal)}
	mine := hello{Session: s.opts.SessionID, Fingerprint: plan.Fingerprint()}
	msg := mine.marshal()
	peers := s.opts.Players
	if len(peers) == 0 {
		peers = plan.players
	}
	if !slices.Contains(peers, s.self) {
		return fmt.Errorf("session: player %q is not among the players %v", s.self, peers)
	}
	// Every player computes this from the same plan and list, so all stop
	// here alike instead of waiting for a player nobody connects to (the
	// crypto producer of a plan with products, say).
	for _, p := range plan.players {
		if !slices.Contains(peers, p) {
			return fmt.Errorf("session: the plan needs player %q, which is not among the players %v (Options.Players)", p, peers)
		}
	}
	for _, p := range peers {
		if p == s.self {
			continue
		}
		if err := t.Send(ctx, p, key, msg); err != nil {
			return fmt.Errorf("session: handshake with %q: %w", p, err)
		}
	}
	// Read every peer's hello before judging, so that a mismatch is
	// reported even when another peer already gave up and left.
	var mismatches, failures []error
	for _, p := range peers {
		if p == s.self {
			continue
		}
		b, err := t.Recv(ctx, p, key)
		if err != nil {
			failures = append(failures, fmt.Errorf("session: handshake with %q: %w", p, err))
			continue
		}
		var theirs hello
		if err := theirs.unmarshal(b); err != nil {
			failures = append(failures, fmt.Errorf("session: handshake from %q: %w", p, err))
			continue
		}
		if theirs.Session != mine.Session {
			mismatches = append(mismatches, fmt.Errorf("%w: player %q is in session %q, %q is in %q", ErrMismatch, p, theirs.Session, s.self, mine.Session))
		} else if theirs.Fingerprint != mine.Fingerprint {
			mismatches = append(mismatches, fmt.Errorf("%w: player %q compiled plan %.16s…, %q compiled %.16s…: the hosts run different programs or options",
				ErrMismatch, p, theirs.Fingerprint, s.self, mine.Fingerprint))
		}
	}
	if len(mismatches) > 0 {
		return errors.Join(mismatches...)
	}
	return errors.Join(failures...)
}

// Stats returns the messages and bytes this player sent and received on
// each of its links.
func (s *Remote) Stats() []LinkStats { return s.stats.snapshot() }

// Close ends the session and closes its transport.
func (s *Remote) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.t.Close()
}

// hello is the handshake message: two length-prefixed strings.
type hello struct{ Session, Fingerprint string }

func (h hello) marshal() []byte {
	var b []byte
	for _, s := range []string{h.Session, h.Fingerprint} {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

func (h *hello) unmarshal(b []byte) error {
	var out [2]string
	for i := range out {
		if len(b) < 4 {
			return fmt.Errorf("%w: short handshake", ErrWire)
		}
		n := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if n > 1024 || uint32(len(b)) < n {
			return fmt.Errorf("%w: handshake string of %d bytes", ErrWire, n)
		}
		out[i], b = string(b[:n]), b[n:]
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d bytes after the handshake", ErrWire, len(b))
	}
	h.Session, h.Fingerprint = out[0], out[1]
	return nil
}
