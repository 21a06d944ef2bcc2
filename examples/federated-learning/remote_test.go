package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	"github.com/shareflow/shareflow/session/transport"
)

// These tests run the example as it runs across hosts: the built binary,
// one process per player, real gRPC with mutual TLS on loopback.

var (
	buildOnce sync.Once
	builtBin  string
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
		builtBin, buildErr = launch.Build(context.Background(), ".", dir)
	})
	require.NoError(t, buildErr)
	return builtBin
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
	local, err := trainOnce(context.Background(), o, "secure", train, test, newProgress(io.Discard, true), nil)
	require.NoError(t, err)
	assert.InDelta(t, local.accuracy, remote, 0.001, "seven processes and one agree within 0.1 percentage points")

	// The servers' uploads to the model owner: two shares of 8 bytes per
	// parameter, every round.
	assert.Regexp(t, `\[model-owner\]\s+server0\s+-> model-owner\s+3\.26 MB`, out.String())
	assert.Contains(t, out.String(), fmt.Sprintf("server0 -> model-owner: %s in all", humanBytes(float64(iterations)*3256400)))
}

// processTimeout is the safety net of the tests that start players
// themselves: a player still running after it is killed, so that a hung
// test fails instead of waiting for go test's own deadline.
const processTimeout = 3 * time.Minute

// player is one player of the example, run in its own process.
type player struct {
	cmd  *exec.Cmd
	out  *lineWatcher
	done chan struct{} // closed when the process has exited; err is set
	err  error
}

// start runs one player of the example in its own process.
func start(t *testing.T, bin, hosts, name string, args ...string) *player {
	ctx, cancel := context.WithTimeout(context.Background(), processTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin, append(args, "--config", hosts, "--player", name)...)
	out := newLineWatcher()
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill() })
	p := &player{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

// wait waits for the player to exit and returns its output and exit error.
func (p *player) wait() (string, error) {
	<-p.done
	return p.out.String(), p.err
}

// waitFor returns once the player's output has a line matching re, or
// fails the test when the player exits or ctx ends first.
func (p *player) waitFor(t *testing.T, ctx context.Context, re *regexp.Regexp) {
	t.Helper()
	w := p.out
	for {
		w.mu.Lock()
		found, changed := re.MatchString(w.buf.String()), w.changed
		w.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-p.done:
			if !re.MatchString(w.String()) {
				t.Fatalf("the player exited without printing %v:\n%s", re, lastLines(w.String(), 10))
			}
			return
		case <-ctx.Done():
			t.Fatalf("no %v in the output:\n%s", re, lastLines(w.String(), 10))
		}
	}
}

// lineWatcher collects a process's output and says when it grows. It is
// safe for concurrent use.
type lineWatcher struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLineWatcher() *lineWatcher { return &lineWatcher{changed: make(chan struct{})} }

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
	return w.buf.Write(p)
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestMissingPeerIsNamed starts some players but not data-owner-2: the
// others must give up at the connect deadline, naming the missing player
// and its address.
func TestMissingPeerIsNamed(t *testing.T) {
	bin := exampleBinary(t)
	hosts := cluster(t, "3s")
	cfg, err := players.LoadConfig(hosts)
	require.NoError(t, err)
	missingAddr, err := cfg.Address("data-owner-2")
	require.NoError(t, err)

	var started []*player
	for _, p := range []string{"server0", "model-owner"} {
		started = append(started, start(t, bin, hosts, p, "--iterations", "5", "--quiet"))
	}
	for _, p := range started {
		out, err := p.wait()
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
	bin := exampleBinary(t)
	hosts := cluster(t, "20s")
	procs := map[string]*player{}
	for _, p := range players.Defaults(3) {
		args := []string{"--fixed-owners", "--iterations", "200", "--timeout", "10s"}
		if p != players.ModelOwner {
			args = append(args, "--quiet")
		}
		procs[p] = start(t, bin, hosts, p, args...)
	}
	// Once the model owner reports iteration 20, kill data-owner-1 without
	// warning.
	ctx, cancel := context.WithTimeout(context.Background(), processTimeout)
	defer cancel()
	procs[players.ModelOwner].waitFor(t, ctx, progressLine)
	require.NoError(t, procs["data-owner-1"].cmd.Process.Kill())

	for _, p := range players.Defaults(3) {
		if p == "data-owner-1" {
			continue
		}
		out, err := procs[p].wait()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "%s exited 0 after a failed run:\n%s", p, lastLines(out, 5))
		assert.Equal(t, 1, exit.ExitCode(), p)
		assert.NotContains(t, out, ", test loss", "%s printed a result", p)
		assert.NotContains(t, out, ": done,", p)
		switch p {
		case "server0", "server1", "model-owner":
			assert.Contains(t, out, `"data-owner-1"`, "%s names the lost player:\n%s", p, lastLines(out, 5))
		case "server2":
			// It had nothing to do, and learns at the end that the run failed.
			assert.Contains(t, out, "the run failed on 6 of the other 6 players", lastLines(out, 8))
			assert.Contains(t, out, `"data-owner-1" went away without a word`, lastLines(out, 8))
			assert.Contains(t, out, `"server0" failed: secure training, iteration`, lastLines(out, 8))
		}
	}
}

