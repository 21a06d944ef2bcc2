package mnist

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeSet writes an images/labels pair with standard names into dir.
func writeSet(t *testing.T, dir string, imagesBase, labelsBase string, img *Images, labels []uint8, gz bool) {
	t.Helper()
	suffix := ""
	if gz {
		suffix = ".gz"
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, imagesBase+suffix), encodeImages(t, img, gz), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, labelsBase+suffix), encodeLabels(t, labels, gz), 0o644))
}

func TestLoad(t *testing.T) {
	for _, gz := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "gzip"}[gz]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			trImg, trLab := randomImages(t, 1, 12, 4, 3), randomLabels(1, 12)
			teImg, teLab := randomImages(t, 2, 5, 4, 3), randomLabels(2, 5)
			writeSet(t, dir, TrainImagesFile, TrainLabelsFile, trImg, trLab, gz)
			writeSet(t, dir, TestImagesFile, TestLabelsFile, teImg, teLab, gz)

			train, test, err := Load(dir)
			require.NoError(t, err)
			require.NoError(t, train.Validate())
			require.NoError(t, test.Validate())
			assert.Equal(t, 12, train.N)
			assert.Equal(t, 5, test.N)
			assert.Equal(t, [2]int{4, 3}, [2]int{train.Rows, train.Cols})
			assert.Equal(t, trLab, train.Labels)
			assert.Equal(t, teLab, test.Labels)
			for i, b := range trImg.Pixels {
				require.InDelta(t, float64(b)/255, float64(train.Images[i]), 1e-7)
			}
			assert.Equal(t, train.Images[3*12:4*12], train.Image(3))
		})
	}
}

func TestLoadErrors(t *testing.T) {
	img, labels := randomImages(t, 3, 6, 2, 2), randomLabels(3, 6)

	t.Run("missing file", func(t *testing.T) {
		dir := t.TempDir()
		writeSet(t, dir, TrainImagesFile, TrainLabelsFile, img, labels, true)
		_, _, err := Load(dir)
		require.ErrorIs(t, err, os.ErrNotExist)
		assert.Contains(t, err.Error(), filepath.Join(dir, TestImagesFile))
	})
	t.Run("count mismatch", func(t *testing.T) {
		dir := t.TempDir()
		writeSet(t, dir, TrainImagesFile, TrainLabelsFile, img, labels[:5], false)
		writeSet(t, dir, TestImagesFile, TestLabelsFile, img, labels, false)
		_, _, err := Load(dir)
		require.ErrorIs(t, err, ErrCountMismatch)
		assert.Contains(t, err.Error(), TrainImagesFile)
		assert.Contains(t, err.Error(), "6 images, 5 labels")
	})
	t.Run("size mismatch between sets", func(t *testing.T) {
		dir := t.TempDir()
		writeSet(t, dir, TrainImagesFile, TrainLabelsFile, img, labels, false)
		writeSet(t, dir, TestImagesFile, TestLabelsFile, randomImages(t, 4, 6, 3, 2), labels, false)
		_, _, err := Load(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "test images are 3×2")
	})
	t.Run("corrupt file", func(t *testing.T) {
		dir := t.TempDir()
		writeSet(t, dir, TrainImagesFile, TrainLabelsFile, img, labels, true)
		writeSet(t, dir, TestImagesFile, TestLabelsFile, img, labels, true)
		p := filepath.Join(dir, TestLabelsFile+".gz")
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, b[:len(b)-10], 0o644))
		_, _, err = Load(dir)
		require.ErrorIs(t, err, ErrTruncated)
		var fe *FileError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, p, fe.File)
	})
	t.Run("LoadFiles mismatch", func(t *testing.T) {
		dir := t.TempDir()
		writeSet(t, dir, "a", "b", img, labels[:2], true)
		_, err := LoadFiles(filepath.Join(dir, "a.gz"), filepath.Join(dir, "b.gz"))
		require.ErrorIs(t, err, ErrCountMismatch)
	})
}

func TestLoadFSPrefersPlain(t *testing.T) {
	img, labels := randomImages(t, 5, 3, 2, 2), randomLabels(5, 3)
	other := randomImages(t, 6, 3, 2, 2)
	fsys := fstest.MapFS{
		"d/" + TrainImagesFile:         {Data: encodeImages(t, img, false)},
		"d/" + TrainImagesFile + ".gz": {Data: encodeImages(t, other, true)},
		"d/" + TrainLabelsFile + ".gz": {Data: encodeLabels(t, labels, true)},
		"d/" + TestImagesFile + ".gz":  {Data: encodeImages(t, img, true)},
		"d/" + TestLabelsFile:          {Data: encodeLabels(t, labels, false)},
	}
	train, _, err := LoadFS(fsys, "d")
	require.NoError(t, err)
	assert.InDelta(t, float64(img.Pixels[0])/255, float64(train.Images[0]), 1e-7)
}

