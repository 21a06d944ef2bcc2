package session

import (
	"sync"
	"sync/atomic"

	"github.com/shareflow/shareflow/protocol/pond"
)

// roundSums are a server's running sums of a round's uploads, one per
// upload, each laid out in a message buffer so that it can be sent as it
// is. Members' shares are queued (add) as they arrive and added by one
// goroutine, a batch at a time: the masked tensors of the members this
// server is the masked server of, which are let go once added, and the
// seeds' streams of those it is the seed server of. stop ends the
// goroutine; takeBack then subtracts the streams of members who did not
// survive. add, drop and hold are safe for concurrent use; the rest is
// the gather step's, in its own goroutine.
type roundSums struct {
	sizes []int
	sums  []pond.Share
	// msgs are the sums in Z_2^32, instead of sums: each the message
	// that will carry it, an 8-byte element count then 4-byte words
	// (pond.SumWordsAt), so that adding to them reads and writes 4 bytes
	// an element and sending them packs nothing.
	msgs [][]byte

	pool  *pool
	proto *pond.Protocol

	mu      sync.Mutex
	queue   []sumJob
	closing bool
	discard bool          // stop(false): queued jobs are let go, not added
	wake    chan struct{} // capacity 1: a job or stop is waiting
	done    chan struct{} // closed when the goroutine ended

	// held is what the server holds of members' masked tensors, received
	// and not yet added, plus the sums; peak its highest value.
	held, peak atomic.Int64
}

// sumJob is one member's shares of every upload, in the plan's order:
// its masked tensors (shares, views of backing where not nil, bytes in
// all; in Z_2^32 shares are nil and backing holds the messages, added from
// their wire form) or its seeds (seeded).
type sumJob struct {
	shares  []pond.Share
	backing [][]byte
	bytes   int64
	seeded  []pond.SeededShare
}

// newRoundSums allocates zeroed sums of the given sizes from r's buffers
// and starts adding.
func newRoundSums(r *runner, sizes []int) *roundSums {
	s := &roundSums{sizes: sizes, pool: r.pool, proto: r.proto, wake: make(chan struct{}, 1), done: make(chan struct{})}
	for _, n := range sizes {
		if r.proto.WordSize() == 4 {
			b := r.sumMessage(n)
			w := b[8:]
			parallel(n, func(lo, hi int) { clear(w[4*lo : 4*hi]) })
			s.msgs = append(s.msgs, b)
			s.hold(8 + 4*int64(n))
			continue
		}
		sum := r.messageShare(n)
		parallel(n, func(lo, hi int) { clear(sum[lo:hi]) })
		s.sums = append(s.sums, sum)
		s.hold(8 + 8*int64(n))
	}
	go s.run()
	return s
}

// hold counts bytes of masked tensors received (negative: let go).
func (s *roundSums) hold(bytes int64) {
	h := s.held.Add(bytes)
	for {
		p := s.peak.Load()
		if h <= p || s.peak.CompareAndSwap(p, h) {
			return
		}
	}
}

// add queues a member's shares to be added into the sums.
func (s *roundSums) add(j sumJob) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.drop(j) // the round ended under it
		return
	}
	s.queue = append(s.queue, j)
	s.mu.Unlock()
	s.signal()
}

func (s *roundSums) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// drop lets a job's masked tensors go without adding them.
func (s *roundSums) drop(j sumJob) {
	for i, sh := range j.shares {
		if i < len(j.backing) && j.backing[i] != nil {
			s.pool.putBytes(j.backing[i])
		} else {
			s.pool.putUint64s(sh)
		}
	}
	s.hold(-j.bytes)
}

// run adds the queued jobs, all that wait at a time, until stop.
func (s *roundSums) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		jobs, closing, discard := s.queue, s.closing, s.discard
		s.queue = nil
		s.mu.Unlock()
		switch {
		case discard:
			for _, j := range jobs {
				s.drop(j)
			}
			return
		case len(jobs) > 0:
			s.addJobs(jobs)
		case closing:
			return
		default:
			<-s.wake
		}
	}
}

