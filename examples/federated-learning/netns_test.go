package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/internal/multihost/multihosttest"
	"github.com/shareflow/shareflow/players"
)

// netnsScript is scripts/netns-demo.sh, relative to this package.
var netnsScript = filepath.Join("..", "..", "scripts", "netns-demo.sh")

// portLine is a row of the script's traffic table: player, address, bytes
// the player sent and received through its switch port (or TUN device).
var portLine = regexp.MustCompile(`(?m)^\[netns\]\s+(\S+)\s+(10\.213\.0\.\d+)\s+([0-9.]+) (kB|MB)\s+([0-9.]+) (kB|MB)$`)

// TestSevenHostsInNetworkNamespaces runs the example as seven hosts, one
// Linux network namespace per player joined by a bridge, through
// scripts/netns-demo.sh. It needs root and the privilege to create
// network namespaces, and skips without them.
func TestSevenHostsInNetworkNamespaces(t *testing.T) {
	const iterations = 10
	log := runNetnsDemo(t, strconv.Itoa(iterations), "--seed", "3", "--fixed-owners")
	checkSevenHosts(t, log, iterations)
}

// TestSevenHostsAcrossAWAN runs the example as seven hosts 40 ms apart:
// scripts/netns-demo.sh --wan-delay 20ms joins the namespaces through
// scripts/wandelay and TUN devices instead of a bridge. It needs what
// TestSevenHostsInNetworkNamespaces needs and /dev/net/tun, and skips
// without them. It checks that the run works and reports its iteration
// times, not what they are: docs/RUNNING.md has the measurements.
func TestSevenHostsAcrossAWAN(t *testing.T) {
	const iterations = 3
	log := runNetnsDemo(t, "--wan-delay", "20ms", "--iteration-times", strconv.Itoa(iterations), "--seed", "3", "--fixed-owners")
	checkSevenHosts(t, log, iterations)
	assert.Contains(t, log, "[netns] topology: wandelay in namespace sf-switch delays every packet by 20ms one way")
	assert.Contains(t, log, "wandelay: ready: 7 devices, one-way delay 20ms, round trip 40ms")
	for i := range iterations {
		assert.Regexp(t, fmt.Sprintf(`(?m)^\[netns\]\s+iteration\s+%d\s+[0-9.]+ ms$`, i+1), log)
	}
	// wandelay forwarded the traffic of every player.
	forwarded := regexp.MustCompile(`(?m)^\[netns\]\s+wandelay: (sfwan\d)\s+(10\.213\.0\.\d+)\s+read (\d+) packets`).FindAllStringSubmatch(log, -1)
	require.Len(t, forwarded, 7, "wandelay's counters:\n%s", log)
	for i, f := range forwarded {
		assert.Equal(t, fmt.Sprintf("sfwan%d", i), f[1])
		assert.Equal(t, fmt.Sprintf("10.213.0.%d", 10+i), f[2])
		assert.NotEqual(t, "0", f[3], "wandelay read nothing from %s", f[1])
	}
}

