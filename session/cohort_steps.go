package session

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/internal/le"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
)

// The steps of a round (see cohort_plan.go for where the compiler puts
// them and rounds.go for the protocol they follow).

// memberDomain is the mask domain of upload u of member in the round.
func memberDomain(r *runner, u *upload, member string) pond.Domain {
	d := r.proto.Domain(r.session, r.iter, u.tensorID())
	d.Member = member
	return d
}

// sendToMembers sends b to every member of members on edge, a few at a
// time, each within the round's deadline, and returns the number that
// failed. A member that cannot be reached drops out of the round, which is
// no failure of the sender's.
func sendToMembers(ctx context.Context, r *runner, members []string, edge uint64, b []byte) int {
	const parallelSends = 8
	sctx, cancel := context.WithTimeout(ctx, r.round.opts.Deadline)
	defer cancel()
	if len(members) == 1 { // a notice: no goroutine to wait for
		if err := r.t.Send(sctx, members[0], r.key(edge), b); err != nil {
			return 1
		}
		return 0
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
	)
	sem := make(chan struct{}, parallelSends)
	for _, m := range members {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := r.t.Send(sctx, m, r.key(edge), b); err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failed
}

// announceStep is the coordinator's first step of a round: it tells every
// other player of the plan the round's number and cohort, and every
// connected member whether it is invited, and at which position.
type announceStep struct {
	lastUse
	cp *cohortPlan
}

func (s *announceStep) String() string {
	return fmt.Sprintf("start round: number and cohort -> %s (edge %d); invited or not -> every connected member (edge %d)",
		strings.Join(s.cp.others, ", "), s.cp.startEdge, s.cp.noticeEdge)
}

func (s *announceStep) reads() []value  { return nil }
func (s *announceStep) writes() []value { return nil }

// exec sends even when ctx ends meanwhile (within the deadline): a player
// left waiting for a round nobody announced would wait for ever.
func (s *announceStep) exec(ctx context.Context, r *runner) error {
	rs := r.round
	start := roundStart{Round: rs.number, Cohort: rs.cohort}
	gone := slices.Clone(rs.serversGone)
	if len(gone) > 0 {
		// Nobody is invited: the other server gathers nothing, fails to
		// reach the missing one or skips, and is ready for the next round.
		start.Cohort = nil
	}
	b, err := start.MarshalBinary()
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rs.opts.Deadline)
	defer cancel()
	for _, p := range s.cp.others {
		if slices.Contains(gone, p) {
			continue
		}
		if err := r.sendBytes(actx, p, s.cp.startEdge, b); err != nil {
			if slices.Contains(s.cp.servers[:], p) && errors.Is(err, transport.ErrPeerGone) {
				gone = append(gone, p) // lost since the round began
				continue
			}
			return fmt.Errorf("announcing round %d: %w", rs.number, err)
		}
	}
	if len(gone) > 0 {
		// A server that is not connected (crashed, restarting) cannot
		// take its part: the round is skipped, not failed, and every
		// member is told it is not invited, so that it waits for the next.
		notice := roundNotice{Round: rs.number, Kind: noticeNotInvited}
		nb, _ := notice.MarshalBinary()
		sendToMembers(actx, r, rs.notify, s.cp.noticeEdge, nb)
		rs.cohort = nil
		return &SkippedError{Round: rs.number, Reason: fmt.Sprintf("%s not connected: a round needs both servers", strings.Join(quoteAll(gone), " and "))}
	}
	var invited, others []string
	for _, m := range rs.notify {
		if _, ok := slices.BinarySearch(rs.cohort, m); ok {
			invited = append(invited, m)
		} else {
			others = append(others, m)
		}
	}
	notice := roundNotice{Round: rs.number, Kind: noticeNotInvited}
	nb, _ := notice.MarshalBinary()
	sendToMembers(actx, r, others, s.cp.noticeEdge, nb)
	for i, m := range rs.cohort {
		if !slices.Contains(invited, m) {
			continue // a member of the cohort that is no longer connected
		}
		n := roundNotice{Round: rs.number, Kind: noticeInvited, Position: uint32(i)}
		nb, _ := n.MarshalBinary()
		sendToMembers(actx, r, []string{m}, s.cp.noticeEdge, nb)
	}
	return nil
}

// roundStartStep is the first step of a round on every player of the
// plan but the coordinator: it receives the round's number and cohort.
type roundStartStep struct {
	lastUse
	cp *cohortPlan
}

func (s *roundStartStep) String() string {
	return fmt.Sprintf("recv round start from %s (edge %d)", s.cp.coordinator, s.cp.startEdge)
}

func (s *roundStartStep) reads() []value  { return nil }
func (s *roundStartStep) writes() []value { return nil }

func (s *roundStartStep) exec(ctx context.Context, r *runner) error {
	var m roundStart
	if err := r.recv(ctx, s.cp.coordinator, s.cp.startEdge, &m); err != nil {
		return err
	}
	if m.Round != r.round.number {
		return fmt.Errorf("%w: round start for round %d under the key of round %d", ErrWire, m.Round, r.round.number)
	}
	if m.End {
		return errRunEnded
	}
	// A player of the plan is no member: the coordinator could otherwise
	// meet the floor with shares of its own, known to it.
	r.round.cohort = m.Cohort // the round has started, refused or not
	if r.round.cohort == nil {
		r.round.cohort = []string{} // a round nobody is invited to (a server is missing) has started too
	}
	if bound := r.round.opts.cohortBound(); len(m.Cohort) > bound {
		// The plan's input range holds sums of no more (Z_2^32 could wrap).
		return fmt.Errorf("the cohort of round %d has %d members, more than the %d the plan allows (RoundOptions.MaxCohort): refused", m.Round, len(m.Cohort), bound)
	}
	for _, p := range m.Cohort {
		if p == s.cp.coordinator || slices.Contains(s.cp.others, p) {
			return fmt.Errorf("the cohort of round %d names %q, a player of the plan: refused", m.Round, p)
		}
	}
	r.round.started = time.Now()
	return nil
}

