package mnist

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime/metrics"
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

// streamOnly hides everything of a reader but Read, so that the decoders
// take their streaming path even for a plain file.
type streamOnly struct{ io.Reader }

// countingReader is a seekable reader that counts the bytes read from it.
type countingReader struct {
	*bytes.Reader
	read int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	c.read += n
	return n, err
}

// readers returns the ways the range decoders meet a file: seekable (the
// plain file is read only at the range) and as a stream.
func readers(data []byte) map[string]io.Reader {
	return map[string]io.Reader{
		"seekable": bytes.NewReader(data),
		"stream":   streamOnly{bytes.NewReader(data)},
	}
}

func TestDecodeRange(t *testing.T) {
	const n, rows, cols = 9, 3, 4
	img := randomImages(t, 11, n, rows, cols)
	labels := randomLabels(11, n)
	ranges := [][2]int{{0, n}, {0, 1}, {8, 9}, {2, 7}, {4, 5}}
	for _, gz := range []bool{false, true} {
		imgFile, labFile := encodeImages(t, img, gz), encodeLabels(t, labels, gz)
		for _, r := range ranges {
			from, to := r[0], r[1]
			for kind := range readers(nil) {
				name := fmt.Sprintf("gzip=%v/%s/[%d,%d)", gz, kind, from, to)
				t.Run(name, func(t *testing.T) {
					got, err := DecodeImageRange(readers(imgFile)[kind], "images", from, to)
					require.NoError(t, err)
					assert.Equal(t, &Images{N: to - from, Rows: rows, Cols: cols, Pixels: img.Pixels[from*rows*cols : to*rows*cols]}, got)
					gotLabels, err := DecodeLabelRange(readers(labFile)[kind], "labels", from, to)
					require.NoError(t, err)
					assert.Equal(t, labels[from:to], gotLabels)
				})
			}
		}
	}
}

// A seekable plain file is read only at its header and the range asked.
func TestDecodeRangeSeeksPastOtherImages(t *testing.T) {
	const n, rows, cols = 100, 28, 28
	img := randomImages(t, 12, n, rows, cols)
	r := &countingReader{Reader: bytes.NewReader(encodeImages(t, img, false))}
	got, err := DecodeImageRange(r, "images", 40, 50)
	require.NoError(t, err)
	assert.Equal(t, img.Pixels[40*rows*cols:50*rows*cols], got.Pixels)
	assert.Equal(t, 2+16+10*rows*cols, r.read, "the gzip sniff, the header and ten images")
}

// A gzipped file is read to its end, but the images outside the range are
// discarded as they pass: decoding one image of 4 MB allocates far less
// than the file.
func TestDecodeRangeStreamKeepsOnlyTheRange(t *testing.T) {
	const n, rows, cols = 5000, 28, 28
	img := randomImages(t, 13, n, rows, cols)
	gz := encodeImages(t, img, true)
	allocated := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	before := allocated()
	got, err := DecodeImageRange(bytes.NewReader(gz), "images.gz", n-1, n)
	after := allocated()
	require.NoError(t, err)
	assert.Equal(t, img.Pixels[(n-1)*rows*cols:], got.Pixels)
	assert.Less(t, after-before, uint64(len(img.Pixels)/8), "bytes allocated to decode one image of %d", len(img.Pixels))
}

