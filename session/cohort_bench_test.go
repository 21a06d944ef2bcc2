package session

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
)

// meanCohortGraph is the secure mean of one cohort tensor of n elements,
// each member contributing x (a copy) unless fn says otherwise.
func meanCohortGraph(n int, x []float64, fail func(ctx context.Context, member string) error) (*graph.Graph, *graph.Op) {
	g := graph.New()
	owners := g.DefineCohort("owners")
	in := g.DefineCohortInput(owners, func(ctx context.Context, _ []*tensor.Dense) ([]*tensor.Dense, error) {
		if fail != nil {
			if err := fail(ctx, graph.Member(ctx)); err != nil {
				return nil, err
			}
		}
		return []*tensor.Dense{tensor.New(tensor.WithShape(n), tensor.WithBacking(slices.Clone(x)))}, nil
	}, []graph.Shape{{n}})
	op := g.DefineOutput(players.ModelOwner, []*graph.Private{g.Mean(in[0])}, func(context.Context, []*tensor.Dense) error { return nil })
	return g, op
}

// BenchmarkRoundDropout measures what a dropout costs: the time of a
// round of 10 owners of 100,000 parameters each in a Local session, with
// every owner there, with one whose function fails at once (it tells the
// servers it drops out), and with one that never answers (its function
// waits until the round gives up on it), which the servers wait for until
// their deadline (500 ms here). Run with -benchtime 5x.
func BenchmarkRoundDropout(b *testing.B) {
	const n, owners, deadline = 100_000, 10, 500 * time.Millisecond
	x := edgeValues(newBenchRand(), n, 1)
	for _, tc := range []struct {
		name string
		fail func(ctx context.Context, member string) error
	}{
		{"none-missing", nil},
		{"one-fails-fast", func(_ context.Context, m string) error {
			if m == "member-3" {
				return fmt.Errorf("no data today: %w", graph.ErrDropout)
			}
			return nil
		}},
		{"one-never-answers", func(ctx context.Context, m string) error {
			if m == "member-3" {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			g, op := meanCohortGraph(n, x, tc.fail)
			s, err := NewLocal(g, Options{Rounds: RoundOptions{Members: cohortMembers(owners), Deadline: deadline}})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var total time.Duration
			cpu := cpuTime(b)
			for b.Loop() {
				if err := s.Run(context.Background(), op); err != nil {
					b.Fatal(err)
				}
				total += s.LastRound().Duration
			}
			cpu = cpuTime(b) - cpu
			if got := len(s.LastRound().Survivors); got != owners && tc.fail == nil || got != owners-1 && tc.fail != nil {
				b.Fatalf("%d survivors", got)
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1e3, "round-ms")
			b.ReportMetric(float64(deadline.Milliseconds()), "deadline-ms")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N)/1e3, "cpu-ms/round")
		})
	}
}

// BenchmarkRoundServerWork measures a server's work and bytes per round
// for 10, 100 and 1,000 owners sampled from 1,000 connected ones, each
// with 100,000 parameters, in a Local session: the wall time of the
// round, of server0's gather (receiving every member's shares, which the
// members mask meanwhile on the same cores) and of its sum over the
// survivors (agg-ms: the server's own work, adding the masked tensors and
// the mask streams of the seeds), and the bytes server0 receives. Run
// with -benchtime 1x for 1,000 owners: server0 then holds about 400 MB
// of masked tensors (the other half of the owners send it seeds).
func BenchmarkRoundServerWork(b *testing.B) {
	const n, connected = 100_000, 1000
	x := edgeValues(newBenchRand(), n, 1)
	for _, k := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("owners=%d", k), func(b *testing.B) {
			g, op := meanCohortGraph(n, x, nil)
			s, err := NewLocal(g, Options{Rounds: RoundOptions{Members: cohortMembers(connected), Sample: k, Deadline: 10 * time.Minute}})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var gather, agg atomic.Int64
			s.timing = func(player string, st step, d time.Duration) {
				if player != "server0" {
					return
				}
				switch st.(type) {
				case *gatherStep:
					gather.Add(int64(d))
				case *aggregateStep:
					agg.Add(int64(d))
				}
			}
			var total time.Duration
			cpu := cpuTime(b)
			for b.Loop() {
				if err := s.Run(context.Background(), op); err != nil {
					b.Fatal(err)
				}
				total += s.LastRound().Duration
			}
			cpu = cpuTime(b) - cpu
			var in uint64
			for _, l := range s.Stats() {
				if l.To == "server0" {
					in += l.Bytes
				}
			}
			rounds := float64(b.N)
			b.ReportMetric(float64(total.Microseconds())/rounds/1e3, "round-ms")
			b.ReportMetric(float64(gather.Load())/rounds/1e6, "gather-ms")
			b.ReportMetric(float64(agg.Load())/rounds/1e6, "agg-ms")
			b.ReportMetric(float64(agg.Load())/rounds/1e3/float64(k), "agg-µs/owner")
			b.ReportMetric(float64(in)/rounds/1e6, "MB-in/round")
			b.ReportMetric(float64(cpu.Microseconds())/rounds/1e3, "cpu-ms/round")
		})
	}
}

// cpuTime returns the CPU time (user and system) this process has used:
// steadier than wall time on a shared machine.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
