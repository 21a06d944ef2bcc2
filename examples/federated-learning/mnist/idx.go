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
	// ErrRange means a range of examples asked of a file or data set is
	// empty or reaches past its end, or a shard does not exist (index out
	// of range, more shards than examples).
	ErrRange = errors.New("mnist: examples out of range")
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

// span picks the items [from, to) to keep of a file that holds count
// items, or says why it cannot.
type span func(count int) (from, to int, err error)

// wholeFile keeps every item.
func wholeFile(count int) (int, int, error) { return 0, count, nil }

// itemRange keeps items [from, to), which must be a non-empty part of the
// file.
func itemRange(from, to int) span {
	return func(count int) (int, int, error) {
		if from < 0 || from >= to || to > count {
			return 0, 0, fmt.Errorf("%w: [%d, %d) of a file of %d", ErrRange, from, to, count)
		}
		return from, to, nil
	}
}

// idxPart is what decodeIDX read of a file: its header dimensions (the item
// count first) and the payload bytes of items [from, to).
type idxPart struct {
	dims     []int
	from, to int
	payload  []byte
}

// decodeIDX reads an IDX file of the given magic number and number of
// dimensions from r, checks the dimensions with check, and keeps the
// payload of the items pick chooses.
//
// When r can seek and is not gzipped (a plain file), it reads the header,
// checks the file's size against it, and then seeks to the kept items and
// reads only them. Otherwise it decompresses and reads the whole stream,
// discarding the items it does not keep as they pass, so that it holds no
// more than the kept part and still checks the file's length and, for
// gzip, its checksum. Either way a file that is too short or too long is
// rejected whichever items are kept.
func decodeIDX(r io.Reader, magic uint32, ndims int, what string, check func([]int) error, pick span) (*idxPart, error) {
	if rs, ok := r.(io.ReadSeeker); ok {
		if start, err := rs.Seek(0, io.SeekCurrent); err == nil {
			var head [2]byte
			k, err := io.ReadFull(rs, head[:])
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, err
			}
			if _, err := rs.Seek(start, io.SeekStart); err != nil {
				return nil, err
			}
			if k < 2 || head != [2]byte{0x1f, 0x8b} {
				return decodeSeekable(rs, start, magic, ndims, what, check, pick)
			}
		}
	}
	return decodeStream(r, magic, ndims, what, check, pick)
}

// headerLen returns the byte length of an IDX header of ndims dimensions.
func headerLen(ndims int) int64 { return 4 + 4*int64(ndims) }

// itemLen returns the bytes of one item (one image, one label) of a file
// with the given dimensions, the count first.
func itemLen(dims []int) int {
	n := 1
	for _, d := range dims[1:] {
		n *= d
	}
	return n
}

// decodeSeekable is decodeIDX for a plain file that rs reads from offset
// start on.
func decodeSeekable(rs io.ReadSeeker, start int64, magic uint32, ndims int, what string, check func([]int) error, pick span) (*idxPart, error) {
	dims, err := readHeader(rs, magic, ndims)
	if err != nil {
		return nil, err
	}
	if err := check(dims); err != nil {
		return nil, err
	}
	end, err := rs.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	item := int64(itemLen(dims))
	have, want := end-start-headerLen(ndims), int64(dims[0])*item
	switch {
	case have < want:
		return nil, fmt.Errorf("%w: %s has %d of %d bytes", ErrTruncated, what, max(have, 0), want)
	case have > want:
		return nil, fmt.Errorf("%w: more than the %d bytes of %s", ErrTrailingData, want, what)
	}
	from, to, err := pick(dims[0])
	if err != nil {
		return nil, err
	}
	if _, err := rs.Seek(start+headerLen(ndims)+int64(from)*item, io.SeekStart); err != nil {
		return nil, err
	}
	// The size is checked against the file's, so the buffer is no larger
	// than what the file holds.
	payload := make([]byte, int64(to-from)*item)
	if _, err := io.ReadFull(rs, payload); err != nil {
		return nil, payloadErr(err, what)
	}
	return &idxPart{dims: dims, from: from, to: to, payload: payload}, nil
}

// decodeStream is decodeIDX for a stream, gzipped or not.
func decodeStream(r io.Reader, magic uint32, ndims int, what string, check func([]int) error, pick span) (*idxPart, error) {
	src, closeFn, err := openMaybeGzip(r)
	if err != nil {
		return nil, err
	}
	dims, err := readHeader(src, magic, ndims)
	if err != nil {
		return nil, err
	}
	if err := check(dims); err != nil {
		return nil, err
	}
	from, to, err := pick(dims[0])
	if err != nil {
		return nil, err
	}
	item := int64(itemLen(dims))
	payload, err := readPart(src, int64(dims[0])*item, int64(from)*item, int64(to)*item, what)
	if err != nil {
		return nil, err
	}
	if err := closeFn(); err != nil {
		return nil, payloadErr(err, "gzip trailer")
	}
	return &idxPart{dims: dims, from: from, to: to, payload: payload}, nil
}

