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
// debug level. The lines are
// rate-limited (a burst of 10, then one a second); each line counts the
// refusals left out before it, and Close logs those left out since.
//
// Before a connection has proved who it is it costs a goroutine and a few
// kilobytes. A server takes at most MaxHandshakes of them at once,
// MaxHandshakesPerIP from one address, each for at most
// Options.HandshakeTimeout; it closes the ones past that at once. Close
// closes those in their handshake rather than wait for them.
//
// In insecure mode (config "insecure": true) there is no TLS, the header
// is all there is, and New logs InsecureWarning, which Warnings also
// returns for commands to print.
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
// There is no .proto file: the service is described by hand and every gRPC
// message is a google.protobuf.BytesValue holding a Hello or a Frame, two
// small little-endian encodings documented on their types. A message
// travels on the sender's one long-lived stream to the receiver as frames
// of at most MaxChunkBytes (Options.ChunkBytes); the receiver checks each
// frame, refuses a message announcing more than the config's
// max_message_bytes before allocating anything, reassembles and hands it
// to its transport.Mailbox.
//
// # What a peer can cost
//
// A peer has one message stream open to a player at a time. A second one,
// say from another process holding the same certificate, is refused with
// codes.AlreadyExists naming the remote addresses of both, and logged; the
// first carries on untouched. A peer whose stream has ended may open a
// new one: it starts a new epoch of the peer's messages (see Failure).
// The peers that dial in without being listed are bounded by max_members,
// and each costs what any peer may cost, below: in all, a player holds at
// most (listed peers + max_members) times the per-peer bound, so a
// federation open to many data owners sets max_message_bytes and
// max_members with its memory in mind. A member's connection costs
// nothing more while it is idle, and one that comes and goes leaves
// nothing behind but its entry in the mailbox's table of senders.
//
// What a peer has waiting at a player, messages delivered but not yet
// received and the one being reassembled, is bounded per peer:
//
//   - at most PendingMessages × max_message_bytes bytes as
//     transport.Charge counts them: a message's payload (for one that came
//     in a single frame, the whole frame it keeps alive), its session id
//     and an eighth more, and transport.MessageOverhead (320) bytes of
//     bookkeeping, so that empty messages cost what they charge;
//   - at most PendingCount (4096) messages, whatever their size.
//
// Room for a message is reserved when its first frame arrives, before
// anything is allocated, and given back if its stream ends before the
// last frame. Past either bound the player stops
// reading the peer's stream until it has received enough, and gRPC flow
// control holds the peer's sends; gRPC keeps at most the stream's
// flow-control window of what arrives meanwhile. Players receive each
// peer's messages in the order they were sent (the session's plans
// guarantee it), so this cannot deadlock. With the default
// max_message_bytes of 256 MiB a peer may have 1 GiB waiting; the heap
// it takes exceeds the charge only by the allocator's rounding.
//
// A player whose session declares its sessions (transport.Mailbox.Expect,
// as session.Remote does) refuses a message under any other: the stream
// that carried it ends with codes.InvalidArgument, and the peer counts as
// failed. Messages of iterations the player has forgotten are dropped as
// they arrive. What a peer left unread when its stream ended stays, within
// the bounds above, until it is received, its iteration forgotten or the
// transport closed, since it may be the last the peer sent.
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
