// Package session compiles graphs into per-player plans and runs them.
//
// Compiling lowers a graph (package graph) for one op: every private node
// becomes local steps on the two compute servers of Pond (package
// protocol/pond), and every edge that crosses players becomes a send on
// one side and a receive on the other, paired by an edge number. A
// message's rendezvous key is (session id, iteration, edge). Plan.String
// prints the result, so users can see exactly where each private tensor is
// shared and who receives what.
//
// Two executors run plans:
//
//   - Local runs every player in this process, each in its own goroutine,
//     over an in-memory transport that copies every message.
//   - Remote runs one player's plan in a program that every host runs
//     (SPMD), over any transport, in practice gRPC with mutual TLS
//     (session/transport/grpctransport). Players compare plan fingerprints
//     and session ids before the first iteration; a fingerprint covers the
//     plan and every setting that changes what it computes (every field of
//     pond.Config, the servers, the crypto producer, PrivateDivision) and
//     which tensor feeds which operand of every node.
//
// A typical local run:
//
//	s, err := session.NewLocal(g, session.Options{})
//	if err != nil { ... }
//	defer s.Close()
//	for i := 0; i < iterations; i++ {
//		if err := s.Run(ctx, op); err != nil { ... } // a *PlayerError names the player
//	}
//	for _, l := range s.Stats() { fmt.Println(l.From, "->", l.To, l.Bytes) }
//
// Private products bring in a third player, the crypto producer
// (Options.CryptoProducer, server2 by default), as in TF Encrypted's
// Pond. For every product of two private values (graph's Mul, Square,
// MatMul, Dot) and every iteration, it draws a Beaver triple and sends
// server0 a 32-byte seed and server1 a seed and its share of c, one
// tensor of the product's size. It receives nothing, ever, and its steps
// read nothing, so what it sends depends on no input; the compiler
// refuses a plan that would make it receive (say, an output placed on
// it). Each server receives its triple, sends the other server its
// opening (its shares of x − a and y − b, which together are uniformly
// random whatever x and y), receives the other's, finishes its share of
// the product and truncates it in the configured mode (interactively,
// server0 sending server1 one masked tensor, or locally). A dot product
// is a matrix product by a k×1 matrix, so each row is summed before it is
// truncated once. A product with a public tensor (MulPublicTensor,
// MatMulPublic, PublicMatMul) needs no triple: the tensor's holder sends
// it to both servers in the clear, and each multiplies its share by it.
// ReduceSum, AddBias and AddConstant are local to each server (server0
// alone adds a constant). The plan shows each of these messages with its
// sender and receiver, and Stats counts the crypto producer's links as
// any other; protocol/pond/README.md gives their bytes. Plans without
// private products do not involve the crypto producer.
//
// The crypto producer waits for nobody. In a Remote session it draws the
// next iteration's triples while the servers still run this one, as far
// as the servers' mailbox bounds let it run ahead; in a Local session it
// draws them during the iteration, while the data owners share their
// inputs.
//
// Large tensors dominate the cost, so the runner avoids copying them: a
// masked share is computed straight into its message and received as a
// view of it, a server keeps an input's seed unexpanded and adds its mask
// stream straight into a sum, the last send of a share or a public tensor
// hands its buffer over, and the big steps are split across cores
// (internal/par): package pond computes ranges of a tensor (and, for
// the triples and products, hands ranges of rows to a pond.Split), and
// the session, which owns the goroutines, decides the split.
//
// Every step of a plan declares the values of its player that it reads
// and writes. The compiler derives from these declarations alone which
// read is a value's last use on its player, and so where a buffer may be
// handed to a function or to the transport; it also checks that each
// player's plan reads nothing before it is written.
//
// The compiler emits every send together with its receive, so each player
// receives a sender's messages in the order they were sent. Transports rely
// on it to hold back a sender that runs ahead (transport.Mailbox.Deliver).
//
// Each Run is one iteration. The first error of any player cancels the
// iteration for all and is returned as a *PlayerError; the session stays
// usable, and messages left over from the failed iteration are dropped.
//
// Dropouts: messages are addressed per (sender, key) and wait in a mailbox
// until asked for, and every receive honours its context. A later change
// can therefore let a round go ahead without a data owner who dropped out:
// the compiler marks a data owner's inputs optional, the servers receive
// them under a per-round deadline, and the AddN and the public divisor use
// the owners whose shares arrived, agreed between the two servers with one
// extra message.
package session
