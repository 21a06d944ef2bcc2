package pond

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/internal/le"
)

func TestRing32Defaults(t *testing.T) {
	p := newProtocol(t, Config{Ring: Ring32})
	assert.Equal(t, 14, p.Config().IntBits, "30 − FracBits: one value leaves room for a sum of two")
	assert.Equal(t, 4, p.WordSize())
	assert.Equal(t, 8, newProtocol(t, Config{}).WordSize())
	assert.Equal(t, 8+4*10, p.ShareSize(10))
}

// A sum of private inputs computed in Z_2^32 reveals exactly what the
// same sum gives in Z_2^64, as long as it stays inside the range: the
// shares' high 32 bits, which the uint64 words carry but the ring does
// not, change nothing, and only 4 bytes an element cross the wire.
func TestRing32SumMatchesRing64(t *testing.T) {
	const owners, n = 7, 1001
	// Inputs at the edge of the range a sum of 7 leaves: 7·2^11·2^16 < 2^31.
	p32 := newProtocol(t, Config{Ring: Ring32, IntBits: 11})
	p64 := newProtocol(t, Config{IntBits: 11, StatGap: 19})
	rng := newTestRand(3)
	inputs := make([][]float64, owners)
	for i := range inputs {
		inputs[i] = make([]float64, n)
		for j := range inputs[i] {
			inputs[i][j] = (2*float64((i*n+j)%997)/997 - 1) * 2047.99
		}
		inputs[i][0] = 2047.99 // all at the top of the range, element 0
		inputs[i][1] = -2047.99
	}
	reveal := func(p *Protocol) []float64 {
		var shares []Share
		var seeded []SeededShare
		for i, x := range inputs {
			d := p.Domain("s", 1, uint64(i))
			masked := make(Share, n)
			seed, err := p.EncodeAndShare(rng, d, masked, x)
			require.NoError(t, err)
			// Over the wire: WordSize bytes an element, reduced to the ring.
			wire := p.AppendShare(nil, masked)
			require.Len(t, wire, p.ShareSize(n))
			got := make(Share, n)
			require.NoError(t, p.DecodeShare(got, wire))
			shares = append(shares, got)
			seeded = append(seeded, SeededShare{Seed: seed, Domain: d})
		}
		s0, s1 := make(Share, n), make(Share, n)
		SumShares(s0, shares, nil)
		SumShares(s1, nil, seeded)
		out := make([]float64, n)
		require.NoError(t, p.RevealQuotient(out, s0, s1, owners))
		return out
	}
	want, got := reveal(p64), reveal(p32)
	assert.Equal(t, want, got)
	assert.InDelta(t, 2047.99, got[0], 1e-4)
	assert.InDelta(t, -2047.99, got[1], 1e-4)
}

func TestRing32RefusesOutOfRange(t *testing.T) {
	p := newProtocol(t, Config{Ring: Ring32, IntBits: 5})
	masked := make(Share, 3)
	_, err := p.EncodeAndShare(newTestRand(1), p.Domain("s", 0, 0), masked, []float64{1, 32, 2})
	var re *RangeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Index)
	assert.Equal(t, 32.0, re.Bound)
}

func TestRing32Decode(t *testing.T) {
	p := newProtocol(t, Config{Ring: Ring32})
	enc := make([]uint64, 3)
	require.NoError(t, p.Encode(enc, []float64{-1.5, 3.25, -16383}))
	// Garbage in the high halves, as a sum of 64-bit words leaves it.
	for i := range enc {
		enc[i] += 0xdead_beef << 32
	}
	got := make([]float64, 3)
	p.Decode(got, enc)
	assert.Equal(t, []float64{-1.5, 3.25, -16383}, got)
}