// noticeStep is a member's first step of a round: whether it is invited.
type noticeStep struct {
	lastUse
	cp *cohortPlan
}

func (s *noticeStep) String() string {
	return fmt.Sprintf("recv notice from %s (edge %d): invited at a position in the cohort, or not", s.cp.coordinator, s.cp.noticeEdge)
}

func (s *noticeStep) reads() []value  { return nil }
func (s *noticeStep) writes() []value { return nil }

func (s *noticeStep) exec(ctx context.Context, r *runner) error {
	var m roundNotice
	if err := r.recv(ctx, s.cp.coordinator, s.cp.noticeEdge, &m); err != nil {
		return err
	}
	rs := r.round
	switch {
	case m.Round != rs.number:
		return fmt.Errorf("%w: notice for round %d under the key of round %d", ErrWire, m.Round, rs.number)
	case m.Kind == noticeEnd:
		return errRunEnded
	case m.Kind == noticeNotInvited:
		return errNotInvited
	}
	rs.position = int(m.Position)
	rs.started = time.Now()
	if rs.invited != nil {
		return rs.invited(ctx)
	}
	return nil
}

// sendMembersStep sends a public tensor, encoded once, to every member of
// the round's cohort: as copies, but for the last member when this is the
// tensor's last use on the coordinator, which gets the tensor's memory
// itself (SendOwned). A member it cannot reach drops out of the round.
type sendMembersStep struct {
	lastUse
	ref  graph.Ref
	edge uint64
}

func (s *sendMembersStep) String() string {
	return fmt.Sprintf("send public %s -> every member of the round (edge %d)", s.ref, s.edge)
}

func (s *sendMembersStep) reads() []value  { return values(publicValue, s.ref) }
func (s *sendMembersStep) writes() []value { return nil }

func (s *sendMembersStep) exec(ctx context.Context, r *runner) error {
	last := s.isLast(0)
	var v []float64
	var err error
	if last {
		v, err = r.takePublic(s.ref)
	} else {
		v, err = r.publicTensor(s.ref)
	}
	if err != nil {
		return err
	}
	// Every member gets the transport's copy of the tensor's memory, where
	// the byte order lets that memory be the encoding (wireView).
	b, view := wireView(v)
	if !view {
		t := &publicTensor{Shape: s.ref.Shape(), Data: v}
		if b, err = t.AppendBinary(r.pool.byteBuf(t.size())); err != nil {
			return err
		}
	}
	members := r.round.cohort
	if !last || len(members) == 0 {
		sendToMembers(ctx, r, members, s.edge, b)
		if !view {
			r.pool.putBytes(b)
		}
		return nil
	}
	// The tensor's last use here: every member but one gets a copy, then
	// the last gets the memory itself, once nothing reads it any more. A
	// member it cannot reach drops out of the round, as in sendToMembers.
	n := len(members) - 1
	sendToMembers(ctx, r, members[:n], s.edge, b)
	sctx, cancel := context.WithTimeout(ctx, r.round.opts.Deadline)
	defer cancel()
	_ = r.t.SendOwned(sctx, members[n], r.key(s.edge), b)
	return nil
}

// seedServer returns the index of the server that receives the seeds of
// the member at position pos of a round's cohort (its seed server); the
// other receives its status and masked tensors (its masked server).
func seedServer(pos int) int { return pos % 2 }

// heldEdge is the edge of the seeds-held notice (seedsHeld) about the
// member at position pos, from the server whose notices go on edge e:
// each member's notice has a key of its own, so that the masked server
// waits for each member's alone. The position sits above the plan's
// edges, which number far fewer than 2^32.
func heldEdge(e uint64, pos int) uint64 { return e | uint64(pos+1)<<32 }

// maskedMessage returns the message of a masked tensor of n elements and
// the share inside it, to be filled in place; sealMasked returns the
// message once the share is filled. Where the byte order does not let
// the share live in the message, msg is nil and the share a pooled
// buffer, which sealMasked encodes and gives back. In Z_2^32 share is
// nil: the mask is drawn into the message's 4-byte words (expandAhead),
// and the masked tensor written over them in place (maskWords).
func maskedMessage(r *runner, n int) (msg []byte, share pond.Share) {
	if r.proto.WordSize() != 8 {
		size := r.proto.ShareSize(n)
		msg = r.pool.byteBuf(size)[:size]
		binary.LittleEndian.PutUint64(msg, uint64(n))
		return msg, nil
	}
	return r.shareMessage(n)
}

// expandAhead draws the mask of stream st into the share or, in Z_2^32,
// the words of msg that maskedMessage returned, on every core.
func expandAhead(r *runner, msg []byte, share pond.Share, st pond.SeededShare, n int) {
	if share == nil {
		w, ws := msg[8:], r.proto.WordSize()
		parallel(n, func(lo, hi int) { r.proto.ExpandWordsAt(w[ws*lo:ws*hi], st, lo) })
		return
	}
	parallel(n, func(lo, hi int) { st.ExpandAt(share[lo:hi], lo) })
}