func TestNewDatasetRejects(t *testing.T) {
	img := randomImages(t, 7, 3, 2, 2)
	_, err := NewDataset(nil, nil, "x")
	assert.ErrorIs(t, err, ErrDims)
	_, err = NewDataset(img, []uint8{1, 2}, "x")
	assert.ErrorIs(t, err, ErrCountMismatch)
	_, err = NewDataset(&Images{N: 3, Rows: 2, Cols: 2, Pixels: make([]byte, 5)}, []uint8{1, 2, 3}, "x")
	assert.ErrorIs(t, err, ErrDims)
}

func TestValidate(t *testing.T) {
	good := func() *Dataset {
		return &Dataset{Images: make([]float32, 8), Labels: make([]uint8, 2), N: 2, Rows: 2, Cols: 2}
	}
	tests := []struct {
		name   string
		mutate func(*Dataset)
		want   string
	}{
		{"ok", func(*Dataset) {}, ""},
		{"labels", func(d *Dataset) { d.Labels = d.Labels[:1] }, "1 labels for N=2"},
		{"pixels", func(d *Dataset) { d.Images = d.Images[:7] }, "7 pixels"},
		{"zero", func(d *Dataset) { d.N = 0 }, "must be positive"},
		{"range", func(d *Dataset) { d.Images[5] = 1.5 }, "pixel 1 of image 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := good()
			tc.mutate(d)
			err := d.Validate()
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	var nilSet *Dataset
	assert.Error(t, nilSet.Validate())
}

func TestShardAndSplit(t *testing.T) {
	img, labels := randomImages(t, 8, 10, 2, 3), randomLabels(8, 10)
	d, err := NewDataset(img, labels, "mem")
	require.NoError(t, err)

	tests := []struct {
		n     int
		sizes []int
	}{
		{1, []int{10}},
		{3, []int{3, 3, 4}},
		{4, []int{2, 3, 2, 3}},
		{10, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
	}
	for _, tc := range tests {
		shards, err := d.Split(tc.n)
		require.NoError(t, err)
		require.Len(t, shards, tc.n)
		var allLabels []uint8
		var allPixels []float32
		for i, s := range shards {
			require.NoError(t, s.Validate())
			assert.Equal(t, tc.sizes[i], s.N, "n=%d shard %d", tc.n, i)
			allLabels = append(allLabels, s.Labels...)
			allPixels = append(allPixels, s.Images...)
			one, err := d.Shard(i, tc.n)
			require.NoError(t, err)
			assert.Equal(t, s, one)
		}
		// Disjoint and covering, in order.
		assert.Equal(t, d.Labels, allLabels)
		assert.Equal(t, d.Images, allPixels)
	}

	// Appending to a shard must not overwrite its neighbour.
	shards, err := d.Split(2)
	require.NoError(t, err)
	before := shards[1].Labels[0]
	_ = append(shards[0].Labels, 99)
	assert.Equal(t, before, shards[1].Labels[0])

	for _, bad := range [][2]int{{0, 0}, {0, 11}, {-1, 3}, {3, 3}} {
		_, err := d.Shard(bad[0], bad[1])
		assert.Error(t, err, "Shard(%d, %d)", bad[0], bad[1])
	}
	_, err = d.Split(0)
	assert.Error(t, err)
	_, err = d.Slice(4, 4)
	assert.Error(t, err)
}

// LoadShard gives the examples Shard cuts from the whole training set, and
// LoadTest the test set, for plain and gzipped files.
func TestLoadShardMatchesShard(t *testing.T) {
	const n = 11
	for _, gz := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "gzip"}[gz], func(t *testing.T) {
			dir := t.TempDir()
			writeSet(t, dir, TrainImagesFile, TrainLabelsFile, randomImages(t, 21, n, 3, 2), randomLabels(21, n), gz)
			writeSet(t, dir, TestImagesFile, TestLabelsFile, randomImages(t, 22, 4, 3, 2), randomLabels(22, 4), gz)
			train, test, err := Load(dir)
			require.NoError(t, err)
			for shards := 1; shards <= n; shards++ {
				for i := range shards {
					want, err := train.Shard(i, shards)
					require.NoError(t, err)
					got, err := LoadShard(dir, i, shards)
					require.NoError(t, err, "shard %d of %d", i, shards)
					assert.Equal(t, want, got, "shard %d of %d", i, shards)
				}
			}
			got, err := LoadTest(dir)
			require.NoError(t, err)
			assert.Equal(t, test, got)
		})
	}
}

