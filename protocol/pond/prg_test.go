package pond

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/internal/le"
)

// referenceStream is the mask stream as specified, computed the plain way
// with crypto/sha256 and crypto/aes, not with the package's derivation:
// SHA-256 over the version's label, the seed and the domain; AES-256-CTR
// from a zero counter under the whole hash (v1), or AES-128-CTR under its
// first half from the counter block in its second half (v2); over zeros,
// as little-endian words.
//
// In Z_2^32 (d.Ring) the label ends in "/z32" and the elements are the
// keystream's little-endian 4-byte words, zero-extended.
func referenceStream(t testing.TB, n int, seed Seed, d Domain) []uint64 {
	block, iv := referenceCipher(t, seed, d)
	b := make([]byte, 8*n)
	cipher.NewCTR(block, iv).XORKeyStream(b, b)
	w := make([]uint64, n)
	for i := range w {
		if d.Ring == Ring32 {
			w[i] = uint64(binary.LittleEndian.Uint32(b[4*i:]))
			continue
		}
		w[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return w
}

func referenceCipher(t testing.TB, seed Seed, d Domain) (cipher.Block, []byte) {
	label := map[MaskPRG]string{MaskAES256: "shareflow/pond/mask/v1\x00", MaskAES128: "shareflow/pond/mask/v2\x00"}[d.PRG.resolve()]
	if d.Member != "" {
		label = map[MaskPRG]string{MaskAES256: "shareflow/pond/member-mask/v1\x00", MaskAES128: "shareflow/pond/member-mask/v2\x00"}[d.PRG.resolve()]
	}
	require.NotEmpty(t, label, "a known PRG")
	if d.Ring == Ring32 {
		label = strings.TrimSuffix(label, "\x00") + "/z32\x00"
	}
	msg := append([]byte(label), seed[:]...)
	msg = binary.LittleEndian.AppendUint64(msg, uint64(len(d.Session)))
	msg = binary.LittleEndian.AppendUint64(msg, d.Iteration)
	msg = binary.LittleEndian.AppendUint64(msg, d.Tensor)
	msg = append(msg, byte(d.Purpose))
	msg = append(msg, d.Session...)
	if d.Member != "" {
		msg = binary.LittleEndian.AppendUint64(msg, uint64(len(d.Member)))
		msg = append(msg, d.Member...)
	}
	h := sha256.Sum256(msg)
	key, iv := h[:], make([]byte, aes.BlockSize)
	if d.PRG.resolve() == MaskAES128 {
		key, iv = h[:16], h[16:]
	}
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	return block, iv
}

// Known answers, computed outside Go with Python's hashlib and OpenSSL
// (openssl enc -aes-256-ctr / -aes-128-ctr over 32 zero bytes): the first
// four words of each version's stream for one seed and domain. v1 is the
// derivation every earlier release used, unchanged.
func TestMaskStreamKnownAnswers(t *testing.T) {
	var seed Seed
	for i := range seed {
		seed[i] = byte(i)
	}
	d := Domain{Session: "kat", Iteration: 7, Tensor: 1<<32 | 3, Purpose: PurposeInput}
	for prg, want := range map[MaskPRG][]uint64{
		MaskAES256: {0x18f94400820c4253, 0x560a2d6ae7319f38, 0x639616b3bc10c7ab, 0x17469abe09fa87da},
		MaskAES128: {0x2b3f27f4122044c0, 0xa00a29eac105e69e, 0x542e8ddf5b298ac3, 0xef21b930575e1d84},
	} {
		d.PRG = prg
		got := make([]uint64, 4)
		Expand(got, seed, d)
		assert.Equal(t, want, got, "%v", prg)
		assert.Equal(t, want, referenceStream(t, 4, seed, d), "%v, the test's reference", prg)
	}
	// Z_2^32: 4-byte elements under labels of their own (".../v1/z32").
	d.Ring = Ring32
	for prg, want := range map[MaskPRG][]uint64{
		MaskAES256: {0x98699794, 0x7a9b680f, 0x50c95b42, 0x1c4823fa, 0xe433727, 0xfdf74cb7, 0xa6263b8f, 0x2d4e0157},
		MaskAES128: {0xa35d3d45, 0x9ff81a48, 0x58a3f64f, 0xa943dfc2, 0xe5496482, 0x9e557b2a, 0x6f99ac3f, 0x4828d4c5},
	} {
		d.PRG = prg
		got := make([]uint64, 8)
		Expand(got, seed, d)
		assert.Equal(t, want, got, "%v in Z_2^32", prg)
		assert.Equal(t, want, referenceStream(t, 8, seed, d), "%v in Z_2^32, the test's reference", prg)
	}
	d.Ring = 0

	d.PRG = 0
	got := make([]uint64, 4)
	Expand(got, seed, d)
	assert.Equal(t, []uint64{0x2b3f27f4122044c0, 0xa00a29eac105e69e, 0x542e8ddf5b298ac3, 0xef21b930575e1d84}, got, "the zero PRG is v2")
	d.PRG = 3
	assert.PanicsWithValue(t, "pond: mask stream with unknown MaskPRG(3)", func() { Expand(got, seed, d) })
}

// v2's counter starts anywhere in the 128-bit space: ExpandAt far into a
// stream carries from the counter's low 64 bits into its high ones, as
// counter mode does.
func TestMaskStreamCounterCarries(t *testing.T) {
	const off = 1 << 62 // words: 2^61 blocks in
	d := Domain{Session: "carry", PRG: MaskAES128}
	var seed Seed
	for ; ; seed[0]++ {
		_, iv := referenceCipher(t, seed, d)
		if binary.BigEndian.Uint64(iv[8:]) >= math.MaxUint64-off/2+1 {
			break // the low half overflows within off/2 blocks
		}
	}
	block, iv := referenceCipher(t, seed, d)
	ctr := new(big.Int).SetBytes(iv)
	ctr.Add(ctr, big.NewInt(off/2))
	ctr.Mod(ctr, new(big.Int).Lsh(big.NewInt(1), 128))
	var in, out [aes.BlockSize]byte
	ctr.FillBytes(in[:])
	block.Encrypt(out[:], in[:])
	require.NotEqual(t, binary.BigEndian.Uint64(iv[:8]), binary.BigEndian.Uint64(in[:8]), "the high half changed")

	got := make([]uint64, 2)
	ExpandAt(got, seed, d, off)
	assert.Equal(t, []uint64{binary.LittleEndian.Uint64(out[:]), binary.LittleEndian.Uint64(out[8:])}, got)
}

// The mask stream is produced a chunk at a time; whatever the length and
// however it is read or split into ranges, it is the one AES-CTR stream.
func TestMaskStreamChunking(t *testing.T) {
	for _, prg := range []MaskPRG{MaskAES256, MaskAES128} {
		for _, ring := range []int{Ring64, Ring32} {
			for _, vaes := range []bool{true, false} {
				if vaes && (!hasVAES || prg != MaskAES128) {
					continue
				}
				t.Run(fmt.Sprintf("%v/ring%d/vaes=%v", prg, ring, vaes), func(t *testing.T) {
					defer func(old bool) { useVAES = old }(useVAES)
					useVAES = vaes
					testMaskStreamChunking(t, prg, ring)
				})
			}
		}
	}
}

func testMaskStreamChunking(t *testing.T, prg MaskPRG, ring int) {
	seed := Seed{1, 2, 3}
	d := Domain{Session: "chunks", Iteration: 2, Tensor: 5, Purpose: PurposeInput, PRG: prg, Ring: ring}
	per := d.perBlock()
	for _, n := range []int{0, 1, 3, maskChunk - 1, maskChunk, maskChunk + 1, 3*maskChunk + 5} {
		want := referenceStream(t, n, seed, d)

		got := make([]uint64, n)
		Expand(got, seed, d)
		assert.Equal(t, want, got, "Expand, %d words", n)

		// read in uneven pieces
		m := newMaskStream(seed, d)
		pieces := make([]uint64, n)
		for off, step := 0, 1; off < n; off, step = off+step, step*3+1 {
			m.read(pieces[off:min(off+step, n)])
		}
		assert.Equal(t, want, pieces, "read in pieces, %d words", n)

		base := make([]uint64, n)
		for i := range base {
			base[i] = math.MaxUint64 - uint64(i)
		}
		sum := append([]uint64(nil), base...)
		AddExpand(sum, seed, d)
		for i := range sum {
			require.Equal(t, base[i]+want[i], sum[i], "AddExpand, word %d of %d", i, n)
		}

		// in ranges at block offsets, as a caller splitting across cores does
		ranged := make([]uint64, n)
		rangedSum := append([]uint64(nil), base...)
		for _, r := range blockRanges(n, per) {
			ExpandAt(ranged[r[0]:r[1]], seed, d, r[0])
			AddExpandAt(rangedSum[r[0]:r[1]], seed, d, r[0])
		}
		assert.Equal(t, want, ranged, "ExpandAt in ranges, %d words", n)
		assert.Equal(t, sum, rangedSum, "AddExpandAt in ranges, %d words", n)

		if ring != Ring32 {
			continue
		}
		// The keystream's bytes are the elements' wire form, read in
		// uneven pieces into aligned and unaligned memory.
		wire := make([]byte, 4*n)
		for i, w := range want {
			binary.LittleEndian.PutUint32(wire[4*i:], uint32(w))
		}
		for _, shift := range []int{0, 1} {
			buf := make([]byte, 4*n+shift)[shift:]
			m := newMaskStream(seed, d)
			for off, step := 0, 1; off < len(buf); off, step = off+step, step*5+3 {
				m.keystream(buf[off:min(off+step, len(buf))])
			}
			assert.Equal(t, wire, buf, "keystream in pieces, %d words, shift %d", n, shift)
		}
	}
	assert.Panics(t, func() { ExpandAt(make([]uint64, 2), seed, d, per+1) }, "an offset that is not on a block")
	if ring == Ring32 {
		assert.Panics(t, func() { ExpandAt(make([]uint64, 2), seed, d, 2) }, "half a block of 4-byte elements")
	}
}

// blockRanges splits [0, n) into uneven ranges that start at multiples of
// per.
func blockRanges(n, per int) [][2]int {
	var out [][2]int
	for lo, size := 0, per; lo < n; lo, size = lo+size, size*5 {
		out = append(out, [2]int{lo, min(lo+size, n)})
	}
	return out
}

// EncodeAndShare works chunk by chunk; split into ranges with one seed,
// EncodeAndMaskAt computes the same share, a bad element past the first
// chunk or range is named by its index in the whole tensor, and a failed
// EncodeAndShare clears the half-written share.
func TestEncodeAndShareAcrossChunks(t *testing.T) {
	p := newProtocol(t, Config{})
	n := 5*maskChunk + 7
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(i%97) - 48.25
	}
	d := Domain{Session: "s", Tensor: 1}
	masked := make(Share, n)
	seed, err := p.EncodeAndShare(newTestRand(3), d, masked, x)
	require.NoError(t, err)

	sum := append(Share(nil), masked...)
	AddSeedShare(sum, seed, d)
	got := make([]float64, n)
	p.Decode(got, sum)
	assert.Equal(t, x, got, "masked + seed share decodes to x (all values exact in 16 fractional bits)")

	ranged := make(Share, n)
	for _, r := range blockRanges(n, 2) {
		require.NoError(t, p.EncodeAndMaskAt(ranged[r[0]:r[1]], x[r[0]:r[1]], seed, d, r[0]))
	}
	assert.Equal(t, masked, ranged, "ranges with one seed make one share")

	x[n-2] = math.NaN()
	x[maskChunk+3] = math.Inf(-1)
	_, err = p.EncodeAndShare(newTestRand(4), d, masked, x)
	var re *RangeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, maskChunk+3, re.Index)
	assert.Equal(t, make(Share, n), masked, "no part of the mask is left behind")

	x[maskChunk+3] = 0
	_, err = p.EncodeAndShare(newTestRand(5), d, masked, x)
	require.ErrorAs(t, err, &re)
	assert.Equal(t, n-2, re.Index)

	lo := (n - 10) &^ 1 // an even offset
	require.ErrorAs(t, p.EncodeAndMaskAt(masked[lo:], x[lo:], seed, d, lo), &re)
	assert.Equal(t, n-2, re.Index, "an index in the whole tensor, not in the range")
}

