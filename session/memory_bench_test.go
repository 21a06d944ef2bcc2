package session

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
)

// BenchmarkPublicModel sends the federated-learning model (407,050
// parameters in four tensors, 3.26 MB) from the model owner to three data
// owners in a local session, each of which returns one number from it. It
// reports what an iteration allocates besides the model owner's own copy
// of the model (which graph.Func asks for), in models (model-copies):
// every such allocation here is a copy of the model on its way, made by
// the session or the transport (go test -run ^$ -bench PublicModel
// -benchmem ./session).
func BenchmarkPublicModel(b *testing.B) {
	g, op, modelBytes := publicModelGraph([]graph.Shape{{784, 512}, {512}, {512, 10}, {10}})
	s, err := NewLocal(g, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Run(context.Background(), op); err != nil { // fills the pool
		b.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Run(context.Background(), op); err != nil {
			b.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	perOp := float64(after.TotalAlloc-before.TotalAlloc) / float64(b.N)
	b.ReportMetric((perOp-float64(modelBytes))/float64(modelBytes), "model-copies")
}

// A public tensor sent to three players is copied twice on its way, by
// the transport, and the last receiver gets the sender's memory: no
// encoding of its own. Counted in bytes allocated (runtime/metrics), with
// a tensor large enough that everything else is noise.
func TestPublicTensorCopies(t *testing.T) {
	g, op, modelBytes := publicModelGraph([]graph.Shape{{1000, 1000}})
	s, err := NewLocal(g, Options{})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Run(context.Background(), op)) // fills the pool
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(sample)
	before := sample[0].Value.Uint64()
	const runs = 4
	for range runs {
		require.NoError(t, s.Run(context.Background(), op))
	}
	metrics.Read(sample)
	copies := float64(sample[0].Value.Uint64()-before)/runs/float64(modelBytes) - 1 // the function's own
	t.Logf("%.2f copies of the tensor per iteration besides the function's", copies)
	assert.Less(t, copies, 2.5, "two copies by the transport, for the first two receivers")
}

// publicModelGraph sends a public tensor of shapes from the model owner,
// whose function returns a fresh copy each time, to three data owners,
// each of which returns one number from it, summed in secret.
func publicModelGraph(shapes []graph.Shape) (*graph.Graph, *graph.Op, int) {
	model := randomInputs(newBenchRand(), 1, shapes, 1)[0]
	var modelBytes int
	for _, v := range model {
		modelBytes += 8 * len(v)
	}
	g := graph.New()
	w := g.DefinePublicInput(players.ModelOwner, func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
		out := make([]*tensor.Dense, len(model))
		for j, v := range model {
			out[j] = tensor.New(tensor.WithShape(shapes[j]...), tensor.WithBacking(slices.Clone(v)))
		}
		return out, nil
	}, shapes)
	var got []*graph.Private
	for i := range 3 {
		got = append(got, g.DefinePrivateInput(players.DataOwner(i), func(_ context.Context, ws []*tensor.Dense) ([]*tensor.Dense, error) {
			return []*tensor.Dense{tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{ws[0].Float64s()[i]}))}, nil
		}, []graph.Shape{{1}}, w...)[0])
	}
	op := g.DefineOutput(players.ModelOwner, []*graph.Private{g.AddN(got...)}, func(context.Context, []*tensor.Dense) error { return nil })
	return g, op, modelBytes
}

// TestMeanMemory runs a secure mean of 100 data owners × 1M parameters in
// a local session and reports the peak resident memory (VmHWM) above what
// the inputs take, per owner-parameter. It needs about 3 GB and a few
// seconds, so it runs only when SHAREFLOW_MEMORY_TEST is set
// (SHAREFLOW_MEMORY_TEST=1 go test -count=1 -run MeanMemory -v ./session);
// SHAREFLOW_MEMORY_OWNERS and SHAREFLOW_MEMORY_PARAMS change the size,
// SHAREFLOW_MEMORY_ITERATIONS the number of iterations (3).
//
// What the session holds is the inputs' functions' results, each masked
// where it lies, until the servers have summed them: one copy of each
// share in flight, 8 bytes per owner-parameter, which is the peak of one
// iteration. Over several iterations the garbage collector's pacing adds
// to it: a collection that finds all those shares live (1.5 GB with the
// inputs) lets the heap grow to twice that before the next (GOGC=100,
// see GODEBUG=gctrace=1), so the peak is about 24 bytes per
// owner-parameter unless GOMEMLIMIT holds it (about 10 at 1800MiB).
func TestMeanMemory(t *testing.T) {
	if os.Getenv("SHAREFLOW_MEMORY_TEST") == "" {
		t.Skip("set SHAREFLOW_MEMORY_TEST=1 to run (about 3 GB)")
	}
	owners, params := envInt(t, "SHAREFLOW_MEMORY_OWNERS", 100), envInt(t, "SHAREFLOW_MEMORY_PARAMS", 1_000_000)
	shapes := []graph.Shape{{params}}
	inputs := randomInputs(newBenchRand(), owners, shapes, 1)
	g, op, got := meanGraph(inputs, shapes)
	s, err := NewLocal(g, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	runtime.GC()
	debug.FreeOSMemory()
	base := procStatus(t, "VmRSS")
	iterations := envInt(t, "SHAREFLOW_MEMORY_ITERATIONS", 3)
	for range iterations {
		if err := s.Run(context.Background(), op); err != nil {
			t.Fatal(err)
		}
	}
	peak := procStatus(t, "VmHWM")
	var want float64
	for i := range inputs {
		want += inputs[i][0][0]
	}
	want /= float64(owners)
	if d := (*got)[0][0] - want; d > 1e-6 || d < -1e-6 {
		t.Fatalf("mean[0] = %g, want %g", (*got)[0][0], want)
	}
	n := float64(owners) * float64(params)
	t.Logf("%d owners × %d parameters, %d iterations: inputs %.2f GB (RSS %.2f GB before the runs), peak RSS %.2f GB: %.1f bytes per owner-parameter above the inputs",
		owners, params, iterations, 8*n/1e9, float64(base)/1e9, float64(peak)/1e9, float64(peak-base)/n)
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// procStatus returns a size field of /proc/self/status, in bytes.
func procStatus(t *testing.T, field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("/proc/self/status %s: %v", field, err)
		}
		return kb << 10
	}
	t.Fatalf("/proc/self/status has no %s", field)
	return 0
}