// readPart reads exactly total bytes from r, keeps bytes [lo, hi) and
// discards the others as they pass, and then checks that r is at its end.
// Its buffer grows only as data actually arrives, so that a header that
// lies about the size cannot make the decoder allocate more than the input
// holds.
func readPart(r io.Reader, total, lo, hi int64, what string) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(int(min(hi-lo, 64<<10)))
	var done int64
	for _, step := range []struct {
		w io.Writer
		n int64
	}{{io.Discard, lo}, {&buf, hi - lo}, {io.Discard, total - hi}} {
		got, err := io.CopyN(step.w, r, step.n)
		done += got
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: %s has %d of %d bytes", ErrTruncated, what, done, total)
			}
			return nil, payloadErr(err, what)
		}
	}
	var one [1]byte
	k, err := io.ReadFull(r, one[:])
	switch {
	case k > 0:
		return nil, fmt.Errorf("%w: more than the %d bytes of %s", ErrTrailingData, total, what)
	case errors.Is(err, io.EOF):
		return buf.Bytes(), nil
	default:
		return nil, payloadErr(err, what)
	}
}

// checkImageDims checks an images file's header dimensions against the
// decoder's limits.
func checkImageDims(dims []int) error {
	n, rows, cols := dims[0], dims[1], dims[2]
	switch {
	case n < 1 || n > MaxCount:
		return fmt.Errorf("%w: image count %d not in [1, %d]", ErrDims, n, MaxCount)
	case rows < 1 || rows > MaxSide || cols < 1 || cols > MaxSide:
		return fmt.Errorf("%w: image size %d×%d not within 1..%d per side", ErrDims, rows, cols, MaxSide)
	case n*rows*cols > MaxPayload:
		return fmt.Errorf("%w: %d images of %d×%d exceed %d bytes", ErrDims, n, rows, cols, MaxPayload)
	}
	return nil
}

// checkLabelDims checks a labels file's count against the decoder's limit.
func checkLabelDims(dims []int) error {
	if n := dims[0]; n < 1 || n > MaxCount {
		return fmt.Errorf("%w: label count %d not in [1, %d]", ErrDims, n, MaxCount)
	}
	return nil
}

// DecodeImages reads an IDX images file (magic 0x00000803) from r, gzipped or
// not. name identifies the source in errors.
func DecodeImages(r io.Reader, name string) (*Images, error) {
	img, _, err := decodeImages(r, wholeFile)
	if err != nil {
		return nil, &FileError{File: name, Err: err}
	}
	return img, nil
}

// DecodeImageRange reads images [from, to) of an IDX images file from r,
// gzipped or not, without keeping the others: a plain file that r can seek
// in (an *os.File, say) is read only at those images, any other input is
// read to its end with the other images discarded as they pass. It checks
// the whole file as DecodeImages does (header, length, gzip checksum), and
// the range must be a non-empty part of the file (ErrRange otherwise). The
// result's N is to − from. name identifies the source in errors.
func DecodeImageRange(r io.Reader, name string, from, to int) (*Images, error) {
	img, _, err := decodeImages(r, itemRange(from, to))
	if err != nil {
		return nil, &FileError{File: name, Err: err}
	}
	return img, nil
}

// decodeImages reads the images pick chooses and returns them with the
// number of images in the file.
func decodeImages(r io.Reader, pick span) (*Images, int, error) {
	p, err := decodeIDX(r, ImagesMagic, 3, "pixels", checkImageDims, pick)
	if err != nil {
		return nil, 0, err
	}
	return &Images{N: p.to - p.from, Rows: p.dims[1], Cols: p.dims[2], Pixels: p.payload}, p.dims[0], nil
}

// DecodeLabels reads an IDX labels file (magic 0x00000801) from r, gzipped or
// not. name identifies the source in errors.
func DecodeLabels(r io.Reader, name string) ([]uint8, error) {
	labels, _, err := decodeLabels(r, wholeFile)
	if err != nil {
		return nil, &FileError{File: name, Err: err}
	}
	return labels, nil
}

// DecodeLabelRange reads labels [from, to) of an IDX labels file from r, as
// DecodeImageRange reads images.
func DecodeLabelRange(r io.Reader, name string, from, to int) ([]uint8, error) {
	labels, _, err := decodeLabels(r, itemRange(from, to))
	if err != nil {
		return nil, &FileError{File: name, Err: err}
	}
	return labels, nil
}

// decodeLabels reads the labels pick chooses and returns them with the
// number of labels in the file.
func decodeLabels(r io.Reader, pick span) ([]uint8, int, error) {
	p, err := decodeIDX(r, LabelsMagic, 1, "labels", checkLabelDims, pick)
	if err != nil {
		return nil, 0, err
	}
	return p.payload, p.dims[0], nil
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