// maskWords writes, in Z_2^32, the masked tensor encode(x) − r over the
// mask r that expandAhead drew into msg's words, in one pass on every
// core (pond's EncodeAndSubtractFromWordsAt).
func maskWords(r *runner, msg []byte, x []float64) error {
	w, ws := msg[8:], r.proto.WordSize()
	return parallelErr(len(x), func(lo, hi int) error {
		return r.proto.EncodeAndSubtractFromWordsAt(w[ws*lo:ws*hi], x[lo:hi], lo)
	})
}

// sealMasked returns the message of a masked tensor filled in place (see
// maskedMessage), in the plan's ring: msg itself, its words packed to the
// front in Z_2^32 (runner.shareOf), or the encoding of share.
func sealMasked(r *runner, msg []byte, share pond.Share) []byte {
	if msg != nil {
		return r.shareOf(msg, share)
	}
	b := r.proto.AppendShare(r.pool.byteBuf(r.proto.ShareSize(len(share))), share)
	r.pool.putUint64s(share)
	return b
}

// parseMasked reads a masked tensor of n elements from message b, which
// it takes over: the share is a view of b (backing, to release once the
// share is used) where the byte order allows, else a pooled copy (backing
// nil). In Z_2^32 the share is nil and backing the message itself, whose
// 4-byte words the sum adds as they are (pond.Protocol.SumAt). On
// error it releases b.
func parseMasked(r *runner, b []byte, n int) (share pond.Share, backing []byte, err error) {
	if size := r.proto.ShareSize(n); len(b) != size || binary.LittleEndian.Uint64(b) != uint64(n) {
		r.pool.putBytes(b)
		return nil, nil, fmt.Errorf("%d bytes, want %d", len(b), size)
	}
	if r.proto.WordSize() != 8 {
		return nil, b, nil
	}
	if w, ok := le.Words(b[8:]); ok {
		return w, b, nil
	}
	share = pond.Share(r.pool.uint64s(n))
	err = r.proto.DecodeShare(share, b)
	r.pool.putBytes(b)
	if err != nil {
		r.pool.putUint64s(share)
		return nil, nil, err
	}
	return share, nil, nil
}

// masksAhead are a member's masks of a round, drawn before its functions
// return: a seed per upload, sent to its seed server (send), and each
// upload's mask stream, expanded in the background (expand) into the
// message that will carry the masked tensor. Both begin when the member's
// functions are called, not when it is invited: until then the member
// waits for the coordinator's public inputs, and the cores are better left
// to whoever is sending them (the seed server adds a seed's streams as
// they come). A member that drops before its functions never sends its
// seeds. done is closed once every mask is expanded, or when the seeds
// could not be sent, or at release if nothing began; until then only the
// expanding goroutine touches msgs and shares.
type masksAhead struct {
	seeds  []pond.Seed
	msgs   [][]byte     // per upload: the message (see maskedMessage), or nil
	shares []pond.Share // per upload: the mask, then the masked tensor, in place
	send   func(ctx context.Context) error
	expand func()
	once   sync.Once // begins, or ends unbegun
	err    error     // the seeds' send's, once begun
	done   chan struct{}
}

// begin sends the seeds and starts the expansion in the background, once,
// and returns the send's error.
func (m *masksAhead) begin(ctx context.Context) error {
	m.once.Do(func() {
		if m.err = m.send(ctx); m.err != nil {
			close(m.done)
			return
		}
		go func() {
			defer close(m.done)
			m.expand()
		}()
	})
	return m.err
}

// release gives back the buffers not handed over, once the expansion
// ended, or at once if it never began.
func (m *masksAhead) release(r *runner) {
	m.once.Do(func() { close(m.done) })
	<-m.done
	for i := range m.shares {
		switch {
		case m.msgs[i] != nil:
			r.pool.putBytes(m.msgs[i])
		case m.shares[i] != nil:
			r.pool.putUint64s(m.shares[i])
		}
		m.msgs[i], m.shares[i] = nil, nil
	}
}

// seedsStep is a member's step right after it learns it is invited, before
// its functions run: it draws a seed for each upload and prepares their
// masks; as the functions are called it sends the seeds to its seed server
// at once and expands the masks in the background while the functions
// compute, so that after them only a subtraction is left (contributeStep).
// See masksAhead.
type seedsStep struct {
	lastUse
	cp *cohortPlan
}

func (s *seedsStep) String() string {
	return fmt.Sprintf("seeds ahead: a fresh seed per upload -> %s (edge %d) at even positions in the cohort, %s (edge %d) at odd, sent as the functions are called; expand their masks while the functions run",
		s.cp.servers[0], s.cp.seedEdges[0], s.cp.servers[1], s.cp.seedEdges[1])
}

func (s *seedsStep) reads() []value  { return nil }
func (s *seedsStep) writes() []value { return nil }

