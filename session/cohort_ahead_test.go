package session

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
)

// Seeds ahead and sums as shares arrive (issue 11, items 3 and 6), against
// members and servers that misbehave. Every test runs three members of
// fixedMember (member-i contributes (1, 2, 3, 4)·(i+1), weight 1) and both
// servers as Remote sessions over one in-memory network. In a cohort of
// three, member-0 and member-2 send their seeds to server0 and their
// masked tensors to server1; member-1 the other way.

const aheadN = 4

// aheadHook makes the send hook of one player once the plan is known;
// ep is the player's own endpoint, to send besides what the hook returns.
type aheadHook func(cp *cohortPlan, ep *transport.MemoryEndpoint, session string) func(to string, key transport.Key, b []byte) []byte

// aheadNet starts both servers and three members, the players in hooks
// with their hooks, and returns the coordinator's session, its op, what
// it revealed, the servers' sessions and the plan.
func aheadNet(t *testing.T, deadline time.Duration, hooks map[string]aheadHook) (*cohortNet, *Remote, *graph.Op, *revealed, map[string]*Remote, *cohortPlan) {
	var rec *revealed
	build := func() (*graph.Graph, *graph.Op) {
		g, op, r := aggregationGraph(aheadN, fixedMember(aheadN))
		rec = r
		return g, op
	}
	c := newCohortNet(t, build, Options{Rounds: RoundOptions{Deadline: deadline}})
	cp := planOf(t, build, c.opts).cohort
	servers := map[string]*Remote{}
	for _, p := range append([]string{"server0", "server1"}, cohortMembers(3)...) {
		h, ok := hooks[p]
		if !ok {
			s := c.serve(p, nil, nil)
			if p == "server0" || p == "server1" {
				servers[p] = s
			}
			continue
		}
		ep, err := c.net.Endpoint(p)
		if err != nil {
			ep, err = c.net.Connect(p)
		}
		require.NoError(t, err)
		s := c.serve(p, &sendHook{MemoryEndpoint: ep, onSend: h(cp, ep, roundSession(c.opts.SessionID))}, nil)
		if p == "server0" || p == "server1" {
			servers[p] = s
		}
	}
	s, op := c.coordinator(nil)
	return c, s, op, rec, servers, cp
}

// wantRound checks a revealed round over survivors (indices of members):
// the mean, weighted mean and sum of fixedMember's values, exactly.
func wantRound(t *testing.T, s *Remote, rec *revealed, survivors ...int) {
	t.Helper()
	info := s.LastRound()
	var names []string
	var sum float64
	for _, i := range survivors {
		names = append(names, fmt.Sprintf("member-%d", i))
		sum += float64(i + 1)
	}
	assert.Equal(t, names, info.Survivors)
	_, got := rec.last()
	require.Len(t, got, 3)
	for e := range aheadN {
		v := float64(e + 1)
		assert.Equal(t, v*sum/float64(len(survivors)), got[0][e], "mean, element %d", e)
		assert.Equal(t, v*sum/float64(len(survivors)), got[1][e], "weighted mean, element %d", e)
		assert.Equal(t, v*sum, got[2][e], "sum, element %d", e)
	}
}

// finishAhead ends the run; no Serve failed.
func finishAhead(t *testing.T, c *cohortNet, s *Remote) {
	for p, err := range c.finish(s) {
		assert.NoError(t, err, p)
	}
}

// A member whose masked tensor its masked server refuses (here one of the
// wrong size) is left out by both servers: its seed server, which added
// its streams as its seeds came, takes them back, and the round reveals
// the exact sums over the others. The masked server let its other masked
// tensors go unadded.
func TestCohortAheadMaskedRefusedStreamTakenBack(t *testing.T) {
	c, s, op, rec, servers, _ := aheadNet(t, 10*time.Second, map[string]aheadHook{
		"member-0": func(cp *cohortPlan, _ *transport.MemoryEndpoint, session string) func(string, transport.Key, []byte) []byte {
			return func(to string, key transport.Key, b []byte) []byte {
				if to == "server1" && key.Session == session && key.Iteration == 1 && key.Edge == cp.uploads[len(cp.uploads)-1].edges[1] {
					return b[:len(b)-8] // the last upload, one element short
				}
				return b
			}
		},
	})
	require.NoError(t, s.Run(c.ctx, op))
	wantRound(t, s, rec, 1, 2)
	assert.Contains(t, s.LastRound().Dropped["member-0"], "bytes, want")
	assert.Equal(t, "its shares did not all reach server1", servers["server0"].LastRound().Dropped["member-0"])
	require.NoError(t, s.Run(c.ctx, op), "the next round, untouched")
	wantRound(t, s, rec, 0, 1, 2)
	finishAhead(t, c, s)
}

