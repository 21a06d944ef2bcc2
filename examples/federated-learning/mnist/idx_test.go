package mnist

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// randomImages returns n deterministic pseudo-random images of rows×cols.
func randomImages(t testing.TB, seed uint64, n, rows, cols int) *Images {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	px := make([]byte, n*rows*cols)
	for i := range px {
		px[i] = byte(rng.IntN(256))
	}
	return &Images{N: n, Rows: rows, Cols: cols, Pixels: px}
}

func randomLabels(seed uint64, n int) []uint8 {
	rng := rand.New(rand.NewPCG(seed, 2))
	l := make([]uint8, n)
	for i := range l {
		l[i] = uint8(rng.IntN(10))
	}
	return l
}

func encodeImages(t testing.TB, img *Images, gz bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	if gz {
		zw := gzip.NewWriter(&buf)
		require.NoError(t, EncodeImages(zw, img))
		require.NoError(t, zw.Close())
	} else {
		require.NoError(t, EncodeImages(&buf, img))
	}
	return buf.Bytes()
}

func encodeLabels(t testing.TB, labels []uint8, gz bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	if gz {
		zw := gzip.NewWriter(&buf)
		require.NoError(t, EncodeLabels(zw, labels))
		require.NoError(t, zw.Close())
	} else {
		require.NoError(t, EncodeLabels(&buf, labels))
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name          string
		n, rows, cols int
		gz            bool
	}{
		{"plain 28x28", 7, 28, 28, false},
		{"gzip 28x28", 7, 28, 28, true},
		{"plain single pixel", 1, 1, 1, false},
		{"gzip non-square", 3, 5, 9, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := randomImages(t, uint64(i), tc.n, tc.rows, tc.cols)
			got, err := DecodeImages(bytes.NewReader(encodeImages(t, img, tc.gz)), "images")
			require.NoError(t, err)
			assert.Equal(t, img, got)

			labels := randomLabels(uint64(i), tc.n)
			gotLabels, err := DecodeLabels(bytes.NewReader(encodeLabels(t, labels, tc.gz)), "labels")
			require.NoError(t, err)
			assert.Equal(t, labels, gotLabels)
		})
	}
}

func TestHeaderLayout(t *testing.T) {
	img := &Images{N: 2, Rows: 2, Cols: 3, Pixels: []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}}
	b := encodeImages(t, img, false)
	require.Len(t, b, 16+12)
	assert.Equal(t, []byte{0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3}, b[:16])
	l := encodeLabels(t, []uint8{4, 2}, false)
	assert.Equal(t, []byte{0, 0, 8, 1, 0, 0, 0, 2, 4, 2}, l)
}

func TestDecodeErrors(t *testing.T) {
	img := randomImages(t, 9, 4, 6, 5)
	plain := encodeImages(t, img, false)
	gz := encodeImages(t, img, true)
	labels := encodeLabels(t, randomLabels(9, 4), false)

	header := func(magic uint32, dims ...uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, magic)
		for _, d := range dims {
			b = binary.BigEndian.AppendUint32(b, d)
		}
		return b
	}
	corruptGz := append([]byte(nil), gz...)
	corruptGz[len(corruptGz)-6] ^= 0xff // CRC-32 in the gzip trailer

	tests := []struct {
		name   string
		images bool
		data   []byte
		want   error
	}{
		{"empty images", true, nil, ErrTruncated},
		{"empty labels", false, nil, ErrTruncated},
		{"short header", true, plain[:10], ErrTruncated},
		{"payload cut", true, plain[:len(plain)-1], ErrTruncated},
		{"payload cut gz", true, gzipBytes(t, plain[:len(plain)-7]), ErrTruncated},
		{"gzip stream cut", true, gz[:len(gz)/2], ErrTruncated},
		{"gzip checksum", true, corruptGz, ErrGzip},
		{"labels cut", false, labels[:len(labels)-1], ErrTruncated},
		{"labels file as images", true, labels, ErrMagic},
		{"images file as labels", false, plain, ErrMagic},
		{"float images", true, header(0x00000d03, 1, 1, 1), ErrMagic},
		{"zero count", true, header(ImagesMagic, 0, 28, 28), ErrDims},
		{"zero rows", true, header(ImagesMagic, 1, 0, 28), ErrDims},
		{"huge side", true, header(ImagesMagic, 1, 1<<20, 1), ErrDims},
		{"huge count", true, header(ImagesMagic, 1<<30, 28, 28), ErrDims},
		{"huge payload", true, header(ImagesMagic, 1<<24, 1<<12, 1<<12), ErrDims},
		{"lying header", true, header(ImagesMagic, 60000, 28, 28), ErrTruncated},
		{"huge label count", false, header(LabelsMagic, 0xffffffff), ErrDims},
		{"zero labels", false, header(LabelsMagic, 0), ErrDims},
		{"trailing images", true, append(append([]byte(nil), plain...), 0), ErrTrailingData},
		{"trailing labels", false, append(append([]byte(nil), labels...), 1, 2), ErrTrailingData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.images {
				_, err = DecodeImages(bytes.NewReader(tc.data), "some/file")
			} else {
				_, err = DecodeLabels(bytes.NewReader(tc.data), "some/file")
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.want)
			var fe *FileError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, "some/file", fe.File)
			assert.Contains(t, err.Error(), "some/file")
		})
	}
}

func TestEncodeRejects(t *testing.T) {
	var buf bytes.Buffer
	assert.ErrorIs(t, EncodeImages(&buf, nil), ErrDims)
	assert.ErrorIs(t, EncodeImages(&buf, &Images{N: 2, Rows: 2, Cols: 2, Pixels: make([]byte, 7)}), ErrDims)
	assert.ErrorIs(t, EncodeImages(&buf, &Images{N: 0, Rows: 2, Cols: 2}), ErrDims)
	assert.ErrorIs(t, EncodeLabels(&buf, nil), ErrDims)
	assert.Zero(t, buf.Len())
}

func FuzzDecodeIDX(f *testing.F) {
	img := &Images{N: 2, Rows: 3, Cols: 2, Pixels: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}
	f.Add(encodeImages(f, img, false))
	f.Add(encodeImages(f, img, true))
	f.Add(encodeLabels(f, []uint8{1, 9, 3}, false))
	f.Add(encodeLabels(f, []uint8{1, 9, 3}, true))
	f.Add([]byte{0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 28, 0, 0, 0, 28})
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := DecodeImages(bytes.NewReader(data), "fuzz")
		if err == nil {
			if img.N*img.Rows*img.Cols != len(img.Pixels) {
				t.Fatalf("decoded %d pixels for %d×%d×%d", len(img.Pixels), img.N, img.Rows, img.Cols)
			}
			// What decodes must re-encode to an equivalent file.
			var buf bytes.Buffer
			if err := EncodeImages(&buf, img); err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			again, err := DecodeImages(&buf, "again")
			if err != nil || !bytes.Equal(again.Pixels, img.Pixels) {
				t.Fatalf("round trip failed: %v", err)
			}
		}
		labels, err := DecodeLabels(bytes.NewReader(data), "fuzz")
		if err == nil && len(labels) == 0 {
			t.Fatal("decoded an empty labels file without error")
		}
	})
}
