package pond

import (
	"bytes"
	"crypto/rand"
	"math"
	mrand "math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newTestRand returns a seeded, reproducible byte source (ChaCha8 has a
// Read method) for tests, where shares need not be secret.
func newTestRand(seed byte) *mrand.ChaCha8 {
	return mrand.NewChaCha8([32]byte{seed})
}

func newProtocol(t testing.TB, cfg Config) *Protocol {
	p, err := New(cfg)
	require.NoError(t, err)
	return p
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	p := newProtocol(t, Config{})
	assert.Equal(t, Config{FracBits: 16, IntBits: 10, StatGap: 20, Truncation: Interactive, MaskPRG: MaskAES128, Ring: Ring64}, p.Config())
	assert.Equal(t, 1024.0, p.Config().Bound())
	assert.Equal(t, 1.0/65536, p.Config().Resolution())

	p = newProtocol(t, Config{FracBits: 12})
	assert.Equal(t, 18, p.Config().IntBits, "integer bits follow from the fractional bits")

	for name, cfg := range map[string]Config{
		"too many fractional bits":  {FracBits: 31},
		"nothing left for integers": {FracBits: 22},
		"sum over 62 bits":          {FracBits: 16, IntBits: 12},
		"gap too small":             {StatGap: 4},
		"unknown truncation":        {Truncation: 7},
		"unknown mask PRG":          {MaskPRG: 3},
		"unknown ring":              {Ring: 16},
		"Z_2^32 sum over 30 bits":   {Ring: Ring32, IntBits: 15},
		"Z_2^32 without integers":   {Ring: Ring32, FracBits: 30},
	} {
		_, err := New(cfg)
		assert.ErrorIs(t, err, ErrConfig, name)
	}
}

// Protocol.Domain carries the configuration's mask derivation, which
// every step that draws streams checks: a domain built otherwise would
// derive other streams than the peers'.
func TestDomainCarriesTheMaskPRG(t *testing.T) {
	for _, prg := range []MaskPRG{MaskAES256, MaskAES128} {
		p := newProtocol(t, Config{MaskPRG: prg})
		d := p.Domain("s", 3, 9)
		assert.Equal(t, Domain{Session: "s", Iteration: 3, Tensor: 9, PRG: prg, Ring: Ring64}, d)
		assert.Equal(t, Ring32, newProtocol(t, Config{MaskPRG: prg, Ring: Ring32}).Domain("s", 3, 9).Ring)

		x := []float64{1.5, -2, 1000, 0}
		masked := make(Share, len(x))
		seed, err := p.EncodeAndShare(newTestRand(1), d, masked, x)
		require.NoError(t, err)
		AddSeedShare(masked, seed, d)
		got := make([]float64, len(x))
		p.Decode(got, masked)
		assert.Equal(t, x, got, "%v: the seed's stream cancels the mask", prg)
	}
	p := newProtocol(t, Config{MaskPRG: MaskAES256})
	assert.PanicsWithValue(t, "pond: EncodeAndMaskAt: domain with mask PRG aes128-ctr/v2, but the configuration's is aes256-ctr/v1 (build domains with Protocol.Domain)", func() {
		_ = p.EncodeAndMaskAt(make(Share, 2), make([]float64, 2), Seed{}, Domain{}, 0)
	}, "the zero domain is the default derivation, not this configuration's")
	assert.NotPanics(t, func() {
		_ = newProtocol(t, Config{}).EncodeAndMaskAt(make(Share, 2), make([]float64, 2), Seed{}, Domain{}, 0)
	})
}

func TestEncodeRoundsToNearestAndRefusesBadValues(t *testing.T) {
	p := newProtocol(t, Config{})
	x := []float64{0, 1, -1, 0.5, -1023.99, 1.0 / 3, 3e-6, -3e-6}
	enc := make([]uint64, len(x))
	require.NoError(t, p.Encode(enc, x))
	dec := make([]float64, len(x))
	p.Decode(dec, enc)
	for i := range x {
		assert.InDelta(t, x[i], dec[i], p.Config().Resolution()/2, "element %d", i)
	}
	assert.Equal(t, -int64(65536), int64(enc[2]), "-1 is -2^16 in two's complement")
	assert.Equal(t, int64(0), int64(enc[6])+int64(enc[7]), "3e-6 rounds to zero, symmetric")

	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), 1024, -1024, 1e300} {
		err := p.Encode(make([]uint64, 3), []float64{0, bad, 0})
		var re *RangeError
		require.ErrorAs(t, err, &re, "%v", bad)
		assert.Equal(t, 1, re.Index)
		assert.Contains(t, err.Error(), "element 1")
	}
	_, err := p.EncodeConstant(1e-7)
	assert.ErrorContains(t, err, "below the fixed-point resolution")
}