func TestDecodeRangeErrors(t *testing.T) {
	const n = 6
	img := randomImages(t, 14, n, 5, 2)
	labels := randomLabels(14, n)
	plain, gz := encodeImages(t, img, false), encodeImages(t, img, true)
	plainLabels := encodeLabels(t, labels, false)
	corruptGz := append([]byte(nil), gz...)
	corruptGz[len(corruptGz)-6] ^= 0xff // CRC-32 in the gzip trailer

	tests := []struct {
		name     string
		images   bool
		data     []byte
		from, to int
		want     error
	}{
		{"empty range", true, plain, 2, 2, ErrRange},
		{"reversed range", true, gz, 3, 1, ErrRange},
		{"negative start", true, plain, -1, 2, ErrRange},
		{"beyond the file", true, plain, 4, n + 1, ErrRange},
		{"beyond the file gz", true, gz, n, n + 1, ErrRange},
		{"labels beyond the file", false, plainLabels, 0, n + 1, ErrRange},
		{"empty labels range", false, plainLabels, 0, 0, ErrRange},
		// A damaged file is refused whichever part is asked of it.
		{"truncated after the range", true, plain[:len(plain)-1], 0, 1, ErrTruncated},
		{"truncated gz after the range", true, gzipBytes(t, plain[:len(plain)-1]), 0, 1, ErrTruncated},
		{"gzip stream cut", true, gz[:len(gz)/2], 0, 1, ErrTruncated},
		{"header only", true, plain[:16], 0, 1, ErrTruncated},
		{"short header", true, plain[:7], 0, 1, ErrTruncated},
		{"empty file", true, nil, 0, 1, ErrTruncated},
		{"trailing data", true, append(append([]byte(nil), plain...), 0), 0, 1, ErrTrailingData},
		{"gzip checksum", true, corruptGz, 0, 1, ErrGzip},
		{"labels truncated", false, plainLabels[:len(plainLabels)-1], 0, 1, ErrTruncated},
		{"labels file as images", true, plainLabels, 0, 1, ErrMagic},
	}
	for _, tc := range tests {
		for kind, r := range readers(tc.data) {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				var err error
				if tc.images {
					_, err = DecodeImageRange(r, "some/file", tc.from, tc.to)
				} else {
					_, err = DecodeLabelRange(r, "some/file", tc.from, tc.to)
				}
				require.Error(t, err)
				assert.ErrorIs(t, err, tc.want)
				var fe *FileError
				require.ErrorAs(t, err, &fe)
				assert.Equal(t, "some/file", fe.File)
			})
		}
	}
}

// FuzzDecodeRange checks that a range read agrees with the whole file
// decoded and cut, on either reading path, and that it refuses what the
// whole-file decoder refuses.
func FuzzDecodeRange(f *testing.F) {
	img := &Images{N: 4, Rows: 2, Cols: 2, Pixels: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}}
	f.Add(encodeImages(f, img, false), 1, 3)
	f.Add(encodeImages(f, img, true), 0, 4)
	f.Add(encodeImages(f, img, false), 3, 5)
	f.Add(encodeLabels(f, []uint8{1, 9, 3}, true), 2, 3)
	f.Add(encodeLabels(f, []uint8{1, 9, 3}, false), 0, 0)
	f.Add([]byte{0, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 28, 0, 0, 0, 28}, 0, 1)
	f.Fuzz(func(t *testing.T, data []byte, from, to int) {
		whole, wholeErr := DecodeImages(bytes.NewReader(data), "fuzz")
		var got [2]*Images
		var errs [2]error
		got[0], errs[0] = DecodeImageRange(bytes.NewReader(data), "fuzz", from, to)
		got[1], errs[1] = DecodeImageRange(streamOnly{bytes.NewReader(data)}, "fuzz", from, to)
		inRange := wholeErr == nil && 0 <= from && from < to && to <= whole.N
		for k, err := range errs {
			switch {
			case inRange && err != nil:
				t.Fatalf("path %d: range [%d, %d) of a good file of %d images: %v", k, from, to, whole.N, err)
			case inRange:
				p := whole.Rows * whole.Cols
				if got[k].N != to-from || got[k].Rows != whole.Rows || got[k].Cols != whole.Cols ||
					!bytes.Equal(got[k].Pixels, whole.Pixels[from*p:to*p]) {
					t.Fatalf("path %d: range [%d, %d) differs from the whole file cut", k, from, to)
				}
			case err == nil:
				t.Fatalf("path %d: range [%d, %d) decoded where the whole file gives %v", k, from, to, wholeErr)
			case wholeErr == nil && !errors.Is(err, ErrRange):
				t.Fatalf("path %d: range [%d, %d) of %d images: %v, want ErrRange", k, from, to, whole.N, err)
			}
		}

		labels, wholeErr := DecodeLabels(bytes.NewReader(data), "fuzz")
		for k, r := range []io.Reader{bytes.NewReader(data), streamOnly{bytes.NewReader(data)}} {
			part, err := DecodeLabelRange(r, "fuzz", from, to)
			inRange := wholeErr == nil && 0 <= from && from < to && to <= len(labels)
			switch {
			case inRange && (err != nil || !bytes.Equal(part, labels[from:to])):
				t.Fatalf("path %d: labels [%d, %d) of a good file of %d: %v", k, from, to, len(labels), err)
			case !inRange && err == nil:
				t.Fatalf("path %d: labels [%d, %d) decoded where the whole file gives %v", k, from, to, wholeErr)
			}
		}
	})
}
