package aggbench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime/pprof"
	"slices"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
	"github.com/shareflow/shareflow/session/transport/grpctransport"
)

// DefaultParams is the number of parameters of the federated-learning
// example's model (784 → 512 → 10).
const DefaultParams = 407_050

// Options says what to measure. The zero value means the defaults.
type Options struct {
	// Params is the number of parameters P averaged: each share is P ×
	// WordBytes bytes. Zero means DefaultParams.
	Params int `json:"params"`
	// WordBytes is the size of a share's element on the wire: 4 in
	// Z_2^32, the ring of the example's aggregation, or 8 in Z_2^64
	// (--ring 64). Zero means 4.
	WordBytes int `json:"word_bytes"`
	// Owners is the number of data owners; zero means 3.
	Owners int `json:"owners"`
	// Iterations is the number of iterations measured of each path; zero
	// means 20.
	Iterations int `json:"iterations"`
	// Warmup is the number of iterations of each path run first and not
	// measured; negative means none, zero means 3.
	Warmup int `json:"warmup"`
	// ChunkBytes is the size of the gRPC messages a message is cut into,
	// on both paths; zero means grpctransport.MaxChunkBytes.
	ChunkBytes int `json:"chunk_bytes"`
}

// check returns o with the defaults filled in, or says what is wrong.
func (o Options) check() (Options, error) {
	if o.Params == 0 {
		o.Params = DefaultParams
	}
	if o.Owners == 0 {
		o.Owners = 3
	}
	if o.WordBytes == 0 {
		o.WordBytes = 4
	}
	if o.Iterations == 0 {
		o.Iterations = 20
	}
	switch {
	case o.Warmup == 0:
		o.Warmup = 3
	case o.Warmup < 0:
		o.Warmup = 0
	}
	if o.ChunkBytes == 0 {
		o.ChunkBytes = grpctransport.MaxChunkBytes
	}
	switch {
	case o.Params < 1 || o.Params > 16<<20:
		return o, fmt.Errorf("aggbench: params %d, want 1 to %d", o.Params, 16<<20)
	case o.Owners < 1 || o.Owners > 64:
		return o, fmt.Errorf("aggbench: owners %d, want 1 to 64", o.Owners)
	case o.WordBytes != 4 && o.WordBytes != 8:
		return o, fmt.Errorf("aggbench: word bytes %d, want 4 (Z_2^32) or 8 (Z_2^64)", o.WordBytes)
	case o.Iterations < 1:
		return o, fmt.Errorf("aggbench: iterations %d, want at least 1", o.Iterations)
	case o.ChunkBytes < 1 || o.ChunkBytes > grpctransport.MaxChunkBytes:
		return o, fmt.Errorf("aggbench: chunk bytes %d, want 1 to %d", o.ChunkBytes, grpctransport.MaxChunkBytes)
	}
	return o, nil
}

// shareBytes is the size of a share.
func (o Options) shareBytes() int { return o.WordBytes * o.Params }

// BytesPerIteration returns the payload bytes one iteration moves.
func (o Options) BytesPerIteration() int {
	o, _ = o.check()
	return o.Owners*(startBytes+seedBytes+o.shareBytes()) + 2*o.shareBytes()
}

// Sizes of the small messages.
const (
	startBytes = 8
	seedBytes  = 32
)

// Edges of the messages, under session "aggbench": the start to data
// owner d is edgeStart+d, its seed or share edgeInput+d, server s's share
// of the sum edgeSum+s, the end edgeEnd.
const (
	session   = "aggbench"
	edgeStart = 0
	edgeInput = 1000
	edgeSum   = 2000
	edgeEnd   = 3000
)

// Path names, as results and profile labels give them.
const (
	Aggregation = "aggregation"
	Raw         = "raw"
)

// Result holds the time of each measured iteration of each path, in the
// order run. It is a plain value.
type Result struct {
	Options     Options         `json:"options"`
	Aggregation []time.Duration `json:"aggregation"`
	Raw         []time.Duration `json:"raw"`
}

// Ratio returns the median over iterations of the aggregation path's
// time over the raw path's in the same round.
func (r *Result) Ratio() float64 {
	ratios := make([]float64, min(len(r.Aggregation), len(r.Raw)))
	for i := range ratios {
		ratios[i] = float64(r.Aggregation[i]) / float64(r.Raw[i])
	}
	return medianFloat(ratios)
}

