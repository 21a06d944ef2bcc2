package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCertsWarnsOfAMisspeltPlayer: a hostmap that names "data-ower-1"
// gets its certificate, as any name may, but certs says what it probably
// meant instead of minting it without a word.
func TestCertsWarnsOfAMisspeltPlayer(t *testing.T) {
	file := writeConfig(t, `{
  "model-owner": "127.0.0.1:4440",
  "data-owner-0": "127.0.0.1:4441",
  "data-ower-1": "127.0.0.1:4445",
  "server0": "127.0.0.1:4442",
  "server1": "127.0.0.1:4443",
  "server2": "127.0.0.1:4444"
}`)
	var stdout, stderr bytes.Buffer
	ctx := withStdio(context.Background(), &stdout, &stderr)
	require.NoError(t, commands["certs"].main(ctx, []string{"--config", file, "--out", filepath.Join(t.TempDir(), "certs")}))
	assert.Contains(t, stderr.String(), `names a player "data-ower-1": did you mean "data-owner-1"?`)
	assert.Contains(t, stdout.String(), "data-ower-1.pem", "the certificate is minted all the same")
	assert.NotContains(t, stderr.String(), `"data-owner-0"`, "only the stray name")
}
