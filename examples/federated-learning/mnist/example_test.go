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

// On its own host a data owner decodes only its shard, the same examples
// Shard cuts from the whole set, and the model owner only the test set.
func ExampleLoadShardFS() {
	shard, err := mnist.LoadShardFS(mnist.EmbeddedFS(), ".", 1, 3)
	if err != nil {
		log.Fatal(err)
	}
	test, err := mnist.LoadTestFS(mnist.EmbeddedFS(), ".")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("data-owner-1 of 3: %d examples\n", shard.N)
	fmt.Printf("model-owner: %d test examples\n", test.N)
	// Output:
	// data-owner-1 of 3: 2000 examples
	// model-owner: 1000 test examples
}
