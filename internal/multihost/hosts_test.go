package multihost_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/internal/multihost"
	"github.com/shareflow/shareflow/internal/multihost/multihosttest"
	"github.com/shareflow/shareflow/players"
)

// aggregation wants what the federated-learning example wants: the
// servers, the model owner, the crypto producer if there is one, and the
// data owners.
func aggregation(cfg *players.Config) []string {
	fixed := []string{players.Server0, players.Server1, players.ModelOwner}
	if cfg.Has(players.CryptoProducer) {
		fixed = append(fixed, players.CryptoProducer)
	}
	return multihost.WithDataOwners(cfg, fixed, 0)
}

const needs = "the example needs server0, server1, model-owner and data owners"

// TestLoadConfigCertsDefaultNextToConfig loads a flat hostmap, which
// names no certificates: with neither --certs nor --insecure a player
// takes them from the certs directory next to the config, and says where
// to get them when there is none.
func TestLoadConfigCertsDefaultNextToConfig(t *testing.T) {
	hosts := multihosttest.FlatHostmap(t, players.Defaults(3))
	dir := filepath.Dir(hosts)
	f := multihost.Flags{Config: hosts, Player: "server0"}

	_, err := f.LoadConfig(io.Discard, aggregation, needs)
	require.Error(t, err)
	assert.Contains(t, err.Error(), hosts+" names no certificates, and there is no directory "+filepath.Join(dir, "certs"))
	assert.Contains(t, err.Error(), "shareflow certs --config "+hosts)

	parsed, err := players.LoadConfig(hosts)
	require.NoError(t, err)
	_, err = players.GenerateDevPKI(filepath.Join(dir, "certs"), parsed.CertSpecs(), players.DevPKIOptions{})
	require.NoError(t, err)
	var out bytes.Buffer
	cfg, err := f.LoadConfig(&out, aggregation, needs)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "certs", "ca.pem"), cfg.CAFile())
	id, err := cfg.LoadIdentity("server0")
	require.NoError(t, err)
	assert.Equal(t, "server0", id.Player())
	assert.Equal(t, "server0: certificates from "+filepath.Join(dir, "certs")+"\n", out.String())

	// The flags still decide when given.
	other := t.TempDir()
	cfg, err = multihost.Flags{Config: hosts, Player: "server0", Certs: other}.LoadConfig(io.Discard, aggregation, needs)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(other, "ca.pem"), cfg.CAFile())
	cfg, err = multihost.Flags{Config: hosts, Player: "server0", Insecure: true}.LoadConfig(io.Discard, aggregation, needs)
	require.NoError(t, err)
	assert.True(t, cfg.Insecure())

	// A config that names its own certificates keeps them.
	ext := multihosttest.Cluster(t, 3, 20*time.Second, 20*time.Second) // "cert_dir": "certs" next to it
	out.Reset()
	cfg, err = multihost.Flags{Config: ext, Player: "server0"}.LoadConfig(&out, aggregation, needs)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(filepath.Dir(ext), "certs", "ca.pem"), cfg.CAFile())
	assert.Empty(t, out.String(), "the config's own setting, not the default")
}

// TestLoadConfigMisspelledDataOwner (issue 8): a misspelt player name in
// a flat hostmap is named, with its place in the file and the name it
// probably meant, rather than reported as a missing data owner; the
// example's needs follow.
func TestLoadConfigMisspelledDataOwner(t *testing.T) {
	hosts := filepath.Join(t.TempDir(), "hosts.json")
	const flat = `{
  "server0": "127.0.0.1:4440",
  "server1": "127.0.0.1:4441",
  "server2": "127.0.0.1:4442",
  "model-owner": "127.0.0.1:4443",
  "data-owner-0": "127.0.0.1:4444",
  "data-ower-1": "127.0.0.1:4445",
  "data-owner-2": "127.0.0.1:4446"
}`
	require.NoError(t, os.WriteFile(hosts, []byte(flat), 0o644))
	f := multihost.Flags{Config: hosts, Player: "server0", Insecure: true}
	_, err := f.LoadConfig(io.Discard, aggregation, needs)
	require.Error(t, err)
	assert.Contains(t, err.Error(), hosts+":7:3")
	assert.Contains(t, err.Error(), `unknown player "data-ower-1"; did you mean "data-owner-1"?`)
	assert.True(t, strings.HasSuffix(err.Error(), " ("+needs+")"), err.Error())
	var ce *players.ConfigError
	assert.ErrorAs(t, err, &ce, "the config's error stays matchable")

	// Without the stray key the same hostmap loads.
	fixed := strings.Replace(flat, "data-ower-1", "data-owner-1", 1)
	require.NoError(t, os.WriteFile(hosts, []byte(fixed), 0o644))
	cfg, err := f.LoadConfig(io.Discard, aggregation, needs)
	require.NoError(t, err)
	assert.ElementsMatch(t, players.Defaults(3), aggregation(cfg))
}

// TestLoadConfigPlayerNotInConfig: the player this process is must be in
// the hostmap, whatever the example needs.
func TestLoadConfigPlayerNotInConfig(t *testing.T) {
	hosts := multihosttest.FlatHostmap(t, []string{"server0", "server1", "model-owner", "data-owner-0"})
	_, err := multihost.Flags{Config: hosts, Player: "data-owner-1", Insecure: true}.LoadConfig(io.Discard, aggregation, needs)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), `--player "data-owner-1" is not in `+hosts), err.Error())

	_, err = multihost.Flags{Config: filepath.Join(t.TempDir(), "none.json"), Player: "server0"}.LoadConfig(io.Discard, aggregation, needs)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestWithDataOwners(t *testing.T) {
	cfg, err := players.ParseConfig([]byte(`{"server0": "127.0.0.1:1", "server1": "127.0.0.1:2",
		"data-owner-0": "127.0.0.1:3", "data-ownr-1": "127.0.0.1:4"}`), "hosts.json")
	require.NoError(t, err)
	fixed := make([]string, 1, 8)
	fixed[0] = "server0"
	want := multihost.WithDataOwners(cfg, fixed, 0)
	assert.Equal(t, []string{"server0", "data-owner-0", "data-owner-1"}, want, "a name of no known role counts as a data owner")
	assert.Equal(t, "", fixed[:2][1], "fixed's spare capacity is not written")
	want[0] = "changed"
	assert.Equal(t, "server0", fixed[0], "fixed is not shared with the result")

	assert.Equal(t, []string{"server0", "data-owner-0", "data-owner-1", "data-owner-2"},
		multihost.WithDataOwners(cfg, []string{"server0"}, 3), "at least atLeast")

	none, err := players.ParseConfig([]byte(`{"server0": "127.0.0.1:1"}`), "hosts.json")
	require.NoError(t, err)
	assert.Equal(t, []string{"server0"}, multihost.WithDataOwners(none, []string{"server0"}, 0))
	assert.Equal(t, []string{"server0", "data-owner-0"}, multihost.WithDataOwners(none, []string{"server0"}, 1))
}