func TestWordsRoundTrip(t *testing.T) {
	for _, ring := range []int{Ring64, Ring32} {
		p := newProtocol(t, Config{Ring: ring})
		s := Share{0, 1, math.MaxUint64, 0x1234_5678_9abc_def0, 1 << 32}
		b := make([]byte, p.WordSize()*len(s)+1)
		for _, off := range []int{0, 1} { // aligned, and not
			buf := b[off : off+p.WordSize()*len(s)]
			p.PutWords(buf, s)
			got := make(Share, len(s))
			p.Words(got, buf)
			sum := Share{1, 1, 1, 1, 1}
			p.AddWords(sum, buf)
			for i, v := range s {
				want := v
				if ring == Ring32 {
					want = uint64(uint32(v))
				}
				assert.Equal(t, want, got[i], "ring %d, offset %d, element %d", ring, off, i)
				assert.Equal(t, want+1, sum[i], "ring %d, offset %d, element %d", ring, off, i)
			}
		}
	}
}

// In Z_2^32 a share packs into the front of its own memory, as an input
// owner that gives its tensor up sends it.
func TestPutWordsInPlace(t *testing.T) {
	p := newProtocol(t, Config{Ring: Ring32})
	s := make(Share, 4099)
	want := make([]uint32, len(s))
	for i := range s {
		s[i] = uint64(i)*0x9e37_79b9_7f4a_7c15 + 7
		want[i] = uint32(s[i])
	}
	b, ok := le.Bytes(s)
	if !ok {
		t.Skip("not a little-endian machine")
	}
	p.PutWords(b[:4*len(s)], s)
	got := make(Share, len(s))
	p.Words(got, b[:4*len(s)])
	for i := range got {
		require.Equal(t, uint64(want[i]), got[i], "element %d", i)
	}
}

func TestDecodeShareRefusesBadData(t *testing.T) {
	p := newProtocol(t, Config{Ring: Ring32})
	good := p.AppendShare(nil, Share{1, 2, 3})
	dst := make(Share, 3)
	require.NoError(t, p.DecodeShare(dst, good))
	assert.Equal(t, Share{1, 2, 3}, dst)
	for name, data := range map[string][]byte{
		"empty":             nil,
		"truncated":         good[:len(good)-1],
		"long":              append(append([]byte(nil), good...), 0),
		"64-bit words":      Share{1, 2, 3}.mustMarshal(t),
		"another count":     newProtocol(t, Config{Ring: Ring32}).AppendShare(nil, Share{1, 2}),
		"huge count header": append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, good[8:]...),
	} {
		assert.ErrorIs(t, p.DecodeShare(dst, data), ErrWire, name)
	}
}

func (s Share) mustMarshal(t *testing.T) []byte {
	b, err := s.MarshalBinary()
	require.NoError(t, err)
	return b
}

func TestRing32HasNoTruncation(t *testing.T) {
	p := newProtocol(t, Config{Ring: Ring32})
	assert.PanicsWithValue(t, "pond: TruncateLocal needs the ring Z_2^64, but the configuration's is Z_2^32", func() {
		p.TruncateLocal(Server0, make(Share, 2), make(Product, 2))
	})
}

func FuzzDecodeShare(f *testing.F) {
	p32 := newProtocol(f, Config{Ring: Ring32})
	p64 := newProtocol(f, Config{})
	f.Add(p32.AppendShare(nil, Share{1, 2, 3}), uint8(3))
	f.Add(p64.AppendShare(nil, Share{1, 2, 3}), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, n uint8) {
		for _, p := range []*Protocol{p32, p64} {
			dst := make(Share, n)
			if err := p.DecodeShare(dst, data); err != nil {
				continue
			}
			again := p.AppendShare(nil, dst)
			assert.Equal(t, data, again, "a share that decodes encodes back to its bytes")
		}
	})
}

