// Package weights stores the parameters of a one-hidden-layer network of
// package model in a compact file: the private-prediction example ships its
// trained classifier in this form.
//
// The format, before gzip compression, is little-endian:
//
//	offset  size  field
//	0       4     magic "SFW1"
//	4       4     uint32 inputs   (784)
//	8       4     uint32 hidden   (512)
//	12      4     uint32 classes  (10)
//	16      4·P   float32 W1 (inputs×hidden, row-major), b1 (hidden),
//	              W2 (hidden×classes, row-major), b2 (classes)
//
// with P = inputs·hidden + hidden + hidden·classes + classes parameters
// (407,050 for 784-512-10, so 1,628,216 bytes before compression). The
// file is that stream gzipped, with no name or time stamp in the gzip
// header, so equal parameters give equal files. float32 keeps 24
// significant bits, far more than the 16 fractional bits of Pond's fixed
// point the weights are encoded with for a secure run.
//
// Read checks everything before trusting it: the magic, each dimension
// against model's limits, the total against MaxParams, the exact payload
// length (nothing may follow it) and that every value is finite. It
// allocates as the payload arrives, so a short or hostile file costs no
// more memory than its own content.
package weights

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/examples/federated-learning/model"
)

// Magic opens every weights stream.
const Magic = "SFW1"

// HeaderSize is the size of the uncompressed header in bytes.
const HeaderSize = 16

// readChunk is how many values Read decodes at a time.
const readChunk = 4096

// MaxParams bounds the parameters a file may declare (16 Mi, 64 MiB of
// float32), far above the example's 407,050.
const MaxParams = 1 << 24

// ErrFormat is wrapped by every error about a malformed weights file.
var ErrFormat = errors.New("weights: bad file")

// Write writes the parameters of architecture a (W1, b1, W2, b2, as
// model.Architecture.CheckParams accepts them) to w in the format above,
// gzipped. Values are rounded to the nearest float32; a value that
// float32 cannot hold is an error naming the tensor and element.
func Write(w io.Writer, a model.Architecture, params []*tensor.Dense) error {
	if err := a.Validate(); err != nil {
		return err
	}
	if err := a.CheckParams("weights", params); err != nil {
		return err
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(zw)
	var hdr [HeaderSize]byte
	copy(hdr[:4], Magic)
	binary.LittleEndian.PutUint32(hdr[4:], uint32(a.Inputs))
	binary.LittleEndian.PutUint32(hdr[8:], uint32(a.Hidden))
	binary.LittleEndian.PutUint32(hdr[12:], uint32(a.Classes))
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	var b [4]byte
	for i, shape := range a.ParamShapes() {
		d, err := model.Float64s(params[i], shape)
		if err != nil {
			return fmt.Errorf("weights: tensor %s: %w", model.ParamName(i), err)
		}
		for j, v := range d {
			f := float32(v)
			if math.IsInf(float64(f), 0) {
				return fmt.Errorf("weights: tensor %s element %d is %g, beyond float32", model.ParamName(i), j, v)
			}
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(f))
			if _, err := bw.Write(b[:]); err != nil {
				return err
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return zw.Close()
}

// Read reads a gzipped weights stream and returns its architecture and
// parameters as float64 tensors (W1, b1, W2, b2). name identifies the
// stream in errors, which wrap ErrFormat for a malformed file.
func Read(r io.Reader, name string) (model.Architecture, []*tensor.Dense, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return model.Architecture{}, nil, fmt.Errorf("%w %s: %v", ErrFormat, name, err)
	}
	defer zr.Close()
	a, params, err := decode(bufio.NewReader(zr))
	if err != nil {
		return model.Architecture{}, nil, fmt.Errorf("%w %s: %v", ErrFormat, name, err)
	}
	return a, params, nil
}

func decode(r *bufio.Reader) (model.Architecture, []*tensor.Dense, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return model.Architecture{}, nil, fmt.Errorf("header: %v", err)
	}
	if string(hdr[:4]) != Magic {
		return model.Architecture{}, nil, fmt.Errorf("magic %q, want %q", hdr[:4], Magic)
	}
	dim := func(off int) int {
		v := binary.LittleEndian.Uint32(hdr[off:])
		if v > model.MaxDim {
			return model.MaxDim + 1 // refused by Validate, without overflow on 32-bit targets
		}
		return int(v)
	}
	a := model.Architecture{Inputs: dim(4), Hidden: dim(8), Classes: dim(12)}
	if err := a.Validate(); err != nil {
		return model.Architecture{}, nil, err
	}
	if n := uint64(a.Inputs)*uint64(a.Hidden) + uint64(a.Hidden)*uint64(a.Classes) + uint64(a.Hidden+a.Classes); n > MaxParams {
		return model.Architecture{}, nil, fmt.Errorf("architecture %v has %d parameters, more than %d", a, n, MaxParams)
	}
	params := make([]*tensor.Dense, model.NumTensors)
	buf := make([]byte, 4*readChunk)
	for i, shape := range a.ParamShapes() {
		n := 1
		for _, d := range shape {
			n *= d
		}
		var data []float64 // grows as values arrive, never far ahead of the file
		for len(data) < n {
			b := buf[:4*min(readChunk, n-len(data))]
			if got, err := io.ReadFull(r, b); err != nil {
				return model.Architecture{}, nil, fmt.Errorf("tensor %s: %d of %d values, then %v", model.ParamName(i), len(data)+got/4, n, err)
			}
			for ; len(b) > 0; b = b[4:] {
				v := float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return model.Architecture{}, nil, fmt.Errorf("tensor %s element %d is %v", model.ParamName(i), len(data), v)
				}
				data = append(data, v)
			}
		}
		params[i] = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
	}
	switch _, err := r.ReadByte(); {
	case err == nil:
		return model.Architecture{}, nil, errors.New("data after the last parameter")
	case err != io.EOF:
		return model.Architecture{}, nil, fmt.Errorf("after the last parameter: %v", err)
	}
	return a, params, nil
}
