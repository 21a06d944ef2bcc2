package session

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shareflow/shareflow/protocol/pond"
)

// BenchmarkRoundServerMemory measures what the servers hold of a round's
// shares: a Local session of SHAREFLOW_ROUND_OWNERS members (100) of
// SHAREFLOW_ROUND_PARAMS parameters (100,000) each. When server0's gather
// step ends (every member's shares arrived, the servers agreed), it
// collects garbage and reads the live heap: what both servers hold then,
// with the members done, and the session's pools. It reports that heap
// per owner-parameter (live-B/owner-param): a server that holds every
// masked tensor until the servers agree holds 8 bytes per element of the
// half of the members it is the masked server of, so both hold about 8
// per owner-parameter. held-B/owner-param is the most server0's gather
// held at once of members' masked tensors and its running sums (issue 11,
// item 6: about one copy of each share in flight), in Z_2^64 and in Z_2^32,
// where a masked tensor is held as its 4-byte words. Run with -benchtime 3x.
func BenchmarkRoundServerMemory(b *testing.B) {
	owners, params := benchEnvInt(b, "SHAREFLOW_ROUND_OWNERS", 100), benchEnvInt(b, "SHAREFLOW_ROUND_PARAMS", 100_000)
	x := edgeValues(newBenchRand(), params, 1)
	for _, c := range []struct {
		ring int
		pace int
	}{{pond.Ring64, 0}, {pond.Ring64, 2}, {pond.Ring32, 0}, {pond.Ring32, 2}} {
		ring, pace := c.ring, c.pace
		name := fmt.Sprintf("ring%d/all-at-once", ring)
		if pace > 0 {
			name = fmt.Sprintf("ring%d/paced-%d", ring, pace) // at most pace members' functions run at a time
		}
		b.Run(name, func(b *testing.B) {
			var fail func(context.Context, string) error
			if pace > 0 {
				tokens := make(chan struct{}, pace)
				fail = func(ctx context.Context, _ string) error {
					tokens <- struct{}{}
					defer func() { <-tokens }()
					return nil
				}
			}
			g, op := meanCohortGraph(params, x, fail)
			// Forced: Z_2^32 holds the inputs (|x| ≤ 1) of 100 owners, but the
			// automatic choice keeps Z_2^64's wider default range there.
			s, err := NewLocal(g, Options{Protocol: pond.Config{Ring: ring}, Rounds: RoundOptions{Members: cohortMembers(owners), Deadline: 10 * time.Minute}})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var live, held atomic.Int64
			s.timing = func(player string, st step, _ time.Duration) {
				if _, ok := st.(*gatherStep); !ok || player != "server0" {
					return
				}
				runtime.GC()
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				live.Store(max(live.Load(), int64(m.HeapAlloc)))
			}
			s.roundHeld = func(player string, peak int64) {
				if player == "server0" {
					held.Store(max(held.Load(), peak))
				}
			}
			for b.Loop() {
				if err := s.Run(context.Background(), op); err != nil {
					b.Fatal(err)
				}
			}
			n := float64(owners) * float64(params)
			b.ReportMetric(float64(live.Load())/n, "live-B/owner-param")
			b.ReportMetric(float64(held.Load())/n, "held-B/owner-param")
			b.ReportMetric(float64(live.Load())/1e6, "live-MB")
		})
	}
}

func benchEnvInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatal(fmt.Sprintf("%s=%q: want a positive integer", name, v))
	}
	return n
}
