// Package pond implements the Pond protocol of TF Encrypted for secure
// aggregation: two compute servers hold additive secret shares in the ring
// Z_2^64 of fixed-point numbers and compute on them without learning them.
//
// Everything here is a pure local step: a function of one player's inputs
// that returns what that player sends. There are no sockets, goroutines or
// clocks; randomness is an io.Reader passed in. Package session runs the
// steps and carries the messages. See README.md in this directory for the
// map from Pond's steps to this code, the numbers and the error bounds.
package pond