func (s *seedsStep) exec(ctx context.Context, r *runner) error {
	rs := r.round
	m := &masksAhead{
		seeds:  make([]pond.Seed, len(s.cp.uploads)),
		msgs:   make([][]byte, len(s.cp.uploads)),
		shares: make([]pond.Share, len(s.cp.uploads)),
		done:   make(chan struct{}),
	}
	for i, u := range s.cp.uploads {
		seed, err := pond.NewSeed(r.rng)
		if err != nil {
			return fmt.Errorf("upload %s: %w", u, err)
		}
		m.seeds[i] = seed
	}
	k := seedServer(rs.position)
	m.send = func(ctx context.Context) error {
		msg := &memberSeeds{Round: rs.number, Seeds: m.seeds}
		if err := r.send(ctx, s.cp.servers[k], s.cp.seedEdges[k], 12+pond.SeedSize*len(m.seeds), msg); err != nil {
			return err
		}
		rs.seedsSent = true
		return nil
	}
	streams := make([]pond.SeededShare, len(s.cp.uploads))
	for i, u := range s.cp.uploads {
		m.msgs[i], m.shares[i] = maskedMessage(r, u.x.Shape().Size())
		streams[i] = pond.SeededShare{Seed: m.seeds[i], Domain: memberDomain(r, u, rs.member)}
	}
	m.expand = func() {
		for i, st := range streams {
			expandAhead(r, m.msgs[i], m.shares[i], st, s.cp.uploads[i].x.Shape().Size())
		}
	}
	rs.ahead = m
	return nil
}

// contributeStep is a member's last step of a round: it computes its
// uploads (w·x for a weighted mean), masks each with the mask it drew
// ahead (seedsStep), in one pass, tells its masked server that its shares
// follow and sends them. Everything is computed before anything is sent,
// so that a weight refused or a value out of range drops the member out
// before its masked server has heard from it; its seeds are then never
// used.
type contributeStep struct {
	lastUse
	cp *cohortPlan
}

func (s *contributeStep) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "contribute: status -> %s (edge %d) or %s (edge %d)", s.cp.servers[0], s.cp.statusEdges[0], s.cp.servers[1], s.cp.statusEdges[1])
	for _, u := range s.cp.uploads {
		fmt.Fprintf(&b, "; masked %s -> %s (edge %d) or %s (edge %d)", u, s.cp.servers[0], u.edges[0], s.cp.servers[1], u.edges[1])
	}
	fmt.Fprintf(&b, "; to the server without the seeds: %s at even positions in the cohort, %s at odd", s.cp.servers[1], s.cp.servers[0])
	return b.String()
}

func (s *contributeStep) reads() []value {
	var refs []graph.Ref
	for _, u := range s.cp.uploads {
		refs = append(refs, u.x)
		if u.weight != nil {
			refs = append(refs, *u.weight)
		}
	}
	return values(publicValue, refs...)
}

func (s *contributeStep) writes() []value { return nil }

