package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// benchMainEnv, set, makes this test binary run as shareflow: bench starts
// its players by running its own executable again.
const benchMainEnv = "SHAREFLOW_TEST_RUN_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(benchMainEnv) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestBenchAcrossProcesses runs a short bench with its seven players as
// processes: it prints a line per iteration with both times and their
// ratio, and, with --cpuprofile, a profile per player.
func TestBenchAcrossProcesses(t *testing.T) {
	t.Setenv(benchMainEnv, "1") // for the players bench starts
	profiles := filepath.Join(t.TempDir(), "profiles")
	code, out, errOut := runArgs("bench", "--iterations", "3", "--warmup", "1", "--params", "50000", "--cpuprofile", profiles)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, errOut, "bench: 7 players as processes, 50000 parameters, 3 iterations of each path after 1 of warm-up")
	assert.Contains(t, out, "secure mean of 50000 parameters, 3 data owners, 7 players as processes")
	assert.Len(t, regexp.MustCompile(`(?m)^ +[123] +[0-9.]+ +[0-9.]+ +[0-9.]+$`).FindAllString(out, -1), 3, out)
	// 4-byte words by default (Z_2^32): 5 shares of 50,000 parameters, 1 MB.
	assert.Regexp(t, `1\.00 MB per iteration; median aggregation [0-9.]+ ms .* raw gRPC [0-9.]+ ms .*; ratio [0-9.]+`, out)
	files, err := filepath.Glob(filepath.Join(profiles, "*.pprof"))
	require.NoError(t, err)
	assert.Len(t, files, 7)
}

func TestBenchBadUse(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--iterations", "0"},
		{"bench", "--params", "-1"},
		{"bench", "--dir", "x"},
		{"bench", "--player", "server0"},
		{"bench", "--in-process", "--cpuprofile", "x"},
	} {
		code, _, errOut := runArgs(args...)
		assert.Equal(t, 2, code, "%v: %s", args, errOut)
	}
}

func TestBenchRefusesBadFlags(t *testing.T) {
	for want, args := range map[string][]string{
		"--word-bytes 2: want 4 (Z_2^32) or 8 (Z_2^64)":                       {"bench", "--word-bytes", "2"},
		"--iterations, --params, --owners and --chunk-bytes must be positive": {"bench", "--owners", "0"},
	} {
		code, _, errOut := runArgs(args...)
		assert.Equal(t, 2, code, "%v", args)
		assert.Contains(t, errOut, want)
	}
}
