// Package grpctransport carries the messages of players on separate hosts
// over gRPC with mutual TLS 1.3. It implements transport.Transport and
// transport.Membership for one player.
//
// Every player runs a Transport:
//
//	cfg, err := players.LoadConfig("hosts.json")
//	...
//	t, err := grpctransport.New(cfg, "server0", grpctransport.Options{Logger: log})
//	...
//	defer t.Close()
//	for _, w := range t.Warnings() {
//		fmt.Fprintln(os.Stderr, w) // the insecure-mode warning, if any
//	}
//	if err := t.Connect(ctx); err != nil {
//		return err // names each player that did not answer, and its address
//	}
//	err = t.Send(ctx, "server1", key, payload)
//	msg, err := t.Recv(ctx, "server1", key)
//
// New starts the player's gRPC server at once, so players may start in any
// order; Connect dials every peer, retrying with backoff until the config's
// connect_timeout, and greets it (Hello) to check its identity and that
// both run with the same player list.
//
// A data owner the config does not list runs a Transport too, under its
// own name; it needs only its certificate from the federation's CA (see
// Membership):
//
//	t, err := grpctransport.New(cfg, "data-owner-7", grpctransport.Options{Logger: log})
//	...
//	err = t.Connect(ctx) // dials every player with an address; listens nowhere
//
// # Identity
//
// A server learns who calls from the caller's verified client certificate
// (players.PlayerFromCert), never from anything the caller says; the name
// the client also states in the "shareflow-player" metadata header must
// agree, or the call is refused with an error naming both. It takes the
// names the config admits (players.Config.Admits): its players, and, with
// open membership, any data owner (data-owner-N). A certificate from the
// CA that names anyone else, "server9" or "model-owner-2" say, is refused
// at the TLS handshake and logged like any other refusal:
//
//	refused a connection ... reason="players: server0 refuses client: certificate names player \"server9\", which is not in the config"
//
// A client refuses a server whose certificate does not name the player
// it meant to reach, and Connect fails at once, without dialling again,
// with the player it meant, the address, and the player the certificate
// names:
//
//	grpctransport: waiting for player "server1" at 10.0.0.2:4440: players: server0 refuses server: certificate names player "server2", want "server1"
//
// A client whose own certificate the server refuses learns only that from
// TLS ("the peer refused the TLS connection (tls: bad certificate); its
// log says why") and gives up at once too; the server logs the reason.
//
// Every connection a server refuses at the TLS level (no client
// certificate, another CA's, one naming a player not in its list, TLS
// below 1.3, plaintext, no handshake within Options.HandshakeTimeout) is
// logged as a warning "refused a connection" with the remote address and
// the reason; one closed before it sent anything, as port scanners do, at
// debug level. So are the refusals after TLS, with the remote address: a
// Hello from a caller whose certificate does not match its claim, or
// with another player list, a second message stream, a Hello past the
// bounds below. The lines are rate-limited (a burst of 10, then one a
// second); each line counts the refusals left out before it, and Close
// logs those left out since. What a peer's streams do again and again
// ("peer stream broken", "refused a message") goes through a limiter of
// its own.
//
// Before a connection has proved who it is it costs a goroutine and a few
// kilobytes, for at most Options.HandshakeTimeout. A server takes at most
// MaxHandshakes (64) of them at once, shared among the addresses they
// come from (an IPv4 address, or an IPv6 /64): one address holds at most
// as many as the config lists other players, plus max_members with open
// membership (at least 8, at most 32), so that every player may start at
// once from one host. When all are taken, a connection from an address
// holding fewer takes the slot of the oldest handshake of an address
// holding two or more than it, or of any handshake older than a fifth of
// HandshakeTimeout; otherwise it is closed, and its client dials again
// (logged at debug level: gRPC clients do retry). So a host that floods a
// player with connections that never speak cannot keep its peers out. Close
// closes those in their handshake rather than wait for them.
//
// In insecure mode (config "insecure": true) there is no TLS, the header
// is all there is, and New logs InsecureWarning, which Warnings also
// returns for commands to print. Without certificates a server cannot
// tell whose a connection is: the bound on connections per player below
// does not apply, and Hellos count under the name their caller claims.
//
// # Membership
//
// The hostmap needs to list only the servers, the crypto producer and the
// model owner. A player listed without an address, and a data owner the
// config does not list (open membership: the config's "open_membership",
// on by default when it lists no data owner), only dials out: New opens
// no listening socket, Addr is nil, and Connect dials every player that
// has an address. Its messages to them travel on the streams it opens, as
// between any two players; theirs to it travel back on the same streams,
// so it works from behind NAT and firewalls. Two players without an
// address have no connection between them.
//
// A player with an address counts the peers that dialled in and are
// connected now as its Members; Connected tells, for any peer, whether
// messages can travel both ways now; MembershipChanged wakes a caller at
// the next change (see transport.Membership). A data owner joins when its
// stream is accepted, and from then on receives work; a session lets it
// take part from the next round. A server takes at most the config's
// max_members (1000 by default) unlisted data owners at once; one more is
// refused with codes.ResourceExhausted, and logged, and its Connect keeps
// trying until connect_timeout. Connect of a player with an address also
// waits for the players the config lists without one to dial in; it does
// not wait for unlisted data owners. A Send to a data owner that has not
// dialled in waits for it, within its context.
//
// # Wire
//
// There is no .proto file and no protobuf on the wire: the service,
// shareflow.transport.v2.Transport, is described by hand, and every gRPC
// message is a Hello or a Frame, two small little-endian encodings
// documented on their types, as they are. A codec of its own carries them
// (content-subtype "shareflow-frames-v1"; a server refuses calls that say
// anything else, naming the content-type). A message travels on the
// sender's one long-lived stream to the receiver as frames of at most
// MaxChunkBytes (Options.ChunkBytes); the receiver checks each frame,
// refuses a message announcing more than the config's max_message_bytes
// before allocating anything, reassembles and hands it to its
// transport.Mailbox.
//
// The bytes of a message are copied once on each side. Send writes each
// frame, header and chunk, into a pooled buffer that gRPC gives back once
// it has written it, so that the caller may reuse its payload when Send
// returns; the receiver decodes each frame's header from gRPC's own
// buffers and copies the chunk straight into a buffer of the message's
// exact size, and gRPC's buffers go back to its pool at once. (Handing
// payloads over to gRPC instead would save the sender's copy but make
// every sender draw a fresh buffer per message, which costs more; see
// frameCodec.)
//
// Players of shareflow before this wire (service
// shareflow.transport.v1.Transport, each message wrapped in a
// google.protobuf.BytesValue) and after it refuse each other at Connect:
// an older player is told, with codes.FailedPrecondition, that this one
// speaks v2 and that every host must run the same version, and the
// refusal is logged; a player that reaches an older one fails with "the
// peer does not speak shareflow's wire v2".
//
// # What a peer can cost
//
// A peer, as its verified certificate names it, holds at most
// MaxConnsPerPlayer (2) connections to a player's server past the TLS
// handshake: a correct peer holds one, and two for a moment when it dials
// again before the player has seen its old connection die. A third closes
// the peer's oldest connection that does not carry its message stream,
// and is logged ("closed a connection", with the address and the reason).
// Each connection carries at most four streams at once (window.go).
//
// A peer has one message stream open to a player at a time. A second one,
// say from another process holding the same certificate, is refused with
// codes.AlreadyExists naming the remote addresses of both, and logged; the
// first carries on untouched. A peer whose stream has ended may open a
// new one: it starts a new epoch of the peer's messages (see Failure).
//
// gRPC reads a Hello whole, up to the largest gRPC message (about 1 MiB),
// before anything can look at it. So a peer may have at most two Hellos
// in progress at once; one more is refused with codes.ResourceExhausted
// before gRPC reads it, and each must arrive whole within
// Options.HandshakeTimeout (5 s), or its stream ends with
// codes.DeadlineExceeded; both are logged.
//
// What a peer has waiting at a player, messages delivered but not yet
// received and the one being reassembled, is bounded per peer:
//
//   - at most PendingMessages × max_message_bytes bytes as
//     transport.Charge counts them: a message's payload, its session id
//     and an eighth more, and transport.MessageOverhead (320) bytes of
//     bookkeeping, so that empty messages cost what they charge;
//   - at most PendingCount (4096) messages, whatever their size;
//   - only messages of iterations less than Horizon (4) ahead of where
//     the player is in their session (transport.Mailbox.SetHorizon).
//
// Room for a message is reserved when its first frame arrives, before
// anything is allocated, and given back if its stream ends before the
// last frame. Past any of these bounds the player stops
// reading the peer's stream until it has received enough, or got far
// enough, and gRPC flow control holds the peer's sends; gRPC keeps at most
// the stream's flow-control window (at most 16 MiB, see window.go) and one
// frame of what arrives meanwhile. Players receive each peer's messages in
// the order they were sent (the session's plans guarantee it), so this
// cannot deadlock.
//
// In all, a peer costs a player at most: PendingMessages ×
// max_message_bytes in its mailbox (1 GiB with the default
// max_message_bytes of 256 MiB; the heap it takes exceeds the charge only
// by the allocator's rounding), plus a window and a frame held by gRPC
// (17 MiB), plus two Hellos in progress (2 MiB, for at most
// HandshakeTimeout), plus its two connections' buffers and goroutines
// (some tens of kilobytes each). The peers with a message stream are the
// listed players and at most max_members data owners the config does not
// list; so a player holds at most (listed peers + max_members) times that
// bound, and a federation open to many data owners sets
// max_message_bytes and max_members with its memory in mind. A data owner
// refused for max_members holds only its connections and Hellos. A
// member's connection that is idle costs its buffers and goroutines
// (about 140 KiB of heap, measured with both ends in one process), and
// one that comes and goes leaves nothing behind but its entry in the
// mailbox's table of senders.
//
// A player whose session declares its sessions (transport.Mailbox.Expect,
// as session.Remote does) refuses a message under any other: the stream
// that carried it ends with codes.InvalidArgument, and the peer counts as
// failed. Messages of iterations the player has forgotten are dropped as
// they arrive, and those beyond the horizon never enter its mailbox. What
// a peer left unread when its stream ended stays, within the bounds above,
// until it is received, its iteration forgotten or the transport closed,
// since it may be the last the peer sent; since it is at most Horizon
// iterations ahead, a session that goes on forgets it within as many
// iterations.
//
// # Failure
//
// When a peer closes its transport or its connection breaks, receives of
// its messages that have not arrived fail promptly with ErrPeerClosed or
// ErrPeerLost naming the peer (both match transport.ErrPeerGone); messages
// that did arrive are still handed out. Sends to it fail the same way, at
// once, while it is gone. A peer that refuses what it was sent (say, a
// message over its limit) fails the link with ErrRejected carrying its
// reason, and a peer that sends what this player refuses is refused; such
// a link stays failed. While connecting, a peer that is not there yet is
// waited for until connect_timeout; a refusal, by the peer or of its
// certificate, fails at once and for good (see Identity).
//
// A link that was lost, or whose peer closed, is dialled again in the
// background: a restarted server, or a data owner behind a flaky network,
// comes back. The waits between attempts start at Options.ReconnectMin
// (250 ms) and double up to Options.ReconnectMax (30 s), each drawn from
// the upper half of its bound by Options.Rand. Each stream a peer opens
// starts a new epoch of its messages (transport.Mailbox.Rejoin): receives
// pending when its last stream ended have failed, those started since
// work again, and a message it had half sent is dropped; whole ones that
// arrived stay, within the bounds above, until received, forgotten or
// replaced by a message of the new epoch under the same key. A data owner
// that comes back joins Members again; the listed peers' links come back
// as Connected. A player that stops reading what a data owner sends it
// holds that data owner back by flow control; a Send to a data owner that
// does not read gives up when its context ends by cutting the data
// owner's connection, which the data owner then dials again.
//
// Close lets peers take the messages already sent, says goodbye on the
// streams of the peers that dialled in (they close their side in turn,
// and learn of it as ErrPeerClosed), then stops the server and every
// connection, closing incoming ones still in their handshake, and waits
// for the transport's goroutines to end.
package grpctransport
