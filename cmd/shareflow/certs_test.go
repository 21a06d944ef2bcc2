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

// openHostmap lists only the servers, the crypto producer and the model
// owner: data owners join with certificates of their own.
const openHostmap = `{
  "server0": "10.0.0.7:4442",
  "server1": "server1.example.com:4443",
  "server2": "[::1]:4444",
  "model-owner": "127.0.0.1:4440"
}`

// TestCertsDataOwners: data-owner certificates are minted with the CA
// there is, without touching it or the other players' files; existing
// ones are kept unless forced; a fresh directory gets the CA, the listed
// players and the data owners at once.
func TestCertsDataOwners(t *testing.T) {
	file := writeConfig(t, openHostmap)
	out := filepath.Join(t.TempDir(), "certs")
	code, _, errOut := runArgs("certs", "--config", file, "--out", out)
	require.Equal(t, 0, code, errOut)
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, name))
		require.NoError(t, err)
		return b
	}
	ca, s0 := read("ca.pem"), read("server0.pem")

	code, stdout, errOut := runArgs("certs", "--config", file, "--out", out, "--data-owners", "5")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, stdout, "kept as it was")
	assert.Empty(t, errOut, "the hostmap admits data owners")
	assert.Equal(t, ca, read("ca.pem"), "the CA is not replaced")
	assert.Equal(t, s0, read("server0.pem"), "other players' certificates are not replaced")
	cfg, err := players.LoadConfig(file)
	require.NoError(t, err)
	cfg, err = cfg.WithCertDir(out)
	require.NoError(t, err)
	for i := range 5 {
		name := players.DataOwner(i)
		assert.Contains(t, stdout, filepath.Join(out, name+".pem"))
		id, err := cfg.LoadIdentity(name)
		require.NoError(t, err, name)
		assert.Equal(t, name, id.Player())
	}
	_, err = os.Stat(filepath.Join(out, "data-owner-5.pem"))
	assert.ErrorIs(t, err, fs.ErrNotExist)

	// One more, by name; the others are kept.
	do2 := read("data-owner-2.pem")
	code, stdout, errOut = runArgs("certs", "--config", file, "--out", out, "--data-owners", "3", "--data-owner", "data-owner-17")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, stdout, "data-owner-17")
	assert.Contains(t, stdout, "(exists, kept)")
	assert.Equal(t, do2, read("data-owner-2.pem"))
	_, err = cfg.LoadIdentity("data-owner-17")
	require.NoError(t, err)
	// With --force, the data owners asked for are issued anew, and only
	// they.
	code, _, errOut = runArgs("certs", "--config", file, "--out", out, "--data-owner", "data-owner-2", "--force")
	require.Equal(t, 0, code, errOut)
	assert.NotEqual(t, do2, read("data-owner-2.pem"))
	assert.Equal(t, ca, read("ca.pem"))
	assert.Equal(t, s0, read("server0.pem"))

	// A fresh directory gets everything at once.
	fresh := filepath.Join(t.TempDir(), "fresh")
	code, stdout, errOut = runArgs("certs", "--config", file, "--out", fresh, "--data-owners", "2")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, stdout, "Development CA")
	for _, name := range []string{"ca.pem", "server2.pem", "model-owner.pem", "data-owner-1.pem"} {
		_, err := os.Stat(filepath.Join(fresh, name))
		assert.NoError(t, err, name)
	}
}

// TestCertsDataOwnerErrors: names that are not data owners, counts out of
// range, and a hostmap that does not admit unlisted data owners.
func TestCertsDataOwnerErrors(t *testing.T) {
	file := writeConfig(t, openHostmap)
	out := filepath.Join(t.TempDir(), "certs")
	for _, args := range [][]string{
		{"--data-owner", "server9"},
		{"--data-owner", "model-owner-2"},
		{"--data-owner", "Data-Owner-1"},
		{"--data-owners", "-1"},
	} {
		code, _, errOut := runArgs(append([]string{"certs", "--config", file, "--out", out}, args...)...)
		assert.Equal(t, 2, code, "%v: %s", args, errOut)
	}
	_, err := os.Stat(out)
	assert.ErrorIs(t, err, fs.ErrNotExist, "nothing written")

	// TF Encrypted's hostmap lists its data owners: it admits no other,
	// which the command points out.
	tfe := writeConfig(t, hostmap)
	code, stdout, errOut := runArgs("certs", "--config", tfe, "--out", out, "--data-owner", "data-owner-4")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, stdout, "data-owner-4")
	assert.Contains(t, errOut, `data-owner-4 cannot join until it says "open_membership": true`)
	// A listed data owner gets the hosts of its address.
	assert.Contains(t, stdout, "data-owner-0")
	cfg, err := players.LoadConfig(tfe)
	require.NoError(t, err)
	cfg, err = cfg.WithCertDir(out)
	require.NoError(t, err)
	id, err := cfg.LoadIdentity("data-owner-0")
	require.NoError(t, err)
	require.Len(t, id.Certificate().IPAddresses, 1)
	assert.Equal(t, "127.0.0.1", id.Certificate().IPAddresses[0].String())
}