// runNetnsDemo runs scripts/netns-demo.sh with args and returns its
// output. It skips the test when the machine cannot run the script, and
// fails it when a player failed.
func runNetnsDemo(t *testing.T, args ...string) string {
	t.Helper()
	script := netnsPreconditions(t)
	// The script removes everything it made when it exits, also on
	// SIGTERM; SIGKILL only after a grace period, so its trap can run.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	begin := time.Now()
	err := cmd.Run()
	t.Logf("netns-demo.sh %s ran in %v", strings.Join(args, " "), time.Since(begin).Round(time.Millisecond))
	if ctx.Err() != nil {
		t.Fatalf("netns-demo.sh did not finish within the deadline:\n%s", out.String())
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 2 && !strings.Contains(out.String(), "[netns] starting") {
		// Refused before any player started: the machine cannot do this.
		t.Skipf("netns-demo.sh refused to run here:\n%s", multihosttest.LastLines(out.String(), 5))
	}
	require.NoError(t, err, out.String())
	return out.String()
}

// checkSevenHosts checks the output of a successful run of the script:
// every player on its address reached the others, the model owner trained,
// the traffic went through each player's link, and nothing was left behind.
func checkSevenHosts(t *testing.T, log string, iterations int) {
	t.Helper()

	// The model owner trained and evaluated.
	m := accuracyLine.FindStringSubmatch(log)
	require.NotNil(t, m, "no test accuracy from the model owner:\n%s", log)
	acc, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	assert.True(t, acc > 0 && acc <= 1, "test accuracy %v", acc)

	names := players.Defaults(3)
	for i, p := range names {
		// The hosts file maps the player to its namespace's address...
		addr := fmt.Sprintf("10.213.0.%d", 10+i)
		assert.Contains(t, log, fmt.Sprintf("%q: \"%s:4440\"", p, addr), "hosts file entry of %s", p)
		// ...and the player, inside that namespace, reached all six peers.
		assert.Contains(t, log, fmt.Sprintf(`[%s] %s: connected; running %d iterations`, p, p, iterations))
		assert.Regexp(t, fmt.Sprintf(`\[%s\] .*"connected to all peers" player=%s peers=6`, regexp.QuoteMeta(p), regexp.QuoteMeta(p)), log)
	}

	// The traffic crossed each player's link: its switch port (or with
	// --wan-delay its TUN device) counted it. Every player but server2 (idle without --private-division) moves
	// megabytes of shares or weights per iteration.
	rows := portLine.FindAllStringSubmatch(log, -1)
	require.Len(t, rows, len(names), "traffic table:\n%s", log)
	for i, r := range rows {
		require.Equal(t, names[i], r[1])
		assert.Equal(t, fmt.Sprintf("10.213.0.%d", 10+i), r[2])
		sent, received := megabytes(t, r[3], r[4]), megabytes(t, r[5], r[6])
		assert.Positive(t, received, "%s received nothing through its port", r[1])
		if r[1] != "server2" {
			assert.GreaterOrEqual(t, sent, float64(iterations), "%s sent %v MB through its port in %d iterations", r[1], sent, iterations)
		}
	}

	// Everything the script made is gone.
	assert.Contains(t, log, "[netns] cleaned up")
	left, err := exec.Command(ipCommand(), "netns", "list").Output()
	require.NoError(t, err)
	for _, p := range append(names, "switch") {
		assert.NotRegexp(t, `(?m)^sf-`+regexp.QuoteMeta(p)+`(\s|$)`, string(left), "namespace sf-%s left behind", p)
	}
}

// netnsPreconditions skips the test unless this machine can run the
// script, and returns the script's absolute path.
func netnsPreconditions(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("creates network namespaces and runs seven players; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("network namespaces are Linux only")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (run the test as root, or scripts/netns-demo.sh with sudo)")
	}
	script, err := filepath.Abs(netnsScript)
	require.NoError(t, err)
	if _, err := os.Stat(script); err != nil {
		t.Skipf("the demo script is missing: %v", err)
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	ip := ipCommand()
	if _, err := exec.LookPath(ip); err != nil {
		t.Skip("iproute2's ip is not installed")
	}
	// Root is not enough in a container without CAP_SYS_ADMIN: try it.
	probe := fmt.Sprintf("sf-probe-%d", os.Getpid())
	if out, err := exec.Command(ip, "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here (%v): %s", err, bytes.TrimSpace(out))
	}
	if out, err := exec.Command(ip, "netns", "del", probe).CombinedOutput(); err != nil {
		t.Fatalf("deleting the probe namespace %s: %v: %s", probe, err, out)
	}
	return script
}

// ipCommand is iproute2's ip: on PATH, or where Debian puts it (root's
// PATH under some test runners lacks the sbin directories).
func ipCommand() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "ip"
}

// megabytes converts one of the script's amounts ("9.9", "MB") to MB.
func megabytes(t *testing.T, value, unit string) float64 {
	v, err := strconv.ParseFloat(value, 64)
	require.NoError(t, err)
	if unit == "kB" {
		v /= 1000
	}
	return v
}
