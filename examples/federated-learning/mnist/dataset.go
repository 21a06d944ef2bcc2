package mnist

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
)

// Standard file names of the MNIST and Fashion-MNIST IDX files. Each may be
// stored as is or gzipped with a ".gz" suffix.
const (
	TrainImagesFile = "train-images-idx3-ubyte"
	TrainLabelsFile = "train-labels-idx1-ubyte"
	TestImagesFile  = "t10k-images-idx3-ubyte"
	TestLabelsFile  = "t10k-labels-idx1-ubyte"
)

// Dataset is a set of labelled grey-scale images with pixels scaled to
// [0, 1]. Image i occupies Images[i*Rows*Cols : (i+1)*Rows*Cols], row-major.
//
// A Dataset is a plain value: safe for concurrent reads, not for concurrent
// writes. Shards share their backing arrays with the set they come from.
type Dataset struct {
	// Images holds N*Rows*Cols pixel intensities in [0, 1].
	Images []float32
	// Labels holds N class labels.
	Labels []uint8
	// N is the number of examples; Rows and Cols the image size.
	N, Rows, Cols int
}

// NewDataset pairs decoded images with their labels and scales the pixels to
// [0, 1]. name identifies the pair in errors.
func NewDataset(img *Images, labels []uint8, name string) (*Dataset, error) {
	if img == nil {
		return nil, &FileError{File: name, Err: fmt.Errorf("%w: no images", ErrDims)}
	}
	if img.N != len(labels) {
		return nil, &FileError{File: name, Err: fmt.Errorf("%w: %d images, %d labels", ErrCountMismatch, img.N, len(labels))}
	}
	if img.N < 1 || img.Rows < 1 || img.Cols < 1 || len(img.Pixels) != img.N*img.Rows*img.Cols {
		return nil, &FileError{File: name, Err: fmt.Errorf("%w: %d pixel bytes for %d images of %d×%d", ErrDims, len(img.Pixels), img.N, img.Rows, img.Cols)}
	}
	px := make([]float32, len(img.Pixels))
	for i, b := range img.Pixels {
		px[i] = float32(b) / 255
	}
	lb := make([]uint8, len(labels))
	copy(lb, labels)
	return &Dataset{Images: px, Labels: lb, N: img.N, Rows: img.Rows, Cols: img.Cols}, nil
}

// Pixels returns the number of pixels of one image, Rows*Cols.
func (d *Dataset) Pixels() int { return d.Rows * d.Cols }

// Image returns the pixels of example i, sharing d's storage. It panics if i
// is out of range, as indexing a slice does.
func (d *Dataset) Image(i int) []float32 {
	p := d.Pixels()
	return d.Images[i*p : (i+1)*p : (i+1)*p]
}

// Validate checks that d's fields agree with each other and that every
// pixel lies in [0, 1].
func (d *Dataset) Validate() error {
	switch {
	case d == nil:
		return errors.New("mnist: nil dataset")
	case d.N < 1 || d.Rows < 1 || d.Cols < 1:
		return fmt.Errorf("mnist: dataset has N=%d, Rows=%d, Cols=%d; all must be positive", d.N, d.Rows, d.Cols)
	case len(d.Labels) != d.N:
		return fmt.Errorf("mnist: dataset has %d labels for N=%d", len(d.Labels), d.N)
	case len(d.Images) != d.N*d.Rows*d.Cols:
		return fmt.Errorf("mnist: dataset has %d pixels for %d images of %d×%d", len(d.Images), d.N, d.Rows, d.Cols)
	}
	for i, v := range d.Images {
		if !(v >= 0 && v <= 1) {
			return fmt.Errorf("mnist: pixel %d of image %d is %v, outside [0, 1]", i%d.Pixels(), i/d.Pixels(), v)
		}
	}
	return nil
}

// Slice returns examples [from, to) of d as a new Dataset sharing d's
// storage.
func (d *Dataset) Slice(from, to int) (*Dataset, error) {
	if from < 0 || to > d.N || from >= to {
		return nil, fmt.Errorf("mnist: slice [%d, %d) of a dataset of %d examples", from, to, d.N)
	}
	p := d.Pixels()
	return &Dataset{
		Images: d.Images[from*p : to*p : to*p],
		Labels: d.Labels[from:to:to],
		N:      to - from,
		Rows:   d.Rows,
		Cols:   d.Cols,
	}, nil
}

// Shard returns the i-th of n disjoint, contiguous shards of d (0 ≤ i < n).
// Shard sizes differ by at most one example and together cover d. The shard
// shares d's storage.
func (d *Dataset) Shard(i, n int) (*Dataset, error) {
	from, to, err := shardBounds(d.N, i, n)
	if err != nil {
		return nil, err
	}
	return d.Slice(from, to)
}

