// Package ops holds the ring kernels of shareflow: element-wise arithmetic
// on tensors of the ring Z_2^64, stored as []uint64 with wrapping
// arithmetic. Signed values live in two's complement, so the same kernels
// serve signed fixed-point numbers.
//
// Every kernel takes its destination first and writes into it
// (ops.Add(dst, a, b) sets dst = a + b); dst may alias an operand. Kernels
// never allocate, so a protocol that keeps its buffers runs allocation-free
// in steady state. A length mismatch is a bug in the caller and panics with
// an "ops:" message, as in gonum.
package ops
