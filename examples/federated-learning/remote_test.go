package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/internal/launch"
	"github.com/shareflow/shareflow/internal/multihost"
	"github.com/shareflow/shareflow/internal/multihost/multihosttest"
	"github.com/shareflow/shareflow/internal/units"
	"github.com/shareflow/shareflow/players"
)

// These tests run the example as it runs across hosts: the built binary,
// one process per player, real gRPC with mutual TLS on loopback.

// example is this example's binary, built once for the tests that run
// it as processes.
var example = multihosttest.Program{Dir: "."}

var accuracyLine = regexp.MustCompile(`\[model-owner\]\s+test accuracy ([0-9.]+)`)

// TestSevenProcessesMatchLocalRun runs the example as seven processes and
// checks that, with the same seed, the model owner ends with the accuracy
// of a run in one process.
func TestSevenProcessesMatchLocalRun(t *testing.T) {
	bin := example.Binary(t)
	hosts := multihosttest.Cluster(t, 3, 20*time.Second, 20*time.Second)
	const iterations = 15

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := launch.Run(ctx, launch.Spec{
		Program: bin, Args: []string{"--iterations", strconv.Itoa(iterations), "--seed", "3", "--quiet"},
		Config: hosts, Players: players.Defaults(3), Output: &out,
	})
	require.NoError(t, err, out.String())
	m := accuracyLine.FindStringSubmatch(out.String())
	require.NotNil(t, m, out.String())
	remote, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)

	train, test, err := mnist.Embedded()
	require.NoError(t, err)
	o, err := parseFlags([]string{"--iterations", strconv.Itoa(iterations), "--seed", "3"}, io.Discard)
	require.NoError(t, err)
	local, err := trainOnce(context.Background(), o, "secure", train, test, newProgress(io.Discard, true), nil)
	require.NoError(t, err)
	assert.InDelta(t, local.accuracy, remote, 0.001, "seven processes and one agree within 0.1 percentage points")

	// The servers' uploads to the model owner: two shares of 4 bytes per
	// parameter (Z_2^32), every round.
	assert.Regexp(t, `\[model-owner\]\s+server0\s+-> model-owner\s+1\.63 MB`, out.String())
	assert.Contains(t, out.String(), fmt.Sprintf("server0 -> model-owner: %s in all", units.Bytes(float64(iterations)*407050*4)))
}

// TestMissingPeerIsNamed starts some players but not data-owner-2: the
// others must give up at the connect deadline, naming the missing player
// and its address.
func TestMissingPeerIsNamed(t *testing.T) {
	bin := example.Binary(t)
	hosts := multihosttest.Cluster(t, 3, 3*time.Second, 20*time.Second)
	cfg, err := players.LoadConfig(hosts)
	require.NoError(t, err)
	missingAddr, err := cfg.Address("data-owner-2")
	require.NoError(t, err)

	var started []*multihosttest.Process
	for _, p := range []string{"server0", "model-owner"} {
		started = append(started, multihosttest.Start(t, bin, hosts, p, "--iterations", "5", "--quiet"))
	}
	for _, p := range started {
		out, err := p.Wait()
		require.Error(t, err, out)
		assert.Contains(t, out, fmt.Sprintf(`waiting for player "data-owner-2" at %s`, missingAddr))
		assert.Contains(t, out, "no answer within", "gave up at the connect deadline")
	}
}

// progressLine is the model owner's progress report after iteration 20 of
// 200 (it reports every tenth of the run).
var progressLine = regexp.MustCompile(`(?m)^secure: iteration 20/200,`)

