package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/internal/launch"
	"github.com/shareflow/shareflow/players"
)

// These tests run the example as it runs across hosts: the built binary,
// one process per player, real gRPC with mutual TLS on loopback.

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// exampleBinary builds this example once per test run.
func exampleBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the example and starts seven processes; skipped with -short")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fl-test-")
		if err != nil {
			buildErr = err
			return
		}
		binary, buildErr = launch.Build(context.Background(), ".", dir)
	})
	require.NoError(t, buildErr)
	return binary
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// cluster writes an extended hosts file for TF Encrypted's seven players,
// with development certificates, and returns its path.
func cluster(t *testing.T, connectTimeout string) string {
	dir := t.TempDir()
	names := players.Defaults(3)
	ports := freePorts(t, len(names))
	hosts := map[string]any{}
	for i, n := range names {
		hosts[n] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	cfg := map[string]any{"players": hosts, "cert_dir": "certs", "connect_timeout": connectTimeout, "message_timeout": "20s"}
	b, err := json.MarshalIndent(cfg, "", "  ")
	require.NoError(t, err)
	path := filepath.Join(dir, "hosts.json")
	require.NoError(t, os.WriteFile(path, b, 0o644))
	parsed, err := players.LoadConfig(path)
	require.NoError(t, err)
	_, err = players.GenerateDevPKI(filepath.Join(dir, "certs"), parsed.CertSpecs(), players.DevPKIOptions{})
	require.NoError(t, err)
	return path
}

var accuracyLine = regexp.MustCompile(`\[model-owner\]\s+test accuracy ([0-9.]+)`)

// TestSevenProcessesMatchLocalRun runs the example as seven processes and
// checks that, with the same seed, the model owner ends with the accuracy
// of a run in one process.
func TestSevenProcessesMatchLocalRun(t *testing.T) {
	bin := exampleBinary(t)
	hosts := cluster(t, "20s")
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
	local, err := trainOnce(context.Background(), o, "secure", train, test, newProgress(io.Discard, true))
	require.NoError(t, err)
	assert.InDelta(t, local.accuracy, remote, 0.001, "seven processes and one agree within 0.1 percentage points")

	// The servers' uploads to the model owner: two shares of 8 bytes per parameter.
	assert.Contains(t, out.String(), "server0 -> model-owner: 3.26 MB per iteration")
}

// start runs one player of the example in its own process and returns a
// function that waits for its exit and returns its output.
func start(t *testing.T, bin, hosts, player string, args ...string) (*exec.Cmd, func() (string, error)) {
	cmd := exec.Command(bin, append(args, "--config", hosts, "--player", player)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, func() (string, error) {
		err := cmd.Wait()
		return out.String(), err
	}
}

// TestMissingPeerIsNamed starts every player but one: the others must
// give up within the connect deadline, naming the missing player and its
// address.
func TestMissingPeerIsNamed(t *testing.T) {
	bin := exampleBinary(t)
	hosts := cluster(t, "3s")
	cfg, err := players.LoadConfig(hosts)
	require.NoError(t, err)
	missingAddr, err := cfg.Address("data-owner-2")
	require.NoError(t, err)

	begin := time.Now()
	var waits []func() (string, error)
	for _, p := range []string{"server0", "model-owner"} {
		_, wait := start(t, bin, hosts, p, "--iterations", "5", "--quiet")
		waits = append(waits, wait)
	}
	for _, wait := range waits {
		out, err := wait()
		require.Error(t, err, out)
		assert.Contains(t, out, fmt.Sprintf(`waiting for player "data-owner-2" at %s`, missingAddr))
	}
	assert.Less(t, time.Since(begin), 15*time.Second, "the connect deadline is 3s")
}

// TestPeerKilledMidRun kills a data owner while training: the servers and
// the model owner must fail the iteration promptly, naming it.
func TestPeerKilledMidRun(t *testing.T) {
	bin := exampleBinary(t)
	hosts := cluster(t, "20s")
	cmds := map[string]*exec.Cmd{}
	waits := map[string]func() (string, error){}
	for _, p := range players.Defaults(3) {
		cmds[p], waits[p] = start(t, bin, hosts, p, "--iterations", "100000", "--quiet", "--timeout", "10s")
	}
	// Let training start, then kill data-owner-1 without warning.
	time.Sleep(4 * time.Second)
	killed := time.Now()
	require.NoError(t, cmds["data-owner-1"].Process.Kill())

	for _, p := range []string{"server0", "server1", "model-owner"} {
		out, err := waits[p]()
		require.Error(t, err, "%s kept running after data-owner-1 died", p)
		assert.Contains(t, out, `"data-owner-1"`, "%s names the lost player:\n%s", p, lastLines(out, 5))
	}
	assert.Less(t, time.Since(killed), 15*time.Second, "failures within the 10s iteration deadline")
}

// TestProcessesRefuseDifferentPrograms runs one player with another
// option: the handshake stops everyone before a tensor moves.
func TestProcessesRefuseDifferentPrograms(t *testing.T) {
	bin := exampleBinary(t)
	hosts := cluster(t, "20s")
	waits := map[string]func() (string, error){}
	for _, p := range players.Defaults(3) {
		args := []string{"--iterations", "3", "--quiet"}
		if p == "server1" {
			args = append(args, "--private-division")
		}
		_, waits[p] = start(t, bin, hosts, p, args...)
	}
	outs := map[string]string{}
	for p, wait := range waits {
		outs[p], _ = wait()
		assert.NotContains(t, outs[p], "test accuracy", "%s ran an iteration", p)
	}
	// The odd one out sees everyone else disagree; the model owner, whose
	// peers all reach it, sees server1 disagree.
	assert.Contains(t, outs["server1"], "players disagree")
	assert.Contains(t, outs["model-owner"], `player "server1" compiled plan`)
}

func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
