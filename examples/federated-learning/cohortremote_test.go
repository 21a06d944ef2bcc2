package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/internal/multihost/multihosttest"
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
	ports := multihosttest.FreePorts(t, len(fixedPlayers))
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
	procs map[string]*multihosttest.Process
}

// startAll starts the fixed players and data owners 0 to owners-1, each
// with args.
func startFederation(t *testing.T, hosts string, owners int, args ...string) *federationRun {
	f := &federationRun{t: t, bin: example.Binary(t), hosts: hosts, args: args, procs: map[string]*multihosttest.Process{}}
	for _, p := range fixedPlayers {
		f.start(p)
	}
	for i := range owners {
		f.start(players.DataOwner(i))
	}
	return f
}

// start starts (or restarts) one player.
func (f *federationRun) start(name string) *multihosttest.Process {
	args := append([]string{}, f.args...)
	if name != players.ModelOwner {
		args = append(args, "--quiet")
	}
	p := multihosttest.Start(f.t, f.bin, f.hosts, name, args...)
	f.procs[name] = p
	return p
}

// roundLine matches the model owner's log line of round n.
func roundLine(n int) *regexp.Regexp {
	return regexp.MustCompile(`msg=round round=` + strconv.Itoa(n) + ` `)
}

// TestRoundsAcrossProcesses runs the rounds with three data owners that
// dial in, to the end: every player exits 0, every owner survives every
// round, and the model owner reaches the accuracy of a run in one process
// with the same seed.
func TestRoundsAcrossProcesses(t *testing.T) {
	hosts := openCluster(t, 3, "20s")
	logPath := filepath.Join(t.TempDir(), "rounds.jsonl")
	f := startFederation(t, hosts, 3, "--iterations", "15", "--seed", "3", "--data-owners", "3", "--round-log", logPath)
	f.checkExits()
	recs := readRoundLog(t, logPath)
	require.Len(t, recs, 15)
	for i, r := range recs {
		assert.Equal(t, uint64(i+1), r.Round)
		assert.Equal(t, []string{"data-owner-0", "data-owner-1", "data-owner-2"}, r.Survivors)
		assert.Empty(t, r.Skipped)
	}
	remote := f.finalAccuracy()

	train, test, err := mnist.Embedded()
	require.NoError(t, err)
	local, err := trainOnce(context.Background(), simOptions(t, "--iterations", "15", "--seed", "3"), "secure", train, test, newProgress(io.Discard, true), nil)
	require.NoError(t, err)
	assert.InDelta(t, local.accuracy, remote, 0.001, "processes and one process agree within 0.1 percentage points")
}

// TestDataOwnerKilledMidRun kills one of four data owners with SIGKILL
// in the middle of training: the run completes, every other player exits
// 0, and the round log shows the owner gone from that round on. A data
// owner has no listening socket, while the model owner, which the
// hostmap lists, has one.
func TestDataOwnerKilledMidRun(t *testing.T) {
	hosts := openCluster(t, 4, "20s")
	logPath := filepath.Join(t.TempDir(), "rounds.jsonl")
	f := startFederation(t, hosts, 4, "--iterations", "60", "--data-owners", "4", "--round-log", logPath, "--round-deadline", "5s")
	ctx, cancel := context.WithTimeout(context.Background(), multihosttest.ProcessTimeout)
	defer cancel()
	f.procs[players.ModelOwner].WaitFor(t, ctx, roundLine(10))

	socks, err := listeningSockets(f.procs["data-owner-0"].Cmd.Process.Pid)
	require.NoError(t, err)
	assert.Empty(t, socks, "a data owner only dials out")
	socks, err = listeningSockets(f.procs[players.ModelOwner].Cmd.Process.Pid)
	require.NoError(t, err)
	assert.NotEmpty(t, socks, "the model owner listens at its address")

	require.NoError(t, f.procs["data-owner-1"].Cmd.Process.Kill())
	f.checkExits("data-owner-1")

	recs := readRoundLog(t, logPath)
	gone := -1
	for i, r := range recs {
		in := slices.Contains(r.Survivors, "data-owner-1")
		if gone < 0 && !in {
			gone = i
		}
		if gone >= 0 {
			assert.False(t, in, "round %d: data-owner-1 is gone from round %d on", r.Round, recs[gone].Round)
			assert.Len(t, r.Survivors, 3, "round %d", r.Round)
		}
	}
	require.Positive(t, gone, "data-owner-1 took part before it was killed")
	assert.GreaterOrEqual(t, recs[gone].Round, uint64(10))
	first := recs[gone]
	if slices.Contains(first.Cohort, "data-owner-1") {
		assert.Contains(t, first.Dropped, "data-owner-1", "the round it was killed in says why it is missing")
	}
	assert.Equal(t, 60, recs[len(recs)-1].Step, "training completes")
	t.Logf("data-owner-1 gone from round %d: cohort %v, dropped %v", first.Round, first.Cohort, first.Dropped)
}