// EncodeAndMaskInPlaceAt computes EncodeAndMaskAt's share, both where x
// lies and into a buffer of its own, over ranges with one seed, for both
// mask PRGs; a bad element is named by its index in the whole tensor.
func TestEncodeAndMaskInPlace(t *testing.T) {
	for _, prg := range []MaskPRG{MaskAES256, MaskAES128} {
		p := newProtocol(t, Config{MaskPRG: prg})
		n := 5*maskChunk + 7
		x := make([]float64, n)
		for i := range x {
			x[i] = float64(i%97) - 48.25
		}
		seed, err := NewSeed(newTestRand(6))
		require.NoError(t, err)
		d := p.Domain("s", 1, 2)
		want := make(Share, n)
		require.NoError(t, p.EncodeAndMaskAt(want, x, seed, d, 0))

		apart := make(Share, n)
		inPlace := append([]float64(nil), x...)
		words := le.Float64Words(inPlace)
		for _, r := range blockRanges(n, 2) {
			require.NoError(t, p.EncodeAndMaskInPlaceAt(apart[r[0]:r[1]], x[r[0]:r[1]], seed, d, r[0]))
			require.NoError(t, p.EncodeAndMaskInPlaceAt(words[r[0]:r[1]], inPlace[r[0]:r[1]], seed, d, r[0]))
		}
		assert.Equal(t, want, apart, "%v: into a buffer of its own", prg)
		assert.Equal(t, want, Share(words), "%v: where x lies", prg)

		x[maskChunk+3] = math.NaN()
		var re *RangeError
		require.ErrorAs(t, p.EncodeAndMaskInPlaceAt(le.Float64Words(x[2:]), x[2:], seed, d, 2), &re)
		assert.Equal(t, maskChunk+3, re.Index)
	}
}

