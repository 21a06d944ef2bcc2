package session

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPoolReusesAndBounds(t *testing.T) {
	p := newPool()
	a := p.uint64s(10)
	a[0] = 42
	p.putUint64s(a)
	b := p.uint64s(10)
	assert.Equal(t, &a[0], &b[0], "a buffer of the same length is reused")
	assert.Len(t, p.uint64s(11), 11, "another length is allocated")

	for range 3 * maxFree {
		p.putBytes(make([]byte, 5, 64))
	}
	assert.Len(t, p.bytes[64], maxFree, "a pool keeps at most maxFree buffers of a size")
	buf := p.byteBuf(64)
	assert.Equal(t, 0, len(buf))
	assert.Equal(t, 64, cap(buf))
}
