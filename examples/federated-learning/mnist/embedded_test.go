package mnist

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEmbedded(t *testing.T) {
	train, test, err := Embedded()
	require.NoError(t, err)
	for _, tc := range []struct {
		name     string
		d        *Dataset
		n, class int
	}{
		{"train", train, EmbeddedTrainN, EmbeddedTrainN / 10},
		{"test", test, EmbeddedTestN, EmbeddedTestN / 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, tc.d.Validate())
			assert.Equal(t, tc.n, tc.d.N)
			assert.Equal(t, 28, tc.d.Rows)
			assert.Equal(t, 28, tc.d.Cols)
			counts := tc.d.ClassCounts()
			for c := 0; c < 10; c++ {
				assert.Equal(t, tc.class, counts[c], "class %d", c)
			}
			for c := 10; c < 256; c++ {
				assert.Zero(t, counts[c], "label %d out of range", c)
			}
			// Real images: neither blank nor saturated on average.
			var sum float64
			for _, v := range tc.d.Images {
				sum += float64(v)
			}
			mean := sum / float64(len(tc.d.Images))
			assert.Greater(t, mean, 0.1)
			assert.Less(t, mean, 0.6)
		})
	}

	// Each call returns an independent copy.
	train.Labels[0] = 200
	again, _, err := Embedded()
	require.NoError(t, err)
	assert.NotEqual(t, uint8(200), again.Labels[0])
}

// Shards of the embedded set, decoded alone, are the shards of the whole.
func TestEmbeddedShards(t *testing.T) {
	train, test, err := Embedded()
	require.NoError(t, err)
	for _, n := range []int{1, 2, 3, 7} {
		for i := range n {
			want, err := train.Shard(i, n)
			require.NoError(t, err)
			got, err := LoadShardFS(EmbeddedFS(), ".", i, n)
			require.NoError(t, err)
			assert.Equal(t, want, got, "shard %d of %d", i, n)
		}
	}
	got, err := LoadTestFS(EmbeddedFS(), ".")
	require.NoError(t, err)
	assert.Equal(t, test, got)
}
