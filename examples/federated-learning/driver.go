package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// driver runs rounds on the model owner until the model has had
// --iterations updates: it records each round (--round-log, the slog
// line, the summary's statistics), fails the run after --max-skipped
// skipped rounds in a row, and writes the checkpoint. A driver is not safe
// for concurrent use.
type driver struct {
	o        options
	mo       *ModelOwner
	owners   []*DataOwner // the data owners hosted here: all of them in one process, none across hosts
	rounds   rounder
	sampler  *rand.PCG // the cohort stream whose state the checkpoint keeps; nil when rounds draw none here
	log      *slog.Logger
	progress *progress
	// everyRound logs every round at Info, not only those that lost an
	// owner.
	everyRound bool
	// run are the settings a checkpoint must match (nil without
	// --checkpoint).
	run []runField

	roundLog  *roundLog
	round     uint64 // the last round's number
	stats     roundStats
	trainLoss []float64
	ran       int // rounds run by this process (not before a resume)
	saved     int // the step of the last checkpoint written
}

// resume loads the checkpoint, if there is one, and sets the model owner,
// the in-process data owners and the driver to its state; then it opens
// the round log. A checkpoint that does not fit is refused before
// anything is written.
func (d *driver) resume() error {
	if d.o.checkpointDir != "" {
		ck, err := loadCheckpoint(d.o.checkpointDir, d.run, d.mo.Architecture())
		if err != nil {
			return err
		}
		if ck != nil {
			if err := d.restore(ck); err != nil {
				return &checkpointError{File: checkpointPath(d.o.checkpointDir), Err: err}
			}
			d.log.Info("resumed from checkpoint", "file", checkpointPath(d.o.checkpointDir), "step", ck.Step, "round", ck.Round)
		}
	}
	if d.o.roundLog != "" {
		l, last, err := openRoundLog(d.o.roundLog)
		if err != nil {
			return err
		}
		d.roundLog = l
		d.round = max(d.round, last)
	}
	return nil
}

// restore sets everything to the checkpoint's state. On an error the
// run stops before its first round, so a state half restored is never
// used.
func (d *driver) restore(ck *checkpoint) error {
	if len(ck.Owners) != len(d.owners) {
		return fmt.Errorf("holds the state of %d data owners hosted in its process, this process hosts %d", len(ck.Owners), len(d.owners))
	}
	var sampler rand.PCG
	if d.sampler != nil {
		if err := sampler.UnmarshalBinary(ck.Sampler); err != nil {
			return fmt.Errorf("cohort stream: %w", err)
		}
	}
	if ck.Step < 0 || ck.Step > 1<<30 {
		return fmt.Errorf("step %d out of range", ck.Step)
	}
	if err := d.mo.restore(ck.Params, ck.Step, ck.History); err != nil {
		return err
	}
	for i, s := range ck.Owners {
		if err := d.owners[i].restore(s); err != nil {
			return err
		}
	}
	if d.sampler != nil {
		*d.sampler = sampler
	}
	d.round, d.stats, d.saved = ck.Round, ck.Stats, ck.Step
	d.trainLoss = append([]float64(nil), ck.TrainLoss...)
	return nil
}

// checkpoint writes the model owner's state.
func (d *driver) checkpoint() error {
	params, step, history := d.mo.snapshot()
	ck := &checkpoint{
		Run: d.run, Arch: d.mo.Architecture(), Step: step, Round: d.round, Params: params,
		Stats: d.stats, History: history, TrainLoss: d.trainLoss,
	}
	if d.sampler != nil {
		b, err := d.sampler.MarshalBinary()
		if err != nil {
			return err
		}
		ck.Sampler = b
	}
	for _, o := range d.owners {
		s, err := o.state()
		if err != nil {
			return err
		}
		ck.Owners = append(ck.Owners, s)
	}
	if err := ck.save(d.o.checkpointDir); err != nil {
		return err
	}
	d.saved = step
	d.log.Debug("checkpoint written", "file", checkpointPath(d.o.checkpointDir), "step", step, "round", d.round)
	return nil
}

// train runs rounds until the model has o.iterations updates, and writes
// the checkpoint once more at the end.
func (d *driver) train(ctx context.Context, mode string) error {
	d.progress.start(mode, d.o.iterations)
	for d.mo.Iteration() < d.o.iterations {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s training, before round %d (step %d): %w", mode, d.round+1, d.mo.Iteration()+1, context.Cause(ctx))
		}
		d.round++
		r, survivors, err := d.rounds.round(ctx, d.round)
		if err != nil && r.Round == 0 {
			return fmt.Errorf("%s training, round %d (step %d): %w", mode, d.round, d.mo.Iteration()+1, err)
		}
		// The round ran, though it may end the run (too many skipped).
		d.round = r.Round
		d.ran++
		d.stats.add(r)
		if d.roundLog != nil {
			if err := d.roundLog.write(r); err != nil {
				return err
			}
		}
		logRound(d.log, r, d.everyRound)
		if err != nil {
			return fmt.Errorf("%s training, round %d: %w", mode, d.round, err)
		}
		if r.Skipped != "" {
			continue
		}
		if loss, ok := d.meanLoss(survivors); ok {
			d.trainLoss = append(d.trainLoss, loss)
		}
		d.progress.update(r.Step, d.mo.History())
		if d.o.checkpointDir != "" && r.Step%d.o.checkpointEvery == 0 {
			if err := d.checkpoint(); err != nil {
				return err
			}
		}
	}
	d.progress.done()
	if d.o.checkpointDir != "" && d.saved != d.mo.Iteration() {
		return d.checkpoint()
	}
	return nil
}

// meanLoss returns the mean of the last batch losses of the survivors
// hosted here.
func (d *driver) meanLoss(survivors []int) (float64, bool) {
	var sum float64
	n := 0
	for _, i := range survivors {
		if l, ok := d.owners[i].LastLoss(); ok {
			sum += l
			n++
		}
	}
	return sum / float64(max(n, 1)), n > 0
}

// Close closes the round log.
func (d *driver) Close() error { return d.roundLog.Close() }

// perRound returns the mean time of the rounds this process ran, without
// the model owner's evaluations.
func (d *driver) perRound(elapsed time.Duration) time.Duration {
	if d.ran == 0 {
		return 0
	}
	return (elapsed - d.mo.EvaluationTime()) / time.Duration(d.ran)
}

// errResumeAcrossHosts refuses to resume a classic run across hosts.
var errResumeAcrossHosts = errors.New("a run across hosts with a fixed list of data owners cannot resume the model owner alone: every player runs the same number of iterations")
