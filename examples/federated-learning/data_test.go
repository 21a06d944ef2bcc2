package main

import (
	"bytes"
	"compress/gzip"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/players"
)

// writeIDX writes n random 28×28 images and their labels under the
// standard names of the given files, gzipped.
func writeIDX(t *testing.T, dir, imagesFile, labelsFile string, n int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0))
	img := &mnist.Images{N: n, Rows: 28, Cols: 28, Pixels: make([]byte, n*28*28)}
	for i := range img.Pixels {
		img.Pixels[i] = byte(rng.IntN(256))
	}
	labels := make([]uint8, n)
	for i := range labels {
		labels[i] = uint8(rng.IntN(10))
	}
	write := func(name string, encode func(*gzip.Writer) error) {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		require.NoError(t, encode(zw))
		require.NoError(t, zw.Close())
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".gz"), buf.Bytes(), 0o644))
	}
	write(imagesFile, func(w *gzip.Writer) error { return mnist.EncodeImages(w, img) })
	write(labelsFile, func(w *gzip.Writer) error { return mnist.EncodeLabels(w, labels) })
}

// In a run across hosts each data owner loads only its own shard, the same
// examples a run in one process gives it, and the model owner only the
// test set: each works from a directory that holds nothing else, and the
// servers read nothing at all.
func TestEachPlayerLoadsOnlyItsOwnData(t *testing.T) {
	full, trainOnly, testOnly := t.TempDir(), t.TempDir(), t.TempDir()
	for _, dir := range []string{full, trainOnly} {
		writeIDX(t, dir, mnist.TrainImagesFile, mnist.TrainLabelsFile, 31, 1)
	}
	for _, dir := range []string{full, testOnly} {
		writeIDX(t, dir, mnist.TestImagesFile, mnist.TestLabelsFile, 7, 2)
	}

	o, err := parseFlags(nil, &bytes.Buffer{})
	require.NoError(t, err)
	for _, dataDir := range []string{"", full} {
		o.dataDir = dataDir
		train, test, _, err := loadData(o)
		require.NoError(t, err)
		want, err := splitTrain(o, train)
		require.NoError(t, err)

		for i := range o.dataOwners {
			name := players.DataOwner(i)
			shards, gotTest, source, err := loadPlayerData(o, name)
			require.NoError(t, err)
			require.Len(t, shards, o.dataOwners)
			for j, s := range shards {
				if j == i {
					assert.Equal(t, want[i], s, "%s in %q", name, dataDir)
				} else {
					assert.Nil(t, s, "%s holds shard %d", name, j)
				}
			}
			assert.Nil(t, gotTest, "%s holds the test set", name)
			assert.Contains(t, source, "shard")
		}

		shards, gotTest, _, err := loadPlayerData(o, players.ModelOwner)
		require.NoError(t, err)
		assert.Nil(t, shards, "the model owner holds training data")
		assert.Equal(t, test, gotTest)

		for _, name := range []string{players.Server0, players.Server1, players.CryptoProducer} {
			shards, gotTest, source, err := loadPlayerData(o, name)
			require.NoError(t, err)
			assert.Nil(t, shards, name)
			assert.Nil(t, gotTest, name)
			assert.Empty(t, source, name)
		}
	}

	// Each reads no file but its own.
	o.dataDir = testOnly
	_, test, _, err := loadPlayerData(o, players.ModelOwner)
	require.NoError(t, err)
	assert.Equal(t, 7, test.N)
	_, _, _, err = loadPlayerData(o, players.DataOwner(0))
	assert.ErrorContains(t, err, filepath.Join(testOnly, mnist.TrainImagesFile))
	o.dataDir = trainOnly
	shards, _, _, err := loadPlayerData(o, players.DataOwner(2))
	require.NoError(t, err)
	assert.Equal(t, 31-2*31/3, shards[2].N)
	_, _, _, err = loadPlayerData(o, players.ModelOwner)
	assert.ErrorContains(t, err, filepath.Join(trainOnly, mnist.TestImagesFile))
}
