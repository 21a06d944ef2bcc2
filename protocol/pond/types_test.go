package pond

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ConfigAlternatives gives, for every field of Config, a valid value other
// than the default. TestConfigEncodingCoversEveryField fails when a field
// has none, so that a new field cannot be left out of the encoding that
// plan fingerprints hash.
var configAlternatives = map[string]func(*Config){
	"FracBits":   func(c *Config) { c.FracBits = 20 },
	"IntBits":    func(c *Config) { c.IntBits = 8 },
	"StatGap":    func(c *Config) { c.StatGap = 16 },
	"Truncation": func(c *Config) { c.Truncation = Local },
	"MaskPRG":    func(c *Config) { c.MaskPRG = MaskAES256 },
	"Ring":       func(c *Config) { c.Ring = Ring32 },
}

func TestConfigEncodingCoversEveryField(t *testing.T) {
	base, err := Config{}.MarshalBinary()
	require.NoError(t, err)
	spelt, err := Config{FracBits: DefaultFracBits, IntBits: 10, StatGap: DefaultStatGap, Truncation: Interactive, MaskPRG: MaskAES128, Ring: Ring64}.MarshalBinary()
	require.NoError(t, err)
	assert.Equal(t, base, spelt, "the zero config and the defaults spelt out compute alike, so encode alike")

	fields := reflect.TypeFor[Config]().NumField()
	assert.Equal(t, configSize, 1+4*fields, "the encoding has one uint32 per field of Config")
	for i := range fields {
		name := reflect.TypeFor[Config]().Field(i).Name
		t.Run(name, func(t *testing.T) {
			change, ok := configAlternatives[name]
			require.True(t, ok, "Config.%s has no alternative value: add one, and encode the field in AppendBinary", name)
			var cfg Config
			change(&cfg)
			_, err := New(cfg)
			require.NoError(t, err, "the alternative must be valid")
			b, err := cfg.MarshalBinary()
			require.NoError(t, err)
			assert.NotEqual(t, base, b, "changing %s must change the encoding", name)

			var got Config
			require.NoError(t, got.UnmarshalBinary(b))
			p, err := New(cfg)
			require.NoError(t, err)
			assert.Equal(t, p.Config(), got, "round trip, defaults filled in")
		})
	}
}

func TestConfigUnmarshalRefusesBadData(t *testing.T) {
	b, err := Config{}.MarshalBinary()
	require.NoError(t, err)
	var c Config
	field := func(i int, v uint32) []byte { // b with field i set to v
		out := append([]byte(nil), b...)
		binary.LittleEndian.PutUint32(out[1+4*i:], v)
		return out
	}
	for name, data := range map[string][]byte{
		"empty":           nil,
		"short":           b[:len(b)-1],
		"long":            append(append([]byte(nil), b...), 0),
		"other version":   append([]byte{configVersion + 1}, b[1:]...),
		"version 1":       append([]byte{1}, b[1:1+4*4]...), // before MaskPRG
		"version 2":       append([]byte{2}, b[1:1+5*4]...), // before Ring
		"Ring zero":       field(5, 0),
		"Ring 48":         field(5, 48),
		"invalid":         append([]byte{configVersion}, make([]byte, len(b)-1)...),
		"huge field":      field(0, 0xffffffff),
		"MaskPRG zero":    field(4, 0),
		"MaskPRG unknown": field(4, 3),
		"MaskPRG 257":     field(4, 257), // would be MaskAES256 as a byte
	} {
		assert.ErrorIs(t, c.UnmarshalBinary(data), ErrWire, name)
	}
	assert.Equal(t, Config{}, c, "a refused encoding leaves the config alone")
}

func FuzzConfigUnmarshal(f *testing.F) {
	b, _ := Config{}.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Config
		if c.UnmarshalBinary(data) != nil {
			return
		}
		_, err := New(c)
		require.NoError(t, err, "a decoded config is valid")
		out, err := c.MarshalBinary()
		require.NoError(t, err)
		assert.Equal(t, data, out)
	})
}

// A range split of interactive truncation, as a caller spreading it over
// cores makes, gives the same shares and message as one call.
func TestTruncationInRanges(t *testing.T) {
	p := newProtocol(t, Config{})
	n := 3*maskChunk + 9
	x0, x1 := make(Product, n), make(Product, n)
	for i := range x0 {
		x0[i], x1[i] = uint64(i)*0x9e3779b97f4a7c15, -uint64(i)*77
	}
	d := Domain{Session: "r", Tensor: 4}
	var msg TruncationMessage
	t0, t1 := make(Share, n), make(Share, n)
	require.NoError(t, p.TruncateSend(newTestRand(9), d, t0, x0, &msg))
	require.NoError(t, p.TruncateReceive(d, t1, x1, &msg))

	rng := newTestRand(9)
	mask, err := NewSeed(rng)
	require.NoError(t, err)
	fresh, err := NewSeed(rng)
	require.NoError(t, err)
	r0, r1, c0 := make(Share, n), make(Share, n), make(Masked, n)
	for _, r := range blockRanges(n, 2) {
		lo, hi := r[0], r[1]
		p.TruncateSendAt(r0[lo:hi], c0[lo:hi], x0[lo:hi], mask, fresh, d, lo)
	}
	for _, r := range blockRanges(n, 2) {
		lo, hi := r[0], r[1]
		p.TruncateReceiveAt(r1[lo:hi], x1[lo:hi], c0[lo:hi], fresh, d, lo)
	}
	assert.Equal(t, msg.Seed, fresh)
	assert.Equal(t, msg.Masked, c0)
	assert.Equal(t, t0, r0)
	assert.Equal(t, t1, r1)

	msg.Masked = msg.Masked[1:]
	assert.ErrorContains(t, p.TruncateReceive(d, t1, x1, &msg), "truncation message has", "a short message from the peer is an error, not a panic")
}

func TestServerRole(t *testing.T) {
	assert.Equal(t, "server0", Server0.String())
	assert.Equal(t, "server1", Server1.String())
	assert.Equal(t, "Server(2)", Server(2).String())
	p := newProtocol(t, Config{})
	assert.PanicsWithValue(t, "pond: TruncateLocal: party Server(2), want Server0 or Server1", func() {
		p.TruncateLocal(Server(2), make(Share, 1), make(Product, 1))
	})
}

func TestEncodeConstantRefusalsAreNamed(t *testing.T) {
	p := newProtocol(t, Config{})
	for _, c := range []float64{1024, -5000, 1e-7, 0x1p-17} {
		_, err := p.EncodeConstant(c)
		assert.ErrorIs(t, err, ErrConstant, "%g", c)
	}
	for _, c := range []float64{0, 1023.5, -0.5, 0x1p-16, 0x1p-17 * 1.01} {
		_, err := p.EncodeConstant(c)
		assert.NoError(t, err, "%g", c)
	}
}