// Members that misbehave with their seeds or status are left out, or
// their misbehaviour is harmless; the sums stay exact.
func TestCohortAheadHostileMember(t *testing.T) {
	seedsOf := func(b []byte) memberSeeds {
		var m memberSeeds
		require.NoError(t, m.UnmarshalBinary(b))
		return m
	}
	encode := func(m memberSeeds) []byte {
		b, err := m.MarshalBinary()
		require.NoError(t, err)
		return b
	}
	for _, tc := range []struct {
		name      string
		member    string
		hook      aheadHook
		survivors []int
		why       string // the coordinator's reason for the member, if left out
	}{
		{"a seed more than its uploads", "member-1", func(cp *cohortPlan, _ *transport.MemoryEndpoint, session string) func(string, transport.Key, []byte) []byte {
			return func(to string, key transport.Key, b []byte) []byte {
				if key.Session == session && key.Edge == cp.seedEdges[1] {
					m := seedsOf(b)
					m.Seeds = append(m.Seeds, pond.Seed{7})
					return encode(m)
				}
				return b
			}
		}, []int{0, 2}, "it sent 4 seeds for 3 uploads"},
		{"seeds of another round", "member-0", func(cp *cohortPlan, _ *transport.MemoryEndpoint, session string) func(string, transport.Key, []byte) []byte {
			return func(to string, key transport.Key, b []byte) []byte {
				if key.Session == session && key.Edge == cp.seedEdges[0] {
					m := seedsOf(b)
					m.Round++
					return encode(m)
				}
				return b
			}
		}, []int{1, 2}, "its seeds are for round 2, not 1"},
		{"seeds sent twice and to both servers", "member-2", func(cp *cohortPlan, ep *transport.MemoryEndpoint, session string) func(string, transport.Key, []byte) []byte {
			return func(to string, key transport.Key, b []byte) []byte {
				if key.Session == session && key.Edge == cp.seedEdges[0] {
					require.NoError(t, ep.Send(context.Background(), to, key, b))
					assert.ErrorIs(t, ep.Send(context.Background(), to, key, b), transport.ErrDuplicate)
					require.NoError(t, ep.Send(context.Background(), "server1", transport.Key{Session: session, Iteration: key.Iteration, Edge: cp.seedEdges[1]}, b))
					return nil // sent above
				}
				return b
			}
		}, []int{0, 1, 2}, ""},
		{"masked tensors before its seeds", "member-1", func(cp *cohortPlan, ep *transport.MemoryEndpoint, session string) func(string, transport.Key, []byte) []byte {
			var mu sync.Mutex
			var seeds []byte
			var seedsKey transport.Key
			return func(to string, key transport.Key, b []byte) []byte {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case key.Session == session && key.Edge == cp.seedEdges[1]:
					seeds, seedsKey = b, key // held back
					return nil
				case key.Session == session && key.Edge == cp.uploads[len(cp.uploads)-1].edges[0]:
					require.NoError(t, ep.Send(context.Background(), to, key, b))
					require.NotNil(t, seeds)
					require.NoError(t, ep.Send(context.Background(), "server1", seedsKey, seeds)) // the seeds come last
					return nil
				}
				return b
			}
		}, []int{0, 1, 2}, ""},
		{"masked tensors under a dropped status", "member-2", func(cp *cohortPlan, _ *transport.MemoryEndpoint, session string) func(string, transport.Key, []byte) []byte {
			return func(to string, key transport.Key, b []byte) []byte {
				if key.Session == session && key.Edge == cp.statusEdges[1] {
					out, err := (&contribution{Dropped: true, Reason: "changed my mind"}).MarshalBinary()
					require.NoError(t, err)
					return out
				}
				return b
			}
		}, []int{0, 1}, "dropped out: changed my mind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s, op, rec, _, _ := aheadNet(t, 10*time.Second, map[string]aheadHook{tc.member: tc.hook})
			require.NoError(t, s.Run(c.ctx, op))
			wantRound(t, s, rec, tc.survivors...)
			if tc.why != "" {
				assert.Equal(t, tc.why, s.LastRound().Dropped[tc.member])
			}
			finishAhead(t, c, s)
		})
	}
}