// SumAt adds shares given as words, as tensors and as seeds in one pass,
// and gives what SumShares gives on the same shares widened; disjoint
// ranges add up to the whole.
func TestSumAtWithWords(t *testing.T) {
	for _, ring := range []int{Ring64, Ring32} {
		p := newProtocol(t, Config{Ring: ring})
		const n = 3*4096 + 7 // blocks and a tail
		var words [][]byte
		var shares []Share
		for k := range 4 {
			s := make(Share, n)
			for i := range s {
				s[i] = uint64(k*n+i) * 0x9e37_79b9_7f4a_7c15
			}
			if k < 2 {
				words = append(words, p.AppendShare(nil, s)[8:])
				p.Words(s, words[k]) // what the words stand for
			}
			shares = append(shares, s)
		}
		seeded := []SeededShare{{Seed: Seed{1}, Domain: p.Domain("s", 1, 1)}, {Seed: Seed{2}, Domain: p.Domain("s", 1, 2)}}
		want := make(Share, n)
		SumShares(want, shares, seeded)
		got := make(Share, n)
		for _, r := range [][2]int{{0, 4096}, {4096, 10000}, {10000, n}} {
			p.SumAt(got[r[0]:r[1]], []Share{shares[2][r[0]:r[1]], shares[3][r[0]:r[1]]}, words, seeded, r[0])
		}
		only := make(Share, n) // words alone
		p.SumAt(only, nil, words, nil, 0)
		for i := range got {
			if ring == Ring32 {
				require.Equal(t, uint32(want[i]), uint32(got[i]), "ring %d, element %d", ring, i)
				require.Equal(t, uint32(shares[0][i]+shares[1][i]), uint32(only[i]), "ring %d, element %d", ring, i)
			} else {
				require.Equal(t, want[i], got[i], "ring %d, element %d", ring, i)
				require.Equal(t, shares[0][i]+shares[1][i], only[i], "ring %d, element %d", ring, i)
			}
		}
		assert.Panics(t, func() { p.SumAt(make(Share, 2), nil, [][]byte{make([]byte, p.WordSize())}, nil, 0) }, "a short share is a caller's bug")
	}
}

// The fused wire-form steps compute what their two-step forms do, in both
// rings, with the words aligned or not.
func TestWireFormSteps(t *testing.T) {
	const n = 5000
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(i%2001-1000) * 0.37
	}
	for _, ring := range []int{Ring64, Ring32} {
		p := newProtocol(t, Config{Ring: ring})
		mask := make(Share, n)
		ExpandAt(mask, Seed{7}, p.Domain("s", 1, 2), 0)
		want := make(Share, n)
		require.NoError(t, p.EncodeAndSubtractAt(want, x, mask, 0))
		wantBytes := make([]byte, p.WordSize()*n)
		p.PutWords(wantBytes, want)
		for _, off := range []int{0, 1} {
			buf := make([]byte, p.WordSize()*n+1)[off:][:p.WordSize()*n]
			require.NoError(t, p.EncodeAndSubtractWordsAt(buf[:p.WordSize()*2048], x[:2048], mask[:2048], 0))
			require.NoError(t, p.EncodeAndSubtractWordsAt(buf[p.WordSize()*2048:], x[2048:], mask[2048:], 2048))
			assert.Equal(t, wantBytes, buf, "ring %d, offset %d", ring, off)

			// The other server's share is the mask: revealing gives x.
			other := make([]byte, p.WordSize()*n+1)[off:][:p.WordSize()*n]
			p.PutWords(other, mask)
			got, direct := make([]float64, n), make([]float64, n)
			require.NoError(t, p.RevealWordsQuotient(got, buf, other, 2))
			require.NoError(t, p.RevealQuotient(direct, want, mask, 2))
			assert.Equal(t, direct, got, "ring %d, offset %d", ring, off)
			assert.InDelta(t, x[17]/2, got[17], 1e-5)
		}
		bad := append([]float64(nil), x...)
		bad[3000] = math.NaN()
		var re *RangeError
		err := p.EncodeAndSubtractWordsAt(make([]byte, p.WordSize()*(n-2048)), bad[2048:], mask[2048:], 2048)
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 3000, re.Index)
		assert.Error(t, p.RevealWordsQuotient(make([]float64, 2), make([]byte, 3), make([]byte, 2*p.WordSize()), 1), "short share")
		assert.Error(t, p.RevealWordsQuotient(make([]float64, 2), make([]byte, 2*p.WordSize()), make([]byte, 2*p.WordSize()), 0), "zero divisor")
	}
}

// rangeInputs returns n values spread over (−period/2, period/2)·scale,
// both signs.
func rangeInputs(n, period int, scale float64) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(i%period-period/2) * scale
	}
	return x
}