// TestLateDataOwnerJoins starts three of four data owners; the fourth
// starts after round 50, is admitted, and takes part in later rounds.
func TestLateDataOwnerJoins(t *testing.T) {
	hosts := openCluster(t, 4, "5s")
	logPath := filepath.Join(t.TempDir(), "rounds.jsonl")
	f := startFederation(t, hosts, 3, "--iterations", "100", "--data-owners", "4", "--round-log", logPath)
	ctx, cancel := context.WithTimeout(context.Background(), multihosttest.ProcessTimeout)
	defer cancel()
	f.procs[players.ModelOwner].WaitFor(t, ctx, roundLine(50))
	f.start("data-owner-3")
	f.checkExits()

	recs := readRoundLog(t, logPath)
	joined := 0
	for _, r := range recs {
		switch {
		case r.Round <= 50:
			assert.NotContains(t, r.Cohort, "data-owner-3", "round %d: before it started", r.Round)
		case slices.Contains(r.Survivors, "data-owner-3"):
			joined++
		}
	}
	assert.Positive(t, joined, "data-owner-3 took part in rounds after it joined")
	assert.Contains(t, recs[len(recs)-1].Survivors, "data-owner-3")
	out, _ := f.procs["data-owner-3"].Wait()
	assert.Contains(t, out, "data-owner-3: done")
}

// TestModelOwnerRestartResumes kills the model owner with SIGKILL past a
// checkpoint and starts it again with the same flags: the servers and data
// owners wait for it, the run completes from the checkpoint, and its
// accuracy is within 1 percentage point of an uninterrupted run with the
// same seed. (It is the same: the owners' batches follow the step the
// model owner sends, so the steps made again after the restart see the
// batches they saw before.)
func TestModelOwnerRestartResumes(t *testing.T) {
	args := func(dir string) []string {
		return []string{"--iterations", "150", "--seed", "5", "--data-owners", "3", "--checkpoint", dir, "--checkpoint-every", "50",
			"--round-log", filepath.Join(dir, "rounds.jsonl")}
	}
	whole := t.TempDir()
	f := startFederation(t, openCluster(t, 3, "20s"), 3, args(whole)...)
	f.checkExits()
	want := f.finalAccuracy()

	dir := t.TempDir()
	f = startFederation(t, openCluster(t, 3, "20s"), 3, args(dir)...)
	ctx, cancel := context.WithTimeout(context.Background(), multihosttest.ProcessTimeout)
	defer cancel()
	f.procs[players.ModelOwner].WaitFor(t, ctx, roundLine(105))
	require.NoError(t, f.procs[players.ModelOwner].Cmd.Process.Kill())
	f.procs[players.ModelOwner].Wait()
	// The servers notice, and wait for it.
	for _, s := range []string{players.Server0, players.Server1} {
		f.procs[s].WaitFor(t, ctx, regexp.MustCompile(`msg="waiting for the coordinator"`))
	}
	f.start(players.ModelOwner)
	f.checkExits()
	got := f.finalAccuracy()
	assert.InDelta(t, want, got, 0.01, "resumed and uninterrupted runs agree within 1 percentage point")

	out, _ := f.procs[players.ModelOwner].Wait()
	assert.Contains(t, out, "resumed from checkpoint")
	assert.Contains(t, out, "step=100")
	recs := readRoundLog(t, filepath.Join(dir, "rounds.jsonl"))
	for i := 1; i < len(recs); i++ {
		assert.Greater(t, recs[i].Round, recs[i-1].Round, "round numbers only increase, across the restart")
	}
	assert.Equal(t, 150, recs[len(recs)-1].Step)
	t.Logf("accuracy %.4f uninterrupted, %.4f resumed", want, got)
}

