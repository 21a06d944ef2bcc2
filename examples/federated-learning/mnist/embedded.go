package mnist

import (
	"embed"
	"io/fs"
	"sync"
)

//go:generate go run ./internal/makeembedded -src /usr/share/datasets/fashion-mnist -dst embedded -train 6000 -test 1000

// embeddedFiles holds the class-balanced Fashion-MNIST subset described in
// embedded/README.md.
//
//go:embed embedded/*.gz
var embeddedFiles embed.FS

// Sizes of the embedded subset.
const (
	EmbeddedTrainN = 6000
	EmbeddedTestN  = 1000
)

var (
	embeddedOnce                sync.Once
	embeddedTrain, embeddedTest *Dataset
	embeddedErr                 error
)

// EmbeddedFS returns the file system that holds the embedded subset's four
// gzipped IDX files in its root, under their standard names.
func EmbeddedFS() fs.FS {
	sub, err := fs.Sub(embeddedFiles, "embedded")
	if err != nil {
		// fs.Sub fails only for an invalid path, and "embedded" is valid.
		panic("mnist: " + err.Error())
	}
	return sub
}

// Embedded returns the real data set compiled into the package: 6,000
// training and 1,000 test images of Fashion-MNIST (Zalando, MIT licence),
// 600 and 100 per class, taken in file order from the official files. It
// needs no download. Each call returns fresh copies that the caller may
// modify.
func Embedded() (train, test *Dataset, err error) {
	embeddedOnce.Do(func() {
		embeddedTrain, embeddedTest, embeddedErr = LoadFS(EmbeddedFS(), ".")
	})
	if embeddedErr != nil {
		return nil, nil, embeddedErr
	}
	return embeddedTrain.clone(), embeddedTest.clone(), nil
}

// clone returns a deep copy of d.
func (d *Dataset) clone() *Dataset {
	c := *d
	c.Images = append([]float32(nil), d.Images...)
	c.Labels = append([]uint8(nil), d.Labels...)
	return &c
}
