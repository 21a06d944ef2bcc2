package pond

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unevenSplit is a Split that cuts [0, n) into ranges of growing size
// and runs them all at once, each on its own goroutine, as a caller
// spreading work over cores would.
func unevenSplit(n, work int, f func(lo, hi int)) {
	var wg sync.WaitGroup
	for lo, size := 0, 1; lo < n; lo, size = lo+size, size*3 {
		hi := min(lo+size, n)
		wg.Go(func() { f(lo, hi) })
	}
	wg.Wait()
}

// TestSplitProductsMatchSerial: a triple drawn and a product finished in
// uneven ranges, run at the same time (run with -race), equal what the
// serial steps compute from the same seeds, for each kind of product and
// sizes that are odd, tiny and larger than a range.
func TestSplitProductsMatchSerial(t *testing.T) {
	shapes := []TripleShape{
		MulShape(1), MulShape(7), MulShape(1001),
		SquareShape(1), SquareShape(513),
		MatMulShape(1, 1, 1), MatMulShape(5, 3, 7), MatMulShape(33, 17, 9), MatMulShape(1, 40, 1),
	}
	for _, s := range shapes {
		t.Run(s.String(), func(t *testing.T) {
			d := Domain{Session: "split", Iteration: 2, Tensor: 5}

			var serial, ranged Producer
			var s0, r0 TripleMessage0
			var s1, r1 TripleMessage1
			require.NoError(t, serial.Triple(newTestRand(3), d, s, &s0, &s1))
			require.NoError(t, ranged.TripleSplit(newTestRand(3), d, s, &r0, &r1, unevenSplit))
			assert.Equal(t, s0, r0, "message to server0")
			assert.Equal(t, s1, r1, "message to server1")

			// Both servers finish the same product twice: serially, and
			// in ranges.
			x0, x1, y0, y1 := make(Share, s.XLen()), make(Share, s.XLen()), make(Share, s.YLen()), make(Share, s.YLen())
			for i, v := range []Share{x0, x1, y0, y1} {
				Expand(v, Seed{byte(i + 1)}, d)
			}
			var open0, open1 Opening
			finish := func(split Split) (z0, z1 Product) {
				var t0, t1 TripleShare
				require.NoError(t, s0.Expand(&t0, d, s))
				require.NoError(t, s1.Expand(&t1, d, s))
				require.NoError(t, t0.Open(&open0, x0, y0))
				require.NoError(t, t1.Open(&open1, x1, y1))
				// Finish may overwrite the opening it receives: each
				// server gets a copy of the other's.
				in0 := Opening{E: append(Share(nil), open1.E...), F: append(Share(nil), open1.F...)}
				in1 := Opening{E: append(Share(nil), open0.E...), F: append(Share(nil), open0.F...)}
				z0, z1 = make(Product, s.ZLen()), make(Product, s.ZLen())
				require.NoError(t, t0.FinishSplit(z0, &open0, &in0, split))
				require.NoError(t, t1.FinishSplit(z1, &open1, &in1, split))
				return z0, z1
			}
			want0, want1 := finish(Serial)
			got0, got1 := finish(unevenSplit)
			assert.Equal(t, want0, got0, "server0's product share")
			assert.Equal(t, want1, got1, "server1's product share")

		})
	}
}

// FinishSplit refuses what Finish refuses before it does any work: the
// split is not called.
func TestFinishSplitChecksFirst(t *testing.T) {
	s := MulShape(4)
	d := Domain{Session: "split"}
	var p Producer
	var to0 TripleMessage0
	var to1 TripleMessage1
	require.NoError(t, p.Triple(newTestRand(1), d, s, &to0, &to1))
	var t0 TripleShare
	require.NoError(t, to0.Expand(&t0, d, s))
	never := func(n, work int, f func(lo, hi int)) { t.Error("split called before the checks passed") }
	var mine Opening
	assert.ErrorIs(t, t0.FinishSplit(make(Product, 4), &mine, &Opening{}, never), ErrTripleUsed, "finish before open")
	require.NoError(t, t0.Open(&mine, make(Share, 4), make(Share, 4)))
	assert.ErrorIs(t, t0.FinishSplit(make(Product, 4), &mine, &Opening{E: make(Share, 3), F: make(Share, 4)}, never), ErrWire)
}
