package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/players"
)

const hostmap = `{
  "model-owner": "127.0.0.1:4440",
  "data-owner-0": "127.0.0.1:4441",
  "server0": "10.0.0.7:4442",
  "server1": "server1.example.com:4443",
  "server2": "[::1]:4444"
}`

func writeConfig(t *testing.T, data string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "hosts.json")
	require.NoError(t, os.WriteFile(file, []byte(data), 0o644))
	return file
}

func TestCertsCommand(t *testing.T) {
	file := writeConfig(t, hostmap)
	out := filepath.Join(t.TempDir(), "certs")

	// Call the command's run function directly.
	var stdout, stderr bytes.Buffer
	ctx := withStdio(context.Background(), &stdout, &stderr)
	require.NoError(t, commands["certs"].main(ctx, []string{"--config", file, "--out", out}))
	assert.Contains(t, stdout.String(), filepath.Join(out, "ca.pem"))
	assert.Contains(t, stdout.String(), filepath.Join(out, "server1.pem"))
	assert.Contains(t, stdout.String(), "server1.example.com")
	assert.Empty(t, stderr.String())

	cfg, err := players.LoadConfig(file)
	require.NoError(t, err)
	cfg, err = cfg.WithCertDir(out)
	require.NoError(t, err)
	for _, name := range cfg.Names() {
		id, err := cfg.LoadIdentity(name)
		require.NoError(t, err, name)
		assert.Equal(t, name, id.Player())
	}
	id, err := cfg.LoadIdentity("server0")
	require.NoError(t, err)
	require.Len(t, id.Certificate().IPAddresses, 1)
	assert.Equal(t, "10.0.0.7", id.Certificate().IPAddresses[0].String())
	st, err := os.Stat(filepath.Join(out, "server0-key.pem"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o600), st.Mode().Perm())

	// A second run refuses to replace the CA...
	before, err := os.ReadFile(filepath.Join(out, "ca.pem"))
	require.NoError(t, err)
	code, _, errOut := runArgs("certs", "--config", file, "--out", out)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "refusing to overwrite")
	assert.Contains(t, errOut, "--force")
	after, err := os.ReadFile(filepath.Join(out, "ca.pem"))
	require.NoError(t, err)
	assert.Equal(t, before, after)

	// ... unless forced.
	code, _, errOut = runArgs("certs", "--config", file, "--out", out, "--force")
	assert.Equal(t, 0, code, errOut)
	after, err = os.ReadFile(filepath.Join(out, "ca.pem"))
	require.NoError(t, err)
	assert.NotEqual(t, before, after)
}

func TestCertsDefaultOutNextToConfig(t *testing.T) {
	file := writeConfig(t, `{"players": {"a": "127.0.0.1:1", "b": "127.0.0.1:2"}, "insecure": true}`)
	code, _, errOut := runArgs("certs", "--config", file)
	assert.Equal(t, 0, code, errOut)
	assert.Contains(t, errOut, `"insecure": true`)
	_, err := os.Stat(filepath.Join(filepath.Dir(file), "certs", "b-key.pem"))
	assert.NoError(t, err)
}

func TestCertsBadInput(t *testing.T) {
	bad := writeConfig(t, "{\n  \"server0\": \"127.0.0.1:1\",\n  \"server0\": \"127.0.0.1:2\"\n}")
	code, _, errOut := runArgs("certs", "--config", bad, "--out", t.TempDir())
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "hosts.json:3:3")
	assert.Contains(t, errOut, "duplicate key")

	code, _, errOut = runArgs("certs", "--config", filepath.Join(t.TempDir(), "missing.json"))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "missing.json")

	code, _, errOut = runArgs("certs", "--config", writeConfig(t, hostmap), "--validity", "-1h")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--validity must be positive")
}
