package session

import (
	"context"
	"testing"

	"github.com/shareflow/shareflow/graph"
)

// BenchmarkSecureMean runs one iteration of the federated-learning
// aggregation at TF Encrypted's size (407,050 parameters, 3 data owners)
// in a local session, and reports the bytes that cross links per
// iteration. Compare with BenchmarkPlaintextMean for the cost of secrecy
// (go test -bench Mean ./session).
func BenchmarkSecureMean(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts Options
	}{{"clear-division", Options{}}, {"interactive-truncation", Options{PrivateDivision: true}}} {
		b.Run(tc.name, func(b *testing.B) {
			shapes := []graph.Shape{{784, 512}, {512}, {512, 10}, {10}}
			inputs := randomInputs(newBenchRand(), 3, shapes, 1)
			g, op, _ := meanGraph(inputs, shapes)
			s, err := NewLocal(g, tc.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Run(context.Background(), op); err != nil {
					b.Fatal(err)
				}
			}
			var bytes uint64
			for _, l := range s.Stats() {
				bytes += l.Bytes
			}
			b.ReportMetric(float64(bytes)/float64(s.Iterations())/1e6, "MB/iter")
		})
	}
}

// BenchmarkPlaintextMean averages the same tensors in the clear.
func BenchmarkPlaintextMean(b *testing.B) {
	shapes := []graph.Shape{{784, 512}, {512}, {512, 10}, {10}}
	inputs := randomInputs(newBenchRand(), 3, shapes, 1)
	out := make([][]float64, len(shapes))
	for j, s := range shapes {
		out[j] = make([]float64, s.Size())
	}
	b.ReportAllocs()
	for b.Loop() {
		for j := range shapes {
			for k := range out[j] {
				var sum float64
				for i := range inputs {
					sum += inputs[i][j][k]
				}
				out[j][k] = sum / float64(len(inputs))
			}
		}
	}
}
