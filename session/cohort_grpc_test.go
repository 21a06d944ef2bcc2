package session

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport/grpctransport"
)

// TestCohortOverGRPC runs rounds across players on loopback with gRPC and
// mutual TLS under open membership: the hostmap lists the servers and the
// model owner; four data owners the config does not list dial in with
// certificates of the same CA, and the model owner invites those its
// transport reports. A data owner that closes its transport is left out
// of the next rounds.
func TestCohortOverGRPC(t *testing.T) {
	const n, rounds = 64, 3
	dir := t.TempDir()
	listed := []string{"server0", "server1", players.ModelOwner}
	lns := map[string]net.Listener{}
	spec := `{"players": {`
	for i, p := range listed {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns[p] = ln
		if i > 0 {
			spec += ", "
		}
		spec += fmt.Sprintf("%q: %q", p, ln.Addr())
	}
	spec += `}, "cert_dir": "certs", "connect_timeout": "20s"}`
	cfg, err := players.ParseConfig([]byte(spec), filepath.Join(dir, "hosts.json"))
	require.NoError(t, err)
	require.True(t, cfg.OpenMembership(), "a hostmap without data owners admits them")
	members := []string{"data-owner-0", "data-owner-1", "data-owner-2", "data-owner-3"}
	specs := cfg.CertSpecs()
	for _, m := range members {
		specs = append(specs, players.CertSpec{Player: m})
	}
	_, err = players.GenerateDevPKI(filepath.Join(dir, "certs"), specs, players.DevPKIOptions{})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := Options{SessionID: "grpc-rounds"}
	transports := map[string]*grpctransport.Transport{}
	for _, p := range append(listed, members...) {
		tr, err := grpctransport.New(cfg, p, grpctransport.Options{Listener: lns[p]})
		require.NoError(t, err)
		t.Cleanup(func() { tr.Close() })
		transports[p] = tr
	}
	var connect sync.WaitGroup
	for p, tr := range transports {
		connect.Go(func() { assert.NoError(t, tr.Connect(ctx), p) })
	}
	connect.Wait()

	var wg sync.WaitGroup
	errs := map[string]error{}
	var mu sync.Mutex
	var rec *revealed
	// The model owner last: the others serve first.
	for _, p := range []string{"server0", "server1", "data-owner-0", "data-owner-1", "data-owner-2", "data-owner-3", players.ModelOwner} {
		g, op, r := aggregationGraph(n, fixedMember(n))
		s, err := NewRemote(g, p, transports[p], opts)
		require.NoError(t, err)
		if p == players.ModelOwner {
			rec = r
			c := transports[p]
			for { // every data owner has dialled in
				changed := c.MembershipChanged()
				if len(c.Members()) == len(members) {
					break
				}
				select {
				case <-changed:
				case <-ctx.Done():
					t.Fatalf("the data owners did not all dial in: %v", c.Members())
				}
			}
			for r := range rounds {
				require.NoError(t, s.Run(ctx, op), "round %d", r+1)
				info := s.LastRound()
				want := members
				if r == rounds-1 {
					want = members[1:]
				}
				require.Equal(t, want, info.Survivors, "round %d", r+1)
				_, got := rec.last()
				for i := range n {
					var sum float64
					for _, m := range want {
						x, _, _ := fixedMember(n)(ctx, m, nil)
						sum += x[i]
					}
					require.InDelta(t, sum/float64(len(want)), got[0][i], 1e-9, "mean, round %d, element %d", r+1, i)
				}
				if r == rounds-2 { // data-owner-0 leaves
					require.NoError(t, transports["data-owner-0"].Close())
					for { // the model owner sees it go
						changed := c.MembershipChanged()
						if !c.Connected("data-owner-0") {
							break
						}
						select {
						case <-changed:
						case <-ctx.Done():
							t.Fatal("data-owner-0 never left")
						}
					}
				}
			}
			require.NoError(t, s.Finish(ctx))
			continue
		}
		wg.Go(func() {
			err := s.Serve(ctx, op)
			mu.Lock()
			errs[p] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, p := range append(listed[:2], members[1:]...) {
		assert.NoError(t, errs[p], p)
	}
	assert.Error(t, errs["data-owner-0"], "its transport closed under it")
}
