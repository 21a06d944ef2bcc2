package aggbench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunInProcess runs a small benchmark with every player in this
// process: both paths deliver every message intact (the model owner and,
// in the warm-up, the servers check them), and each measured iteration
// has a time on each path.
func TestRunInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, o := range []Options{
		{Params: 300_000, Iterations: 3, Warmup: 2, ChunkBytes: 100_000},
		{Params: 1000, Owners: 4, WordBytes: 8, Iterations: 2, Warmup: 1},
	} {
		res, err := RunInProcess(ctx, t.TempDir(), o)
		require.NoError(t, err, "%+v", o)
		assert.Len(t, res.Aggregation, o.Iterations)
		assert.Len(t, res.Raw, o.Iterations)
		for i := range o.Iterations {
			assert.Positive(t, res.Aggregation[i])
			assert.Positive(t, res.Raw[i])
		}
		var b strings.Builder
		require.NoError(t, res.Report(&b))
		assert.Contains(t, b.String(), "ratio")
		owners := max(o.Owners, 3)
		assert.Equal(t, owners, res.Options.Owners)
		assert.Equal(t, owners*(8+32+res.Options.WordBytes*o.Params)+2*res.Options.WordBytes*o.Params, res.Options.BytesPerIteration())
	}
}

func TestOptions(t *testing.T) {
	o, err := Options{}.check()
	require.NoError(t, err)
	assert.Equal(t, Options{Params: DefaultParams, Owners: 3, WordBytes: 4, Iterations: 20, Warmup: 3, ChunkBytes: 1 << 20}, o)
	assert.Equal(t, 3*(8+32+1_628_200)+2*1_628_200, Options{}.BytesPerIteration())
	assert.Equal(t, 3*(8+32+3_256_400)+2*3_256_400, Options{WordBytes: 8}.BytesPerIteration())
	for _, bad := range []Options{{Params: -1}, {Owners: 65}, {Iterations: -2}, {ChunkBytes: 2 << 20}, {WordBytes: 2}} {
		_, err := bad.check()
		assert.Error(t, err, "%+v", bad)
	}
	o, err = Options{Warmup: -1}.check()
	require.NoError(t, err)
	assert.Zero(t, o.Warmup)
}

func TestResultRatio(t *testing.T) {
	r := Result{
		Aggregation: []time.Duration{110, 300, 120},
		Raw:         []time.Duration{100, 100, 100},
	}
	assert.InDelta(t, 1.2, r.Ratio(), 1e-9)
	assert.Equal(t, time.Duration(120), median(r.Aggregation))
}

// BenchmarkSecureMean runs b.N iterations of each path with every player
// in this process (seven goroutines, the example's 407,050 parameters)
// and reports the time of each and their ratio. For a longer run across
// seven processes: go run ./cmd/shareflow bench.
func BenchmarkSecureMean(b *testing.B) {
	ctx := context.Background()
	res, err := RunInProcess(ctx, b.TempDir(), Options{Iterations: b.N, Warmup: 2})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(median(res.Aggregation)), "ms/aggregation")
	b.ReportMetric(ms(median(res.Raw)), "ms/raw")
	b.ReportMetric(res.Ratio(), "ratio")
}