func (s *contributeStep) exec(ctx context.Context, r *runner) error {
	rs := r.round
	// Weights first: a member whose weight is refused sends nothing more.
	for _, u := range s.cp.uploads {
		if u.weight == nil {
			continue
		}
		w, err := r.publicTensor(*u.weight)
		if err != nil {
			return err
		}
		if !(w[0] > 0) || math.IsInf(w[0], 0) {
			return fmt.Errorf("%w: weight %s of %s is %v", ErrWeight, *u.weight, u.id.Node, w[0])
		}
	}
	m := rs.ahead
	if m == nil {
		return fmt.Errorf("session: contribute without masks drawn ahead (compiler bug)")
	}
	if err := m.begin(ctx); err != nil { // begun already, unless the member calls no function
		return err
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	for i, u := range s.cp.uploads {
		x, err := r.publicTensor(u.x)
		if err != nil {
			return err
		}
		if u.weight != nil {
			w, _ := r.publicTensor(*u.weight)
			wx := make([]float64, len(x))
			for i, v := range x {
				wx[i] = w[0] * v
			}
			x = wx
		}
		sh := m.shares[i]
		if sh == nil { // Z_2^32: the mask is in the message's words
			if err := maskWords(r, m.msgs[i], x); err != nil {
				return fmt.Errorf("upload %s: %w%s", u, err, r.rangeNote(err))
			}
			continue
		}
		err = parallelErr(len(x), func(lo, hi int) error {
			return r.proto.EncodeAndSubtractAt(sh[lo:hi], x[lo:hi], sh[lo:hi], lo)
		})
		if err != nil {
			return fmt.Errorf("upload %s: %w%s", u, err, r.rangeNote(err))
		}
	}
	to := 1 - seedServer(rs.position)
	ok, _ := (&contribution{}).MarshalBinary()
	if err := r.sendBytes(ctx, s.cp.servers[to], s.cp.statusEdges[to], ok); err != nil {
		return err
	}
	for i, u := range s.cp.uploads {
		b := m.msgs[i] // Z_2^32: written in place by maskWords
		if m.shares[i] != nil {
			b = sealMasked(r, m.msgs[i], m.shares[i])
		}
		m.msgs[i], m.shares[i] = nil, nil // handed over with the message
		if err := r.t.SendOwned(ctx, s.cp.servers[to], r.key(u.edges[to]), b); err != nil {
			return fmt.Errorf("sending to %q: %w", s.cp.servers[to], err)
		}
	}
	return nil
}

// gatherStep is a server's step that collects a round's uploads into
// running sums and agrees on its survivors. Each member's seed server
// receives its seeds (the member sends them as it calls its functions), adds
// their streams into its sums in the background, counts the member as
// arrived from then on and tells the other server so (seedsHeld). The
// member's masked server receives its status and, unless it dropped out,
// its masked tensors; once it holds all of them and the seed server's
// notice, it adds them into its sums and lets them go. When every
// member's shares arrived or failed, or the deadline passed, the server
// sends the other its arrived set (with the digest of the cohort it was
// told), receives the other's, and takes the intersection: the survivors.
// It takes back the streams of the members it holds seeds of who did not
// survive. With fewer survivors than MinOwners it skips the round: the
// server sends no share.
type gatherStep struct {
	lastUse
	cp    *cohortPlan
	party int
}

func (s *gatherStep) String() string {
	var b strings.Builder
	from, to := s.cp.exchangeEdges[1-s.party], s.cp.exchangeEdges[s.party]
	peer := s.cp.servers[1-s.party]
	even, odd := "seeds", "status and masked tensors"
	if s.party == 1 {
		even, odd = odd, even
	}
	fmt.Fprintf(&b, "gather from every member of the round: from even positions its %s, from odd its %s: seeds (edge %d)", even, odd, s.cp.seedEdges[s.party])
	fmt.Fprintf(&b, ", summed as they come, each told -> %s (edge %d, one key per position); status (edge %d)", peer, s.cp.heldEdges[s.party], s.cp.statusEdges[s.party])
	for _, u := range s.cp.uploads {
		fmt.Fprintf(&b, ", masked %s (edge %d)", u, u.edges[s.party])
	}
	fmt.Fprintf(&b, ", summed once all came and %s holds the seeds (<- %s, edge %d, one key per position); until all arrived or failed or the deadline; arrived set -> %s (edge %d), <- %s (edge %d); survivors: both sets' intersection, other members' streams taken back; skip the round below MinOwners",
		peer, peer, s.cp.heldEdges[1-s.party], peer, to, peer, from)
	return b.String()
}

func (s *gatherStep) reads() []value { return nil }

func (s *gatherStep) writes() []value {
	out := make([]value, len(s.cp.uploads))
	for i, u := range s.cp.uploads {
		out[i] = value{uploadValue, u.id}
	}
	return out
}

func (s *gatherStep) exec(ctx context.Context, r *runner) error {
	rs := r.round
	cohort := rs.cohort
	if len(cohort) == 0 {
		// A round nobody is invited to (the coordinator found the other
		// server not connected) has no survivors to agree on: the other
		// server, restarted meanwhile, may never have heard of it.
		return &roundSkip{reason: "nobody was invited (a server was not connected)"}
	}
	sizes := make([]int, len(s.cp.uploads))
	for k, u := range s.cp.uploads {
		sizes[k] = u.x.Shape().Size()
	}
	sums := newRoundSums(r, sizes)
	kept := false
	defer func() {
		if !kept {
			sums.stop(false)
			sums.release(r)
		}
	}()
	gctx, cancel := context.WithDeadline(ctx, rs.started.Add(rs.opts.Deadline))
	defer cancel()
	seeds := make([][]pond.SeededShare, len(cohort)) // the seeds this server holds, by member
	why := make([]string, len(cohort))
	var wg sync.WaitGroup
	for i, m := range cohort {
		if seedServer(i) == s.party {
			wg.Go(func() { seeds[i], why[i] = s.receiveSeeds(gctx, r, sums, i, m) })
		} else {
			wg.Go(func() { why[i] = s.receiveMasked(gctx, r, sums, i, m) })
		}
	}
	wg.Wait()
	if err := ctx.Err(); err != nil { // the round itself ended, not the wait
		return err
	}

	var arrived []string
	for i, m := range cohort {
		if why[i] == "" {
			arrived = append(arrived, m)
		}
	}
	theirs, err := s.exchange(ctx, r, arrived)
	if err != nil {
		return err
	}
	sums.stop(true)
	peer := s.cp.servers[1-s.party]
	rs.dropped = map[string]string{}
	var takeBack [][]pond.SeededShare
	var broken []string
	for i, m := range cohort {
		_, there := slices.BinarySearch(theirs, m)
		switch {
		case why[i] != "":
			rs.dropped[m] = why[i]
		case !there && seeds[i] != nil:
			rs.dropped[m] = fmt.Sprintf("its shares did not all reach %s", peer)
			takeBack = append(takeBack, seeds[i])
		case !there:
			broken = append(broken, m)
		default:
			rs.agreed = append(rs.agreed, m)
		}
	}
	if len(broken) > 0 {
		// Only a faulty or hostile peer leaves out a member whose seeds it
		// told this server it held: the masked tensors added are not kept,
		// so no sum over the intersection can be made.
		rs.agreed = nil
		return fmt.Errorf("%s's arrived set for round %d leaves out %s, whose seeds it said it held: %s added their masked tensors and cannot take them back, so it sends no share",
			peer, rs.number, strings.Join(quoteAll(broken), ", "), r.player)
	}
	sums.takeBack(takeBack)
	rs.sums, rs.msgs = map[graph.Ref]pond.Share{}, map[graph.Ref][]byte{}
	for k, u := range s.cp.uploads {
		if sums.msgs != nil {
			rs.msgs[u.id] = sums.msgs[k]
		} else {
			rs.sums[u.id] = sums.sums[k]
		}
		r.touch(uploadValue, u.id, true)
	}
	kept = true
	rs.heldPeak = sums.peak.Load()
	if len(rs.agreed) < rs.opts.MinOwners {
		return &roundSkip{reason: fmt.Sprintf("%d of the %d members invited survived, fewer than the %d the servers require (MinOwners)",
			len(rs.agreed), len(cohort), rs.opts.MinOwners)}
	}
	return nil
}

// receiveSeeds receives the seeds of member m, at position pos of the
// cohort, whose seed server this is: it queues their streams to be added
// into the sums, tells the other server it holds them, and returns them.
// Otherwise it tells the other server why not, and returns it. From the
// moment the notice goes out the member counts as arrived here. It runs
// in a goroutine of its own, so it touches nothing of r but its
// transport, pool and protocol, which are safe for concurrent use.
func (s *gatherStep) receiveSeeds(ctx context.Context, r *runner, sums *roundSums, pos int, m string) ([]pond.SeededShare, string) {
	rs := r.round
	peer := s.cp.servers[1-s.party]
	tell := func(held bool, why string) {
		n := &seedsHeld{Round: rs.number, Position: uint32(pos), Member: m, Held: held, Reason: why}
		// A notice lost leaves the member out at the other server, and
		// so out of the intersection: this one then takes its streams back.
		r.send(ctx, peer, heldEdge(s.cp.heldEdges[s.party], pos), 18+len(m)+len(why), n)
	}
	fail := func(why string) ([]pond.SeededShare, string) {
		tell(false, why)
		return nil, why
	}
	if rs.greet != nil {
		if err := rs.greet(ctx, m); err != nil {
			return fail(missing(ctx, r, err))
		}
	}
	b, err := r.t.Recv(ctx, m, r.key(s.cp.seedEdges[s.party]))
	if err != nil {
		return fail(missing(ctx, r, err))
	}
	var msg memberSeeds
	err = msg.UnmarshalBinary(b)
	r.pool.putBytes(b)
	switch {
	case err != nil:
		return fail(fmt.Sprintf("its seeds: %v", err))
	case msg.Round != rs.number:
		return fail(fmt.Sprintf("its seeds are for round %d, not %d", msg.Round, rs.number))
	case len(msg.Seeds) == 0:
		return fail("dropped out: " + msg.Reason)
	case len(msg.Seeds) != len(s.cp.uploads):
		return fail(fmt.Sprintf("it sent %d seeds for %d uploads", len(msg.Seeds), len(s.cp.uploads)))
	}
	seeded := make([]pond.SeededShare, len(s.cp.uploads))
	for k, u := range s.cp.uploads {
		seeded[k] = pond.SeededShare{Seed: msg.Seeds[k], Domain: memberDomain(r, u, m)}
	}
	sums.add(sumJob{seeded: seeded})
	tell(true, "")
	return seeded, ""
}

// receiveMasked receives the status and masked tensors of member m, at
// position pos of the cohort, whose masked server this is, after the seed
// server's notice about its seeds. Once it holds the notice that the seeds
// are held and all the member's masked tensors, it queues the tensors to
// be added into the sums, and the member has arrived; otherwise it returns
// why the member is missing, and nothing of it is added. It runs in a
// goroutine of its own, as receiveSeeds does.
func (s *gatherStep) receiveMasked(ctx context.Context, r *runner, sums *roundSums, pos int, m string) string {
	rs := r.round
	peer := s.cp.servers[1-s.party]
	noticeKey := r.key(heldEdge(s.cp.heldEdges[1-s.party], pos))
	if rs.greet != nil {
		if err := rs.greet(ctx, m); err != nil {
			// The peer's notice about the member comes all the same (it
			// sends one for every position): read it, so that members that
			// fail their greeting on purpose leave no notices piling up
			// unread in the peer's mailbox.
			if b, rerr := r.t.Recv(ctx, peer, noticeKey); rerr == nil {
				r.pool.putBytes(b)
			}
			return missing(ctx, r, err)
		}
	}
	// The notice first: the seeds went out as the member called its
	// functions, so their notice is here before the status and masked
	// tensors, whose messages wait for it unread; and every notice is read at once,
	// so that notices of members that drop out do not pile up unread.
	notAll := fmt.Sprintf("its shares did not all reach %s", peer)
	b, err := r.t.Recv(ctx, peer, noticeKey)
	if err != nil {
		if ctx.Err() != nil {
			return notAll
		}
		return fmt.Sprintf("%s: %v", notAll, err)
	}
	var n seedsHeld
	err = n.UnmarshalBinary(b)
	r.pool.putBytes(b)
	switch {
	case err != nil:
		return fmt.Sprintf("%s's notice of its seeds: %v", peer, err)
	case n.Round != rs.number || n.Position != uint32(pos) || n.Member != m:
		return fmt.Sprintf("%s's notice of its seeds names %q at position %d of round %d, not position %d of round %d: refused",
			peer, n.Member, n.Position, n.Round, pos, rs.number)
	case !n.Held:
		return notAll // the seed server says why
	}
	b, err = r.t.Recv(ctx, m, r.key(s.cp.statusEdges[s.party]))
	if err != nil {
		return missing(ctx, r, err)
	}
	var c contribution
	err = c.UnmarshalBinary(b)
	r.pool.putBytes(b)
	if err != nil {
		return err.Error()
	}
	if c.Dropped {
		return "dropped out: " + c.Reason
	}
	job := sumJob{shares: make([]pond.Share, 0, len(s.cp.uploads)), backing: make([][]byte, 0, len(s.cp.uploads))}
	for _, u := range s.cp.uploads {
		b, err := r.t.Recv(ctx, m, r.key(u.edges[s.party]))
		if err != nil {
			sums.drop(job)
			return missing(ctx, r, err)
		}
		size := int64(cap(b))
		share, backing, err := parseMasked(r, b, u.x.Shape().Size())
		if err != nil {
			sums.drop(job)
			return fmt.Sprintf("masked %s: %v", u, err)
		}
		sums.hold(size)
		job.shares = append(job.shares, share)
		job.backing = append(job.backing, backing)
		job.bytes += size
	}
	sums.add(job)
	return ""
}

// missing says why a member's message did not arrive.
func missing(ctx context.Context, r *runner, err error) string {
	switch {
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded):
		return fmt.Sprintf("its shares did not reach %s within the deadline (%v)", r.player, r.round.opts.Deadline)
	case errors.Is(err, transport.ErrPeerGone):
		return "left: " + err.Error()
	}
	return err.Error()
}