func TestLoadShardErrors(t *testing.T) {
	img, labels := randomImages(t, 23, 6, 2, 2), randomLabels(23, 6)
	for _, gz := range []bool{false, true} {
		suffix := map[bool]string{false: "", true: ".gz"}[gz]
		t.Run("gzip="+map[bool]string{false: "no", true: "yes"}[gz], func(t *testing.T) {
			dir := t.TempDir()
			writeSet(t, dir, TrainImagesFile, TrainLabelsFile, img, labels, gz)
			imagesPath := filepath.Join(dir, TrainImagesFile+suffix)
			for _, bad := range [][2]int{{0, 7}, {0, 0}, {3, 3}, {-1, 2}} {
				_, err := LoadShard(dir, bad[0], bad[1])
				require.ErrorIs(t, err, ErrRange, "shard %d of %d", bad[0], bad[1])
				assert.Contains(t, err.Error(), imagesPath)
			}

			// The test set is not there: only LoadTest needs it.
			_, err := LoadShard(dir, 0, 2)
			require.NoError(t, err)
			_, err = LoadTest(dir)
			require.ErrorIs(t, err, os.ErrNotExist)
			assert.Contains(t, err.Error(), filepath.Join(dir, TestImagesFile))

			// Every shard refuses a file cut short, even the shards that
			// end before the cut.
			b, err := os.ReadFile(imagesPath)
			require.NoError(t, err)
			if gz {
				raw := encodeImages(t, img, false)
				b = gzipBytes(t, raw[:len(raw)-1])
			} else {
				b = b[:len(b)-1]
			}
			require.NoError(t, os.WriteFile(imagesPath, b, 0o644))
			for i := range 3 {
				_, err := LoadShard(dir, i, 3)
				require.ErrorIs(t, err, ErrTruncated, "shard %d", i)
				var fe *FileError
				require.ErrorAs(t, err, &fe)
				assert.Equal(t, imagesPath, fe.File)
			}
		})
	}
	t.Run("count mismatch", func(t *testing.T) {
		dir := t.TempDir()
		writeSet(t, dir, TrainImagesFile, TrainLabelsFile, img, labels[:5], false)
		_, err := LoadShard(dir, 0, 2)
		require.ErrorIs(t, err, ErrCountMismatch)
		assert.Contains(t, err.Error(), "6 images, 5 labels")
		assert.Contains(t, err.Error(), filepath.Join(dir, TrainLabelsFile))
	})
}

func TestShardOfProportions(t *testing.T) {
	img, labels := randomImages(t, 31, 10, 2, 3), randomLabels(31, 10)
	d, err := NewDataset(img, labels, "mem")
	require.NoError(t, err)
	for _, tc := range []struct {
		p     []float64
		sizes []int
	}{
		{[]float64{0.6, 0.3, 0.1}, []int{6, 3, 1}},
		{[]float64{6, 3, 1}, []int{6, 3, 1}},
		{[]float64{1, 1, 1}, []int{3, 4, 3}},
		{[]float64{0.5}, []int{10}},
		{[]float64{0.25, 0.25, 0.5}, []int{3, 2, 5}}, // 2.5 rounds away from zero
	} {
		shards, err := d.SplitOf(tc.p)
		require.NoError(t, err, "%v", tc.p)
		var all []uint8
		for i, s := range shards {
			assert.Equal(t, tc.sizes[i], s.N, "%v shard %d", tc.p, i)
			all = append(all, s.Labels...)
			one, err := d.ShardOf(i, tc.p)
			require.NoError(t, err)
			assert.Equal(t, s, one)
		}
		assert.Equal(t, d.Labels, all, "disjoint and covering, in order")
	}
	for _, bad := range [][]float64{nil, {0.5, 0}, {0.5, -0.5}, {math.NaN()}, {math.Inf(1), 1}, {0.99, 0.01}} {
		_, err := d.SplitOf(bad)
		assert.ErrorIs(t, err, ErrRange, "%v", bad)
	}
	_, err = d.ShardOf(3, []float64{1, 1, 1})
	assert.ErrorIs(t, err, ErrRange)
}

func TestLoadShardOfMatchesShardOf(t *testing.T) {
	dir := t.TempDir()
	writeSet(t, dir, TrainImagesFile, TrainLabelsFile, randomImages(t, 32, 20, 3, 2), randomLabels(32, 20), true)
	writeSet(t, dir, TestImagesFile, TestLabelsFile, randomImages(t, 33, 4, 3, 2), randomLabels(33, 4), false)
	train, _, err := Load(dir)
	require.NoError(t, err)
	p := []float64{0.6, 0.3, 0.1}
	for i := range p {
		want, err := train.ShardOf(i, p)
		require.NoError(t, err)
		got, err := LoadShardOf(dir, i, p)
		require.NoError(t, err)
		assert.Equal(t, want, got, "shard %d", i)
	}
	_, err = LoadShardOf(dir, 0, []float64{1, 0})
	assert.ErrorIs(t, err, ErrRange)
}
