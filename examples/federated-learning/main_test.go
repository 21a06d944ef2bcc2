package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/protocol/pond"
)

// TestSecureTrainingEndToEnd trains with secure aggregation and in the
// clear from the same seed on the embedded data: accuracy must rise well
// above chance (0.10) and the two runs must agree, since the secure mean
// differs from the plaintext one by at most half a fixed-point unit.
func TestSecureTrainingEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a few seconds; skipped with -short")
	}
	train, test, err := mnist.Embedded()
	require.NoError(t, err)
	o, err := parseFlags([]string{"--iterations", "80", "--quiet"}, &bytes.Buffer{})
	require.NoError(t, err)
	prog := newProgress(&bytes.Buffer{}, true)

	secure, err := trainOnce(context.Background(), o, "secure", train, test, prog, nil)
	require.NoError(t, err)
	plain, err := trainOnce(context.Background(), o, "plaintext", train, test, prog, nil)
	require.NoError(t, err)

	const floor = 0.55
	assert.Greater(t, secure.accuracy, floor, "secure training reaches the floor")
	assert.InDelta(t, plain.accuracy, secure.accuracy, 0.005, "secure and plaintext runs agree within 0.5 percentage points")

	// The data owners' uploads are seeded, in Z_2^32: about 4 bytes per
	// parameter.
	var fromOwners uint64
	for _, l := range secure.stats {
		if l.From == "data-owner-0" {
			fromOwners += l.Bytes
		}
	}
	perParam := float64(fromOwners) / float64(o.iterations) / 407050
	assert.InDelta(t, 4, perParam, 0.01)
}

func TestRunPrintsSummaryAndPlot(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a few seconds; skipped with -short")
	}
	plot := filepath.Join(t.TempDir(), "curve.png")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--iterations", "20", "--eval-every", "10", "--compare", "--plot", plot}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	s := out.String()
	assert.Contains(t, s, "secure training: 20 iterations")
	assert.Contains(t, s, "plaintext training: 20 iterations")
	assert.Contains(t, s, "time per iteration: secure")
	assert.Contains(t, s, "data-owner-0   -> server")
	assert.Contains(t, errOut.String(), "secure: iteration 20/20", "plain progress lines off a terminal")
	info, err := os.Stat(plot)
	require.NoError(t, err)
	assert.Greater(t, info.Size(), int64(1000))
}

func TestFlagsRefuseBadValues(t *testing.T) {
	for _, args := range [][]string{
		{"--iterations", "0"},
		{"--batch-size", "-1"},
		{"--learning-rate", "NaN"},
		{"--learning-rate", "0"},
		{"--data-owners", "0"},
		{"--eval-every", "0"},
		{"--truncation", "sideways"},
		{"--ring", "16"},
		{"--plaintext", "--compare"},
		{"--config", "hosts.json"},
		{"--player", "server0"},
		{"--iterations", "ten"},
		{"extra"},
	} {
		_, err := parseFlags(args, &bytes.Buffer{})
		var ue usageError
		assert.ErrorAs(t, err, &ue, "%v", args)
	}
	_, err := parseFlags([]string{"--help"}, &bytes.Buffer{})
	assert.ErrorIs(t, err, errHelp)
	for flag, want := range map[string]int{"auto": 0, "32": pond.Ring32, "64": pond.Ring64} {
		o, err := parseFlags([]string{"--ring", flag}, &bytes.Buffer{})
		require.NoError(t, err)
		assert.Equal(t, want, o.ring, "--ring %s", flag)
		assert.Equal(t, want, sessionOptions(o).Protocol.Ring, "--ring %s", flag)
	}
}

func TestMissingDataDirectoryIsNamed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nowhere")
	err := run(context.Background(), []string{"--data", dir, "--quiet"}, &bytes.Buffer{}, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nowhere")
}

// TestPrintPlanShowsWhereGradientsAreShared: users can see, before running,
// that every gradient leaves its owner only as a seed and a masked tensor
// and that only the servers' shares reach the model owner.
func TestPrintPlanShowsWhereGradientsAreShared(t *testing.T) {
	var out bytes.Buffer
	dot := filepath.Join(t.TempDir(), "g.dot")
	require.NoError(t, run(context.Background(), []string{"--fixed-owners", "--print-plan", "--dot", dot}, &out, &bytes.Buffer{}))
	s := out.String()
	assert.Contains(t, s, `share private-input#1 on "data-owner-0"[0]: seed -> server0`)
	assert.Contains(t, s, `then / 3 in the clear`)
	assert.NotContains(t, s, "data-owner-0 -> model-owner", "no data owner sends to the model owner")
	b, err := os.ReadFile(dot)
	require.NoError(t, err)
	assert.Contains(t, string(b), "digraph shareflow")

	// The plan printed is the one a run computes: in rounds, the members
	// hosted here bound the cohort, and so the ring and its range.
	for _, args := range [][]string{{"--fixed-owners"}, {}, {"--ring", "64"}} {
		out.Reset()
		require.NoError(t, run(context.Background(), append(args, "--print-plan"), &out, &bytes.Buffer{}))
		want := "ring Z_2^32 (4 bytes an element): inputs |x| < 8192, so that a sum of up to 3 cannot wrap\n"
		if len(args) == 2 {
			want = "ring Z_2^64 (8 bytes an element): values |x| < 1024\n"
		}
		assert.Contains(t, out.String(), want, "%v", args)
	}
}