// seedBacklog is the most members' seeds a batch of seeds alone may hold
// and still be added on one core (see addJobs).
const seedBacklog = 2

// addJobs adds a batch of jobs into every sum in one pass over
// cache-sized blocks (pond.SumSharesAt), then lets the masked tensors go.
// A batch with masked tensors is split across cores: it arrives after a
// member's functions returned, on the round's critical path. A batch of
// a member's seeds or two is added on this goroutine: seeds arrive as the
// members start computing, and their streams have until the masked
// tensors arrive, while the cores are the members'. A longer backlog of
// seeds (a large cohort arriving at once) is split too: the round cannot
// end (stop) before every queued stream is added.
func (s *roundSums) addJobs(jobs []sumJob) {
	split := func(n int, f func(lo, hi int)) { f(0, n) }
	if len(jobs) > seedBacklog {
		split = parallel
	}
	for _, j := range jobs {
		if j.shares != nil {
			split = parallel
		}
	}
	for k, msg := range s.msgs { // Z_2^32
		var words [][]byte
		var seeded []pond.SeededShare
		for _, j := range jobs {
			if j.shares == nil {
				seeded = append(seeded, j.seeded[k])
			} else {
				words = append(words, j.backing[k][8:])
			}
		}
		w := msg[8:]
		split(s.sizes[k], func(lo, hi int) { s.proto.SumWordsAt(w[4*lo:4*hi], words, seeded, lo) })
	}
	for k, sum := range s.sums {
		rows := []pond.Share{sum}
		var seeded []pond.SeededShare
		var words [][]byte // masked tensors in their wire form (Z_2^32)
		for _, j := range jobs {
			switch {
			case j.shares == nil:
				seeded = append(seeded, j.seeded[k])
			case j.shares[k] == nil:
				words = append(words, j.backing[k][8:])
			default:
				rows = append(rows, j.shares[k])
			}
		}
		split(s.sizes[k], func(lo, hi int) {
			part := make([]pond.Share, len(rows))
			for i, x := range rows {
				part[i] = x[lo:hi]
			}
			s.proto.SumAt(sum[lo:hi], part, words, seeded, lo)
		})
	}
	for _, j := range jobs {
		if j.shares != nil {
			s.drop(j)
		}
	}
}

// stop ends the adding, once every queued job is added (add) or let go,
// and waits for it. Jobs queued later are let go.
func (s *roundSums) stop(add bool) {
	s.mu.Lock()
	s.closing = true
	s.discard = s.discard || !add
	s.mu.Unlock()
	s.signal()
	<-s.done
}

// takeBack subtracts, after stop, the streams of the members whose
// seeds were added but who did not survive: a dropout after its seeds
// costs the server one stream.
func (s *roundSums) takeBack(members [][]pond.SeededShare) {
	if len(members) == 0 {
		return
	}
	for k, sum := range s.sums {
		parallel(s.sizes[k], func(lo, hi int) {
			for _, m := range members {
				m[k].SubFromAt(sum[lo:hi], lo)
			}
		})
	}
	for k, msg := range s.msgs {
		seeded := make([]pond.SeededShare, len(members))
		for i, m := range members {
			seeded[i] = m[k]
		}
		w := msg[8:]
		parallel(s.sizes[k], func(lo, hi int) { s.proto.SubStreamsWordsAt(w[4*lo:4*hi], seeded, lo) })
	}
}

// release gives the sums back, after stop, when the gather step failed.
func (s *roundSums) release(r *runner) {
	for _, sum := range s.sums {
		r.releaseShare(sum)
	}
	for _, b := range s.msgs {
		r.pool.putBytes(b)
	}
	s.sums, s.msgs = nil, nil
}
