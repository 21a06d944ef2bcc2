// Package grpctransport carries the messages of players on separate hosts
// over gRPC with mutual TLS 1.3. It implements transport.Transport for one
// player.
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
// # Identity
//
// A server learns who calls from the caller's verified client certificate
// (players.PlayerFromCert), never from anything the caller says; the name
// the client also states in the "shareflow-player" metadata header must
// agree, or the call is refused with an error naming both. A client
// refuses a server whose certificate does not name the player it meant to
// reach, and Connect fails at once, without dialling again, with the
// player it meant, the address, and the player the certificate names:
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
// # Wire
//
// There is no .proto file: the service is described by hand and every gRPC
// message is a google.protobuf.BytesValue holding a Hello or a Frame, two
// small little-endian encodings documented on their types. A message
// travels on the sender's one long-lived stream to the receiver as frames
// of at most MaxChunkBytes (Options.ChunkBytes); the receiver checks each
// frame, refuses a message announcing more than the config's
// max_message_bytes before allocating anything, reassembles and hands it
// to its transport.Mailbox. The receiving side drains its streams without
// waiting for Recv until a peer has PendingMessages × max_message_bytes
// unread; then it stops reading that stream until the player catches up,
// and gRPC flow control holds the peer's sends. Players receive each
// peer's messages in the order they were sent (the session's plans
// guarantee it), so this cannot deadlock.
//
// # Failure
//
// When a peer closes its transport or its connection breaks, receives of
// its messages that have not arrived fail promptly with ErrPeerClosed or
// ErrPeerLost naming the peer (transport.Mailbox.FailFrom); messages that
// did arrive are still handed out. Sends to it fail the same way. A peer
// that refuses what it was sent (say, a message over its limit) fails the
// link with ErrRejected carrying its reason. While connecting, a peer that
// is not there yet is waited for until connect_timeout; a refusal, by the
// peer or of its certificate, fails at once and for good (see Identity).
// Close lets peers take the messages already sent, then stops the server
// and every connection, closing incoming ones still in their handshake,
// and waits for the transport's goroutines to end.
package grpctransport