// A member's input is masked by a stream of its own: the member enters
// the key (under labels of their own, the member length-prefixed after the
// session), as the reference derivation says, for both versions; without
// a member the streams are those of TestMaskStreamKnownAnswers.
func TestMaskStreamMember(t *testing.T) {
	seed := Seed{9, 8, 7}
	for _, prg := range []MaskPRG{MaskAES256, MaskAES128} {
		d := Domain{Session: "s", Iteration: 3, Tensor: 7<<32 | 1, Purpose: PurposeInput, PRG: prg}
		seen := map[[4]uint64]string{}
		for _, dom := range []Domain{
			d,
			{Session: d.Session, Iteration: 3, Tensor: d.Tensor, Purpose: PurposeInput, PRG: prg, Member: "data-owner-1"},
			{Session: d.Session, Iteration: 3, Tensor: d.Tensor, Purpose: PurposeInput, PRG: prg, Member: "data-owner-2"},
			{Session: "ab", Iteration: 3, Tensor: d.Tensor, Purpose: PurposeInput, PRG: prg, Member: "c"},
			{Session: "a", Iteration: 3, Tensor: d.Tensor, Purpose: PurposeInput, PRG: prg, Member: "bc"},
		} {
			var got [4]uint64
			Expand(got[:], seed, dom)
			assert.Equal(t, referenceStream(t, 4, seed, dom), got[:], "%v, member %q", prg, dom.Member)
			other, dup := seen[got]
			assert.False(t, dup, "%v: member %q has the stream of %q", prg, dom.Member, other)
			seen[got] = dom.Session + "/" + dom.Member
		}
	}
}
