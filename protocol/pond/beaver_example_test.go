package pond_test

import (
	"crypto/rand"
	"fmt"

	"github.com/shareflow/shareflow/protocol/pond"
)

// A private element-wise product with a triple from the crypto producer,
// every player's step in turn. In a run each step is on its own host and
// each message crosses the network in its wire form.
func Example_privateProduct() {
	p, err := pond.New(pond.Config{})
	if err != nil {
		panic(err)
	}
	x, y := []float64{1.5, -2, 1000}, []float64{4, 0.25, -1.0 / 1024}
	shape := pond.MulShape(len(x))
	d := pond.Domain{Session: "example", Iteration: 0}

	// The input owners share x and y: server0 gets the seeds, server1 the
	// masked values.
	share := func(v []float64, tensor uint64) (s0, s1 pond.Share) {
		d := d
		d.Tensor = tensor
		s0, s1 = make(pond.Share, len(v)), make(pond.Share, len(v))
		seed, err := p.EncodeAndShare(rand.Reader, d, s1, v)
		if err != nil {
			panic(err)
		}
		pond.SeedShare(s0, seed, d)
		return s0, s1
	}
	x0, x1 := share(x, 1)
	y0, y1 := share(y, 2)
	d.Tensor = 3 // the product

	// server2 draws the triple from the shape alone.
	var producer pond.Producer
	var to0 pond.TripleMessage0
	var to1 pond.TripleMessage1
	if err := producer.Triple(rand.Reader, d, shape, &to0, &to1); err != nil {
		panic(err)
	}

	// Each server expands its triple message and opens e and f.
	var t0, t1 pond.TripleShare
	var open0, open1 pond.Opening
	if err := to0.Expand(&t0, d, shape); err != nil {
		panic(err)
	}
	if err := to1.Expand(&t1, d, shape); err != nil {
		panic(err)
	}
	if err := t0.Open(&open0, x0, y0); err != nil {
		panic(err)
	}
	if err := t1.Open(&open1, x1, y1); err != nil {
		panic(err)
	}

	// They exchange openings, each receiving its own copy, and finish
	// their shares of x·y.
	send := func(m *pond.Opening) *pond.Opening {
		b, err := m.MarshalBinary()
		if err != nil {
			panic(err)
		}
		var got pond.Opening
		if err := got.UnmarshalBinary(b); err != nil {
			panic(err)
		}
		return &got
	}
	from0, from1 := send(&open0), send(&open1)
	z0, z1 := make(pond.Product, shape.ZLen()), make(pond.Product, shape.ZLen())
	if err := t0.Finish(z0, &open0, from1); err != nil {
		panic(err)
	}
	if err := t1.Finish(z1, &open1, from0); err != nil {
		panic(err)
	}

	// Interactive truncation brings the product back to the fixed-point
	// scale; the output player reveals it.
	var msg pond.TruncationMessage
	r0, r1 := make(pond.Share, len(z0)), make(pond.Share, len(z1))
	if err := p.TruncateSend(rand.Reader, d, r0, z0, &msg); err != nil {
		panic(err)
	}
	if err := p.TruncateReceive(d, r1, z1, &msg); err != nil {
		panic(err)
	}
	out := make([]float64, len(x))
	if err := p.Reveal(out, r0, r1); err != nil {
		panic(err)
	}
	fmt.Printf("%.3f\n", out)
	fmt.Println(shape.Triple0Size(), shape.Triple1Size(), shape.OpeningSize(), "bytes")
	// Output:
	// [6.000 -0.500 -0.977]
	// 32 64 64 bytes
}
