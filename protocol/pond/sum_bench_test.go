package pond

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/shareflow/shareflow/ops"
)

// serverSumWorkload is a secure sum of owners inputs of n parameters as
// one server holds it: the owners alternate which server gets the seed, so
// it holds half the inputs as masked tensors and half as seeds. The same
// inputs as float64 and float32 rows are the plaintext references.
type serverSumWorkload struct {
	shares []Share
	seeded []SeededShare
	f64    [][]float64
	f32    [][]float32
}

func newServerSumWorkload(owners, n int, prg MaskPRG) *serverSumWorkload {
	r := rand.New(rand.NewPCG(1, 2))
	w := &serverSumWorkload{}
	for o := range owners {
		f64, f32 := make([]float64, n), make([]float32, n)
		for i := range f64 {
			f64[i] = r.NormFloat64()
			f32[i] = float32(f64[i])
		}
		w.f64, w.f32 = append(w.f64, f64), append(w.f32, f32)
		if o%2 == 0 {
			s := make(Share, n)
			for i := range s {
				s[i] = r.Uint64()
			}
			w.shares = append(w.shares, s)
		} else {
			var seed Seed
			for i := range seed {
				seed[i] = byte(r.Uint32())
			}
			w.seeded = append(w.seeded, SeededShare{Seed: seed, Domain: Domain{Session: "bench", Tensor: uint64(o), PRG: prg}})
		}
	}
	return w
}

// sumRows is the plaintext reference: the best plain Go loop for a sum of
// float64 (or float32) rows, blocked as SumShares is (a block of dst stays
// in the cache while four rows at a time are added to it). Each float type
// gets its own compiled loop (distinct GC shapes).
func sumRows[T float32 | float64](dst []T, rows [][]T) {
	for lo := 0; lo < len(dst); lo += ops.SumBlock {
		hi := min(lo+ops.SumBlock, len(dst))
		d := dst[lo:hi]
		clear(d)
		k := 0
		for ; k+4 <= len(rows); k += 4 {
			a, b, c, e := rows[k][lo:hi], rows[k+1][lo:hi], rows[k+2][lo:hi], rows[k+3][lo:hi]
			a, b, c, e = a[:len(d)], b[:len(d)], c[:len(d)], e[:len(d)]
			for i := range d {
				d[i] += a[i] + b[i] + c[i] + e[i]
			}
		}
		for ; k < len(rows); k++ {
			a := rows[k][lo:hi][:len(d)]
			for i := range d {
				d[i] += a[i]
			}
		}
	}
}

// BenchmarkServerSum is a server's part of a secure mean of 100 owners ×
// 100k parameters (50 masked shares and 50 seeds), single-threaded, in
// four ways: "old" is what the session did before SumShares (ops.AddN
// over the masked shares, then one pass over the result per seed) with
// the v1 PRG; "aes256" and "aes128" are SumShares with each PRG, and
// "aes128-std" SumShares with the v2 streams drawn by crypto/aes instead
// of the vector AES kernel (what a processor without AVX-512 runs). Each
// iteration also sums the same 100 rows as float64 and as float32, so
// that the ratios compare runs on the same machine at the same time; they
// are ratios of medians over the iterations (x-float64, x-float32),
// reported with the medians in ms.
func BenchmarkServerSum(b *testing.B) {
	const owners, n = 100, 100_000
	for _, tc := range []struct {
		name   string
		prg    MaskPRG
		noVAES bool
		sum    func(dst Share, w *serverSumWorkload)
	}{
		{"old", MaskAES256, false, func(dst Share, w *serverSumWorkload) {
			xs := make([][]uint64, len(w.shares))
			for i, s := range w.shares {
				xs[i] = s
			}
			ops.AddN(dst, xs...)
			for _, s := range w.seeded {
				s.AddToAt(dst, 0)
			}
		}},
		{"aes256", MaskAES256, false, func(dst Share, w *serverSumWorkload) { SumShares(dst, w.shares, w.seeded) }},
		{"aes128-std", MaskAES128, true, func(dst Share, w *serverSumWorkload) { SumShares(dst, w.shares, w.seeded) }},
		{"aes128", MaskAES128, false, func(dst Share, w *serverSumWorkload) { SumShares(dst, w.shares, w.seeded) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if tc.noVAES {
				defer func(old bool) { useVAES = old }(useVAES)
				useVAES = false
			} else if tc.prg == MaskAES128 && !hasVAES {
				b.Log("no AVX-512 vector AES on this processor: v2 streams come from crypto/aes")
			}
			w := newServerSumWorkload(owners, n, tc.prg)
			dst, d64, d32 := make(Share, n), make([]float64, n), make([]float32, n)
			var server, f64, f32 []time.Duration
			timed := func(ts *[]time.Duration, f func()) {
				start := time.Now()
				f()
				*ts = append(*ts, time.Since(start))
			}
			for b.Loop() {
				timed(&server, func() { tc.sum(dst, w) })
				timed(&f64, func() { sumRows(d64, w.f64) })
				timed(&f32, func() { sumRows(d32, w.f32) })
			}
			ms := func(ts []time.Duration) float64 {
				slices.Sort(ts)
				return ts[len(ts)/2].Seconds() * 1e3
			}
			s, f, g := ms(server), ms(f64), ms(f32)
			b.ReportMetric(s, "ms-server")
			b.ReportMetric(f, "ms-float64")
			b.ReportMetric(g, "ms-float32")
			b.ReportMetric(s/f, "x-float64")
			b.ReportMetric(s/g, "x-float32")
		})
	}
}
