// Package multihosttest helps test an example as it runs across hosts:
// its binary built once, a hostmap of free loopback ports with
// development certificates, and players started as processes whose
// output a test can wait on. See package multihost for the examples'
// side.
package multihosttest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/internal/launch"
	"github.com/shareflow/shareflow/players"
)

// Program is a Go main package that tests run as processes, built at most
// once per test binary. It is safe for concurrent use.
type Program struct {
	// Dir is the package's directory, as for go build ("." for the
	// package under test).
	Dir string

	once sync.Once
	path string
	err  error
}

// Binary builds the program on first use and returns the binary's path.
// With -short it skips the test instead: building and starting a process
// per player is slow. The binary lives in a directory of its own under
// the system's temporary directory.
func (p *Program) Binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the example and starts a process per player; skipped with -short")
	}
	p.once.Do(func() {
		dir, err := os.MkdirTemp("", "multihost-test-")
		if err != nil {
			p.err = err
			return
		}
		p.path, p.err = launch.Build(context.Background(), p.Dir, dir)
	})
	require.NoError(t, p.err)
	return p.path
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
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

// Cluster writes, in a new temporary directory, an extended hostmap
// (hosts.json) of TF Encrypted's players with dataOwners data owners
// (players.Defaults) on free loopback ports, with its connect and message
// timeouts, and development certificates in the certs directory next to
// it (named by its cert_dir). It returns the hostmap's path.
func Cluster(t testing.TB, dataOwners int, connectTimeout, messageTimeout time.Duration) string {
	t.Helper()
	dir := t.TempDir()
	names := players.Defaults(dataOwners)
	ports := FreePorts(t, len(names))
	hosts := map[string]any{}
	for i, n := range names {
		hosts[n] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	cfg := map[string]any{"players": hosts, "cert_dir": "certs",
		"connect_timeout": connectTimeout.String(), "message_timeout": messageTimeout.String()}
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

// FlatHostmap writes, in a new temporary directory, TF Encrypted's flat
// hostmap (hosts.json: name to address, no TLS settings) of names on
// ports 4440 onwards, and returns its path. Nothing listens there: it is
// for tests that only load it.
func FlatHostmap(t testing.TB, names []string) string {
	t.Helper()
	flat := map[string]string{}
	for i, n := range names {
		flat[n] = fmt.Sprintf("127.0.0.1:%d", 4440+i)
	}
	b, err := json.Marshal(flat)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "hosts.json")
	require.NoError(t, os.WriteFile(path, b, 0o644))
	return path
}

// ProcessTimeout is the safety net of a process Start starts: it is
// killed if still running then, so that a hung test fails instead of
// waiting for go test's own deadline.
const ProcessTimeout = 3 * time.Minute

// Process is one player run in its own process. Its methods are safe for
// concurrent use.
type Process struct {
	// Cmd is the running command, for a test that kills the player.
	Cmd *exec.Cmd

	out  *lineWatcher
	done chan struct{} // closed when the process has exited; err is set
	err  error
}

// Start runs player name of the hostmap hosts as bin with args and
// "--config hosts --player name", its output collected. The process is
// killed when the test ends, or after ProcessTimeout.
func Start(t testing.TB, bin, hosts, name string, args ...string) *Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ProcessTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin, append(args, "--config", hosts, "--player", name)...)
	out := newLineWatcher()
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill() })
	p := &Process{Cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

// Wait waits for the process to exit and returns its output and its exit
// error (an *exec.ExitError when it failed).
func (p *Process) Wait() (string, error) {
	<-p.done
	return p.out.String(), p.err
}

// WaitFor returns once the process's output matches re, or fails the
// test when the process exits or ctx ends first.
func (p *Process) WaitFor(t testing.TB, ctx context.Context, re *regexp.Regexp) {
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
				t.Fatalf("the player exited without printing %v:\n%s", re, LastLines(w.String(), 10))
			}
			return
		case <-ctx.Done():
			t.Fatalf("no %v in the output:\n%s", re, LastLines(w.String(), 10))
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

// LastLines returns the last n lines of s, for a failure message.
func LastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
