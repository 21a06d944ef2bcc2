package pond

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sumCase draws shares and seeds for a sum of n elements.
func sumCase(r *rand.Rand, n, nShares, nSeeds int, prg MaskPRG, ring int) ([]Share, []SeededShare) {
	shares := make([]Share, nShares)
	for k := range shares {
		shares[k] = make(Share, n)
		for i := range shares[k] {
			shares[k][i] = r.Uint64()
		}
	}
	seeded := make([]SeededShare, nSeeds)
	for k := range seeded {
		var s Seed
		for i := range s {
			s[i] = byte(r.Uint32())
		}
		// Purpose is left unset: SumShares sets it, as AddToAt does.
		seeded[k] = SeededShare{Seed: s, Domain: Domain{Session: "sum", Iteration: 4, Tensor: uint64(k), PRG: prg, Ring: ring}}
	}
	return shares, seeded
}

// plainSum is the sum as specified: the shares, plus each seed's input
// stream computed the plain way (referenceStream).
func plainSum(t testing.TB, n int, shares []Share, seeded []SeededShare) Share {
	want := make(Share, n)
	for _, s := range shares {
		for i := range want {
			want[i] += s[i]
		}
	}
	for _, s := range seeded {
		d := s.Domain
		d.Purpose = PurposeInput
		for i, w := range referenceStream(t, n, s.Seed, d) {
			want[i] += w
		}
	}
	return want
}

// SumShares is the plain sum of the shares and the seeds' streams,
// whatever the length (around the block and chunk sizes), the number of
// shares and of seeds (none, odd, even), the PRG and the ring (4-byte
// elements of the streams in Z_2^32); split into ranges at block offsets
// it computes the same; dst may be one of the shares.
func TestSumShares(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, pr := range [][2]int{{int(MaskAES256), Ring64}, {int(MaskAES128), Ring64}, {int(MaskAES256), Ring32}, {int(MaskAES128), Ring32}} {
		prg, ring := MaskPRG(pr[0]), pr[1]
		per := Domain{Ring: ring}.perBlock()
		for _, n := range []int{0, 1, 2, 7, sumChunk + 1, 4096 - 1, 4096, 4096 + 1, 3*4096 + 2*sumChunk + 5} {
			for _, counts := range [][2]int{{0, 0}, {1, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 1}, {5, 0}, {3, 4}, {6, 5}, {9, 2}} {
				name := fmt.Sprintf("%v/ring %d/%d elements/%d shares/%d seeds", prg, ring, n, counts[0], counts[1])
				shares, seeded := sumCase(r, n, counts[0], counts[1], prg, ring)
				want := plainSum(t, n, shares, seeded)

				dst := make(Share, n)
				for i := range dst {
					dst[i] = r.Uint64() // overwritten, not added to
				}
				SumShares(dst, shares, seeded)
				require.Equal(t, want, dst, name)

				ranged := make(Share, n)
				for _, rg := range blockRanges(n, per) {
					part := make([]Share, len(shares))
					for k, s := range shares {
						part[k] = s[rg[0]:rg[1]]
					}
					SumSharesAt(ranged[rg[0]:rg[1]], part, seeded, rg[0])
				}
				require.Equal(t, want, ranged, "%s, in ranges", name)

				for j := range shares {
					args := make([]Share, len(shares))
					for k, s := range shares {
						args[k] = make(Share, n)
						copy(args[k], s)
					}
					SumShares(args[j], args, seeded)
					require.Equal(t, want, args[j], "%s, dst is share %d", name, j)
				}
			}
		}
	}
}

func TestSumSharesRefusesMismatchedShares(t *testing.T) {
	assert.PanicsWithValue(t, "pond: SumSharesAt: share 1 has 3 elements, dst has 4", func() {
		SumShares(make(Share, 4), []Share{make(Share, 4), make(Share, 3)}, nil)
	})
	assert.PanicsWithValue(t, "pond: mask stream at element 3, want a multiple of 2 (an AES block's elements)", func() {
		SumSharesAt(make(Share, 4), nil, []SeededShare{{}}, 3)
	})
	assert.PanicsWithValue(t, "pond: mask stream at element 2, want a multiple of 4 (an AES block's elements)", func() {
		SumSharesAt(make(Share, 4), nil, []SeededShare{{Domain: Domain{Ring: Ring32}}}, 2)
	})
}

// Seeds ahead: a mask drawn before the input exists (ExpandAt), then
// subtracted from the encoding (EncodeAndSubtractAt, in place, by ranges)
// makes exactly what EncodeAndMaskAt makes from the same seed; a bad
// element is refused with its index in the tensor. SubFromAt takes back
// what AddToAt added, by ranges at even offsets.
func TestSeedsAheadMaskAndTakeBack(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, prg := range []MaskPRG{MaskAES256, MaskAES128} {
		p := newProtocol(t, Config{MaskPRG: prg})
		for _, n := range []int{0, 1, 7, maskChunk + 3, 3*maskChunk + 2} {
			x := make([]float64, n)
			for i := range x {
				x[i] = (r.Float64()*2 - 1) * 1000
			}
			var seed Seed
			for i := range seed {
				seed[i] = byte(r.Uint32())
			}
			d := p.Domain("ahead", 3, 9)
			d.Member = "member-1"
			want := make(Share, n)
			require.NoError(t, p.EncodeAndMaskAt(want, x, seed, d, 0))
			got := make(Share, n)
			s := SeededShare{Seed: seed, Domain: d}
			for lo := 0; lo < n; lo += 1000 {
				hi := min(lo+1000, n)
				s.ExpandAt(got[lo:hi], lo)
				require.NoError(t, p.EncodeAndSubtractAt(got[lo:hi], x[lo:hi], got[lo:hi], lo))
			}
			assert.Equal(t, want, got, "%v, %d elements", prg, n)

			before := slicesClone(got)
			for lo := 0; lo < n; lo += 1000 {
				hi := min(lo+1000, n)
				s.AddToAt(got[lo:hi], lo)
			}
			for lo := 0; lo < n; lo += 998 {
				hi := min(lo+998, n)
				s.SubFromAt(got[lo:hi], lo)
			}
			assert.Equal(t, before, got, "%v, %d elements: SubFromAt undoes AddToAt", prg, n)
			if n > 5 {
				x[5] = 1e300
				err := p.EncodeAndSubtractAt(got[4:], x[4:], got[4:], 4)
				var re *RangeError
				require.ErrorAs(t, err, &re)
				assert.Equal(t, 5, re.Index)
			}
		}
	}
}

func slicesClone(s Share) Share { return append(Share{}, s...) }