// TestMinOwnersSkipsAndFails: with three data owners, --min-owners 3 and
// one killed, the rounds are skipped and reveal nothing (the model is not
// updated), and the run fails after --max-skipped of them, naming the
// owner who left; every player learns that the run failed.
func TestMinOwnersSkipsAndFails(t *testing.T) {
	hosts := openCluster(t, 3, "20s")
	logPath := filepath.Join(t.TempDir(), "rounds.jsonl")
	f := startFederation(t, hosts, 3, "--iterations", "200", "--data-owners", "3", "--min-owners", "3", "--max-skipped", "3",
		"--round-deadline", "5s", "--round-log", logPath)
	ctx, cancel := context.WithTimeout(context.Background(), multihosttest.ProcessTimeout)
	defer cancel()
	f.procs[players.ModelOwner].WaitFor(t, ctx, roundLine(5))
	require.NoError(t, f.procs["data-owner-2"].Cmd.Process.Kill())

	out, err := f.procs[players.ModelOwner].Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, out)
	assert.Contains(t, out, "too many rounds skipped")
	assert.Contains(t, out, `"data-owner-2"`, "the error names the owner who left:\n%s", multihosttest.LastLines(out, 5))
	assert.NotContains(t, out, "test loss", "no result")
	for _, name := range []string{players.Server0, players.Server1, players.CryptoProducer, "data-owner-0", "data-owner-1"} {
		out, err := f.procs[name].Wait()
		require.ErrorAs(t, err, &exit, "%s exited 0 after a failed run:\n%s", name, multihosttest.LastLines(out, 5))
		assert.Contains(t, out, `"model-owner" failed: secure training`, "%s:\n%s", name, multihosttest.LastLines(out, 5))
	}

	recs := readRoundLog(t, logPath)
	require.GreaterOrEqual(t, len(recs), 3)
	updates := 0
	for _, r := range recs {
		if r.Skipped == "" {
			updates++
			assert.Len(t, r.Survivors, 3)
		}
		assert.Equal(t, updates, r.Step, "round %d: the model changes in exactly the rounds revealed", r.Round)
	}
	for _, r := range recs[len(recs)-3:] {
		assert.NotEmpty(t, r.Skipped, "round %d", r.Round)
	}
}

// checkExits waits for every player of f but those in skip and requires
// that each exited with status 0.
func (f *federationRun) checkExits(skip ...string) {
	for name, p := range f.procs {
		if slices.Contains(skip, name) {
			continue
		}
		out, err := p.Wait()
		require.NoError(f.t, err, "%s:\n%s", name, multihosttest.LastLines(out, 15))
	}
}

// finalAccuracy returns the test accuracy the model owner printed.
func (f *federationRun) finalAccuracy() float64 {
	out, _ := f.procs[players.ModelOwner].Wait()
	m := regexp.MustCompile(`(?m)^\s+test accuracy ([0-9.]+)`).FindStringSubmatch(out)
	require.NotNil(f.t, m, out)
	acc, err := strconv.ParseFloat(m[1], 64)
	require.NoError(f.t, err)
	return acc
}
