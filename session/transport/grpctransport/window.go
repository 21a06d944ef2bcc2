package grpctransport

import "github.com/shareflow/shareflow/players"

// Flow-control windows.
//
// HTTP/2 lets a sender have at most a window of bytes on a stream, and on
// its connection, that the receiver has not yet taken; the receiver grants
// more as its application reads. Left alone, grpc-go starts both windows
// at 64 KiB and grows them with its BDP estimator: a ping goes with the
// data, and when a round trip's worth of data filled the window, the
// window doubles, up to 16 MiB. On a LAN that takes a few milliseconds.
// Across a WAN every doubling costs a round trip, and a window of 64 KiB
// moves 1.6 MB/s at 40 ms: the first multi-megabyte messages (3.26 MB per
// link and iteration in the federated-learning example) crawl while TCP's
// own slow start would already let them through. So the windows start at
// their final size, and the estimator, which only ever grows them, is off
// (setting a window turns it off). Seven hosts 40 ms apart took 2.7 s for
// their first iteration before and 2.0 s after, the rest being TCP's slow
// start and start-up; warm iterations did not change (docs/RUNNING.md).
//
// A window costs memory only when the receiver does not read. This
// player's server reads every peer's stream at once into the Mailbox until
// the peer has PendingMessages × max_message_bytes unread there (the
// per-peer bound, see Transport); only then does it stop reading, and gRPC
// holds what keeps arriving, up to the stream window (plus at most one
// frame, which gRPC lets through whole). So the window is that same bound,
// at least gRPC's minimum of 64 KiB, at most 16 MiB, the estimator's own
// ceiling: with the default max_message_bytes of 256 MiB the Mailbox may
// hold 1 GiB of a peer's messages and gRPC at most 16 MiB more (as much
// as the estimator could grow the window to anyway); with a small
// max_message_bytes, gRPC never holds more than the Mailbox would.
// 16 MiB in flight is 400 MB/s at 40 ms, a round trip's worth of a
// 3 Gbit/s link.
//
// The connection window is the stream window: a peer's connection carries
// one message stream (and Hellos before it), and grpc-go returns
// connection window as data arrives, not as it is read, so the stream
// windows are what bound memory. They bound it per stream, so the server
// also caps the streams of one connection at maxStreamsPerConn, and the
// connections of one player at MaxConnsPerPlayer; a correct peer never
// has more than two streams (a Hello and its message stream), and of the
// streams a peer may open besides, the Hellos are bounded by number and
// deadline (Transport.tap) and second message streams are refused at
// once.
const (
	// minWindow is grpc-go's initial window; it ignores smaller ones.
	minWindow = 64 << 10
	// maxWindow caps the window at what grpc-go's BDP estimator would
	// grow it to.
	maxWindow = 16 << 20
	// maxStreamsPerConn is how many streams a peer may open at once on
	// one connection to this player's server.
	maxStreamsPerConn = 4
)

// flowWindow is the size of gRPC's flow-control windows, per stream and
// per connection, on the links of a player with config cfg: PendingMessages
// × max_message_bytes, within [minWindow, maxWindow].
func flowWindow(cfg *players.Config) int32 {
	return int32(min(max(PendingMessages*cfg.MaxMessageBytes(), minWindow), maxWindow))
}
