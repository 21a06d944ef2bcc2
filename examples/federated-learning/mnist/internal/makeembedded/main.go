// Command makeembedded cuts the small, class-balanced Fashion-MNIST subset
// that package mnist embeds for runs without a download.
//
// It reads the four IDX files of a full MNIST-format data set (by default the
// copy that Debian's dataset-fashion-mnist package installs), keeps the first
// train/10 training and test/10 test examples of each class, in file order,
// and writes them as gzipped IDX files with the standard names. The output
// is deterministic for a given input and Go release.
//
// Usage (from the mnist package directory, as go generate runs it):
//
//	go run ./internal/makeembedded -src /usr/share/datasets/fashion-mnist -dst embedded
package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/internal/atomicfile"
)

func main() {
	src := flag.String("src", "/usr/share/datasets/fashion-mnist", "directory holding the full IDX files (plain or .gz)")
	dst := flag.String("dst", "embedded", "directory to write the subset to")
	nTrain := flag.Int("train", 6000, "training examples to keep (a multiple of 10)")
	nTest := flag.Int("test", 1000, "test examples to keep (a multiple of 10)")
	flag.Parse()
	if err := run(*src, *dst, *nTrain, *nTest); err != nil {
		fmt.Fprintln(os.Stderr, "makeembedded:", err)
		os.Exit(1)
	}
}

func run(src, dst string, nTrain, nTest int) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	pairs := []struct {
		images, labels string
		keep           int
	}{
		{mnist.TrainImagesFile, mnist.TrainLabelsFile, nTrain},
		{mnist.TestImagesFile, mnist.TestLabelsFile, nTest},
	}
	for _, p := range pairs {
		img, err := readImages(src, p.images)
		if err != nil {
			return err
		}
		labels, err := readLabels(src, p.labels)
		if err != nil {
			return err
		}
		if img.N != len(labels) {
			return fmt.Errorf("%s: %d images but %d labels", p.images, img.N, len(labels))
		}
		sub, subLabels, err := balanced(img, labels, p.keep)
		if err != nil {
			return fmt.Errorf("%s: %w", p.images, err)
		}
		var ib, lb bytes.Buffer
		if err := mnist.EncodeImages(&ib, sub); err != nil {
			return err
		}
		if err := mnist.EncodeLabels(&lb, subLabels); err != nil {
			return err
		}
		if err := writeGzip(filepath.Join(dst, p.images+".gz"), ib.Bytes()); err != nil {
			return err
		}
		if err := writeGzip(filepath.Join(dst, p.labels+".gz"), lb.Bytes()); err != nil {
			return err
		}
		fmt.Printf("%s: kept %d of %d examples, %d per class\n", p.images, sub.N, img.N, p.keep/10)
	}
	return nil
}

// balanced keeps the first keep/10 examples of each of the classes 0..9, in
// their original order.
func balanced(img *mnist.Images, labels []uint8, keep int) (*mnist.Images, []uint8, error) {
	if keep < 10 || keep%10 != 0 {
		return nil, nil, fmt.Errorf("keep %d is not a positive multiple of 10", keep)
	}
	per := keep / 10
	var seen [10]int
	p := img.Rows * img.Cols
	out := &mnist.Images{Rows: img.Rows, Cols: img.Cols, Pixels: make([]byte, 0, keep*p)}
	outLabels := make([]uint8, 0, keep)
	for i, l := range labels {
		if l > 9 {
			return nil, nil, fmt.Errorf("example %d has label %d, want 0..9", i, l)
		}
		if seen[l] == per {
			continue
		}
		seen[l]++
		out.Pixels = append(out.Pixels, img.Pixels[i*p:(i+1)*p]...)
		outLabels = append(outLabels, l)
	}
	for c, n := range seen {
		if n != per {
			return nil, nil, fmt.Errorf("class %d has only %d examples, want %d", c, n, per)
		}
	}
	out.N = len(outLabels)
	return out, outLabels, nil
}

func open(dir, base string) (*os.File, string, error) {
	for _, name := range []string{base, base + ".gz"} {
		p := filepath.Join(dir, name)
		f, err := os.Open(p)
		if err == nil {
			return f, p, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, "", err
		}
	}
	return nil, "", fmt.Errorf("%s: neither %s nor %s.gz exists", dir, base, base)
}

func readImages(dir, base string) (*mnist.Images, error) {
	f, p, err := open(dir, base)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return mnist.DecodeImages(f, p)
}

func readLabels(dir, base string) ([]uint8, error) {
	f, p, err := open(dir, base)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return mnist.DecodeLabels(f, p)
}

// writeGzip writes data gzipped (no name, no time stamp, so the output is
// reproducible) to path via a temporary file and a rename.
func writeGzip(path string, data []byte) error {
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
		if err != nil {
			return err
		}
		if _, err := zw.Write(data); err != nil {
			return err
		}
		return zw.Close()
	})
}