// Report writes the iterations and a summary.
func (r *Result) Report(w io.Writer) error {
	mb := float64(r.Options.BytesPerIteration()) / 1e6
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "iteration\taggregation (ms)\traw gRPC (ms)\tratio\t\n")
	for i := range min(len(r.Aggregation), len(r.Raw)) {
		a, b := r.Aggregation[i], r.Raw[i]
		fmt.Fprintf(tw, "%d\t%.2f\t%.2f\t%.3f\t\n", i+1, ms(a), ms(b), float64(a)/float64(b))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	ma, mr := median(r.Aggregation), median(r.Raw)
	_, err := fmt.Fprintf(w, "%.2f MB per iteration; median aggregation %.2f ms (%.0f MB/s), raw gRPC %.2f ms (%.0f MB/s); ratio %.3f (median of the iterations' ratios %.3f)\n",
		mb, ms(ma), mb/ma.Seconds(), ms(mr), mb/mr.Seconds(), float64(ma)/float64(mr), r.Ratio())
	return err
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func medianFloat(fs []float64) float64 {
	if len(fs) == 0 {
		return 0
	}
	s := slices.Clone(fs)
	sort.Float64s(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// path is what a player's part needs of a way to move messages. A path is
// used by one goroutine at a time.
type path interface {
	// buffer returns a buffer of n bytes to fill and send, for the
	// message slot (each message of an iteration its own slot).
	buffer(slot, n int) []byte
	send(ctx context.Context, to string, key transport.Key, b []byte) error
	// recv returns the message of size bytes from peer from under key.
	recv(ctx context.Context, from string, key transport.Key, size int) ([]byte, error)
	// forget drops what the path remembers of iteration it.
	forget(it uint64)
	// close ends the path, once the player is done with it.
	close() error
}

// content returns n bytes that depend only on what, for messages whose
// receiver checks them.
func content(what string, n int) []byte {
	seed := sha256.Sum256([]byte("aggbench " + what))
	b := make([]byte, n)
	rand.NewChaCha8(seed).Read(b)
	return b
}

// key returns the key of edge in iteration it.
func key(it uint64, edge int) transport.Key {
	return transport.Key{Session: session, Iteration: it, Edge: uint64(edge)}
}

// servers are the two compute servers; data owner d sends its share to
// servers[d%2] and its seed to the other.
var servers = [2]string{players.Server0, players.Server1}

// part is one player's part of the benchmark on one path.
type part struct {
	self  string
	o     Options
	p     path
	share []byte    // what this player's shares hold (after their first 8 bytes)
	want  [2][]byte // for the model owner, what the servers' shares hold
}

func newPart(self string, o Options, p path) *part {
	return &part{self: self, o: o, p: p, share: content(self, o.shareBytes())}
}

// fill copies this player's share for iteration it into b.
func (pt *part) fill(b []byte, it uint64) {
	copy(b, pt.share)
	binary.LittleEndian.PutUint64(b, it)
}

// iteration runs iteration it of a player other than the model owner.
// check says to check the messages received (outside the warm-up, only
// the model owner checks, after the time measured).
func (pt *part) iteration(ctx context.Context, it uint64, check bool) error {
	o, p := pt.o, pt.p
	switch role := players.RoleOf(pt.self); {
	case role == players.RoleDataOwner:
		var d int
		fmt.Sscanf(pt.self, "data-owner-%d", &d)
		start, err := p.recv(ctx, players.ModelOwner, key(it, edgeStart+d), startBytes)
		if err != nil {
			return err
		}
		if got := binary.LittleEndian.Uint64(start); got != it {
			return fmt.Errorf("aggbench: %s: start of iteration %d says %d", pt.self, it, got)
		}
		seed := p.buffer(0, seedBytes)
		copy(seed, content(pt.self+" seed", seedBytes))
		if err := p.send(ctx, servers[1-d%2], key(it, edgeInput+d), seed); err != nil {
			return err
		}
		share := p.buffer(1, o.shareBytes())
		pt.fill(share, it)
		return p.send(ctx, servers[d%2], key(it, edgeInput+d), share)
	case pt.self == servers[0] || pt.self == servers[1]:
		s := 0
		if pt.self == servers[1] {
			s = 1
		}
		for d := range o.Owners {
			owner := players.DataOwner(d)
			size, want := seedBytes, content(owner+" seed", seedBytes)
			if d%2 == s {
				size, want = o.shareBytes(), nil
			}
			b, err := p.recv(ctx, owner, key(it, edgeInput+d), size)
			if err != nil {
				return err
			}
			if check {
				if want == nil {
					want = content(owner, size)
					binary.LittleEndian.PutUint64(want, it)
				}
				if !bytes.Equal(b, want) {
					return fmt.Errorf("aggbench: %s: the message of %s in iteration %d arrived garbled", pt.self, owner, it)
				}
			}
		}
		sum := p.buffer(0, o.shareBytes())
		pt.fill(sum, it)
		return p.send(ctx, players.ModelOwner, key(it, edgeSum+s), sum)
	}
	return nil // the crypto producer takes no part
}

// lead runs iteration it as the model owner and returns its time.
func (pt *part) lead(ctx context.Context, it uint64) (time.Duration, error) {
	o, p := pt.o, pt.p
	begin := time.Now()
	for d := range o.Owners {
		start := p.buffer(d, startBytes)
		binary.LittleEndian.PutUint64(start, it)
		if err := p.send(ctx, players.DataOwner(d), key(it, edgeStart+d), start); err != nil {
			return 0, err
		}
	}
	var sums [2][]byte
	for s, server := range servers {
		b, err := p.recv(ctx, server, key(it, edgeSum+s), o.shareBytes())
		if err != nil {
			return 0, err
		}
		sums[s] = b
	}
	elapsed := time.Since(begin)
	for s, server := range servers {
		if pt.want[s] == nil {
			pt.want[s] = content(server, o.shareBytes())
		}
		if binary.LittleEndian.Uint64(sums[s]) != it || !bytes.Equal(sums[s][8:], pt.want[s][8:]) {
			return 0, fmt.Errorf("aggbench: model owner: the share of %s in iteration %d arrived garbled", server, it)
		}
	}
	p.forget(it)
	return elapsed, nil
}

// end tells every other player, as the model owner, that the run is over.
func (pt *part) end(ctx context.Context, names []string, it uint64) error {
	for _, n := range names {
		if n == pt.self {
			continue
		}
		if err := pt.p.send(ctx, n, key(it, edgeEnd), pt.p.buffer(edgeEnd, startBytes)); err != nil {
			return err
		}
	}
	return nil
}

// follow runs every iteration of a player other than the model owner,
// then waits for the end.
func (pt *part) follow(ctx context.Context) error {
	total := uint64(pt.o.Warmup + pt.o.Iterations)
	for it := range total {
		if err := pt.iteration(ctx, it, it < uint64(pt.o.Warmup)); err != nil {
			return fmt.Errorf("%s, iteration %d: %w", pt.self, it, err)
		}
		pt.p.forget(it)
	}
	if _, err := pt.p.recv(ctx, players.ModelOwner, key(total, edgeEnd), startBytes); err != nil {
		return fmt.Errorf("%s, waiting for the end: %w", pt.self, err)
	}
	return nil
}

// Listeners are a player's two listening sockets, one per path.
type Listeners struct {
	Aggregation, Raw net.Listener
}

// RunPlayer runs player self's part of the benchmark on both paths: the
// players of cfg (which must be the seven of a Network) on the listeners
// given, the raw path's peers at the addresses raw. It closes the
// listeners. For the model owner it returns the times measured, for the
// others nil.
func RunPlayer(ctx context.Context, cfg *players.Config, self string, lns Listeners, raw map[string]string, o Options) (res *Result, err error) {
	o, err = o.check()
	if err != nil {
		lns.Aggregation.Close()
		lns.Raw.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	names := cfg.Names()

	var paths [2]path
	var wg sync.WaitGroup
	var setupErr [2]error
	wg.Go(func() {
		pprof.Do(ctx, pprof.Labels("path", Aggregation), func(ctx context.Context) {
			paths[0], setupErr[0] = newTransportPath(ctx, cfg, self, lns.Aggregation, o)
		})
	})
	wg.Go(func() {
		pprof.Do(ctx, pprof.Labels("path", Raw), func(ctx context.Context) {
			paths[1], setupErr[1] = newRawPath(ctx, cfg, self, lns.Raw, raw, o)
		})
	})
	wg.Wait()
	defer func() {
		if err != nil {
			cancel(err) // so that closing does not wait for peers
		}
		for _, p := range paths {
			if p != nil {
				if cerr := p.close(); err == nil && ctx.Err() == nil {
					err = cerr
				}
			}
		}
	}()
	if err := errors.Join(setupErr[:]...); err != nil {
		return nil, fmt.Errorf("aggbench: %s: %w", self, err)
	}
	labels := [2]string{Aggregation, Raw}

	if self != players.ModelOwner {
		var errs [2]error
		for i, p := range paths {
			wg.Go(func() {
				pprof.Do(ctx, pprof.Labels("path", labels[i]), func(ctx context.Context) {
					if errs[i] = newPart(self, o, p).follow(ctx); errs[i] != nil {
						cancel(errs[i])
					}
				})
			})
		}
		wg.Wait()
		if err := errors.Join(errs[:]...); err != nil {
			return nil, fmt.Errorf("aggbench: %s path: %w", labels[slices.IndexFunc(errs[:], func(e error) bool { return e != nil })], err)
		}
		return nil, nil
	}

	res = &Result{Options: o}
	parts := [2]*part{newPart(self, o, paths[0]), newPart(self, o, paths[1])}
	total := uint64(o.Warmup + o.Iterations)
	for it := range total {
		for i, pt := range parts {
			var d time.Duration
			var err error
			pprof.Do(ctx, pprof.Labels("path", labels[i]), func(ctx context.Context) { d, err = pt.lead(ctx, it) })
			if err != nil {
				return nil, fmt.Errorf("aggbench: %s path, iteration %d: %w", labels[i], it, err)
			}
			if it >= uint64(o.Warmup) {
				if i == 0 {
					res.Aggregation = append(res.Aggregation, d)
				} else {
					res.Raw = append(res.Raw, d)
				}
			}
		}
	}
	for i, pt := range parts {
		if err := pt.end(ctx, names, total); err != nil {
			return nil, fmt.Errorf("aggbench: %s path, ending: %w", labels[i], err)
		}
	}
	return res, nil
}
