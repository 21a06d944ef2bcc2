package players

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSuggest(t *testing.T) {
	for name, want := range map[string]string{
		"sever0":        "server0",
		"server00":      "server0",
		"Server1":       "server1",
		"model-ower":    "model-owner",
		"Model-Owner":   "model-owner",
		"data-ower-1":   "data-owner-1",
		"data-owner1":   "data-owner-1",
		"dataowner-12":  "data-owner-12",
		"server0":       "",
		"model-owner":   "",
		"data-owner-3":  "",
		"hospital-a":    "",
		"alice":         "",
		"data-owner-x":  "",
		"data-owners-7": "data-owner-7",
	} {
		assert.Equal(t, want, Suggest(name), name)
	}
}
