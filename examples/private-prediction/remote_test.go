package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/internal/launch"
	"github.com/shareflow/shareflow/players"
)

// These tests run the example as it runs across hosts: the built binary,
// one process per player, real gRPC with mutual TLS on loopback, with the
// federated-learning example's hostmap.

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
		dir, err := os.MkdirTemp("", "pp-test-")
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

// cluster writes the federated-learning example's hostmap of seven
// players (three data owners) in its extended form, with development
// certificates, and returns its path.
func cluster(t *testing.T) string {
	dir := t.TempDir()
	names := players.Defaults(3)
	ports := freePorts(t, len(names))
	hosts := map[string]any{}
	for i, n := range names {
		hosts[n] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	cfg := map[string]any{"players": hosts, "cert_dir": "certs", "connect_timeout": "60s", "message_timeout": "60s"}
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

// TestProcessesMatchOneProcessRun runs a private prediction as seven
// processes (the built binary, mutual TLS on loopback, started by the
// launcher) and checks that the client ends with the predictions of a run
// in one process on the same images: the same class for every image that
// is not a near tie, and logits within the tolerance of each run against
// the fixed-point emulation.
func TestProcessesMatchOneProcessRun(t *testing.T) {
	bin := exampleBinary(t)
	hosts := cluster(t)
	const n, batch = 150, 100
	csvPath := filepath.Join(t.TempDir(), "predictions.csv")

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := launch.Run(ctx, launch.Spec{
		Program: bin,
		Args:    []string{"--images", fmt.Sprint(n), "--batch", fmt.Sprint(batch), "--quiet", "--out", csvPath},
		Config:  hosts, Players: players.Defaults(3), Output: &out,
	})
	require.NoError(t, err, out.String())
	log := out.String()
	remote, err := readPredictions(csvPath)
	require.NoError(t, err, log)
	require.Len(t, remote.classes, n)

	c, _, test := loadAll(t)
	local, err := predictLocal(context.Background(), c, test, n, batch, sessionOptions(), nil)
	require.NoError(t, err)
	assert.Equal(t, test.Labels[:n], remote.labels)
	k := c.arch.Classes
	localClasses := local.client.Predictions()
	ties := 0
	for i := range n {
		l, r := local.client.logits[i*k:(i+1)*k], remote.logits[i*k:(i+1)*k]
		for j := range l {
			require.InDelta(t, l[j], r[j], 2*logitTolerance, "image %d, logit %d", i, j)
		}
		if topGap(l) < 4*logitTolerance {
			ties++
			continue
		}
		assert.Equal(t, localClasses[i], remote.classes[i], "class of image %d", i)
	}
	assert.LessOrEqual(t, ties, 2, "near ties, whose class the comparison skips")

	// What each process said: the client its result; the data owners
	// without a part that they had none; nobody received anything from a
	// link into the model owner or the crypto producer.
	assert.Contains(t, log, fmt.Sprintf("[data-owner-0] data-owner-0: %d images classified privately", n))
	assert.Contains(t, log, "[data-owner-1] data-owner-1: no part in this computation")
	assert.Contains(t, log, "[model-owner] model-owner: done")
	assert.Contains(t, log, "[server2] server2: done")
	assert.NotContains(t, log, "-> model-owner:")
	assert.NotContains(t, log, "-> server2:")
}

// TestHostmapOfFederatedLearning loads the federated-learning example's
// flat hostmap: it serves as it is; without server2, whose triples the
// products need, or with a misspelt client, it is refused with the reason.
func TestHostmapOfFederatedLearning(t *testing.T) {
	write := func(t *testing.T, names []string) string {
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
	o := options{player: players.Server0, insecure: true}

	o.config = write(t, players.Defaults(3))
	_, err := loadHosts(o, io.Discard)
	assert.NoError(t, err)

	var noProducer []string
	for _, n := range players.Defaults(3) {
		if n != players.CryptoProducer {
			noProducer = append(noProducer, n)
		}
	}
	o.config = write(t, noProducer)
	_, err = loadHosts(o, io.Discard)
	assert.ErrorContains(t, err, `no player "server2"`)

	o.config = write(t, []string{"server0", "server1", "server2", "model-owner", "data-ownr-0"})
	_, err = loadHosts(o, io.Discard)
	assert.ErrorContains(t, err, `unknown player "data-ownr-0"; did you mean "data-owner-0"?`)

	o.config = write(t, []string{"server0", "server1", "server2", "model-owner", "data-owner-0"})
	o.player = "data-owner-1"
	_, err = loadHosts(o, io.Discard)
	assert.ErrorContains(t, err, `--player "data-owner-1" is not in`)
	assert.True(t, strings.HasPrefix(err.Error(), "--player"))
}
