package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/examples/private-prediction/internal/weights"
)

// TestTrainIsReproducible trains a short run twice from one seed and
// checks that it writes a readable file, the same both times, and that
// another seed gives other weights.
func TestTrainIsReproducible(t *testing.T) {
	dir := t.TempDir()
	train := func(name string, seed uint64) []byte {
		path := filepath.Join(dir, name)
		var log bytes.Buffer
		require.NoError(t, run(&log, path, 1, 600, 0.1, seed))
		assert.Contains(t, log.String(), "epoch  1: test loss")
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		return b
	}
	a, b, other := train("a.gz", 5), train("b.gz", 5), train("c.gz", 6)
	assert.Equal(t, a, b, "same seed, same file")
	assert.NotEqual(t, a, other)

	arch, params, err := weights.Read(bytes.NewReader(a), "a.gz")
	require.NoError(t, err)
	assert.Equal(t, model.TFE(), arch)
	require.NoError(t, arch.CheckParams("trained", params))
}

func TestTrainRefusesBadFlags(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.gz")
	assert.ErrorContains(t, run(nil, out, 0, 30, 0.1, 1), "-epochs 0")
	assert.ErrorContains(t, run(nil, out, 1, 0, 0.1, 1), "-batch 0")
	assert.ErrorContains(t, run(nil, out, 1, 6001, 0.1, 1), "-batch 6001")
	assert.NoFileExists(t, out)
}