func TestShareInputAndReveal(t *testing.T) {
	p := newProtocol(t, Config{})
	x := []float64{-1000, -3.25, 0, 1e-4, 7.5, 1000}
	enc := make([]uint64, len(x))
	require.NoError(t, p.Encode(enc, x))
	d := Domain{Session: "s", Iteration: 3, Tensor: 9}

	masked := make(Share, len(x))
	seed, err := p.ShareInput(rand.Reader, d, masked, enc)
	require.NoError(t, err)
	seeded := make(Share, len(x))
	SeedShare(seeded, seed, d)

	got := make([]float64, len(x))
	require.NoError(t, p.Reveal(got, seeded, masked))
	for i := range x {
		assert.InDelta(t, x[i], got[i], p.Config().Resolution()/2)
	}

	quotient := make([]float64, len(x))
	require.NoError(t, p.RevealQuotient(quotient, seeded, masked, 3))
	for i := range x {
		assert.Equal(t, got[i]/3, quotient[i], "one rounding, as decoding then dividing")
	}
	assert.Error(t, p.RevealQuotient(quotient, seeded, masked, 0))

	fused := make(Share, len(x))
	seed2, err := p.EncodeAndShare(rand.Reader, d, fused, x)
	require.NoError(t, err)
	SeedShare(seeded, seed2, d)
	require.NoError(t, p.Reveal(got, seeded, fused))
	for i := range x {
		assert.InDelta(t, x[i], got[i], p.Config().Resolution()/2, "EncodeAndShare")
	}
	_, err = p.EncodeAndShare(rand.Reader, d, fused, []float64{1, 2, 3, 4, 5, math.NaN()})
	var re *RangeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 5, re.Index)

	other := make(Share, len(x))
	SeedShare(other, seed, Domain{Session: "s", Iteration: 4, Tensor: 9})
	assert.NotEqual(t, seeded, other, "another iteration draws another stream from the same seed")
}

// mulAndTruncate multiplies the secret sharing of x by c and truncates it
// with the configured protocol, returning the revealed result.
func mulAndTruncate(t testing.TB, p *Protocol, rng *mrand.ChaCha8, x []float64, c float64) []float64 {
	enc := make([]uint64, len(x))
	require.NoError(t, p.Encode(enc, x))
	cc, err := p.EncodeConstant(c)
	require.NoError(t, err)
	d := Domain{Session: "t", Tensor: 1}
	s1 := make(Share, len(x))
	seed, err := p.ShareInput(rng, d, s1, enc)
	require.NoError(t, err)
	s0 := make(Share, len(x))
	SeedShare(s0, seed, d)

	p0, p1 := Product(s0), Product(s1) // in place: the shares are not used again
	MulPublic(p0, s0, cc)
	MulPublic(p1, s1, cc)
	t0, t1 := make(Share, len(x)), make(Share, len(x))
	switch p.Config().Truncation {
	case Interactive:
		var msg TruncationMessage
		require.NoError(t, p.TruncateSend(rng, d, t0, p0, &msg))
		wire, err := msg.MarshalBinary()
		require.NoError(t, err)
		var got TruncationMessage
		require.NoError(t, got.UnmarshalBinary(wire))
		require.NoError(t, p.TruncateReceive(d, t1, p1, &got))
	case Local:
		p.TruncateLocal(Server0, t0, p0)
		p.TruncateLocal(Server1, t1, p1)
	}
	out := make([]float64, len(x))
	require.NoError(t, p.Reveal(out, t0, t1))
	return out
}

// TestTruncationErrorBound checks the documented bound of a public
// multiplication: |x̃c̃ − xc| ≤ |c|·2^-(f+1) + |x|·2^-(f+1) for the two
// encodings, plus under one unit in the last place for truncation.
func TestTruncationErrorBound(t *testing.T) {
	for _, mode := range []Truncation{Interactive, Local} {
		for _, cfg := range []Config{{}, {FracBits: 12}, {FracBits: 20, StatGap: 16}} {
			cfg.Truncation = mode
			p := newProtocol(t, cfg)
			rng := newTestRand(byte(10*int(mode) + cfg.FracBits))
			bound := p.Config().Bound()
			x := make([]float64, 5000)
			r := mrand.New(mrand.NewPCG(uint64(mode), uint64(cfg.FracBits)))
			for i := range x {
				switch i % 4 {
				case 0:
					x[i] = (r.Float64()*2 - 1) * bound * 0.99 // large
				case 1:
					x[i] = (r.Float64()*2 - 1) * 1e-3 // tiny
				case 2:
					x[i] = -r.Float64() * 10
				default:
					x[i] = r.Float64() * 10
				}
			}
			for _, c := range []float64{1.0 / 3, 0.1, 1, -0.5, 1.0 / 7} {
				got := mulAndTruncate(t, p, rng, x, c)
				res := p.Config().Resolution()
				for i := range x {
					tol := (math.Abs(c)+math.Abs(x[i]))*res/2 + res
					require.InDelta(t, x[i]*c, got[i], tol, "%v %+v c=%v element %d", mode, p.Config(), c, i)
				}
			}
		}
	}
}

