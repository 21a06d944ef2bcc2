package session

import (
	"sync"

	"github.com/shareflow/shareflow/protocol/pond"
)

// maxFree bounds the free buffers a pool keeps of one size, so that
// buffers released faster than they are taken are not hoarded.
const maxFree = 16

// pool recycles buffers from one iteration to the next, so that a long run
// does not allocate (and zero) tens of megabytes per iteration. Buffers
// are kept by exact length: a plan asks for the same sizes every
// iteration. The players of a session share one pool, as they share the
// process's allocator: a buffer is handed out to one owner at a time and
// given back when that owner is done with it, so players still share no
// memory. A pool is safe for concurrent use.
type pool struct {
	mu        sync.Mutex
	words     map[int][][]uint64
	bytes     map[int][][]byte
	triples   map[pond.TripleShape][]*pond.TripleShare
	producers []*pond.Producer
}

func newPool() *pool {
	return &pool{words: map[int][][]uint64{}, bytes: map[int][][]byte{}, triples: map[pond.TripleShape][]*pond.TripleShare{}}
}

// triple returns a triple share whose buffers fit products of shape s,
// if one is free, to be set by Expand.
func (p *pool) triple(s pond.TripleShape) *pond.TripleShare {
	p.mu.Lock()
	defer p.mu.Unlock()
	if free := p.triples[s]; len(free) > 0 {
		t := free[len(free)-1]
		p.triples[s] = free[:len(free)-1]
		return t
	}
	return new(pond.TripleShare)
}

// putTriple takes back a triple share, used or not; Expand resets it.
func (p *pool) putTriple(t *pond.TripleShare) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := t.Shape(); len(p.triples[s]) < maxFree {
		p.triples[s] = append(p.triples[s], t)
	}
}

// producer returns a crypto producer's step with the scratch buffers of
// earlier triples.
func (p *pool) producer() *pond.Producer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.producers); n > 0 {
		pr := p.producers[n-1]
		p.producers = p.producers[:n-1]
		return pr
	}
	return new(pond.Producer)
}

func (p *pool) putProducer(pr *pond.Producer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.producers) < maxFree {
		p.producers = append(p.producers, pr)
	}
}

// uint64s returns a buffer of n words with unspecified contents.
func (p *pool) uint64s(n int) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if free := p.words[n]; len(free) > 0 {
		b := free[len(free)-1]
		p.words[n] = free[:len(free)-1]
		return b
	}
	return make([]uint64, n)
}

func (p *pool) putUint64s(b []uint64) {
	if cap(b) == 0 {
		return
	}
	b = b[:cap(b)]
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.words[len(b)]) < maxFree {
		p.words[len(b)] = append(p.words[len(b)], b)
	}
}

// byteBuf returns an empty buffer with capacity for n bytes.
func (p *pool) byteBuf(n int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if free := p.bytes[n]; len(free) > 0 {
		b := free[len(free)-1]
		p.bytes[n] = free[:len(free)-1]
		return b[:0]
	}
	return make([]byte, 0, n)
}

func (p *pool) putBytes(b []byte) {
	if cap(b) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.bytes[cap(b)]) < maxFree {
		p.bytes[cap(b)] = append(p.bytes[cap(b)], b[:0])
	}
}
