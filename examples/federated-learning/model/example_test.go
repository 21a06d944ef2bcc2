package model_test

import (
	"fmt"
	"log"
	"math/rand/v2"

	"github.com/shareflow/shareflow/examples/federated-learning/model"
)

// A data owner computes the gradient of its batch; the model owner applies
// it with SGD.
func ExampleTrainer() {
	a := model.Architecture{Inputs: 4, Hidden: 3, Classes: 2}
	params, err := a.Init(rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		log.Fatal(err)
	}
	tr, err := model.NewTrainer(a, 2)
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()

	batch := model.Batch{X: []float32{0, 1, 0, 1, 1, 0, 1, 0}, Labels: []uint8{0, 1}}
	first, grads, err := tr.Gradients(params, batch)
	if err != nil {
		log.Fatal(err)
	}
	for i, g := range grads {
		fmt.Println(model.ParamName(i), g.Shape())
	}
	for step := 0; step < 50; step++ {
		_, grads, err = tr.Gradients(params, batch)
		if err != nil {
			log.Fatal(err)
		}
		if err := model.SGD(a, params, grads, 0.5); err != nil {
			log.Fatal(err)
		}
	}
	last, acc, err := model.Evaluate(a, params, batch.X, batch.Labels)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("loss decreased:", last < first, "accuracy:", acc)
	fmt.Println("TFE network parameters:", model.TFE().NumParams())
	// Output:
	// W1 (4, 3)
	// b1 (3)
	// W2 (3, 2)
	// b2 (2)
	// loss decreased: true accuracy: 1
	// TFE network parameters: 407050
}
