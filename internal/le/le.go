// Package le copies slices of 64-bit words to and from little-endian
// bytes, the byte order of every shareflow message. On little-endian
// machines (amd64, arm64) a copy is one memmove; elsewhere it falls back to
// encoding/binary element by element. The wire format is the same either
// way.
package le

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// native reports whether this machine stores words little-endian.
var native = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// asBytes views s's memory as bytes.
func asBytes(s []uint64) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), 8*len(s))
}

// PutUint64s writes src into dst, which must hold 8·len(src) bytes.
func PutUint64s(dst []byte, src []uint64) {
	_ = dst[:8*len(src)] // bounds check once
	if native {
		copy(dst, asBytes(src))
		return
	}
	for i, v := range src {
		binary.LittleEndian.PutUint64(dst[8*i:], v)
	}
}

// Uint64s reads len(dst) words from src, which must hold 8·len(dst) bytes.
func Uint64s(dst []uint64, src []byte) {
	_ = src[:8*len(dst)]
	if native {
		copy(asBytes(dst), src)
		return
	}
	for i := range dst {
		dst[i] = binary.LittleEndian.Uint64(src[8*i:])
	}
}

// Float64Words views a float64 slice as its IEEE 754 bit patterns,
// without copying, on any machine: the words share f's memory.
func Float64Words(f []float64) []uint64 {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(&f[0])), len(f))
}

// PutFloat64s writes the IEEE 754 bits of src into dst (8·len(src) bytes).
func PutFloat64s(dst []byte, src []float64) {
	if native {
		PutUint64s(dst, Float64Words(src))
		return
	}
	_ = dst[:8*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint64(dst[8*i:], math.Float64bits(v))
	}
}

// Float64s reads len(dst) float64s from src (8·len(dst) bytes).
func Float64s(dst []float64, src []byte) {
	if native {
		Uint64s(Float64Words(dst), src)
		return
	}
	_ = src[:8*len(dst)]
	for i := range dst {
		dst[i] = math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:]))
	}
}

// Bytes views words as little-endian bytes, without copying, where the
// machine is little-endian; ok is false elsewhere.
func Bytes(words []uint64) (b []byte, ok bool) {
	if !native {
		return nil, false
	}
	return asBytes(words), true
}

// Words views little-endian bytes as words, without copying, where the
// machine is little-endian and b is 8-byte aligned; ok is false
// otherwise, and the caller copies with Uint64s instead. len(b) must be a
// multiple of 8. The view shares b's memory: the caller gives b up.
func Words(b []byte) (w []uint64, ok bool) {
	if !native || len(b)%8 != 0 {
		return nil, false
	}
	if len(b) == 0 {
		return []uint64{}, true
	}
	p := unsafe.Pointer(&b[0])
	if uintptr(p)%8 != 0 {
		return nil, false
	}
	return unsafe.Slice((*uint64)(p), len(b)/8), true
}

// AsFloat64s views words as the float64s whose IEEE 754 bits they hold,
// without copying.
func AsFloat64s(w []uint64) []float64 {
	if len(w) == 0 {
		return []float64{}
	}
	return unsafe.Slice((*float64)(unsafe.Pointer(&w[0])), len(w))
}

// asUint32s views b's memory as 32-bit words, or returns nil when the
// machine is not little-endian or b is not 4-byte aligned.
func asUint32s(b []byte) []uint32 {
	if !native || len(b) < 4 {
		return nil
	}
	p := unsafe.Pointer(&b[0])
	if uintptr(p)%4 != 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(p), len(b)/4)
}

// PutLow32s writes the low 32 bits of each word of src into dst, which
// must hold 4·len(src) bytes, little-endian. dst may be src's own memory
// viewed as bytes (Bytes): each word is read before its 4 bytes are
// written, and no write reaches a word not yet read, so the words pack to
// the front in place. It must then run on the whole slice at once, not
// on ranges in parallel.
func PutLow32s(dst []byte, src []uint64) {
	_ = dst[:4*len(src)]
	if d := asUint32s(dst); d != nil {
		d = d[:len(src)]
		if n := len(src) &^ 7; useAVX2 && n > 0 {
			low32sAVX2(&d[0], &src[0], n)
			d, src = d[n:], src[n:]
		}
		for i, v := range src {
			d[i] = uint32(v)
		}
		return
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], uint32(v))
	}
}

