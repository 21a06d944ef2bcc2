package units

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0 B"}, {999, "999 B"}, {1000, "1 kB"}, {3_256_400, "3.26 MB"}, {2e9, "2 GB"}, {5e12, "5000 GB"},
	} {
		assert.Equal(t, tc.want, Bytes(tc.in), "%v", tc.in)
	}
}
