package mnist

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic numbers of the two IDX file kinds used by MNIST and Fashion-MNIST.
// The third byte is the element type (0x08, unsigned byte) and the fourth
// the number of dimensions.
const (
	ImagesMagic = 0x00000803
	LabelsMagic = 0x00000801
)

// Limits the decoder enforces before it reads any payload. They are far above
// what MNIST-like data needs (60,000 images of 28×28 pixels) and stop a bad or
// hostile header from driving the decoder into huge reads.
const (
	// MaxCount is the largest number of images or labels in one file.
	MaxCount = 1 << 24
	// MaxSide is the largest number of pixel rows or columns of one image.
	MaxSide = 1 << 12
	// MaxPayload is the largest number of payload bytes (count × rows × cols)
	// in one images file.
	MaxPayload = 1 << 30
)

// Sentinel errors. Decoders return them wrapped in a *FileError that names
// the file, so test with errors.Is.
var (
	// ErrTruncated means the file ended before its header or payload did.
	ErrTruncated = errors.New("mnist: truncated IDX file")
	// ErrMagic means the file does not start with the expected magic number.
	ErrMagic = errors.New("mnist: wrong IDX magic number")
	// ErrDims means the header holds a zero, negative or oversized dimension.
	ErrDims = errors.New("mnist: bad IDX dimensions")
	// ErrTrailingData means the file holds bytes after its declared payload.
	ErrTrailingData = errors.New("mnist: trailing data after IDX payload")
	// ErrCountMismatch means an images file and its labels file disagree on
	// the number of examples.
	ErrCountMismatch = errors.New("mnist: image and label counts differ")
	// ErrGzip means the file starts like gzip but does not decompress.
	ErrGzip = errors.New("mnist: bad gzip stream")
)

// FileError reports a problem with one named file (or in-memory source).
type FileError struct {
	// File is the path or name of the source.
	File string
	// Err is the underlying error; it wraps one of the sentinel errors above
	// when the problem is with the file's format.
	Err error
}

// Error implements error.
func (e *FileError) Error() string { return e.File + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *FileError) Unwrap() error { return e.Err }

// Images is the raw content of an IDX images file: N images of Rows × Cols
// unsigned bytes, row-major, image after image.
type Images struct {
	N, Rows, Cols int
	// Pixels holds N*Rows*Cols bytes.
	Pixels []byte
}

// openMaybeGzip returns a reader of r's decompressed content when r starts
// with the gzip magic bytes, and of r itself otherwise.
func openMaybeGzip(r io.Reader) (io.Reader, func() error, error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	if len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrGzip, err)
		}
		zr.Multistream(false)
		return zr, zr.Close, nil
	}
	return br, func() error { return nil }, nil
}

// readHeader reads the magic number, checks it, and then reads dims
// big-endian uint32 dimensions.
func readHeader(r io.Reader, magic uint32, dims int) ([]int, error) {
	var m [4]byte
	if _, err := io.ReadFull(r, m[:]); err != nil {
		return nil, payloadErr(err, "magic number")
	}
	if got := binary.BigEndian.Uint32(m[:]); got != magic {
		return nil, fmt.Errorf("%w: got 0x%08x, want 0x%08x", ErrMagic, got, magic)
	}
	buf := make([]byte, 4*dims)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, payloadErr(err, "header dimensions")
	}
	out := make([]int, dims)
	for i := range out {
		out[i] = int(binary.BigEndian.Uint32(buf[4*i:]))
	}
	return out, nil
}

// payloadErr turns an I/O error met while reading what into a format error.
func payloadErr(err error, what string) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s", ErrTruncated, what)
	case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader):
		return fmt.Errorf("%w: %v", ErrGzip, err)
	}
	var corrupt flate.CorruptInputError
	if errors.As(err, &corrupt) {
		return fmt.Errorf("%w: reading %s: %v", ErrGzip, what, err)
	}
	return err
}

// readPayload reads exactly n bytes from r, growing its buffer only as data
// actually arrives, so that a header that lies about the size cannot make the
// decoder allocate more than the input holds. It then checks that r is at its
// end.
func readPayload(r io.Reader, n int, what string) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(min(n, 64<<10))
	got, err := io.CopyN(&buf, r, int64(n))
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s has %d of %d bytes", ErrTruncated, what, got, n)
		}
		return nil, payloadErr(err, what)
	}
	var one [1]byte
	k, err := io.ReadFull(r, one[:])
	switch {
	case k > 0:
		return nil, fmt.Errorf("%w: more than the %d bytes of %s", ErrTrailingData, n, what)
	case errors.Is(err, io.EOF):
		return buf.Bytes(), nil
	default:
		return nil, payloadErr(err, what)
	}
}