// exchange sends the other server this one's arrived set and receives
// the other's, which must be of the same round and cohort, and name
// members of it only.
func (s *gatherStep) exchange(ctx context.Context, r *runner, arrived []string) ([]string, error) {
	rs := r.round
	peer := s.cp.servers[1-s.party]
	digest := cohortDigest(rs.number, rs.cohort)
	mine := &arrivedSet{Round: rs.number, Digest: digest, Members: arrived}
	if err := r.send(ctx, peer, s.cp.exchangeEdges[s.party], 44+65*len(arrived), mine); err != nil {
		return nil, err
	}
	// The other server learnt of the round at about the same time and
	// stops waiting by its deadline, as this one does (it may stop sooner,
	// when every member's shares came); it has another deadline to say so.
	ectx, cancel := context.WithDeadline(ctx, rs.started.Add(2*rs.opts.Deadline))
	defer cancel()
	var theirs arrivedSet
	if err := r.recv(ectx, peer, s.cp.exchangeEdges[1-s.party], &theirs); err != nil {
		return nil, fmt.Errorf("arrived set: %w", err)
	}
	if theirs.Round != rs.number || theirs.Digest != digest {
		return nil, fmt.Errorf("%s was told another cohort for round %d than %s was (the coordinator told the servers different rounds)", peer, rs.number, r.player)
	}
	for _, m := range theirs.Members {
		if _, ok := slices.BinarySearch(rs.cohort, m); !ok {
			return nil, fmt.Errorf("%s's arrived set for round %d names %q, who is not in the cohort", peer, rs.number, m)
		}
	}
	return theirs.Members, nil
}

