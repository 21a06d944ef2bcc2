// Package pond implements the Pond protocol of TF Encrypted for secure
// aggregation: two compute servers hold additive secret shares in the ring
// Z_2^64 of fixed-point numbers and compute on them without learning them.
//
// Everything here is a pure local step: a function of one player's inputs
// that returns what that player sends. There are no sockets, goroutines or
// clocks; randomness is an io.Reader passed in. Package session runs the
// steps, carries the messages and splits large tensors across cores: the
// steps that touch every element have an ...At form (ExpandAt,
// EncodeAndMaskAt, TruncateSendAt, ...) that computes one range of a
// tensor, and calls on disjoint ranges together compute the whole.
//
// A server sums private inputs with SumShares (SumSharesAt by ranges),
// which adds the masked shares it received and the streams of the seeds it
// holds in one pass over cache-sized blocks. Mask streams are AES in
// counter mode under keys derived from fresh seeds and a Domain;
// Config.MaskPRG selects the derivation (AES-128-CTR by default, drawn by
// a vector AES kernel on processors with AVX-512 VAES), and
// Protocol.Domain carries it into every domain of a run.
//
// The values a server holds have distinct types where mixing them is a
// bug: a Share is at the fixed-point scale; a Product (what MulPublic
// leaves) awaits truncation; a Masked tensor is no share at all; a
// SeededShare is a share held as its seed. A server's role is a Server,
// not a number.
//
// The representable range is |x| < 2^IntBits (1024 by default) at a
// resolution of 2^-FracBits (2^-16). Each fractional bit added costs two
// integer bits, as a product carries twice the fractional bits: 20
// fractional bits leave |x| < 4. See Config, and README.md in this
// directory for the map from Pond's steps to this code, the numbers and
// the error bounds.
package pond