// A server whose seeds-held notices are bogus costs at most the members
// they name wrongly: the other server refuses such a notice and leaves
// the member out, and the notice's sender, which holds the member's
// seeds, takes their streams back. Notices under keys nobody waits for
// are never read. A server that says it holds a member's seeds and then
// leaves it out of its arrived set makes the other fail the round, which
// reveals nothing: the masked tensors it added cannot be taken back.
func TestCohortAheadHostileNotices(t *testing.T) {
	noticeHook := func(change func(n *seedsHeld, send func(pos int, n seedsHeld))) aheadHook {
		return func(cp *cohortPlan, ep *transport.MemoryEndpoint, session string) func(string, transport.Key, []byte) []byte {
			return func(to string, key transport.Key, b []byte) []byte {
				if key.Session != session || key.Edge&(1<<32-1) != cp.heldEdges[0] {
					return b
				}
				var n seedsHeld
				require.NoError(t, n.UnmarshalBinary(b))
				send := func(pos int, n seedsHeld) {
					out, err := n.MarshalBinary()
					require.NoError(t, err)
					require.NoError(t, ep.Send(context.Background(), to, transport.Key{Session: session, Iteration: key.Iteration, Edge: heldEdge(cp.heldEdges[0], pos)}, out))
				}
				change(&n, send)
				out, err := n.MarshalBinary()
				require.NoError(t, err)
				return out
			}
		}
	}
	for _, tc := range []struct {
		name      string
		change    func(n *seedsHeld, send func(pos int, n seedsHeld))
		survivors []int
		why       string // server1's reason for member-0, if left out
	}{
		{"another member", func(n *seedsHeld, _ func(int, seedsHeld)) {
			if n.Position == 0 {
				n.Member = "member-2"
			}
		}, []int{1, 2}, `server0's notice of its seeds names "member-2" at position 0 of round 1, not position 0 of round 1: refused`},
		{"another round", func(n *seedsHeld, _ func(int, seedsHeld)) {
			if n.Position == 0 {
				n.Round = 9
			}
		}, []int{1, 2}, `server0's notice of its seeds names "member-0" at position 0 of round 9, not position 0 of round 1: refused`},
		{"outside the cohort", func(n *seedsHeld, send func(int, seedsHeld)) {
			if n.Position == 0 {
				send(50, seedsHeld{Round: n.Round, Position: 50, Member: "member-50", Held: true})
				send(1, seedsHeld{Round: n.Round, Position: 1, Member: "member-1", Held: true}) // member-1's seeds are server1's
			}
		}, []int{0, 1, 2}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s, op, rec, servers, _ := aheadNet(t, 10*time.Second, map[string]aheadHook{"server0": noticeHook(tc.change)})
			require.NoError(t, s.Run(c.ctx, op))
			wantRound(t, s, rec, tc.survivors...)
			if tc.why != "" {
				assert.Equal(t, tc.why, servers["server1"].LastRound().Dropped["member-0"])
				assert.Equal(t, "its shares did not all reach server1", servers["server0"].LastRound().Dropped["member-0"])
			}
			finishAhead(t, c, s)
		})
	}

	t.Run("promise broken", func(t *testing.T) {
		altered := 0
		c, s, op, rec, _, _ := aheadNet(t, 10*time.Second, map[string]aheadHook{
			"server0": func(cp *cohortPlan, _ *transport.MemoryEndpoint, session string) func(string, transport.Key, []byte) []byte {
				return func(to string, key transport.Key, b []byte) []byte {
					if key.Session != session || key.Edge != cp.exchangeEdges[0] || key.Iteration != 1 {
						return b
					}
					var a arrivedSet
					require.NoError(t, a.UnmarshalBinary(b))
					a.Members = slices.DeleteFunc(a.Members, func(m string) bool { return m == "member-0" })
					altered++
					out, err := a.MarshalBinary()
					require.NoError(t, err)
					return out
				}
			},
		})
		err := s.Run(c.ctx, op)
		require.Error(t, err)
		assert.ErrorContains(t, err, `server0's arrived set for round 1 leaves out "member-0", whose seeds it said it held: server1 added their masked tensors and cannot take them back, so it sends no share`)
		calls, _ := rec.last()
		assert.Zero(t, calls, "nothing is revealed")
		assert.Equal(t, 1, altered)
		require.NoError(t, s.Run(c.ctx, op), "the next round, untouched")
		wantRound(t, s, rec, 0, 1, 2)
		finishAhead(t, c, s)
	})
}