// TestPeerKilledMidRun kills a data owner while training: every other
// player must fail, the crypto producer too although it has no part in
// the computation, and those that talked to it must name it.
func TestPeerKilledMidRun(t *testing.T) {
	bin := example.Binary(t)
	hosts := multihosttest.Cluster(t, 3, 20*time.Second, 20*time.Second)
	procs := map[string]*multihosttest.Process{}
	for _, p := range players.Defaults(3) {
		args := []string{"--fixed-owners", "--iterations", "200", "--timeout", "10s"}
		if p != players.ModelOwner {
			args = append(args, "--quiet")
		}
		procs[p] = multihosttest.Start(t, bin, hosts, p, args...)
	}
	// Once the model owner reports iteration 20, kill data-owner-1 without
	// warning.
	ctx, cancel := context.WithTimeout(context.Background(), multihosttest.ProcessTimeout)
	defer cancel()
	procs[players.ModelOwner].WaitFor(t, ctx, progressLine)
	require.NoError(t, procs["data-owner-1"].Cmd.Process.Kill())

	for _, p := range players.Defaults(3) {
		if p == "data-owner-1" {
			continue
		}
		out, err := procs[p].Wait()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "%s exited 0 after a failed run:\n%s", p, multihosttest.LastLines(out, 5))
		assert.Equal(t, 1, exit.ExitCode(), p)
		assert.NotContains(t, out, ", test loss", "%s printed a result", p)
		assert.NotContains(t, out, ": done,", p)
		switch p {
		case "server0", "server1", "model-owner":
			assert.Contains(t, out, `"data-owner-1"`, "%s names the lost player:\n%s", p, multihosttest.LastLines(out, 5))
		case "server2":
			// It had nothing to do, and learns at the end that the run failed.
			assert.Contains(t, out, "the run failed on 6 of the other 6 players", multihosttest.LastLines(out, 8))
			assert.Contains(t, out, `"data-owner-1" went away without a word`, multihosttest.LastLines(out, 8))
			assert.Contains(t, out, `"server0" failed: secure training, iteration`, multihosttest.LastLines(out, 8))
		}
	}
}

// TestProcessesRefuseDifferentPrograms runs one player with another
// option: the handshake stops everyone before a tensor moves.
func TestProcessesRefuseDifferentPrograms(t *testing.T) {
	bin := example.Binary(t)
	hosts := multihosttest.Cluster(t, 3, 20*time.Second, 20*time.Second)
	procs := map[string]*multihosttest.Process{}
	for _, p := range players.Defaults(3) {
		args := []string{"--iterations", "3", "--quiet"}
		if p == "server1" {
			args = append(args, "--private-division")
		}
		procs[p] = multihosttest.Start(t, bin, hosts, p, args...)
	}
	outs := map[string]string{}
	for p, proc := range procs {
		var err error
		outs[p], err = proc.Wait()
		assert.Error(t, err, "%s exited 0 after a refused run", p)
		assert.NotContains(t, outs[p], "test accuracy", "%s ran an iteration", p)
	}
	// The odd one out sees everyone else disagree; the model owner, whose
	// peers all reach it, sees server1 disagree.
	assert.Contains(t, outs["server1"], "players disagree")
	assert.Contains(t, outs["model-owner"], `player "server1" compiled plan`)
}

// TestIssue8MisspelledDataOwner: a misspelt player name in a flat hostmap
// is named, with its place in the file and the name it probably meant,
// rather than reported as a missing data owner.
func TestIssue8MisspelledDataOwner(t *testing.T) {
	hosts := filepath.Join(t.TempDir(), "hosts.json")
	const flat = `{
  "server0": "127.0.0.1:4440",
  "server1": "127.0.0.1:4441",
  "server2": "127.0.0.1:4442",
  "model-owner": "127.0.0.1:4443",
  "data-owner-0": "127.0.0.1:4444",
  "data-ower-1": "127.0.0.1:4445",
  "data-owner-2": "127.0.0.1:4446"
}`
	require.NoError(t, os.WriteFile(hosts, []byte(flat), 0o644))
	_, err := loadHosts(options{Flags: multihost.Flags{Config: hosts, Player: "server0", Insecure: true}}, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), hosts+":7:3")
	assert.Contains(t, err.Error(), `unknown player "data-ower-1"; did you mean "data-owner-1"?`)

	// Without the stray key the same hostmap loads.
	fixed := strings.Replace(flat, "data-ower-1", "data-owner-1", 1)
	require.NoError(t, os.WriteFile(hosts, []byte(fixed), 0o644))
	cfg, err := loadHosts(options{Flags: multihost.Flags{Config: hosts, Player: "server0", Insecure: true}}, io.Discard)
	require.NoError(t, err)
	n, err := dataOwnersIn(cfg)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
}