// TestServerViewIsUniform shares one secret many times and checks that
// what each server receives is spread uniformly, whatever the secret: the
// top byte of the masked share and of the seed's stream fall evenly in 256
// buckets (chi-square, 255 degrees of freedom, critical value at p=1e-6 is
// about 370), and the truncation message's masked share does not depend
// on the secret beyond the statistical gap.
func TestServerViewIsUniform(t *testing.T) {
	p := newProtocol(t, Config{})
	const trials = 40000
	for _, secret := range []float64{0, 1000, -0.25} {
		enc := make([]uint64, 1)
		require.NoError(t, p.Encode(enc, []float64{secret}))
		var maskedHist, seededHist [256]int
		masked, seeded := make(Share, 1), make(Share, 1)
		for i := range trials {
			d := Domain{Session: "u", Iteration: uint64(i)}
			seed, err := p.ShareInput(rand.Reader, d, masked, enc)
			require.NoError(t, err)
			SeedShare(seeded, seed, d)
			maskedHist[masked[0]>>56]++
			seededHist[seeded[0]>>56]++
		}
		assert.Less(t, chiSquare(maskedHist[:], trials), 370.0, "masked share of %v", secret)
		assert.Less(t, chiSquare(seededHist[:], trials), 370.0, "seeded share of %v", secret)
	}
}

func chiSquare(hist []int, n int) float64 {
	want := float64(n) / float64(len(hist))
	var chi float64
	for _, h := range hist {
		d := float64(h) - want
		chi += d * d / want
	}
	return chi
}

func TestWireRoundTrip(t *testing.T) {
	s := Share{1, math.MaxUint64, 0, 42}
	b, err := s.MarshalBinary()
	require.NoError(t, err)
	assert.Len(t, b, 8+8*4)
	var got Share
	require.NoError(t, got.UnmarshalBinary(b))
	assert.Equal(t, s, got)

	m := TruncationMessage{Masked: Masked(s)}
	m.Seed[0], m.Seed[31] = 7, 9
	b, err = m.MarshalBinary()
	require.NoError(t, err)
	var gm TruncationMessage
	require.NoError(t, gm.UnmarshalBinary(b))
	assert.Equal(t, m, gm)

	var seed Seed
	assert.ErrorIs(t, seed.UnmarshalBinary(make([]byte, 31)), ErrWire)
	assert.ErrorIs(t, got.UnmarshalBinary(b[:7]), ErrWire)
	assert.ErrorIs(t, got.UnmarshalBinary([]byte{255, 255, 255, 255, 255, 255, 255, 255, 1}), ErrWire, "announced length beyond the data")
	assert.ErrorIs(t, got.UnmarshalBinary(append(bytes.Clone(b[SeedSize:]), 0)), ErrWire, "trailing bytes")
}

func FuzzShareUnmarshal(f *testing.F) {
	b, _ := Share{1, 2, 3}.MarshalBinary()
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Share
		if err := s.UnmarshalBinary(data); err != nil {
			return
		}
		out, err := s.MarshalBinary()
		require.NoError(t, err)
		assert.Equal(t, data, out, "a decoded share encodes back to the same bytes")
	})
}

func FuzzTruncationMessageUnmarshal(f *testing.F) {
	m := TruncationMessage{Masked: Masked{5}}
	b, _ := m.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m TruncationMessage
		if m.UnmarshalBinary(data) == nil {
			out, err := m.MarshalBinary()
			require.NoError(t, err)
			assert.Equal(t, data, out)
		}
	})
}

// BenchmarkExpand draws a mask stream the size of the example's
// gradients with each derivation: v1, v2 from crypto/aes, and v2 from the
// vector AES kernel where the processor has one.
func BenchmarkExpand(b *testing.B) {
	for _, tc := range []struct {
		name string
		prg  MaskPRG
		vaes bool
	}{{"aes256", MaskAES256, false}, {"aes128-std", MaskAES128, false}, {"aes128", MaskAES128, true}} {
		b.Run(tc.name, func(b *testing.B) {
			if tc.vaes && !hasVAES {
				b.Skip("no AVX-512 vector AES on this processor")
			}
			defer func(old bool) { useVAES = old }(useVAES)
			useVAES = tc.vaes
			dst := make([]uint64, 407050)
			b.SetBytes(8 * int64(len(dst)))
			b.ReportAllocs()
			for b.Loop() {
				Expand(dst, Seed{}, Domain{PRG: tc.prg})
			}
		})
	}
}

func BenchmarkInteractiveTruncation(b *testing.B) {
	p := newProtocol(b, Config{})
	n := 407050
	x0, x1, t0, t1 := make(Product, n), make(Product, n), make(Share, n), make(Share, n)
	var msg TruncationMessage
	rng := newTestRand(1)
	b.SetBytes(8 * int64(n))
	b.ReportAllocs()
	for b.Loop() {
		if err := p.TruncateSend(rng, Domain{}, t0, x0, &msg); err != nil {
			b.Fatal(err)
		}
		if err := p.TruncateReceive(Domain{}, t1, x1, &msg); err != nil {
			b.Fatal(err)
		}
	}
}