// DecodeImages reads an IDX images file (magic 0x00000803) from r, gzipped or
// not. name identifies the source in errors.
func DecodeImages(r io.Reader, name string) (*Images, error) {
	img, err := decodeImages(r)
	if err != nil {
		return nil, &FileError{File: name, Err: err}
	}
	return img, nil
}

func decodeImages(r io.Reader) (*Images, error) {
	src, closeFn, err := openMaybeGzip(r)
	if err != nil {
		return nil, err
	}
	dims, err := readHeader(src, ImagesMagic, 3)
	if err != nil {
		return nil, err
	}
	n, rows, cols := dims[0], dims[1], dims[2]
	switch {
	case n < 1 || n > MaxCount:
		return nil, fmt.Errorf("%w: image count %d not in [1, %d]", ErrDims, n, MaxCount)
	case rows < 1 || rows > MaxSide || cols < 1 || cols > MaxSide:
		return nil, fmt.Errorf("%w: image size %d×%d not within 1..%d per side", ErrDims, rows, cols, MaxSide)
	case n*rows*cols > MaxPayload:
		return nil, fmt.Errorf("%w: %d images of %d×%d exceed %d bytes", ErrDims, n, rows, cols, MaxPayload)
	}
	pix, err := readPayload(src, n*rows*cols, "pixels")
	if err != nil {
		return nil, err
	}
	if err := closeFn(); err != nil {
		return nil, payloadErr(err, "gzip trailer")
	}
	return &Images{N: n, Rows: rows, Cols: cols, Pixels: pix}, nil
}

// DecodeLabels reads an IDX labels file (magic 0x00000801) from r, gzipped or
// not. name identifies the source in errors.
func DecodeLabels(r io.Reader, name string) ([]uint8, error) {
	labels, err := decodeLabels(r)
	if err != nil {
		return nil, &FileError{File: name, Err: err}
	}
	return labels, nil
}

func decodeLabels(r io.Reader) ([]uint8, error) {
	src, closeFn, err := openMaybeGzip(r)
	if err != nil {
		return nil, err
	}
	dims, err := readHeader(src, LabelsMagic, 1)
	if err != nil {
		return nil, err
	}
	n := dims[0]
	if n < 1 || n > MaxCount {
		return nil, fmt.Errorf("%w: label count %d not in [1, %d]", ErrDims, n, MaxCount)
	}
	labels, err := readPayload(src, n, "labels")
	if err != nil {
		return nil, err
	}
	if err := closeFn(); err != nil {
		return nil, payloadErr(err, "gzip trailer")
	}
	return labels, nil
}

// EncodeImages writes img to w as an uncompressed IDX images file. Wrap w in
// a gzip.Writer for the .gz form.
func EncodeImages(w io.Writer, img *Images) error {
	if img == nil {
		return fmt.Errorf("%w: nil images", ErrDims)
	}
	switch {
	case img.N < 1 || img.N > MaxCount,
		img.Rows < 1 || img.Rows > MaxSide || img.Cols < 1 || img.Cols > MaxSide,
		img.N*img.Rows*img.Cols > MaxPayload:
		return fmt.Errorf("%w: cannot encode %d images of %d×%d", ErrDims, img.N, img.Rows, img.Cols)
	case len(img.Pixels) != img.N*img.Rows*img.Cols:
		return fmt.Errorf("%w: %d pixel bytes for %d images of %d×%d", ErrDims, len(img.Pixels), img.N, img.Rows, img.Cols)
	}
	var head [16]byte
	binary.BigEndian.PutUint32(head[0:], ImagesMagic)
	binary.BigEndian.PutUint32(head[4:], uint32(img.N))
	binary.BigEndian.PutUint32(head[8:], uint32(img.Rows))
	binary.BigEndian.PutUint32(head[12:], uint32(img.Cols))
	if _, err := w.Write(head[:]); err != nil {
		return err
	}
	_, err := w.Write(img.Pixels)
	return err
}

// EncodeLabels writes labels to w as an uncompressed IDX labels file.
func EncodeLabels(w io.Writer, labels []uint8) error {
	if len(labels) < 1 || len(labels) > MaxCount {
		return fmt.Errorf("%w: cannot encode %d labels", ErrDims, len(labels))
	}
	var head [8]byte
	binary.BigEndian.PutUint32(head[0:], LabelsMagic)
	binary.BigEndian.PutUint32(head[4:], uint32(len(labels)))
	if _, err := w.Write(head[:]); err != nil {
		return err
	}
	_, err := w.Write(labels)
	return err
}