// Uint32sTo64 reads len(dst) little-endian 32-bit words from src, which
// must hold 4·len(dst) bytes, into the low halves of dst's words.
func Uint32sTo64(dst []uint64, src []byte) {
	_ = src[:4*len(dst)]
	if s := asUint32s(src); s != nil {
		s = s[:len(dst)]
		if n := len(dst) &^ 7; useAVX2 && n > 0 {
			widen32sAVX2(&dst[0], &s[0], n, false)
			dst, s = dst[n:], s[n:]
		}
		for i, v := range s {
			dst[i] = uint64(v)
		}
		return
	}
	for i := range dst {
		dst[i] = uint64(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// AddUint32sTo64 adds len(dst) little-endian 32-bit words read from src,
// which must hold 4·len(dst) bytes, to dst's words.
func AddUint32sTo64(dst []uint64, src []byte) {
	_ = src[:4*len(dst)]
	if s := asUint32s(src); s != nil {
		s = s[:len(dst)]
		if n := len(dst) &^ 7; useAVX2 && n > 0 {
			widen32sAVX2(&dst[0], &s[0], n, true)
			dst, s = dst[n:], s[n:]
		}
		for i, v := range s {
			dst[i] += uint64(v)
		}
		return
	}
	for i := range dst {
		dst[i] += uint64(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// AddUint64s adds len(dst) little-endian words read from src, which must
// hold 8·len(dst) bytes, to dst.
func AddUint64s(dst []uint64, src []byte) {
	_ = src[:8*len(dst)]
	if w, ok := Words(src[:8*len(dst)]); ok {
		for i, v := range w {
			dst[i] += v
		}
		return
	}
	for i := range dst {
		dst[i] += binary.LittleEndian.Uint64(src[8*i:])
	}
}

// Uint32View views b's memory as little-endian 32-bit words, without
// copying, where the machine is little-endian and b is 4-byte aligned; ok
// is false otherwise, and the caller encodes with PutLow32s instead.
// len(b) must be a multiple of 4.
func Uint32View(b []byte) (w []uint32, ok bool) {
	if len(b)%4 != 0 {
		return nil, false
	}
	if len(b) == 0 {
		return []uint32{}, native
	}
	w = asUint32s(b)
	return w, w != nil
}

// AddWords32 adds to dst's little-endian 32-bit words those of src, word
// by word mod 2^32. Both hold the same whole number of words.
func AddWords32(dst, src []byte) { addWords32(dst, src, false) }

// SubWords32 subtracts from dst's little-endian 32-bit words those of
// src, word by word mod 2^32. Both hold the same whole number of words.
func SubWords32(dst, src []byte) { addWords32(dst, src, true) }

func addWords32(dst, src []byte, sub bool) {
	if len(dst) != len(src) || len(dst)%4 != 0 {
		panic("le: 32-bit words of unequal or partial length")
	}
	d, s := asUint32s(dst), asUint32s(src)
	if d != nil && s != nil {
		if n := len(d) &^ 7; useAVX2 && n > 0 {
			add32sAVX2(&d[0], &s[0], n, sub)
			d, s = d[n:], s[n:]
		}
		for i := range d {
			if sub {
				d[i] -= s[i]
			} else {
				d[i] += s[i]
			}
		}
		return
	}
	for i := 0; i < len(dst); i += 4 {
		a, b := binary.LittleEndian.Uint32(dst[i:]), binary.LittleEndian.Uint32(src[i:])
		if sub {
			b = -b
		}
		binary.LittleEndian.PutUint32(dst[i:], a+b)
	}
}
