package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
)

// Rounds across hosts (see round.go for the protocol).
//
// The coordinator runs rounds with Run; every other player of the plan
// and every member calls Serve, which runs rounds as the coordinator
// announces them until it calls Finish. Hellos are star-shaped: each
// player exchanges session id and plan fingerprint with the coordinator
// (a member also with the servers, when they first meet it in a cohort),
// whenever its connection to that peer is new, so that a coordinator that
// restarts, or a member that joins or reconnects, is checked again. A
// player whose hello does not match is refused alone. After their hello
// each server tells the coordinator the number its next round must have
// at least (resume), so that a restarted coordinator continues after the
// servers' last round: round numbers only increase within a session id.
// The coordinator answers each with the number of its next round, so that
// a restarted server takes up the rounds there. A round whose servers are
// not both connected within Rounds.Deadline of its start is skipped
// (ErrRoundSkipped): nobody is invited to it.

// membership is what the session needs of a transport whose peers join,
// leave and come back while it runs (transport.Membership).
type membership interface {
	Members() []string
	Connected(peer string) bool
	MembershipChanged() <-chan struct{}
}

// The keys of the hellos of rounds, under helloSession. The fixed-owner
// handshake uses edge 0.
var (
	memberHelloKey = transport.Key{Session: helloSession, Edge: 1} // member ↔ coordinator and servers
	roundHelloKey  = transport.Key{Session: helloSession, Edge: 2} // coordinator ↔ the other players of the plan
	resumeKey      = transport.Key{Session: helloSession, Edge: 3} // server → coordinator
)

// greetings records the peers a player exchanged hellos with, and those
// it refused, by the epoch of their connection (transport.Mailbox.Epoch):
// a greeting lasts as long as the connection it was made on. Without a
// mailbox to tell epochs, a greeting lasts for ever. It is safe for
// concurrent use.
type greetings struct {
	box     *transport.Mailbox
	mu      sync.Mutex
	done    map[string]uint64
	refused map[string]uint64
	silent  map[string]uint64 // said nothing in time, on this connection
}

func newGreetings(t transport.Transport) *greetings {
	g := &greetings{done: map[string]uint64{}, refused: map[string]uint64{}, silent: map[string]uint64{}}
	if m, ok := t.(interface{ Mailbox() *transport.Mailbox }); ok {
		g.box = m.Mailbox()
	}
	return g
}

func (g *greetings) epoch(peer string) uint64 {
	if g.box == nil {
		return 0
	}
	n, _ := g.box.Epoch(peer)
	return n
}

// state says whether peer was greeted or refused on its current
// connection.
func (g *greetings) state(peer string) (greeted, refused bool) {
	e := g.epoch(peer)
	g.mu.Lock()
	defer g.mu.Unlock()
	d, ok := g.done[peer]
	r, rok := g.refused[peer]
	return ok && d == e, rok && r == e
}

// quiet reports whether peer said nothing in time when last waited for,
// on its current connection, and has sent nothing since: waiting for it
// again would hold a round for nothing.
func (g *greetings) quiet(peer string) bool {
	e := g.epoch(peer)
	g.mu.Lock()
	s, ok := g.silent[peer]
	g.mu.Unlock()
	if !ok || s != e || g.box == nil {
		return false
	}
	n, _ := g.box.Unread(peer)
	return n == 0
}

func (g *greetings) markSilent(peer string) {
	e := g.epoch(peer)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.silent[peer] = e
}

func (g *greetings) mark(peer string, refused bool) {
	e := g.epoch(peer)
	g.mu.Lock()
	defer g.mu.Unlock()
	if refused {
		g.refused[peer] = e
		delete(g.done, peer)
	} else {
		g.done[peer] = e
	}
}

// roundsState is what a Remote session keeps of its rounds.
type roundsState struct {
	peers    *greetings      // the coordinator: the other players; the others: the coordinator; a member: its hellos sent
	members  *greetings      // the coordinator and servers: the members greeted
	expect   map[string]bool // a member: the servers whose hello answer it waits for
	next     uint64          // a player other than the coordinator: the next round it expects
	plan     *Plan           // the plan of the rounds run, for Finish
	finished bool
	welcomed bool // a member: the coordinator answered its last hello
}

func (s *Remote) rounds() *roundsState {
	if s.rs == nil {
		s.rs = &roundsState{peers: newGreetings(s.t), members: newGreetings(s.t), expect: map[string]bool{}, next: 1}
	}
	return s.rs
}

