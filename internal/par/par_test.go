package par

import (
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestForCoversEveryElementOnce(t *testing.T) {
	// An alignment larger than a core's share: one range, never past n.
	For(2*Min+1, 4*Min, func(lo, hi int) {
		assert.Equal(t, [2]int{0, 2*Min + 1}, [2]int{lo, hi})
	})
	for _, procs := range []int{1, 2, 3, 8} {
		old := runtime.GOMAXPROCS(procs)
		for _, n := range []int{0, 1, Min - 1, Min, 2 * Min, 2*Min + 1, 5*Min + 7} {
			seen := make([]int, n)
			var mu sync.Mutex
			var ranges [][2]int
			For(n, 2048, func(lo, hi int) {
				mu.Lock()
				ranges = append(ranges, [2]int{lo, hi})
				mu.Unlock()
				for i := lo; i < hi; i++ {
					seen[i]++
				}
			})
			for i, c := range seen {
				require.Equal(t, 1, c, "GOMAXPROCS %d, n %d: element %d", procs, n, i)
			}
			assert.LessOrEqual(t, len(ranges), max(1, procs), "GOMAXPROCS %d, n %d", procs, n)
			for _, r := range ranges {
				assert.Zero(t, r[0]%2048, "range %v starts off the alignment", r)
				if r[1] != n {
					assert.GreaterOrEqual(t, r[1]-r[0], Min, "range %v is too small to be worth a goroutine", r)
				}
			}
		}
		runtime.GOMAXPROCS(old)
	}
}
