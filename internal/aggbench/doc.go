// Package aggbench measures what the transport costs a secure mean: the
// messages of one aggregation iteration carried by grpctransport, against
// a raw gRPC transfer of the same bytes, in the same order, over the same
// mutual TLS, on this machine. `shareflow bench` runs it; a testing.B
// benchmark runs a short one.
//
// # One iteration
//
// Seven players by default, each its own process (RunProcesses) or
// goroutine (RunInProcess): server0, server1, server2 (the crypto
// producer, idle as in aggregation), the model owner and three data
// owners. Per iteration, as session moves them for a secure mean of P
// parameters (Options.Params, by default the example's 407,050):
//
//  1. the model owner sends each data owner an 8-byte start;
//  2. data owner d sends a 32-byte seed to one server and its masked
//     share, P × 8 bytes, to the other (server d mod 2 gets the share),
//     seed first;
//  3. each of server0 and server1 receives from every data owner in turn
//     and then sends its share of the sum, P × 8 bytes, to the model
//     owner;
//  4. the model owner receives both shares. The iteration's time is the
//     model owner's, from its first start to its last share.
//
// With the defaults that is 3 × 3.26 MB in and 2 × 3.26 MB out.
//
// # The two paths
//
// The aggregation path is grpctransport as sessions use it: each player
// a Transport of a players.Config, with mutual TLS, messages sent with
// Send (which copies them once, so that the sender keeps its buffers, as
// a session's pool does) and received with Recv.
//
// The raw path is plain gRPC: one bidi stream for each pair of players
// that exchange messages (as grpctransport opens), with the same TLS
// configuration (players.Identity), the same flow-control windows and the
// same message limits, and a codec that sends a []byte as it lies and
// copies what arrives once into the receiver's buffer (no protobuf). Each
// message goes as gRPC messages of Options.ChunkBytes, like
// grpctransport's frames but without their headers; the receiver knows
// the sizes, and takes each message into a new buffer of its size, as
// grpctransport's receiver does. Senders send from buffers they keep.
// Its messages travel in the same order as the aggregation path's.
//
// The model owner alternates the paths, one iteration of each at a time,
// so that both see the same machine; the warm-up iterations of each path
// (Options.Warmup) are not counted. The model owner checks every share
// it receives against what was sent, outside the time measured.
//
// Safe for concurrent use: every function runs its own players.
package aggbench