// checkHello compares a peer's hello with this player's.
func (s *Remote) checkHello(peer string, mine, theirs hello) error {
	switch {
	case theirs.Session != mine.Session:
		return fmt.Errorf("%w: player %q is in session %q, %q is in %q", ErrMismatch, peer, theirs.Session, s.self, mine.Session)
	case theirs.Fingerprint != mine.Fingerprint:
		return fmt.Errorf("%w: player %q compiled plan %.16s…, %q compiled %.16s…: the hosts run different programs or options",
			ErrMismatch, peer, theirs.Fingerprint, s.self, mine.Fingerprint)
	}
	return nil
}

func (s *Remote) recvHello(ctx context.Context, peer string, key transport.Key) (hello, error) {
	b, err := s.t.Recv(ctx, peer, key)
	if err != nil {
		return hello{}, fmt.Errorf("session: hello from %q: %w", peer, err)
	}
	var h hello
	if err := h.unmarshal(b); err != nil {
		return hello{}, fmt.Errorf("session: hello from %q: %w", peer, err)
	}
	return h, nil
}

// runCohort runs the next round of plan on the coordinator.
func (s *Remote) runCohort(ctx context.Context, plan *Plan) error {
	cp := plan.cohort
	if s.self != cp.coordinator {
		return fmt.Errorf("session: %q runs the rounds of %s, not %q: call Serve on every other player", cp.coordinator, cp.cohort, s.self)
	}
	rounds := s.rounds()
	if rounds.finished {
		return fmt.Errorf("session: the rounds of %s were finished (Finish)", cp.cohort)
	}
	rounds.plan = plan
	gone := s.awaitServers(ctx, plan)
	if err := s.greetOthers(ctx, plan, gone); err != nil {
		return err
	}
	co := &s.co
	co.next = max(co.next, 1)
	number := co.next
	co.next++
	start := time.Now()
	greeted := s.greetMembers(ctx, plan, s.candidates(plan), number)
	cohort, err := s.pick(s.self, greeted, number)
	if err != nil {
		return err
	}
	s.rand.prepare(s.self)
	t := &counting{Transport: s.t, self: s.self, c: s.stats, recv: true, pool: s.pool}
	before := sentBytes(s.stats, s.self)
	rs := &roundState{opts: s.opts.Rounds, number: number, cohort: cohort, notify: greeted, serversGone: gone}
	s.log.Debug("round start", "round", number, "cohort", len(cohort), "connected", len(greeted))
	err = s.runRound(ctx, plan, plan.steps[s.self], s.self, t, rs, 0)
	if s.mailer != nil {
		s.mailer.Forget(roundSession(s.opts.SessionID), number)
	}
	err = s.finishRound(rs, err, start, sentBytes(s.stats, s.self)-before)
	if err != nil {
		s.log.Warn("round not revealed", "round", number, "err", err)
	}
	return err
}

// awaitServers waits, up to Rounds.Deadline, until the transport reports
// both servers connected (transport.Membership), and returns those that
// are not: the round is then skipped. The wait bridges a link being set
// up or redialled, and makes each round without a server last a deadline,
// so that MaxSkipped rounds in a row give a restarting server MaxSkipped
// deadlines to come back. Without membership it returns nil.
func (s *Remote) awaitServers(ctx context.Context, plan *Plan) []string {
	m, ok := s.t.(membership)
	if !ok {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.opts.Rounds.Deadline)
	defer cancel()
	for {
		changed := m.MembershipChanged()
		var gone []string
		for _, srv := range plan.cohort.servers {
			if !m.Connected(srv) {
				gone = append(gone, srv)
			}
		}
		if len(gone) == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-wctx.Done():
			s.log.Warn("servers not connected", "servers", gone, "waited", s.opts.Rounds.Deadline)
			return gone
		}
	}
}