// aggregateStep is a server's share of one upload summed over a round's
// survivors: the share of a sum or mean node, or of Σw, the divisor of
// weighted means. The gather step summed it as the shares came; a mean
// divided inside the protocol is then multiplied by the encoding of
// 1/(number of survivors) and truncated.
type aggregateStep struct {
	lastUse
	node     *graph.Node // nil for a weight sum
	weightOf *graph.Ref  // a weight sum: Σ of this weight
	up       *upload
	divide   bool
	trunc    truncation
}

func (s *aggregateStep) String() string {
	if s.weightOf != nil {
		return fmt.Sprintf("local Σ %s over the survivors (divisor of weighted means)", *s.weightOf)
	}
	out := fmt.Sprintf("local %s: Σ %s over the survivors", s.node, s.up)
	if s.divide {
		out += fmt.Sprintf(" times 1/(number of survivors), %s", s.trunc)
	}
	return out
}

func (s *aggregateStep) out() graph.Ref {
	if s.weightOf != nil {
		return *s.weightOf
	}
	return graph.Ref{Node: s.node}
}

func (s *aggregateStep) reads() []value  { return []value{{uploadValue, s.up.id}} }
func (s *aggregateStep) writes() []value { return values(shareValue, s.out()) }

func (s *aggregateStep) exec(ctx context.Context, r *runner) error {
	r.touch(uploadValue, s.up.id, false)
	rs := r.round
	size := s.up.x.Shape().Size()
	if msg, ok := rs.msgs[s.up.id]; ok { // Z_2^32: the sum is its message
		if s.divide {
			// A division inside the protocol needs truncation, which
			// Z_2^32 has no room for: the compiler plans it in Z_2^64.
			return fmt.Errorf("session: %s divides inside the protocol in Z_2^32 (compiler bug)", s.node)
		}
		if s.isLast(0) {
			delete(rs.msgs, s.up.id)
		} else {
			msg = append(r.pool.byteBuf(len(msg))[:0], msg...)
		}
		r.setShareMessage(s.out(), msg)
		return nil
	}
	sum, ok := rs.sums[s.up.id]
	if !ok {
		return fmt.Errorf("session: no sum of %s (compiler bug)", s.up)
	}
	if s.isLast(0) {
		delete(rs.sums, s.up.id) // this step's now
	} else {
		c := r.messageShare(size)
		copy(c, sum)
		sum = c
	}
	if !s.divide {
		r.setShare(s.out(), sum)
		return nil
	}
	defer r.releaseShare(sum)
	n := len(rs.agreed)
	c, err := r.proto.EncodeConstant(1 / float64(n))
	if err != nil {
		return fmt.Errorf("%s: dividing by %d survivors: %w", s.node, n, err)
	}
	prod := pond.Product(r.shareBuf(size))
	defer r.pool.putUint64s(prod)
	out := r.shareBuf(size)
	r.setShare(s.out(), out)
	return s.trunc.run(ctx, r, s.node, out, prod, func(lo, hi int) {
		pond.MulPublic(prod[lo:hi], sum[lo:hi], c)
	})
}

// sendResultStep tells the coordinator, before any share, the survivors
// this server summed over and why each other member is missing.
type sendResultStep struct {
	lastUse
	cp    *cohortPlan
	party int
}

func (s *sendResultStep) String() string {
	return fmt.Sprintf("send round result -> %s (edge %d): the survivors, and why the others are missing", s.cp.coordinator, s.cp.resultEdges[s.party])
}

func (s *sendResultStep) reads() []value  { return nil }
func (s *sendResultStep) writes() []value { return nil }

func (s *sendResultStep) exec(ctx context.Context, r *runner) error {
	if r.round.record != nil {
		r.round.record()
	}
	res := r.round.result(resultShares, "")
	b, err := res.MarshalBinary()
	if err != nil {
		return err
	}
	return r.sendBytes(ctx, s.cp.coordinator, s.cp.resultEdges[s.party], b)
}

