package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/internal/multihost"
	"github.com/shareflow/shareflow/internal/units"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session"
	"github.com/shareflow/shareflow/session/transport/grpctransport"
)

// cohortRun is one player's part of a run across hosts in rounds of a
// cohort. The model owner coordinates: it runs the rounds (Run), records
// them and keeps the checkpoint, then tells everyone how the run ended
// and ends the rounds (Finish). Every other player serves the rounds
// (Serve) until then: the servers and the crypto producer, which the
// hosts file lists, and the data owners, listed or not, who join from the
// round after they connect and may leave at any time.
type cohortRun struct {
	o       options
	cfg     *players.Config
	t       *grpctransport.Transport
	s       *session.Remote
	agg     *remoteAggregation
	op      *graph.Op
	fed     *federation
	log     *slog.Logger
	prog    *progress
	timeout time.Duration
}

func (c *cohortRun) run(ctx context.Context, stdout io.Writer) error {
	if c.o.Player == c.fed.modelOwner.Name {
		return c.coordinate(ctx, stdout)
	}
	return c.serve(ctx, stdout)
}

// coordinate runs the model owner's rounds.
func (c *cohortRun) coordinate(ctx context.Context, stdout io.Writer) error {
	mo := c.fed.modelOwner
	d := &driver{o: c.o, mo: mo, log: c.log, progress: c.prog, everyRound: true}
	d.rounds = &sessionRounds{
		run:  func(ctx context.Context) error { return c.agg.Run(ctx, c.op) },
		last: c.s.LastRound, mo: mo,
		awaitPeers: c.awaitChange, maxLost: c.o.maxSkipped, log: c.log,
	}
	if c.o.checkpointDir != "" {
		d.run = runFields(c.o, c.o.dataOwners, mo.Architecture())
	}
	err := d.resume()
	if err == nil {
		defer d.Close()
		c.awaitOwners(ctx, stdout)
		start := time.Now()
		err = d.train(ctx, "secure")
		if err == nil {
			err = d.Close()
		}
		if err == nil {
			r := &result{mode: "secure (" + c.o.Player + ")", perIter: d.perRound(time.Since(start)), stats: c.s.Stats(),
				iterations: d.ran, steps: mo.Iteration(), rounds: d.stats, cohorts: true}
			r.loss, r.accuracy = mo.Evaluate()
			r.history = append(mo.History(), Evaluation{Iteration: mo.Iteration(), Loss: r.loss, Accuracy: r.accuracy})
			printSummary(stdout, r, d.ran)
			if c.o.plot != "" {
				if perr := writePlot(c.o.plot, nil, r.history); perr != nil {
					err = fmt.Errorf("writing the plot: %w", perr)
				}
			}
		}
	}
	// Tell every player connected how the run ended, then end the rounds:
	// their Serve returns, and each then knows whether the run succeeded.
	told := err
	if told != nil {
		told = fmt.Errorf("secure training: %w", err)
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(c.timeout, 10*time.Second))
	defer cancel()
	c.tellOutcome(tctx, told)
	if ferr := c.s.Finish(tctx); ferr != nil && err == nil {
		c.log.Warn("ending the rounds", "err", ferr)
	}
	return told
}

// awaitOwners waits, before the first round, until the data owners the
// run expects are connected (those the config lists, or --data-owners of
// them), or the config's connect timeout has passed: the first rounds
// then have their whole cohort. Rounds start either way; owners that come
// later join later rounds.
func (c *cohortRun) awaitOwners(ctx context.Context, stdout io.Writer) {
	timer := time.NewTimer(c.cfg.ConnectTimeout())
	defer timer.Stop()
	for {
		changed := c.t.MembershipChanged()
		n := len(c.connectedOwners())
		if n >= c.o.dataOwners {
			fmt.Fprintf(stdout, "%s: %d data owners connected; running %d iterations in rounds\n", c.o.Player, n, c.o.iterations)
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			fmt.Fprintf(stdout, "%s: %d of %d data owners connected after %v; running %d iterations in rounds, the others join when they come\n",
				c.o.Player, n, c.o.dataOwners, c.cfg.ConnectTimeout(), c.o.iterations)
			return
		case <-ctx.Done():
			return
		}
	}
}

