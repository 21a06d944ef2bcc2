package multihosttest_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/internal/multihost/multihosttest"
	"github.com/shareflow/shareflow/players"
)

var program = multihosttest.Program{Dir: "testdata/player"}

func TestFreePorts(t *testing.T) {
	ports := multihosttest.FreePorts(t, 5)
	require.Len(t, ports, 5)
	seen := map[int]bool{}
	for _, p := range ports {
		assert.Positive(t, p)
		assert.False(t, seen[p], "port %d twice", p)
		seen[p] = true
	}
}

func TestCluster(t *testing.T) {
	hosts := multihosttest.Cluster(t, 2, 3*time.Second, time.Minute)
	cfg, err := players.LoadConfig(hosts)
	require.NoError(t, err)
	assert.ElementsMatch(t, players.Defaults(2), cfg.Names())
	assert.Equal(t, 3*time.Second, cfg.ConnectTimeout())
	assert.Equal(t, time.Minute, cfg.MessageTimeout())
	for _, n := range cfg.Names() {
		addr, err := cfg.Address(n)
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(addr, "127.0.0.1:"), addr)
		id, err := cfg.LoadIdentity(n)
		require.NoError(t, err, "the certificates are next to the hostmap")
		assert.Equal(t, n, id.Player())
	}
}

func TestFlatHostmap(t *testing.T) {
	hosts := multihosttest.FlatHostmap(t, []string{"server0", "data-owner-0"})
	cfg, err := players.LoadConfig(hosts)
	require.NoError(t, err)
	addr, err := cfg.Address("data-owner-0")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:4441", addr)
	assert.Empty(t, cfg.CAFile(), "a flat hostmap names no certificates")
}

func TestLastLines(t *testing.T) {
	assert.Equal(t, "c\nd", multihosttest.LastLines("a\nb\nc\nd\n", 2))
	assert.Equal(t, "a\nb", multihosttest.LastLines("a\nb", 5))
	assert.Equal(t, "", multihosttest.LastLines("", 3))
}

// TestStart builds a stand-in player and starts it: it gets the hostmap
// and its name, its output and exit status come back, and WaitFor sees a
// line as it is printed, by a player that keeps running.
func TestStart(t *testing.T) {
	bin := program.Binary(t)
	assert.Equal(t, bin, program.Binary(t), "built once")

	p := multihosttest.Start(t, bin, "hosts.json", "server1", "--exit", "3")
	out, err := p.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, out)
	assert.Equal(t, 3, exit.ExitCode())
	assert.Contains(t, out, "player server1 of hosts.json\n")
	assert.Contains(t, out, "server1: ready\n", "stderr too")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // safety net
	defer cancel()
	p = multihosttest.Start(t, bin, "hosts.json", "server0", "--hang")
	p.WaitFor(t, ctx, regexp.MustCompile(`(?m)^server0: ready$`))
	require.NoError(t, p.Cmd.Process.Kill())
	out, err = p.Wait()
	require.Error(t, err, "killed")
	assert.Equal(t, "player server0 of hosts.json\nserver0: ready\n", out, "stdout and stderr, in order")

	// WaitFor on a player that has already exited with the line printed.
	p = multihosttest.Start(t, bin, "hosts.json", "server2")
	_, err = p.Wait()
	require.NoError(t, err)
	p.WaitFor(t, ctx, regexp.MustCompile(`server2: ready`))
}

// TestProgramBuildError: a program that does not build fails the test
// that wants it, with go build's words.
func TestProgramBuildError(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	bad := multihosttest.Program{Dir: "testdata/none"}
	ft := &fatalT{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != errFailNow {
				panic(r)
			}
		}()
		bad.Binary(ft)
	}()
	assert.True(t, ft.failed, "a build that fails fails the test")
	assert.Contains(t, ft.msg, "launch: building testdata/none")
}

var errFailNow = errors.New("FailNow")

// fatalT records a failure instead of failing the test.
type fatalT struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fatalT) Helper() {}

func (f *fatalT) Errorf(format string, args ...any) {
	f.failed = true
	f.msg = fmt.Sprintf(format, args...)
}

func (f *fatalT) FailNow() { panic(errFailNow) }