// maskedWords returns the wire form of x masked with seed's stream in d,
// by the two-step 8-byte path the wire-form steps are checked against.
func maskedWords(t *testing.T, p *Protocol, x []float64, seed Seed, d Domain) []byte {
	want := make(Share, len(x))
	require.NoError(t, p.EncodeAndMaskAt(want, x, seed, d, 0))
	b := make([]byte, p.WordSize()*len(x))
	p.PutWords(b, want)
	return b
}

func TestEncodeAndMaskWordsAt(t *testing.T) {
	const n = 5003
	x := rangeInputs(n, 997, 1.37)
	for _, ring := range []int{Ring64, Ring32} {
		p := newProtocol(t, Config{Ring: ring})
		d := p.Domain("s", 4, 5)
		seed := Seed{9}
		wantBytes := maskedWords(t, p, x, seed, d)
		var got []byte
		for _, shift := range []int{1, 0} { // unaligned: the words through a buffer
			got = make([]byte, p.WordSize()*n+shift)[shift:]
			for _, r := range [][2]int{{0, 2048}, {2048, 4096}, {4096, n}} {
				require.NoError(t, p.EncodeAndMaskWordsAt(got[p.WordSize()*r[0]:p.WordSize()*r[1]], x[r[0]:r[1]], seed, d, r[0]))
			}
			assert.Equal(t, wantBytes, got, "ring %d, shift %d", ring, shift)
		}

		bad := append([]float64(nil), x...)
		bad[4500] = 1e9
		var re *RangeError
		require.ErrorAs(t, p.EncodeAndMaskWordsAt(got[p.WordSize()*4096:], bad[4096:], seed, d, 4096), &re)
		assert.Equal(t, 4500, re.Index)
	}
}

// A mask drawn ahead into the message, then the masked tensor written
// over it in place, gives what EncodeAndMaskAt and PutWords give.
func TestMaskAheadInWords(t *testing.T) {
	const n = 5001
	x := rangeInputs(n, 1999, 0.51)
	for _, ring := range []int{Ring64, Ring32} {
		p := newProtocol(t, Config{Ring: ring})
		d := p.Domain("s", 2, 3)
		seed := Seed{4}
		wantBytes := maskedWords(t, p, x, seed, d)
		for _, off := range []int{0, 1} {
			ws := p.WordSize()
			got := make([]byte, ws*n+1)[off:][:ws*n]
			for _, r := range [][2]int{{0, 2048}, {2048, n}} {
				p.ExpandWordsAt(got[ws*r[0]:ws*r[1]], SeededShare{Seed: seed, Domain: d}, r[0])
			}
			for _, r := range [][2]int{{0, 4096}, {4096, n}} {
				require.NoError(t, p.EncodeAndSubtractFromWordsAt(got[ws*r[0]:ws*r[1]], x[r[0]:r[1]], r[0]))
			}
			assert.Equal(t, wantBytes, got, "ring %d, offset %d", ring, off)
		}
		bad := append([]float64(nil), x...)
		bad[4097] = math.Inf(1)
		var re *RangeError
		require.ErrorAs(t, p.EncodeAndSubtractFromWordsAt(make([]byte, p.WordSize()*(n-4096)), bad[4096:], 4096), &re)
		assert.Equal(t, 4097, re.Index)
	}
}

