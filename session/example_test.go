package session_test

import (
	"context"
	"fmt"
	"log"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/session"
)

// Three players each hold a private vector; the compute servers average
// them without seeing any, and only the model owner learns the mean.
func Example() {
	private := map[string][]float64{
		"data-owner-0": {1.0, -2.0, 0.5},
		"data-owner-1": {2.0, 4.0, 0.25},
		"data-owner-2": {3.0, 1.0, 0.75},
	}
	g := graph.New()
	var inputs []*graph.Private
	for _, owner := range []string{"data-owner-0", "data-owner-1", "data-owner-2"} {
		values := private[owner]
		fn := func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
			return []*tensor.Dense{tensor.New(tensor.WithShape(3), tensor.WithBacking(values))}, nil
		}
		inputs = append(inputs, g.DefinePrivateInput(owner, fn, []graph.Shape{{3}})...)
	}
	mean := g.Div(g.AddN(inputs...), float64(len(inputs)))
	op := g.DefineOutput("model-owner", []*graph.Private{mean}, func(_ context.Context, v []*tensor.Dense) error {
		fmt.Printf("mean: %.4f\n", v[0].Float64s())
		return nil
	})

	s, err := session.NewLocal(g, session.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	if err := s.Run(context.Background(), op); err != nil {
		log.Fatal(err)
	}
	// Output: mean: [2.0000 1.0000 0.5000]
}
