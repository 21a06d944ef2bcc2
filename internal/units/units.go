// Package units formats quantities for the examples' reports.
package units

import (
	"fmt"
	"strings"
)

// Bytes formats b bytes in decimal units (B, kB, MB, GB) with up to two
// decimals, dropping ".00": 999 B, 3.26 MB, 2 GB.
func Bytes(b float64) string {
	names := []string{"B", "kB", "MB", "GB"}
	i := 0
	for b >= 1000 && i < len(names)-1 {
		b /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", b, names[i])
	}
	return strings.TrimSuffix(fmt.Sprintf("%.2f", b), ".00") + " " + names[i]
}
