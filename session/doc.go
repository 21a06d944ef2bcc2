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
// Each plan computes in a ring. A plan that only adds (private inputs,
// sums, differences, public constants added, means divided in the clear,
// as secure aggregation does) computes in Z_2^32, and its shares cross the
// wire as 4 bytes an element instead of 8; plans with products, truncation
// or divisions inside the protocol compute in Z_2^64. Options.Protocol.Ring
// forces either. In Z_2^32 the compiler derives the inputs' range from the
// largest sum the plan forms, counting a cohort's sums over
// RoundOptions.MaxCohort members, so that no sum can wrap: every input is
// checked against it, and one out of range is refused with an error naming
// the player, tensor and element. Chosen automatically, Z_2^32 never
// narrows the range pond.Config asks for (by default |x| < 1024, which
// sums of up to 16 inputs keep); the plan's text names its ring and range.
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
// Large tensors dominate the cost, so the runner avoids copying them:
// the tensors a function returns are the engine's (graph.Func), so a
// private input is masked where it lies and that memory is the message
// (its words, little-endian, without a header), and a public tensor's
// memory is its message (its float64s, little-endian: both ends know the
// shape from the plan), which the transport copies for every receiver
// but the last, who gets the memory itself when the sender has no use
// left for it; a receiver uses a message where it lies; a server keeps an
// input's seed unexpanded and adds its mask stream straight into a sum,
// the last send of a share hands its buffer over, and the big steps are
// split across cores
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
// # Rounds of a cohort
//
// An op whose output aggregates a cohort (graph.DefineCohort, Mean,
// WeightedMean, SumCohort) runs in rounds, each over the data owners
// connected then: owners join, leave and fail without stopping the run,
// as Flower's and Google's federated rounds do. The coordinator, the
// op's output player (the model owner), calls Run once per round; every
// other player calls Serve, which runs rounds as the coordinator
// announces them until it calls Finish. A Local session runs every
// player and every member of Options.Rounds.Members in this process:
//
//	s, _ := session.NewLocal(g, session.Options{Rounds: session.RoundOptions{
//		Members: owners, Sample: 10, MinOwners: 5, Deadline: 30 * time.Second,
//	}})
//	for step := 0; step < steps; {
//		switch err := s.Run(ctx, op); {
//		case errors.Is(err, session.ErrTooManySkipped): // MaxSkipped in a row
//			return err
//		case errors.Is(err, session.ErrRoundSkipped): // nothing revealed, model not updated
//			log.Print(err, s.LastRound().Dropped)
//			continue
//		case err != nil:
//			return err
//		}
//		step++
//	}
//
// A round goes:
//
//  1. The coordinator picks the round's cohort: the members connected,
//     sorted, or RoundOptions.Sample of them drawn with a stream seeded by
//     SampleSeed and the round's number. It tells the servers (and every
//     other player of the plan) the round's number and cohort, and every
//     connected member whether it is invited, and at which position.
//  2. Each invited member draws a fresh seed for each of its uploads at
//     once. The holders of the model (the public inputs of the cohort's
//     inputs) send it to every invited member, and the member calls its
//     functions, which learn whom they run for from graph.Member(ctx). As
//     it calls them it sends all its seeds to one server, its seed server
//     (server0 at even positions, server1 at odd; the other is its masked
//     server), and expands each seed's mask stream in the background,
//     into the message that will carry the masked tensor. Seeds and masks
//     wait for the functions' call so that the cores are left to the
//     model's sending while the round starts; they are still a whole
//     function call ahead of the masked tensors. Its uploads are each cohort tensor a mean or sum
//     takes, and for a weighted mean w·x and w, computed on the member;
//     each upload's mask domain names the member, so no two members
//     share a stream. After the functions only one pass is left: the
//     masked tensor, encode(x) minus the mask, computed in place. The
//     member sends its masked server its status and then its masked
//     tensors. A member whose function fails (say with graph.ErrDropout,
//     or a weight that is not finite and positive, ErrWeight) tells its
//     masked server it drops out, and why; its seeds are never used. A
//     member that drops before it calls its functions sends no seeds and
//     tells its seed server so.
//  3. Each server keeps one running sum per upload (in Z_2^32 as the
//     message it will send, 4 bytes an element). As a member's seeds
//     arrive, its seed server adds their streams into its sums in the
//     background, counts the member as arrived from then on, and tells
//     the masked server so (a seeds-held notice, keyed by the member's
//     position, or why the seeds did not come). The masked server adds a
//     member's masked tensors into its sums once all of them and that
//     notice are there, and lets the messages go at once: the servers
//     hold about one copy of a share in flight, not every member's until
//     they agree. A masked tensor is never added before the notice, nor
//     one upload of a member without the others, so everything added is
//     of a member the other server counts. Each server waits until every
//     member's shares arrived or failed, or until RoundOptions.Deadline
//     after it learned of the round. It sends the other server the
//     members that arrived, with a digest of the cohort it was told, and
//     receives the other's: the survivors are the intersection, so both
//     sum over the same members even when a share reached only one of
//     them in time. A member that arrived at its seed server only (its
//     masked tensors did not come, or it dropped out after its seeds)
//     costs that server one stream, taken back from its sums. A server
//     whose peer leaves out a member whose seeds it said it held fails
//     the round and sends no share: the masked tensors it added cannot be
//     taken back. A server with fewer survivors than
//     RoundOptions.MinOwners skips the round: it sends the coordinator a
//     result saying so, and no share. Otherwise it runs the rest of its
//     plan on its sums, and sends the coordinator its result (the
//     survivors, and why each other member is missing), then its shares.
//  4. The coordinator reveals only if both servers sent shares over the
//     same survivors. A mean feeding the output is revealed as its sum and
//     divided by the number of survivors in the clear (inside the
//     protocol with Options.PrivateDivision, or when the mean feeds
//     another verb); a weighted mean as Σw·x and Σw, divided in the clear
//     (RoundInfo.TotalWeight reports Σw). Run returns nil once the output
//     function ran; a *SkippedError (ErrRoundSkipped) when the servers
//     skipped, the output function not called; ErrTooManySkipped after
//     RoundOptions.MaxSkipped skipped rounds in a row, naming the members
//     that were missing; ErrSurvivorMismatch when the servers' survivors
//     differ, revealing nothing. LastRound gives the round's cohort,
//     survivors, dropouts with their reasons, duration and bytes.
//
// The privacy floor is the servers', not the coordinator's: the model
// owner is the party that would gain from a cohort of one, so each server
// refuses to send its share of a sum over fewer than MinOwners survivors
// (at least 2), and MinOwners is part of the plan fingerprint every player
// compares. Two shares over different survivors reveal nothing either: a
// member that one server counts and the other does not leaves one
// uniformly random share in the sum.
//
// What each party learns of a round: the coordinator, the sums (and Σw)
// over the survivors, their names, and the reasons the others give or the
// servers see (a member's drop reason is its function's error, cut to 256
// bytes: it travels to the coordinator); the servers, the cohort, which
// members' shares reached each of them, and nothing of any value; a member,
// the model and its position. Known limits: the coordinator picks the
// cohort, and rounds over {A, B, C} then {A, B} reveal C's contribution by
// difference: the floor bounds each round, not the differences between
// rounds. Distributed differential privacy is the answer, and comes
// later. A coordinator that can enrol members of its own (sybils) meets
// the floor with them; under open membership every member needs a
// certificate of the federation's CA.
//
// Across hosts, players say hello in a star: each player of the plan, and
// each member when it connects (and the servers when they first meet it in
// a cohort), exchange the session id and plan fingerprint with the
// coordinator, again whenever their connection is new; a mismatch refuses
// that player alone. After their hello the servers tell the coordinator
// the number its next round must have at least, so that a restarted
// coordinator continues after the servers' last round: round numbers only
// increase within a session id, and key the round's messages and mask
// domains apart from the session's iterations. The coordinator answers
// with its next round's number, from which a restarted server takes up
// the rounds. A round whose two servers are not both connected within
// RoundOptions.Deadline of its start is skipped (ErrRoundSkipped; it
// counts towards MaxSkipped): nobody is invited to it. A restarting
// server thus has about MaxSkipped deadlines to come back. Members invited are those
// the transport reports (transport.Membership: open membership over gRPC)
// and RoundOptions.Members; a member that (re)connects joins from the next
// round, one that leaves is dropped from its round on. A player waiting
// for a coordinator that lost its connection waits up to
// RoundOptions.CoordinatorTimeout. Every message is bounded: a cohort
// lists at most MaxMembers names, reasons are cut, and each decoder checks
// every length before it allocates.
//
// What a dropout costs (go test -bench Round ./session, 2 shared cores,
// 10 owners of 100,000 parameters in one process): a round takes about
// 9 ms with every owner there and 6 ms with one that fails fast, which
// tells the servers at once; an owner that never answers holds the round
// until the deadline (502 ms for a deadline of 500 ms, for the same 8 ms
// of CPU). A member that drops out after its seeds went costs its seed
// server one mask stream; one that drops before costs nothing. Set the
// deadline above the time the slowest regular member takes to compute
// and upload its shares; DefaultDeadline (10 s) covers a 3 MB upload at a
// few megabits per second. A server's own work, the sum over the
// survivors, is 40–85 µs per owner at 100,000 parameters, flat from 10 to
// 1,000 owners, and now happens as the shares arrive. Memory
// (BenchmarkRoundServerMemory, 100 owners of 1M parameters in one
// process, every owner at once): the live heap when the servers have
// agreed fell from 818 MB (every masked tensor held until agreement,
// 8.2 bytes per owner-parameter for both servers) to 154 MB, and the
// process's peak RSS from 1.63 GB to 0.76 GB. The most a server holds at
// once of masked tensors not yet added depends on how fast they come:
// when every member of the process sends at once on two cores, it
// reached up to the whole half it is the masked server of (4 bytes per
// owner-parameter) for a moment.
package session