// shardBounds returns the examples [from, to) of the i-th of n shards of
// count examples: the one place that says how a set is cut, for Shard and
// LoadShard alike.
func shardBounds(count, i, n int) (from, to int, err error) {
	if n < 1 || n > count {
		return 0, 0, fmt.Errorf("%w: cannot cut %d examples into %d shards", ErrRange, count, n)
	}
	if i < 0 || i >= n {
		return 0, 0, fmt.Errorf("%w: shard index %d not in [0, %d)", ErrRange, i, n)
	}
	return i * count / n, (i + 1) * count / n, nil
}

// CheckProportions checks the proportions a set is cut in by ShardOf:
// at least one, each positive and finite.
func CheckProportions(p []float64) error {
	if len(p) == 0 {
		return fmt.Errorf("%w: no proportions to cut a set in", ErrRange)
	}
	for i, f := range p {
		if !(f > 0) || math.IsInf(f, 0) {
			return fmt.Errorf("%w: proportion %d is %v, want a positive number", ErrRange, i, f)
		}
	}
	return nil
}

// proportionBounds returns the examples [from, to) of shard i of count
// examples cut in proportions p (normalised by their sum): shard i starts
// at count·(p₀+…+pᵢ₋₁)/Σp, rounded to the nearest example. Every shard must
// hold at least one example.
func proportionBounds(count, i int, p []float64) (from, to int, err error) {
	if err := CheckProportions(p); err != nil {
		return 0, 0, err
	}
	if i < 0 || i >= len(p) {
		return 0, 0, fmt.Errorf("%w: shard index %d not in [0, %d)", ErrRange, i, len(p))
	}
	var total, before float64
	for j, f := range p {
		total += f
		if j < i {
			before += f
		}
	}
	at := func(cum float64) int { return int(math.Round(float64(count) * cum / total)) }
	from, to = at(before), at(before+p[i])
	if i == len(p)-1 {
		to = count
	}
	if from >= to {
		return 0, 0, fmt.Errorf("%w: shard %d of proportion %v of %d examples would be empty", ErrRange, i, p[i]/total, count)
	}
	return from, to, nil
}

// ShardOf returns shard i of d cut into len(p) disjoint, contiguous shards
// in the proportions p (normalised by their sum, so 0.6, 0.3, 0.1 and 6,
// 3, 1 cut alike): shard i holds examples [round(N·(p₀+…+pᵢ₋₁)/Σp),
// round(N·(p₀+…+pᵢ)/Σp)). Every shard must hold at least one example. The
// shard shares d's storage.
func (d *Dataset) ShardOf(i int, p []float64) (*Dataset, error) {
	from, to, err := proportionBounds(d.N, i, p)
	if err != nil {
		return nil, err
	}
	return d.Slice(from, to)
}

