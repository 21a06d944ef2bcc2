package mnist_test

import (
	"fmt"
	"log"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
)

// The embedded subset needs no download; Split gives each data owner its
// own disjoint shard.
func ExampleEmbedded() {
	train, test, err := mnist.Embedded()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("train: %d images of %d×%d\n", train.N, train.Rows, train.Cols)
	fmt.Printf("test: %d images\n", test.N)

	shards, err := train.Split(3)
	if err != nil {
		log.Fatal(err)
	}
	for i, s := range shards {
		fmt.Printf("data-owner-%d: %d examples\n", i, s.N)
	}
	// Output:
	// train: 6000 images of 28×28
	// test: 1000 images
	// data-owner-0: 2000 examples
	// data-owner-1: 2000 examples
	// data-owner-2: 2000 examples
}