// TestProcessesRefuseDifferentPrograms runs one player with another
// option: the handshake stops everyone before a tensor moves.
func TestProcessesRefuseDifferentPrograms(t *testing.T) {
	bin := exampleBinary(t)
	hosts := cluster(t, "20s")
	procs := map[string]*player{}
	for _, p := range players.Defaults(3) {
		args := []string{"--iterations", "3", "--quiet"}
		if p == "server1" {
			args = append(args, "--private-division")
		}
		procs[p] = start(t, bin, hosts, p, args...)
	}
	outs := map[string]string{}
	for p, proc := range procs {
		var err error
		outs[p], err = proc.wait()
		assert.Error(t, err, "%s exited 0 after a refused run", p)
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

// TestOutcomes runs the end-of-run exchange between three players on an
// in-process network: all succeed; one fails; one says nothing in time;
// one sends what no honest player sends.
func TestOutcomes(t *testing.T) {
	names := []string{"a", "b", "c"}
	network := func(t *testing.T) map[string]*transport.MemoryEndpoint {
		net := transport.NewMemory(names...)
		eps := map[string]*transport.MemoryEndpoint{}
		for _, n := range names {
			ep, err := net.Endpoint(n)
			require.NoError(t, err)
			eps[n] = ep
		}
		return eps
	}
	ctx := context.Background()

	t.Run("all succeed", func(t *testing.T) {
		eps := network(t)
		for _, n := range names {
			tellOutcome(ctx, eps[n], names, n, nil)
		}
		for _, n := range names {
			assert.NoError(t, awaitOutcomes(ctx, eps[n], names, n), n)
		}
	})

	t.Run("one fails", func(t *testing.T) {
		eps := network(t)
		tellOutcome(ctx, eps["a"], names, "a", nil)
		tellOutcome(ctx, eps["b"], names, "b", errors.New("secure training, iteration 7: lost \"x\"\x1b[2J"))
		tellOutcome(ctx, eps["c"], names, "c", nil)
		err := awaitOutcomes(ctx, eps["a"], names, "a")
		assert.EqualError(t, err, "the run failed on 1 of the other 2 players:\n  \"b\" failed: secure training, iteration 7: lost \"x\"?[2J")
		assert.NoError(t, awaitOutcomes(ctx, eps["b"], names, "b"), "b failed itself and knows it")
	})

	t.Run("a long reason is cut on a rune boundary", func(t *testing.T) {
		eps := network(t)
		reason := "x" + strings.Repeat("é", maxOutcomeReason) // é is two bytes: the limit falls inside one
		tellOutcome(ctx, eps["b"], names, "b", errors.New(reason))
		tellOutcome(ctx, eps["c"], names, "c", nil)
		err := awaitOutcomes(ctx, eps["a"], names, "a")
		require.Error(t, err)
		assert.True(t, strings.HasSuffix(err.Error(), `"b" failed: `+reason[:maxOutcomeReason-1]), "cut before the split rune")
		assert.NotContains(t, err.Error(), "?", "no rune was split")
	})

	t.Run("no word in time", func(t *testing.T) {
		eps := network(t)
		tellOutcome(ctx, eps["b"], names, "b", nil)
		// The deadline passes once b's word is in, while a waits for c's.
		wait, cancel := context.WithCancelCause(ctx)
		a := &recvHook{Transport: eps["a"], from: "b", then: func() {
			cancel(errors.New("not done 20s after \"a\" finished its last iteration"))
		}}
		err := awaitOutcomes(wait, a, names, "a")
		assert.EqualError(t, err, "the run failed on 1 of the other 2 players:\n  \"c\": no word: not done 20s after \"a\" finished its last iteration")
	})

	t.Run("malformed", func(t *testing.T) {
		eps := network(t)
		require.NoError(t, eps["b"].Send(ctx, "a", outcomeKey, nil))
		require.NoError(t, eps["c"].Send(ctx, "a", outcomeKey, append([]byte{outcomeFailed}, make([]byte, maxOutcomeReason+1)...)))
		err := awaitOutcomes(ctx, eps["a"], names, "a")
		assert.EqualError(t, err, "the run failed on 2 of the other 2 players:\n"+
			"  \"b\" sent a malformed outcome of 0 bytes\n"+
			fmt.Sprintf("  \"c\" sent a malformed outcome of %d bytes", maxOutcomeReason+2))
	})
}

// recvHook is a transport that calls then after a receive from player
// from has returned.
type recvHook struct {
	transport.Transport
	from string
	then func()
}

func (h *recvHook) Recv(ctx context.Context, from string, key transport.Key) ([]byte, error) {
	b, err := h.Transport.Recv(ctx, from, key)
	if from == h.from {
		h.then()
	}
	return b, err
}

// TestCertsDefaultNextToConfig loads a flat hostmap, which names no
// certificates: with neither --certs nor --insecure a player takes them
// from the certs directory next to the config, and says where to get
// them when there is none.
func TestCertsDefaultNextToConfig(t *testing.T) {
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts.json")
	flat := map[string]string{}
	for i, n := range players.Defaults(3) {
		flat[n] = fmt.Sprintf("127.0.0.1:%d", 4440+i)
	}
	b, err := json.Marshal(flat)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(hosts, b, 0o644))
	o := options{config: hosts, player: "server0"}

	_, err = loadHosts(o, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), hosts+" names no certificates, and there is no directory "+filepath.Join(dir, "certs"))
	assert.Contains(t, err.Error(), "shareflow certs --config "+hosts)

	parsed, err := players.LoadConfig(hosts)
	require.NoError(t, err)
	_, err = players.GenerateDevPKI(filepath.Join(dir, "certs"), parsed.CertSpecs(), players.DevPKIOptions{})
	require.NoError(t, err)
	var out bytes.Buffer
	cfg, err := loadHosts(o, &out)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "certs", "ca.pem"), cfg.CAFile())
	id, err := cfg.LoadIdentity("server0")
	require.NoError(t, err)
	assert.Equal(t, "server0", id.Player())
	assert.Equal(t, "server0: certificates from "+filepath.Join(dir, "certs")+"\n", out.String())

	// The flags still decide when given.
	other := t.TempDir()
	cfg, err = loadHosts(options{config: hosts, player: "server0", certs: other}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(other, "ca.pem"), cfg.CAFile())
	cfg, err = loadHosts(options{config: hosts, player: "server0", insecure: true}, io.Discard)
	require.NoError(t, err)
	assert.True(t, cfg.Insecure())

	// A config that names its own certificates keeps them.
	ext := cluster(t, "20s") // "cert_dir": "certs" next to it
	out.Reset()
	cfg, err = loadHosts(options{config: ext, player: "server0"}, &out)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(filepath.Dir(ext), "certs", "ca.pem"), cfg.CAFile())
	assert.Empty(t, out.String(), "the config's own setting, not the default")
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
	_, err := loadHosts(options{config: hosts, player: "server0", insecure: true}, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), hosts+":7:3")
	assert.Contains(t, err.Error(), `unknown player "data-ower-1"; did you mean "data-owner-1"?`)

	// Without the stray key the same hostmap loads.
	fixed := strings.Replace(flat, "data-ower-1", "data-owner-1", 1)
	require.NoError(t, os.WriteFile(hosts, []byte(fixed), 0o644))
	cfg, err := loadHosts(options{config: hosts, player: "server0", insecure: true}, io.Discard)
	require.NoError(t, err)
	n, err := dataOwnersIn(cfg)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
}