// greetOthers exchanges hellos with every other player of the plan whose
// connection is new, but the servers gone, and takes the servers' resume.
func (s *Remote) greetOthers(ctx context.Context, plan *Plan, gone []string) error {
	cp := plan.cohort
	rounds := s.rounds()
	mine := hello{Session: s.opts.SessionID, Fingerprint: plan.Fingerprint()}
	var ungreeted []string
	for _, p := range cp.others {
		if slices.Contains(gone, p) {
			continue // greeted once back; the rounds meanwhile are skipped (announceStep)
		}
		if ok, _ := rounds.peers.state(p); !ok {
			ungreeted = append(ungreeted, p)
		}
	}
	for _, p := range ungreeted {
		if err := s.t.Send(ctx, p, roundHelloKey, mine.marshal()); err != nil {
			return fmt.Errorf("session: hello to %q: %w", p, err)
		}
	}
	s.co.next = max(s.co.next, 1)
	var errs []error
	var resumed []string
	for _, p := range ungreeted {
		theirs, err := s.recvHello(ctx, p, roundHelloKey)
		if err == nil {
			err = s.checkHello(p, mine, theirs)
		}
		if err == nil && slices.Contains(cp.servers[:], p) {
			var r resume
			var b []byte
			if b, err = s.t.Recv(ctx, p, resumeKey); err == nil {
				err = r.UnmarshalBinary(b)
			}
			if err != nil {
				err = fmt.Errorf("session: resume from %q: %w", p, err)
			}
			s.co.next = max(s.co.next, r.Next)
			resumed = append(resumed, p)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rounds.peers.mark(p, false)
	}
	// Each server greeted learns the number of the next round, which is
	// after its own and the other's: a server that restarted (its count
	// back at 1) waits for the round the coordinator announces next.
	r := resume{Next: s.co.next}
	b, _ := r.MarshalBinary()
	for _, p := range resumed {
		if err := s.t.Send(ctx, p, resumeKey, b); err != nil {
			errs = append(errs, fmt.Errorf("session: resume to %q: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// candidates returns the members that may be invited, connected now, and
// sorted: those the transport reports, those of Rounds.Members, and the
// players of Options.Players that have no part in the plan (the data
// owners of a hostmap that lists them), but the crypto producer.
func (s *Remote) candidates(plan *Plan) []string {
	set := slices.Clone(s.opts.Rounds.Members)
	for _, p := range s.opts.Players {
		if p != s.opts.cryptoProducer() {
			set = append(set, p)
		}
	}
	m, ok := s.t.(membership)
	if ok {
		set = append(set, m.Members()...)
	}
	slices.Sort(set)
	set = slices.Compact(set)
	out := set[:0]
	for _, p := range set {
		if p == s.self || slices.Contains(plan.players, p) || players.CheckName(p) != nil {
			continue
		}
		if ok && !m.Connected(p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// greetMembers exchanges hellos with the candidates not greeted on their
// current connection, each within the deadline, and returns the members
// greeted, sorted. A member whose hello does not match is refused until
// it connects again; its welcome tells it why. One whose hello does not
// come in time is waited for again only once it has sent something, or
// connected again, so that a silent member holds up one round only.
func (s *Remote) greetMembers(ctx context.Context, plan *Plan, candidates []string, round uint64) []string {
	rounds := s.rounds()
	mine := hello{Session: s.opts.SessionID, Fingerprint: plan.Fingerprint()}
	w := welcome{Hello: mine, Round: round}
	msg, _ := w.MarshalBinary()
	gctx, cancel := context.WithTimeout(ctx, s.opts.Rounds.Deadline)
	defer cancel()
	var (
		wg  sync.WaitGroup
		sem = make(chan struct{}, 16)
	)
	for _, m := range candidates {
		if greeted, refused := rounds.members.state(m); greeted || refused || rounds.members.quiet(m) {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			theirs, err := s.recvHello(gctx, m, memberHelloKey)
			if err != nil {
				// Not refused: it may say hello later, and is waited for
				// again once it has sent something or connected again.
				rounds.members.markSilent(m)
				s.log.Info("member said no hello in time", "member", m, "err", err)
				return
			}
			err = s.t.Send(gctx, m, memberHelloKey, msg)
			if err == nil {
				err = s.checkHello(m, mine, theirs)
			}
			rounds.members.mark(m, err != nil)
			if err != nil {
				s.log.Warn("member refused", "member", m, "err", err)
			}
		})
	}
	wg.Wait()
	var out []string
	for _, m := range candidates {
		if greeted, _ := rounds.members.state(m); greeted {
			out = append(out, m)
		}
	}
	return out
}

// greetMember is a server's greeting of a member it meets in a cohort:
// it receives the member's hello, answers with its own, and refuses a
// member whose hello does not match until it connects again.
func (s *Remote) greetMember(ctx context.Context, plan *Plan, m string) error {
	rounds := s.rounds()
	greeted, refused := rounds.members.state(m)
	switch {
	case greeted:
		return nil
	case refused:
		return fmt.Errorf("refused by %s: its hello did not match", s.self)
	}
	mine := hello{Session: s.opts.SessionID, Fingerprint: plan.Fingerprint()}
	theirs, err := s.recvHello(ctx, m, memberHelloKey)
	if err != nil {
		return err
	}
	if err := s.t.Send(ctx, m, memberHelloKey, mine.marshal()); err != nil {
		return err
	}
	if err := s.checkHello(m, mine, theirs); err != nil {
		rounds.members.mark(m, true)
		return fmt.Errorf("refused by %s: %w", s.self, err)
	}
	rounds.members.mark(m, false)
	return nil
}

// Serve runs this player's part of the rounds of op, as its coordinator
// (op's output player) announces them, until the coordinator ends the
// run with Finish; it then returns nil. Every player but the coordinator
// calls it: the servers and any other player of the plan, and the
// members, who join from the next round after they connect. A player
// with no part in the rounds (a crypto producer in a plan without
// products) returns at once.
//
// A member's function that fails drops it out of that round, and Serve
// goes on. Serve fails when this player's hello does not match the
// coordinator's (ErrMismatch), when ctx ends, or when the coordinator has
// lost its connection for longer than Rounds.CoordinatorTimeout (waiting
// for it to come back needs a transport that reports its peers,
// transport.Membership). A server that fails in a round tells the
// coordinator and goes on with the next.
func (s *Remote) Serve(ctx context.Context, op *graph.Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	plan, err := s.runnable(op)
	if err != nil {
		return err
	}
	cp := plan.cohort
	switch {
	case cp == nil:
		return fmt.Errorf("session: %s aggregates no cohort: call Run on every player", op.Node())
	case s.self == cp.coordinator:
		return fmt.Errorf("session: %q coordinates the rounds of %s: call Run", s.self, cp.cohort)
	case slices.Contains(plan.players, s.self):
		return s.serveFixed(ctx, plan)
	case s.self == cp.servers[0] || s.self == cp.servers[1] || s.self == s.opts.cryptoProducer():
		return nil
	}
	return s.serveMember(ctx, plan)
}

// serveFixed serves the rounds of plan on a player of the plan.
func (s *Remote) serveFixed(ctx context.Context, plan *Plan) error {
	cp := plan.cohort
	rounds := s.rounds()
	server := slices.Contains(cp.servers[:], s.self)
	s.rand.prepare(s.self)
	t := &counting{Transport: s.t, self: s.self, c: s.stats, recv: true, pool: s.pool}
	for {
		if ok, _ := rounds.peers.state(cp.coordinator); !ok {
			if err := s.helloCoordinator(ctx, plan, server); err != nil {
				if s.coordinatorGone(err) {
					if werr := s.awaitCoordinator(ctx, cp.coordinator, err); werr != nil {
						return werr
					}
					continue
				}
				return err
			}
		}
		rs := &roundState{opts: s.opts.Rounds, number: rounds.next}
		if server {
			rs.greet = func(ctx context.Context, m string) error { return s.greetMember(ctx, plan, m) }
		}
		wctx, stop := s.watchPeer(ctx, cp.coordinator)
		err := s.serverRound(wctx, plan, s.self, t, rs)
		if errors.Is(context.Cause(wctx), errReconnected) {
			err = errReconnected
		}
		stop()
		// A round that did not start (the coordinator is gone, say) is
		// neither counted nor forgotten: it may start yet.
		if rs.cohort != nil {
			rounds.next = rs.number + 1
			if s.mailer != nil {
				s.mailer.Forget(roundSession(s.opts.SessionID), rs.number)
			}
		}
		switch {
		case errors.Is(err, errRunEnded):
			return nil
		case err == nil:
		case ctx.Err() != nil:
			return err
		case errors.Is(err, errReconnected): // hello again
		case rs.cohort == nil && s.coordinatorGone(err):
			if werr := s.awaitCoordinator(ctx, cp.coordinator, err); werr != nil {
				return werr
			}
		case rs.cohort == nil:
			return err
		default:
			s.log.Warn("round failed", "round", rs.number, "err", err)
		}
	}
}

// helloCoordinator exchanges hellos with the coordinator and, on a
// server, tells it the next round's number.
func (s *Remote) helloCoordinator(ctx context.Context, plan *Plan, server bool) error {
	c := plan.cohort.coordinator
	mine := hello{Session: s.opts.SessionID, Fingerprint: plan.Fingerprint()}
	if err := s.t.Send(ctx, c, roundHelloKey, mine.marshal()); err != nil {
		return fmt.Errorf("session: hello to %q: %w", c, err)
	}
	theirs, err := s.recvHello(ctx, c, roundHelloKey)
	if err != nil {
		return err
	}
	if err := s.checkHello(c, mine, theirs); err != nil {
		return err
	}
	if server {
		r := resume{Next: s.rounds().next}
		b, _ := r.MarshalBinary()
		if err := s.t.Send(ctx, c, resumeKey, b); err != nil {
			return fmt.Errorf("session: resume to %q: %w", c, err)
		}
		// The coordinator answers with the number of its next round, at
		// least this one's: a server that restarted takes it up there.
		if b, err = s.t.Recv(ctx, c, resumeKey); err == nil {
			err = r.UnmarshalBinary(b)
		}
		if err != nil {
			return fmt.Errorf("session: resume from %q: %w", c, err)
		}
		s.rounds().next = max(s.rounds().next, r.Next)
	}
	s.rounds().peers.mark(c, false)
	return nil
}

// coordinatorGone reports whether err says a peer left, which may be the
// coordinator's connection lost.
func (s *Remote) coordinatorGone(err error) bool { return errors.Is(err, transport.ErrPeerGone) }

// awaitCoordinator waits, up to Rounds.CoordinatorTimeout, for the
// coordinator to be connected again after cause. It needs a transport
// that reports its peers (membership); without one it returns cause.
func (s *Remote) awaitCoordinator(ctx context.Context, c string, cause error) error {
	m, ok := s.t.(membership)
	if !ok {
		return cause
	}
	limit := s.opts.Rounds.CoordinatorTimeout
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	s.log.Info("waiting for the coordinator", "coordinator", c, "up to", limit)
	for {
		changed := m.MembershipChanged()
		if m.Connected(c) {
			return nil
		}
		select {
		case <-changed:
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("session: the coordinator %q has been gone for %v (Rounds.CoordinatorTimeout): %w", c, limit, cause)
		}
	}
}

// serveMember serves the rounds of plan on a member. Before each round
// it says hello again to the coordinator and servers whose connection is
// new; after a new hello to the coordinator it waits for its welcome,
// which tells the round to wait for next.
func (s *Remote) serveMember(ctx context.Context, plan *Plan) error {
	cp := plan.cohort
	rounds := s.rounds()
	s.rand.prepare(s.self)
	t := &counting{Transport: s.t, self: s.self, c: s.stats, recv: true, pool: s.pool}
	mine := hello{Session: s.opts.SessionID, Fingerprint: plan.Fingerprint()}
	invited := func(ctx context.Context) error {
		for _, srv := range cp.servers {
			if !rounds.expect[srv] {
				continue
			}
			theirs, err := s.recvHello(ctx, srv, memberHelloKey)
			if err != nil {
				return err
			}
			if err := s.checkHello(srv, mine, theirs); err != nil {
				return err
			}
			delete(rounds.expect, srv)
		}
		return nil
	}
	var next uint64
	for {
		err := s.memberHellos(ctx, plan, mine)
		if err == nil && !rounds.welcomed {
			next, err = s.welcome(ctx, plan, mine)
		}
		if err == nil {
			wctx, stop := s.watchPeer(ctx, cp.coordinator)
			rs := &roundState{opts: s.opts.Rounds, number: next, invited: invited}
			err = s.memberRound(wctx, plan, s.self, t, rs)
			if errors.Is(context.Cause(wctx), errReconnected) {
				err = errReconnected
			}
			stop()
			if s.mailer != nil && (rs.position >= 0 || err == nil || errors.Is(err, errNotInvited)) {
				s.mailer.Forget(roundSession(s.opts.SessionID), next) // the round's notice came
			}
			if rs.position >= 0 {
				s.recordMemberRound(rs, err)
			}
			if err == nil || errors.Is(err, errNotInvited) {
				next++
				continue
			}
		}
		switch {
		case errors.Is(err, errRunEnded):
			return nil
		case ctx.Err() != nil, errors.Is(err, ErrMismatch):
			return err
		case errors.Is(err, errReconnected): // hello again
		case s.coordinatorGone(err):
			if werr := s.awaitCoordinator(ctx, cp.coordinator, err); werr != nil {
				return werr
			}
		default:
			return err
		}
	}
}

// welcome waits for the coordinator's answer to this member's hello, and
// returns the round of its first notice.
func (s *Remote) welcome(ctx context.Context, plan *Plan, mine hello) (uint64, error) {
	c := plan.cohort.coordinator
	wctx, stop := s.watchPeer(ctx, c)
	defer stop()
	b, err := s.t.Recv(wctx, c, memberHelloKey)
	if errors.Is(context.Cause(wctx), errReconnected) {
		return 0, errReconnected
	}
	if err != nil {
		return 0, fmt.Errorf("session: welcome from %q: %w", c, err)
	}
	var w welcome
	if err := w.UnmarshalBinary(b); err != nil {
		return 0, fmt.Errorf("session: welcome from %q: %w", c, err)
	}
	if err := s.checkHello(c, mine, w.Hello); err != nil {
		return 0, err
	}
	s.rounds().welcomed = true
	s.log.Info("joined the rounds", "from round", w.Round)
	return w.Round, nil
}

// memberHellos sends a member's hello to the coordinator and the servers
// whose connection is new, and notes that the servers will answer and
// that the coordinator will welcome it.
func (s *Remote) memberHellos(ctx context.Context, plan *Plan, mine hello) error {
	cp := plan.cohort
	rounds := s.rounds()
	for _, p := range []string{cp.coordinator, cp.servers[0], cp.servers[1]} {
		if sent, _ := rounds.peers.state(p); sent {
			continue
		}
		if err := s.t.Send(ctx, p, memberHelloKey, mine.marshal()); err != nil {
			return fmt.Errorf("session: hello to %q: %w", p, err)
		}
		rounds.peers.mark(p, false)
		if p == cp.coordinator {
			rounds.welcomed = false
		} else {
			rounds.expect[p] = true
		}
	}
	return nil
}

// errReconnected ends a wait for a peer whose connection changed since
// this player said hello to it: the peer must be greeted again.
var errReconnected = errors.New("session: the peer connected again")

// watchPeer returns a context that ends, with cause errReconnected, when
// peer's connection is no longer the one this player greeted it on, and
// a function to call when done. Without a transport that reports its
// peers' changes (membership) and epochs, it is ctx.
func (s *Remote) watchPeer(ctx context.Context, peer string) (context.Context, context.CancelFunc) {
	g := s.rounds().peers
	m, ok := s.t.(membership)
	if !ok || g.box == nil {
		return context.WithCancel(ctx)
	}
	wctx, cancel := context.WithCancelCause(ctx)
	go func() {
		for {
			changed := m.MembershipChanged()
			if greeted, _ := g.state(peer); !greeted {
				cancel(errReconnected)
				return
			}
			select {
			case <-changed:
			case <-wctx.Done():
				return
			}
		}
	}()
	return wctx, func() { cancel(nil) }
}

// recordMemberRound records a round as a member knows it.
func (s *Remote) recordMemberRound(rs *roundState, err error) {
	s.lastMu.Lock()
	defer s.lastMu.Unlock()
	s.last = RoundInfo{Round: rs.number}
	if err != nil {
		s.last.Dropped = map[string]string{rs.member: err.Error()}
	}
}

// Finish ends the rounds this player coordinates: it tells every other
// player of the plan and every member greeted and connected that no
// round follows, and their Serve returns nil. It does nothing on a
// player that has run no round.
func (s *Remote) Finish(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rs == nil || s.rs.plan == nil || s.rs.finished {
		return nil
	}
	plan := s.rs.plan
	cp := plan.cohort
	number := s.co.next
	s.co.next++
	s.rs.finished = true
	end := roundStart{Round: number, End: true}
	b, _ := end.MarshalBinary()
	key := func(edge uint64) transport.Key { return transportKey(s.opts.SessionID, number, edge) }
	var errs []error
	for _, p := range cp.others {
		if err := s.t.Send(ctx, p, key(cp.startEdge), b); err != nil {
			errs = append(errs, fmt.Errorf("session: telling %q the run is over: %w", p, err))
		}
	}
	n := roundNotice{Round: number, Kind: noticeEnd}
	nb, _ := n.MarshalBinary()
	for _, m := range s.candidates(plan) {
		if greeted, _ := s.rs.members.state(m); greeted {
			s.t.Send(ctx, m, key(cp.noticeEdge), nb) // a member gone is no failure
		}
	}
	return errors.Join(errs...)
}
