package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/internal/launch"
	"github.com/shareflow/shareflow/internal/multihost"
	"github.com/shareflow/shareflow/internal/multihost/multihosttest"
	"github.com/shareflow/shareflow/players"
)

// These tests run the example as it runs across hosts: the built binary,
// one process per player, real gRPC with mutual TLS on loopback, with the
// federated-learning example's hostmap.

// example is this example's program, built once for the tests that run
// it.
var example = multihosttest.Program{Dir: "."}

// TestProcessesMatchOneProcessRun runs a private prediction as seven
// processes (the built binary, mutual TLS on loopback, started by the
// launcher) and checks that the client ends with the predictions of a run
// in one process on the same images: the same class for every image that
// is not a near tie, and logits within the tolerance of each run against
// the fixed-point emulation.
func TestProcessesMatchOneProcessRun(t *testing.T) {
	bin := example.Binary(t)
	// The federated-learning example's hostmap of seven players (three
	// data owners), with development certificates.
	hosts := multihosttest.Cluster(t, 3, 60*time.Second, 60*time.Second)
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
	write := multihosttest.FlatHostmap
	o := options{Flags: multihost.Flags{Player: players.Server0, Insecure: true}}

	o.Config = write(t, players.Defaults(3))
	_, err := loadHosts(o, io.Discard)
	assert.NoError(t, err)

	var noProducer []string
	for _, n := range players.Defaults(3) {
		if n != players.CryptoProducer {
			noProducer = append(noProducer, n)
		}
	}
	o.Config = write(t, noProducer)
	_, err = loadHosts(o, io.Discard)
	assert.ErrorContains(t, err, `no player "server2"`)

	o.Config = write(t, []string{"server0", "server1", "server2", "model-owner", "data-ownr-0"})
	_, err = loadHosts(o, io.Discard)
	assert.ErrorContains(t, err, `unknown player "data-ownr-0"; did you mean "data-owner-0"?`)

	o.Config = write(t, []string{"server0", "server1", "server2", "model-owner", "data-owner-0"})
	o.Player = "data-owner-1"
	_, err = loadHosts(o, io.Discard)
	assert.ErrorContains(t, err, `--player "data-owner-1" is not in`)
	assert.True(t, strings.HasPrefix(err.Error(), "--player"))
}