// TestRing32KernelsMatchLoops checks the vector encoding and reveal of
// Z_2^32 against the loops, element for element: ties that round to
// even, both signs, the edges of the range, and a bad element (NaN, ±Inf,
// ±bound, beyond) at every place of a group of four and in the tail.
func TestRing32KernelsMatchLoops(t *testing.T) {
	p := newProtocol(t, Config{Ring: Ring32})
	bound, ulp := p.bound, 1/p.scale
	edge := []float64{0, math.Copysign(0, -1), 0.5 * ulp, -0.5 * ulp, 1.5 * ulp, -1.5 * ulp, 2.5 * ulp, -2.5 * ulp,
		math.Nextafter(bound, 0), -math.Nextafter(bound, 0), bound - 0.5*ulp, -(bound - 0.5*ulp), 5e-324, 1e-300, 0.1, -7.25}
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float64, 1003)
	for i := range x {
		if i%3 == 0 {
			x[i] = edge[i/3%len(edge)]
		} else {
			x[i] = (rng.Float64()*2 - 1) * bound
		}
	}
	masks := make([]byte, 4*len(x))
	for i := range masks {
		masks[i] = byte(rng.Uint32())
	}
	run := func(vector bool, x []float64) ([]byte, error) {
		defer func(old bool) { useAVX2 = old }(useAVX2)
		useAVX2 = useAVX2 && vector
		dst := append([]byte(nil), masks[:4*len(x)]...)
		return dst, p.EncodeAndSubtractFromWordsAt(dst, x, 100)
	}
	want, err := run(false, x)
	require.NoError(t, err)
	got, err := run(true, x)
	require.NoError(t, err)
	require.Equal(t, want, got)

	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), bound, -bound, 2 * bound} {
		for _, at := range []int{0, 1, 2, 3, 500, 998, 1001, 1002} {
			bad := append([]float64(nil), x...)
			bad[at] = v
			_, err := run(true, bad)
			var re *RangeError
			require.ErrorAs(t, err, &re, "%v at %d", v, at)
			assert.Equal(t, 100+at, re.Index, "%v at %d", v, at)
		}
	}

	for _, d := range []float64{1, 3, 7, -2, 1e-3} {
		reveal := func(vector bool) []float64 {
			defer func(old bool) { useAVX2 = old }(useAVX2)
			useAVX2 = useAVX2 && vector
			out := make([]float64, len(x))
			require.NoError(t, p.RevealWordsQuotient(out, got, masks[:4*len(x)], d))
			return out
		}
		assert.Equal(t, reveal(false), reveal(true), "divisor %v", d)
	}
}

// SumWordsAt keeps a sum in wire form and adds to it what SumAt adds to a
// sum of 8-byte words: masked shares in wire form and seeds' streams,
// over ranges at block offsets, on aligned and unaligned memory; and
// SubStreamsWordsAt takes streams back out.
func TestSumWordsAt(t *testing.T) {
	p := newProtocol(t, Config{Ring: Ring32})
	r := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{0, 1, 5, 4096 + 3, 3*4096 + 2*maskChunk + 7} {
		for _, counts := range [][2]int{{0, 1}, {2, 0}, {1, 3}, {5, 2}} {
			name := fmt.Sprintf("%d elements, %d shares, %d seeds", n, counts[0], counts[1])
			words := make([][]byte, counts[0])
			for i := range words {
				words[i] = make([]byte, 4*n)
				for j := range words[i] {
					words[i][j] = byte(r.Uint32())
				}
			}
			seeded := make([]SeededShare, counts[1])
			for i := range seeded {
				seeded[i] = SeededShare{Seed: Seed{byte(i), 7}, Domain: p.Domain("words", 3, uint64(i))}
			}
			start := make(Share, n)
			for i := range start {
				start[i] = uint64(r.Uint32())
			}
			want := make(Share, n) // SumAt sets its dst: the sum so far is a row
			p.SumAt(want, []Share{start}, words, seeded, 0)
			wantBytes := make([]byte, 4*n)
			p.PutWords(wantBytes, want)

			for _, shift := range []int{0, 1} {
				got := make([]byte, 4*n+shift)[shift:]
				p.PutWords(got, start)
				for _, rg := range blockRanges(n, 4) {
					p.SumWordsAt(got[4*rg[0]:4*rg[1]], words, seeded, rg[0])
				}
				require.Equal(t, wantBytes, got, "%s, shift %d", name, shift)

				p.SubStreamsWordsAt(got, seeded, 0)
				back := make(Share, n)
				p.SumAt(back, []Share{start}, words, nil, 0)
				backBytes := make([]byte, 4*n)
				p.PutWords(backBytes, back)
				require.Equal(t, backBytes, got, "%s, shift %d, streams taken back", name, shift)
			}
		}
	}
	assert.Panics(t, func() { newProtocol(t, Config{}).SumWordsAt(make([]byte, 8), nil, nil, 0) }, "Z_2^64")
	assert.Panics(t, func() { p.SumWordsAt(make([]byte, 8), [][]byte{make([]byte, 4)}, nil, 0) }, "a share too short for the range")
}