// SplitOf cuts d into len(p) disjoint shards in the proportions p, as
// ShardOf(0, p) … ShardOf(len(p)-1, p).
func (d *Dataset) SplitOf(p []float64) ([]*Dataset, error) {
	if err := CheckProportions(p); err != nil {
		return nil, err
	}
	out := make([]*Dataset, len(p))
	for i := range p {
		s, err := d.ShardOf(i, p)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// Split cuts d into n disjoint shards, as Shard(0, n) … Shard(n-1, n).
func (d *Dataset) Split(n int) ([]*Dataset, error) {
	out := make([]*Dataset, 0, max(n, 0))
	for i := 0; i < n; i++ {
		s, err := d.Shard(i, n)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("mnist: cannot cut a dataset into %d shards", n)
	}
	return out, nil
}

// ClassCounts returns how many examples carry each label 0..255.
func (d *Dataset) ClassCounts() [256]int {
	var c [256]int
	for _, l := range d.Labels {
		c[l]++
	}
	return c
}

// Load reads the training and test sets from dir, which must hold the four
// standard files (TrainImagesFile and so on), each either plain or gzipped
// with a ".gz" suffix.
func Load(dir string) (train, test *Dataset, err error) {
	return loadFS(os.DirFS(dir), ".", dir)
}

// LoadFS is Load for a directory inside a file system, such as an embed.FS.
func LoadFS(fsys fs.FS, dir string) (train, test *Dataset, err error) {
	return loadFS(fsys, dir, dir)
}

func loadFS(fsys fs.FS, dir, shown string) (train, test *Dataset, err error) {
	train, err = loadPart(fsys, dir, shown, TrainImagesFile, TrainLabelsFile, wholeFile)
	if err != nil {
		return nil, nil, err
	}
	test, err = loadPart(fsys, dir, shown, TestImagesFile, TestLabelsFile, wholeFile)
	if err != nil {
		return nil, nil, err
	}
	if train.Rows != test.Rows || train.Cols != test.Cols {
		return nil, nil, fmt.Errorf("mnist: %s: training images are %d×%d but test images are %d×%d",
			shown, train.Rows, train.Cols, test.Rows, test.Cols)
	}
	return train, test, nil
}

// LoadShard reads shard i of n (0 ≤ i < n) of the training set in dir: the
// examples that Shard(i, n) of Load's training set holds, without keeping
// the others. A plain images file is read only at the shard's images; a
// gzipped one is decompressed to its end with the other images discarded
// as they pass. Both files are checked whole (header, length, gzip
// checksum), so every data owner rejects a damaged file, whichever shard
// it reads.
func LoadShard(dir string, i, n int) (*Dataset, error) {
	return loadPart(os.DirFS(dir), ".", dir, TrainImagesFile, TrainLabelsFile, func(count int) (int, int, error) {
		return shardBounds(count, i, n)
	})
}

// LoadShardOf reads shard i of the training set in dir cut in the
// proportions p: the examples that ShardOf(i, p) of Load's training set
// holds, read as LoadShard reads them.
func LoadShardOf(dir string, i int, p []float64) (*Dataset, error) {
	return loadShardOf(os.DirFS(dir), ".", dir, i, p)
}

// LoadShardOfFS is LoadShardOf for a directory inside a file system, such
// as EmbeddedFS.
func LoadShardOfFS(fsys fs.FS, dir string, i int, p []float64) (*Dataset, error) {
	return loadShardOf(fsys, dir, dir, i, p)
}

func loadShardOf(fsys fs.FS, dir, shown string, i int, p []float64) (*Dataset, error) {
	if err := CheckProportions(p); err != nil {
		return nil, err
	}
	return loadPart(fsys, dir, shown, TrainImagesFile, TrainLabelsFile, func(count int) (int, int, error) {
		return proportionBounds(count, i, p)
	})
}

// LoadShardFS is LoadShard for a directory inside a file system, such as
// EmbeddedFS.
func LoadShardFS(fsys fs.FS, dir string, i, n int) (*Dataset, error) {
	return loadPart(fsys, dir, dir, TrainImagesFile, TrainLabelsFile, func(count int) (int, int, error) {
		return shardBounds(count, i, n)
	})
}

// LoadTest reads the test set in dir (TestImagesFile and TestLabelsFile,
// plain or gzipped), and not the training set.
func LoadTest(dir string) (*Dataset, error) {
	return loadPart(os.DirFS(dir), ".", dir, TestImagesFile, TestLabelsFile, wholeFile)
}

// LoadTestFS is LoadTest for a directory inside a file system, such as
// EmbeddedFS.
func LoadTestFS(fsys fs.FS, dir string) (*Dataset, error) {
	return loadPart(fsys, dir, dir, TestImagesFile, TestLabelsFile, wholeFile)
}

// loadPart reads the examples pick chooses of an images file and its labels
// file, checking that the two hold the same number of examples before it
// reads the labels.
func loadPart(fsys fs.FS, dir, shown, imagesBase, labelsBase string, pick span) (*Dataset, error) {
	ip, ishown, err := find(fsys, dir, shown, imagesBase)
	if err != nil {
		return nil, err
	}
	lp, lshown, err := find(fsys, dir, shown, labelsBase)
	if err != nil {
		return nil, err
	}
	f, err := fsys.Open(ip)
	if err != nil {
		return nil, &FileError{File: ishown, Err: err}
	}
	img, count, err := decodeImages(f, pick)
	f.Close()
	if err != nil {
		return nil, &FileError{File: ishown, Err: err}
	}
	f, err = fsys.Open(lp)
	if err != nil {
		return nil, &FileError{File: lshown, Err: err}
	}
	labels, _, err := decodeLabels(f, func(n int) (int, int, error) {
		if n != count {
			return 0, 0, fmt.Errorf("%w: %d images, %d labels (images in %s)", ErrCountMismatch, count, n, ishown)
		}
		return pick(n)
	})
	f.Close()
	if err != nil {
		return nil, &FileError{File: lshown, Err: err}
	}
	return NewDataset(img, labels, ishown+" + "+lshown)
}

// LoadFiles reads one images file and its labels file, each plain or
// gzipped.
func LoadFiles(imagesPath, labelsPath string) (*Dataset, error) {
	fi, err := os.Open(imagesPath)
	if err != nil {
		return nil, &FileError{File: imagesPath, Err: err}
	}
	defer fi.Close()
	img, err := DecodeImages(fi, imagesPath)
	if err != nil {
		return nil, err
	}
	fl, err := os.Open(labelsPath)
	if err != nil {
		return nil, &FileError{File: labelsPath, Err: err}
	}
	defer fl.Close()
	labels, err := DecodeLabels(fl, labelsPath)
	if err != nil {
		return nil, err
	}
	return NewDataset(img, labels, imagesPath+" + "+labelsPath)
}

// find returns the path inside fsys of base or base.gz in dir, preferring
// the uncompressed file when both exist.
func find(fsys fs.FS, dir, shown, base string) (string, string, error) {
	for _, name := range []string{base, base + ".gz"} {
		p := path.Join(dir, name)
		if _, err := fs.Stat(fsys, p); err == nil {
			return p, path.Join(shown, name), nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", &FileError{File: path.Join(shown, name), Err: err}
		}
	}
	return "", "", &FileError{
		File: path.Join(shown, base),
		Err:  fmt.Errorf("neither %s nor %s.gz found: %w (run the download step, or pass the directory that holds them)", base, base, fs.ErrNotExist),
	}
}