// awaitChange waits, after a round lost a player of the plan (a server
// that restarts, say), until the transport reports a change of its
// connections, for at most the round timeout: the round is then tried
// again.
func (c *cohortRun) awaitChange(ctx context.Context) error {
	timer := time.NewTimer(c.timeout)
	defer timer.Stop()
	select {
	case <-c.t.MembershipChanged():
	case <-timer.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// connectedOwners returns the data owners connected now, listed or not.
func (c *cohortRun) connectedOwners() []string {
	var out []string
	for _, name := range c.cfg.Names() {
		if players.RoleOf(name) == players.RoleDataOwner && c.t.Connected(name) {
			out = append(out, name)
		}
	}
	for _, name := range c.t.Members() {
		if !slices.Contains(out, name) && c.t.Connected(name) {
			out = append(out, name)
		}
	}
	return out
}

// tellOutcome tells every other player connected now, at once, how the
// run ended: runErr is nil for success. Sends are best effort.
func (c *cohortRun) tellOutcome(ctx context.Context, runErr error) {
	msg := multihost.OutcomeMessage(runErr)
	var wg sync.WaitGroup
	for _, p := range append(slices.Clone(c.cfg.Names()), c.t.Members()...) {
		if p == c.o.Player || !c.t.Connected(p) {
			continue
		}
		wg.Go(func() { c.t.Send(ctx, p, outcomeKey, msg) })
	}
	wg.Wait()
}

// serve serves the rounds on a server, the crypto producer or a data
// owner, until the model owner ends them, and returns the run's outcome
// as the model owner tells it. A failure the model owner tells before
// then ends this player's part at once.
func (c *cohortRun) serve(ctx context.Context, stdout io.Writer) error {
	self := c.o.Player
	if c.o.weighted {
		for _, d := range c.fed.dataOwners {
			if d.Name == self {
				if _, err := weightOf(d, c.o.maxWeight); err != nil {
					return err // refused at the door, before it joins
				}
			}
		}
	}
	mo := c.fed.modelOwner.Name
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	outcome := make(chan error, 1) // nil: the run succeeded
	go func() {
		err := c.awaitOutcome(sctx, mo)
		outcome <- err
		if err != nil {
			cancel(err)
		}
	}()
	fmt.Fprintf(stdout, "%s: connected; serving the rounds of %q\n", self, mo)
	start := time.Now()
	if err := c.s.Serve(sctx, c.op); err != nil {
		if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
			return cause // the model owner's failure
		}
		return fmt.Errorf("serving the rounds: %w", err)
	}
	// The rounds are over; the outcome came before the end of the rounds.
	wctx, wcancel := context.WithTimeoutCause(ctx, 2*c.timeout,
		fmt.Errorf("no word from %q on how the run ended, %v after the rounds ended", mo, 2*c.timeout))
	if !c.takesPart() {
		// No part in the rounds (the crypto producer of a plan without
		// products): Serve returned at once, and the word comes when the
		// run ends, however long it runs, as long as the model owner is
		// there or comes back, as the servers wait for it.
		wcancel()
		wctx, wcancel = c.whileThere(ctx, mo, session.DefaultCoordinatorTimeout)
	}
	defer wcancel()
	var err error
	select {
	case err = <-outcome:
	case <-wctx.Done():
		err = context.Cause(wctx)
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "%s: done after %v; the last round it took part in: %d\n", self, elapsed.Round(time.Millisecond), c.s.LastRound().Round)
	for _, l := range c.s.Stats() {
		if l.From == self {
			fmt.Fprintf(stdout, "  %s -> %s: %s in all\n", l.From, l.To, units.Bytes(float64(l.Bytes)))
		}
	}
	return nil
}

// takesPart reports whether this player has steps in the rounds: every
// player but the crypto producer of a plan without products.
func (c *cohortRun) takesPart() bool {
	if c.o.Player != players.CryptoProducer {
		return true
	}
	plan, err := c.s.Plan(c.op)
	return err != nil || slices.Contains(plan.Players(), c.o.Player)
}

// whileThere returns a context that ends, with a cause naming peer, once
// peer has been disconnected for limit: a player with nothing to serve
// waits that long for a model owner that crashed or restarts.
func (c *cohortRun) whileThere(ctx context.Context, peer string, limit time.Duration) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancelCause(ctx)
	go func() {
		var gone <-chan time.Time
		for {
			changed := c.t.MembershipChanged()
			switch {
			case c.t.Connected(peer):
				gone = nil
			case gone == nil:
				gone = time.After(limit)
			}
			select {
			case <-changed:
			case <-gone:
				cancel(fmt.Errorf("no word from %q on how the run ended: it has been gone for %v", peer, limit))
				return
			case <-wctx.Done():
				return
			}
		}
	}()
	return wctx, func() { cancel(nil) }
}

// awaitOutcome waits for the model owner's word on how the run ended:
// nil when it succeeded, the failure otherwise. A model owner that goes
// away (a crash, a restart) is waited for: its word comes on its next
// connection.
func (c *cohortRun) awaitOutcome(ctx context.Context, from string) error {
	for {
		changed := c.t.MembershipChanged()
		b, err := c.t.Recv(ctx, from, outcomeKey)
		if err == nil {
			return multihost.DecodeOutcome(from, b)
		}
		if ctx.Err() != nil {
			return nil // Serve's end or this player's: not the model owner's word
		}
		select {
		case <-changed: // try again once its connection changed
		case <-ctx.Done():
			return nil
		}
	}
}
