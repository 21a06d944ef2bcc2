package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/players"
)

// These tests run the example's rounds as they run across hosts: the
// built binary, one process per player, real gRPC with mutual TLS on
// loopback, and a hostmap of the servers, the crypto producer and the
// model owner only. Data owners join with a certificate of the
// federation's CA, dial out, and may come and go.

// fixedPlayers are the players an open hostmap lists.
var fixedPlayers = []string{players.Server0, players.Server1, players.CryptoProducer, players.ModelOwner}

// openCluster writes a hostmap listing only fixedPlayers, with a
// development CA and certificates for them and for owners data owners,
// and returns its path.
func openCluster(t *testing.T, owners int, connectTimeout string) string {
	dir := t.TempDir()
	ports := freePorts(t, len(fixedPlayers))
	hosts := map[string]any{}
	for i, n := range fixedPlayers {
		hosts[n] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	cfg := map[string]any{"players": hosts, "cert_dir": "certs", "connect_timeout": connectTimeout, "message_timeout": "20s"}
	b, err := json.MarshalIndent(cfg, "", "  ")
	require.NoError(t, err)
	path := filepath.Join(dir, "hosts.json")
	require.NoError(t, os.WriteFile(path, b, 0o644))
	parsed, err := players.LoadConfig(path)
	require.NoError(t, err)
	require.True(t, parsed.OpenMembership(), "a hostmap without data owners admits them")
	specs := parsed.CertSpecs()
	for i := range owners {
		specs = append(specs, players.CertSpec{Player: players.DataOwner(i)})
	}
	_, err = players.GenerateDevPKI(filepath.Join(dir, "certs"), specs, players.DevPKIOptions{})
	require.NoError(t, err)
	return path
}

// federationRun is the processes of one run.
type federationRun struct {
	t     *testing.T
	bin   string
	hosts string
	args  []string
	procs map[string]*player
}

// startAll starts the fixed players and data owners 0 to owners-1, each
// with args.
func startFederation(t *testing.T, hosts string, owners int, args ...string) *federationRun {
	f := &federationRun{t: t, bin: exampleBinary(t), hosts: hosts, args: args, procs: map[string]*player{}}
	for _, p := range fixedPlayers {
		f.start(p)
	}
	for i := range owners {
		f.start(players.DataOwner(i))
	}
	return f
}

// start starts (or restarts) one player.
func (f *federationRun) start(name string) *player {
	args := append([]string{}, f.args...)
	if name != players.ModelOwner {
		args = append(args, "--quiet")
	}
	p := start(f.t, f.bin, f.hosts, name, args...)
	f.procs[name] = p
	return p
}

// roundLine matches the model owner's log line of round n.
func roundLine(n int) *regexp.Regexp {
	return regexp.MustCompile(`msg=round round=` + strconv.Itoa(n) + ` `)
}

// TestRoundsAcrossProcesses runs the rounds with three data owners that
// dial in, to the end: every player exits 0, and the model owner reaches
// the accuracy of a run in one process.
func TestRoundsAcrossProcesses(t *testing.T) {
	hosts := openCluster(t, 3, "20s")
	logPath := filepath.Join(t.TempDir(), "rounds.jsonl")
	f := startFederation(t, hosts, 3, "--iterations", "15", "--seed", "3", "--data-owners", "3", "--round-log", logPath)
	for name, p := range f.procs {
		out, err := p.wait()
		require.NoError(t, err, "%s:\n%s", name, lastLines(out, 15))
	}
	recs := readRoundLog(t, logPath)
	require.Len(t, recs, 15)
	for _, r := range recs {
		assert.Equal(t, []string{"data-owner-0", "data-owner-1", "data-owner-2"}, r.Survivors)
	}
	out, _ := f.procs[players.ModelOwner].wait()
	m := regexp.MustCompile(`test accuracy ([0-9.]+)`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	_ = exec.ErrNotFound
	_ = context.Background
}
