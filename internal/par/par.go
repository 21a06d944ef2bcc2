// Package par splits element-wise work on large tensors across cores. It
// starts goroutines, so only package session, which owns goroutines,
// uses it; protocol code computes ranges and stays sequential.
package par

import (
	"runtime"
	"sync"
)

// Min is the smallest tensor, in elements, that For splits: below it the
// goroutines cost more than they save.
const Min = 1 << 16

// For calls f on disjoint ranges [lo, hi) that cover [0, n), at the same
// time on up to GOMAXPROCS cores, and returns when all calls have. Each
// range but the last holds at least Min elements, and every lo is a
// multiple of align (which must be positive), so that work that must start
// on a boundary (a block of a cipher stream, say) can start there. The
// first range runs on the calling goroutine.
func For(n, align int, f func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n/Min)
	if workers <= 1 {
		f(0, n)
		return
	}
	per := ((n+workers-1)/workers + align - 1) / align * align
	var wg sync.WaitGroup
	for lo := per; lo < n; lo += per {
		wg.Go(func() { f(lo, min(lo+per, n)) })
	}
	f(0, min(per, n))
	wg.Wait()
}
