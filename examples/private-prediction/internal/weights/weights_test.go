package weights

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/examples/federated-learning/model"
)

var small = model.Architecture{Inputs: 5, Hidden: 3, Classes: 2}

func randomParams(t testing.TB, a model.Architecture, seed uint64) []*tensor.Dense {
	p, err := a.Init(rand.New(rand.NewPCG(seed, 0)))
	require.NoError(t, err)
	b := p[1].Data().([]float64)
	for i := range b {
		b[i] = float64(i) - 0.125
	}
	return p
}

// gz compresses raw with no header name or time, as Write does.
func gz(t testing.TB, raw []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(raw)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// raw builds an uncompressed stream with the given header and n values.
func raw(magic string, dims [3]uint32, values []float32) []byte {
	b := []byte(magic)
	for _, d := range dims {
		b = binary.LittleEndian.AppendUint32(b, d)
	}
	for _, v := range values {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	params := randomParams(t, small, 7)
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, small, params))

	a, got, err := Read(bytes.NewReader(buf.Bytes()), "round-trip")
	require.NoError(t, err)
	assert.Equal(t, small, a)
	require.Len(t, got, model.NumTensors)
	for i, shape := range small.ParamShapes() {
		want, err := model.Float64s(params[i], shape)
		require.NoError(t, err)
		have, err := model.Float64s(got[i], shape)
		require.NoError(t, err, "tensor %s", model.ParamName(i))
		for j := range want {
			assert.Equal(t, float64(float32(want[j])), have[j], "%s[%d] is the float32 rounding", model.ParamName(i), j)
		}
	}

	// The stream is the documented layout, gzipped.
	zr, err := gzip.NewReader(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	var plain bytes.Buffer
	_, err = plain.ReadFrom(zr)
	require.NoError(t, err)
	assert.Equal(t, HeaderSize+4*small.NumParams(), plain.Len())
	assert.Equal(t, Magic, plain.String()[:4])
	assert.Equal(t, uint32(5), binary.LittleEndian.Uint32(plain.Bytes()[4:]))

	// Equal parameters give equal files.
	var again bytes.Buffer
	require.NoError(t, Write(&again, small, params))
	assert.Equal(t, buf.Bytes(), again.Bytes())
}

func TestWriteRefuses(t *testing.T) {
	params := randomParams(t, small, 1)
	var buf bytes.Buffer
	assert.ErrorContains(t, Write(&buf, small, params[:3]), "has 3 tensors")

	params[2].Data().([]float64)[1] = 1e39
	assert.ErrorContains(t, Write(&buf, small, params), "tensor W2 element 1 is 1e+39, beyond float32")

	params[2].Data().([]float64)[1] = math.NaN()
	assert.ErrorContains(t, Write(&buf, small, params), "W2: element 1 is NaN")
}

func TestReadRefuses(t *testing.T) {
	n := small.NumParams()
	values := make([]float32, n)
	dims := [3]uint32{5, 3, 2}
	nan := append([]float32(nil), values...)
	nan[16] = float32(math.Inf(1)) // W1 has 15 elements, b1 starts at 15
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"not gzip", raw(Magic, dims, values), "gzip: invalid header"},
		{"short header", gz(t, []byte("SFW1\x05")), "header: unexpected EOF"},
		{"magic", gz(t, raw("SFW2", dims, values)), `magic "SFW2", want "SFW1"`},
		{"dimension too small", gz(t, raw(Magic, [3]uint32{5, 1, 2}, values)), "hidden = 1"},
		{"dimension too large", gz(t, raw(Magic, [3]uint32{5, 1 << 31, 2}, values)), "hidden = 65537"},
		{"too many parameters", gz(t, raw(Magic, [3]uint32{65536, 65536, 2}, nil)), "more than 16777216"},
		{"truncated payload", gz(t, raw(Magic, dims, values[:20])), "tensor W2: 2 of 6 values, then unexpected EOF"},
		{"trailing data", gz(t, append(raw(Magic, dims, values), 0)), "data after the last parameter"},
		{"not finite", gz(t, raw(Magic, dims, nan)), "tensor b1 element 1 is +Inf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Read(bytes.NewReader(tt.file), "weights.gz")
			require.ErrorIs(t, err, ErrFormat)
			assert.ErrorContains(t, err, "weights.gz")
			assert.ErrorContains(t, err, tt.want)
		})
	}
}

func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	require.NoError(f, Write(&buf, small, randomParams(f, small, 3)))
	f.Add(buf.Bytes())
	f.Add(gz(f, raw(Magic, [3]uint32{5, 3, 2}, make([]float32, 3))))
	f.Add(gz(f, raw(Magic, [3]uint32{65536, 256, 2}, nil)))
	f.Fuzz(func(t *testing.T, file []byte) {
		a, params, err := Read(bytes.NewReader(file), "fuzz")
		if err != nil {
			require.ErrorIs(t, err, ErrFormat)
			return
		}
		require.NoError(t, a.CheckParams("decoded", params))
	})
}
