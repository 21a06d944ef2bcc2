// Package multihost holds what the examples share to run one player per
// process or host: the command-line flags of such a run, the hostmap they
// load (with its TLS settings and the players the example requires), and
// the exchange at the end of a run by which every player learns whether
// the others' parts succeeded.
//
// An example registers the flags, checks them, loads the hostmap and
// checks it has the players it needs:
//
//	var f multihost.Flags
//	f.Register(fs, "private-prediction", "batch")
//	... fs.Parse(args); f.Check() ...
//	cfg, err := f.LoadConfig(stdout, wantPlayers, "the example needs server0, ...")
//
// Then it runs its session over a grpctransport, and every player ends by
// telling the others how its part went and hearing theirs:
//
//	out := multihost.Outcomes{Transport: t, Key: multihost.OutcomeKey("private-prediction"),
//		Players: cfg.Names(), Self: f.Player}
//	t.Mailbox().Expect(out.Key.Session) // before any peer connects
//	...
//	if err := s.Run(ctx, op); err != nil {
//		out.Tell(ctx, fmt.Errorf("batch %d: %w", i, multihost.OwnFailure(err)))
//		return err
//	}
//	...
//	return out.Finish(ctx, 2*timeout, "batch")
//
// The outcomes are this program's messages, outside the session's key
// space; a peer's reason is bounded (MaxOutcomeReason) and printed with
// its control characters replaced, so that an authenticated but hostile
// peer can neither make a player hold much nor move its terminal.
//
// Package multihosttest has the tests' side: building the example once,
// a hostmap of free loopback ports with development certificates, and
// players started as processes.
package multihost
