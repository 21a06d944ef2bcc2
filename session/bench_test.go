package session

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorgonia.org/tensor"

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

// BenchmarkMatMul is the first layer of the MNIST model on a batch of
// 100: a private 100×784 input (data-owner-0) times a private 784×512
// weight matrix (data-owner-1), revealed to the model owner, in a local
// session; and the same product in the clear, a plain float64 loop (go
// test -bench MatMul -benchtime 5x ./session). The secure run reports,
// per iteration, the crypto producer's triple (triple-ms: two seeds, the
// streams of a, b and c0, the ring product a·b) and server0's online step
// (online-ms: open, exchange openings, finish with two ring products,
// interactive truncation), and the bytes the triple (triple-MB) and the
// online step (online-MB, between the servers) put on the wire, and all
// links together (MB/iter, inputs and outputs included).
func BenchmarkMatMul(b *testing.B) {
	const m, k, n = 100, 784, 512
	r := newBenchRand()
	x, w := edgeValues(r, m*k, 1), edgeValues(r, k*n, 0.05) // |x·w| < 784·0.05
	b.Run("secure", func(b *testing.B) {
		g := graph.New()
		xp := g.DefinePrivateInput("data-owner-0", shaped(graph.Shape{m, k}, x), []graph.Shape{{m, k}})[0]
		wp := g.DefinePrivateInput("data-owner-1", shaped(graph.Shape{k, n}, w), []graph.Shape{{k, n}})[0]
		op := g.DefineOutput("model-owner", []*graph.Private{g.MatMul(xp, wp)}, func(context.Context, []*tensor.Dense) error { return nil })
		s, err := NewLocal(g, Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		var triple, online atomic.Int64
		s.timing = func(player string, st step, d time.Duration) {
			switch st.(type) {
			case *tripleStep:
				triple.Add(int64(d))
			case *productStep:
				if player == "server0" {
					online.Add(int64(d))
				}
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Run(context.Background(), op); err != nil {
				b.Fatal(err)
			}
		}
		iters := float64(s.Iterations())
		var all, tripleBytes, onlineBytes uint64
		for _, l := range s.Stats() {
			all += l.Bytes
			switch {
			case l.From == "server2":
				tripleBytes += l.Bytes
			case strings.HasPrefix(l.From, "server") && strings.HasPrefix(l.To, "server"):
				onlineBytes += l.Bytes
			}
		}
		b.ReportMetric(float64(triple.Load())/iters/1e6, "triple-ms")
		b.ReportMetric(float64(online.Load())/iters/1e6, "online-ms")
		b.ReportMetric(float64(tripleBytes)/iters/1e6, "triple-MB")
		b.ReportMetric(float64(onlineBytes)/iters/1e6, "online-MB")
		b.ReportMetric(float64(all)/iters/1e6, "MB/iter")
	})
	b.Run("plaintext", func(b *testing.B) {
		out := make([]float64, m*n)
		b.ReportAllocs()
		for b.Loop() {
			clear(out)
			for i := range m {
				row := out[i*n : i*n+n]
				for l, a := range x[i*k : i*k+k] {
					for j, v := range w[l*n : l*n+n] {
						row[j] += a * v
					}
				}
			}
		}
	})
}