// cohortRevealStep is the coordinator's last step of a round: it receives
// both servers' results and goes on only if both sent their shares and
// name the same survivors. It then receives the sums of weights, the
// divisors of weighted means, and the shares of every output tensor,
// reveals them, divides means by the number of survivors and weighted
// means by Σw in the clear, and calls the output function.
type cohortRevealStep struct {
	lastUse
	node    *graph.Node
	cp      *cohortPlan
	weights []graph.Ref    // Σw revealed as divisors, first
	targets []revealTarget // the output's tensors
	edges   [][2]uint64    // weights', then targets'
}

func (s *cohortRevealStep) String() string {
	var b strings.Builder
	sv := s.cp.servers
	fmt.Fprintf(&b, "reveal %s: results from %s (edge %d) and %s (edge %d), and only if both sent shares over the same survivors:",
		s.node, sv[0], s.cp.resultEdges[0], sv[1], s.cp.resultEdges[1])
	for i, w := range s.weights {
		fmt.Fprintf(&b, " Σ %s from %s (edge %d) + %s (edge %d);", w, sv[0], s.edges[i][0], sv[1], s.edges[i][1])
	}
	for i, t := range s.targets {
		e := s.edges[len(s.weights)+i]
		fmt.Fprintf(&b, " %s from %s (edge %d) + %s (edge %d)", t.ref, sv[0], e[0], sv[1], e[1])
		switch {
		case t.byCount:
			b.WriteString(" then / number of survivors in the clear")
		case t.byWeight != nil:
			fmt.Fprintf(&b, " then / Σ %s in the clear", *t.byWeight)
		case t.divisor != 0:
			fmt.Fprintf(&b, " then / %g in the clear", t.divisor)
		}
		if i < len(s.targets)-1 {
			b.WriteByte(';')
		}
	}
	return b.String()
}

func (s *cohortRevealStep) reads() []value  { return nil }
func (s *cohortRevealStep) writes() []value { return nil }

func (s *cohortRevealStep) exec(ctx context.Context, r *runner) error {
	rs := r.round
	var res [2]roundResult
	for k, srv := range s.cp.servers {
		if err := r.recv(ctx, srv, s.cp.resultEdges[k], &res[k]); err != nil {
			return fmt.Errorf("round result: %w", err)
		}
		if res[k].Round != rs.number {
			return fmt.Errorf("%w: result from %q for round %d under the key of round %d", ErrWire, srv, res[k].Round, rs.number)
		}
	}
	rs.results = res
	for k, srv := range s.cp.servers {
		if res[k].Kind == resultFailed {
			return fmt.Errorf("%q failed in round %d: %s", srv, rs.number, res[k].Reason)
		}
	}
	if !slices.Equal(res[0].Agreed, res[1].Agreed) {
		return fmt.Errorf("%w in round %d: %s names %d survivors [%s], %s names %d [%s]; nothing is revealed",
			ErrSurvivorMismatch, rs.number, s.cp.servers[0], len(res[0].Agreed), strings.Join(res[0].Agreed, " "),
			s.cp.servers[1], len(res[1].Agreed), strings.Join(res[1].Agreed, " "))
	}
	for _, m := range res[0].Agreed {
		if _, ok := slices.BinarySearch(rs.cohort, m); !ok {
			return fmt.Errorf("%w: the servers' survivors of round %d name %q, who was not invited", ErrWire, rs.number, m)
		}
	}
	for k := range s.cp.servers {
		if res[k].Kind == resultSkipped {
			return &SkippedError{Round: rs.number, Reason: res[k].Reason, Missing: rs.missing(res[k].Agreed)}
		}
	}
	agreed := res[0].Agreed
	sums := map[graph.Ref]float64{}
	for i, w := range s.weights {
		var v [1]float64
		if err := s.revealInto(ctx, r, v[:], w, s.edges[i], 1); err != nil {
			return err
		}
		if !(v[0] > 0) {
			return fmt.Errorf("Σ %s over %d survivors is %v, not positive: the weights exceed the fixed-point range", w, len(agreed), v[0])
		}
		sums[w] = v[0]
	}
	if s.cp.weight != nil {
		rs.totalWeight = sums[*s.cp.weight]
	}
	revealed := make([]*tensor.Dense, len(s.targets))
	for i, t := range s.targets {
		divisor := 1.0
		switch {
		case t.byCount:
			divisor = float64(len(agreed))
		case t.byWeight != nil:
			divisor = sums[*t.byWeight]
		}
		if t.divisor != 0 {
			divisor *= t.divisor
		}
		out := make([]float64, t.ref.Shape().Size())
		if err := s.revealInto(ctx, r, out, t.ref, s.edges[len(s.weights)+i], divisor); err != nil {
			return err
		}
		revealed[i] = tensor.New(tensor.WithShape(shapeOf(s.node.Inputs()[i].Shape())...), tensor.WithBacking(out))
	}
	if err := s.node.OutputFunc()(ctx, revealed); err != nil {
		return fmt.Errorf("%s: %w", s.node, err)
	}
	return nil
}

// revealInto receives both servers' shares of ref on edges and reveals
// their sum divided by divisor into out.
func (s *cohortRevealStep) revealInto(ctx context.Context, r *runner, out []float64, ref graph.Ref, edges [2]uint64, divisor float64) error {
	if err := r.reveal(ctx, out, s.cp.servers, edges, divisor); err != nil {
		return fmt.Errorf("share of %s: %w", ref, err)
	}
	return nil
}
