package players

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const tfeHostmap = `{
  "model-owner": "127.0.0.1:4440",
  "data-owner-0": "127.0.0.1:4441",
  "data-owner-1": "127.0.0.1:4442",
  "data-owner-2": "127.0.0.1:4443",
  "server0": "127.0.0.1:4444",
  "server1": "127.0.0.1:4445",
  "server2": "127.0.0.1:4446"
}`

func TestParseConfigFlatHostmap(t *testing.T) {
	c, err := ParseConfig([]byte(tfeHostmap), "hosts.json")
	require.NoError(t, err)
	assert.Equal(t, []string{"data-owner-0", "data-owner-1", "data-owner-2", "model-owner", "server0", "server1", "server2"}, c.Names())
	assert.Equal(t, 7, c.Len())
	addr, err := c.Address("server1")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:4445", addr)
	listen, err := c.ListenAddress("server1")
	require.NoError(t, err)
	assert.Equal(t, addr, listen)
	assert.True(t, c.Has("model-owner"))
	assert.False(t, c.Has("mallory"))
	_, err = c.Address("mallory")
	assert.ErrorIs(t, err, ErrUnknownPlayer)
	assert.ErrorContains(t, err, `"mallory"`)
	assert.Equal(t, DefaultConnectTimeout, c.ConnectTimeout())
	assert.Equal(t, DefaultMessageTimeout, c.MessageTimeout())
	assert.Equal(t, DefaultMaxMessageBytes, c.MaxMessageBytes())
	assert.False(t, c.Insecure())
	assert.Empty(t, c.CAFile())
	assert.Equal(t, "hosts.json", c.File())

	// Names returns a copy.
	names := c.Names()
	names[0] = "x"
	assert.Equal(t, "data-owner-0", c.Names()[0])
}

func TestParseConfigExtended(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "conf", "hosts.json")
	data := `{
  "players": {
    "server0": {"address": "10.0.0.1:4440", "listen": "0.0.0.0:4440", "cert": "own/s0.pem", "key": "/abs/s0-key.pem"},
    "server1": "server1.example.com:4440",
    "model-owner": {"address": "[::1]:4440"}
  },
  "cert_dir": "certs",
  "connect_timeout": "5s",
  "message_timeout": "2m",
  "max_message_bytes": 1048576
}`
	c, err := ParseConfig([]byte(data), file)
	require.NoError(t, err)
	assert.Equal(t, []string{"model-owner", "server0", "server1"}, c.Names())
	assert.Equal(t, 5*time.Second, c.ConnectTimeout())
	assert.Equal(t, 2*time.Minute, c.MessageTimeout())
	assert.Equal(t, int64(1<<20), c.MaxMessageBytes())
	assert.Equal(t, filepath.Join(dir, "conf", "certs", "ca.pem"), c.CAFile())

	s0, err := c.Player("server0")
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.1:4440", s0.Address)
	assert.Equal(t, "0.0.0.0:4440", s0.Listen)
	assert.Equal(t, filepath.Join(dir, "conf", "own", "s0.pem"), s0.Cert, "relative to the config file")
	assert.Equal(t, "/abs/s0-key.pem", s0.Key)

	s1, err := c.Player("server1")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "conf", "certs", "server1.pem"), s1.Cert, "from cert_dir")
	assert.Equal(t, filepath.Join(dir, "conf", "certs", "server1-key.pem"), s1.Key)

	specs := c.CertSpecs()
	require.Len(t, specs, 3)
	assert.Equal(t, CertSpec{Player: "model-owner", Hosts: []string{"::1"}}, specs[0])
	assert.Equal(t, CertSpec{Player: "server0", Hosts: []string{"10.0.0.1"}}, specs[1], "unspecified listen host left out")
	assert.Equal(t, CertSpec{Player: "server1", Hosts: []string{"server1.example.com"}}, specs[2])
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name     string
		data     string
		field    string
		line     int
		contains string
	}{
		{"empty", "  \n", "", 0, "empty file"},
		{"not an object", `["a"]`, "", 1, "want a JSON object, got an array"},
		{"malformed", "{\n  \"server0\": \"127.0.0.1:1\",\n  \"server1\" \"x\"\n}", "server1", 3, "malformed JSON"},
		{"truncated", "{\n  \"server0\": \"127.0.0.1:1\",", "", 2, "unexpected end of input"},
		{"trailing data", `{"server0": "127.0.0.1:1"} {}`, "", 1, "data after the top-level object"},
		{"duplicate flat", "{\n  \"server0\": \"127.0.0.1:1\",\n  \"server0\": \"127.0.0.1:2\"\n}", "server0", 3, `duplicate key "server0" (first on line 2)`},
		{"duplicate extended", "{\"players\": {\n \"a\": \"127.0.0.1:1\",\n \"a\": {\"address\": \"127.0.0.1:2\"}}}", "players.a", 3, "duplicate key"},
		{"duplicate setting", "{\"players\": {\"a\": \"127.0.0.1:1\"},\n \"ca\": \"x\",\n \"ca\": \"y\"}", "ca", 3, "duplicate key"},
		{"duplicate player field", "{\"players\": {\"a\": {\"address\": \"127.0.0.1:1\",\n \"address\": \"127.0.0.1:2\"}}}", "players.a.address", 2, "duplicate key"},
		{"no players flat", `{}`, "players", 0, "no players"},
		{"no players extended", `{"players": {}}`, "players", 1, "no players"},
		{"flat non-string", "{\"server0\": \"127.0.0.1:1\",\n \"timeout\": 5}", "timeout", 2, "extended form"},
		{"missing port", `{"server0": "127.0.0.1"}`, "players.server0.address", 1, "want \"host:port\""},
		{"port range", `{"server0": "127.0.0.1:70000"}`, "players.server0.address", 1, "not a number from 1 to 65535"},
		{"port zero", `{"server0": "127.0.0.1:0"}`, "players.server0.address", 1, "not a number from 1 to 65535"},
		{"named port", `{"server0": "127.0.0.1:http"}`, "players.server0.address", 1, "not a number"},
		{"empty host", `{"server0": ":4440"}`, "players.server0.address", 1, "empty host"},
		{"unspecified host", `{"server0": "0.0.0.0:4440"}`, "players.server0.address", 1, "listen"},
		{"bad hostname", `{"server0": "a b:4440"}`, "players.server0.address", 1, "not a valid hostname"},
		{"listen without address", `{"players": {"server0": {"listen": ":1"}, "server1": "127.0.0.1:1"}}`, "players.server0.listen", 1, `"listen" without "address"`},
		{"empty address flat", `{"server0": ""}`, "players.server0.address", 1, "empty address"},
		{"empty address string", `{"players": {"server0": ""}}`, "players.server0.address", 1, "only dials out is an object without"},
		{"empty address object", `{"players": {"server0": {"address": ""}}}`, "players.server0.address", 1, "empty address"},
		{"nobody listens", `{"players": {"data-owner-0": {}}}`, "players", 1, "no player has an address"},
		{"negative max_members", `{"players": {"a": "127.0.0.1:1"}, "max_members": -1}`, "max_members", 1, "negative count"},
		{"huge max_members", `{"players": {"a": "127.0.0.1:1"}, "max_members": 2000000}`, "max_members", 1, "above the limit"},
		{"max_members closed", `{"players": {"a": "127.0.0.1:1"}, "open_membership": false, "max_members": 5}`, "max_members", 1, `"open_membership" is false`},
		{"max_members closed by default", `{"players": {"a": "127.0.0.1:1", "data-owner-0": "127.0.0.1:2"}, "max_members": 5}`, "max_members", 1, "the config lists data owners"},
		{"open_membership string", `{"players": {"a": "127.0.0.1:1"}, "open_membership": "yes"}`, "open_membership", 1, "true or false"},
		{"max_members fraction", `{"players": {"a": "127.0.0.1:1"}, "max_members": 1.5}`, "max_members", 1, "whole number"},
		{"same address", "{\n \"server0\": \"127.0.0.1:1\",\n \"server1\": \"127.0.0.1:1\"\n}", "players.server1.address", 3, `also the address of player "server0"`},
		{"same address normalised", "{\"a\": \"Host.example:1\", \"b\": \"host.example:1\"}", "players.b.address", 1, "also the address"},
		{"bad name", `{"Server0": "127.0.0.1:1"}`, "players.Server0", 1, "lowercase"},
		{"bad name dash", `{"-x": "127.0.0.1:1"}`, "players.-x", 1, "lowercase"},
		{"unknown field", "{\"players\": {\"a\": \"127.0.0.1:1\"},\n \"conect_timeout\": \"1s\"}", "conect_timeout", 2, "unknown field"},
		{"unknown player field", `{"players": {"a": {"address": "127.0.0.1:1", "port": 3}}}`, "players.a.port", 1, "unknown field"},
		{"player wrong type", `{"players": {"a": 3}}`, "players.a", 1, "got a number"},
		{"bad duration", "{\"players\": {\"a\": \"127.0.0.1:1\"},\n \"connect_timeout\": \"soon\"}", "connect_timeout", 2, `bad duration "soon"`},
		{"duration number", `{"players": {"a": "127.0.0.1:1"}, "message_timeout": 30}`, "message_timeout", 1, "duration string"},
		{"negative duration", "{\"players\": {\"a\": \"127.0.0.1:1\"},\n \"message_timeout\": \"-1s\"}", "message_timeout", 2, "negative duration"},
		{"negative size", `{"players": {"a": "127.0.0.1:1"}, "max_message_bytes": -1}`, "max_message_bytes", 1, "negative size"},
		{"fractional size", `{"players": {"a": "127.0.0.1:1"}, "max_message_bytes": 1.5}`, "max_message_bytes", 1, "whole number"},
		{"huge size", `{"players": {"a": "127.0.0.1:1"}, "max_message_bytes": 99999999999999}`, "max_message_bytes", 1, "above the limit"},
		{"size string", `{"players": {"a": "127.0.0.1:1"}, "max_message_bytes": "1"}`, "max_message_bytes", 1, "whole number"},
		{"insecure string", `{"players": {"a": "127.0.0.1:1"}, "insecure": "yes"}`, "insecure", 1, "true or false"},
		{"insecure with ca", `{"players": {"a": "127.0.0.1:1"}, "insecure": true, "ca": "ca.pem"}`, "ca", 1, "choose one"},
		{"cert without key", `{"players": {"a": {"address": "127.0.0.1:1", "cert": "a.pem"}}}`, "players.a.key", 1, "go together"},
		{"clashing cert files", `{"players": {"ca": "127.0.0.1:1"}, "cert_dir": "certs"}`, "cert_dir", 1, `player "ca" and the CA`},
		{"empty ca", `{"players": {"a": "127.0.0.1:1"}, "ca": ""}`, "ca", 1, "empty path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.data), "hosts.json")
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			var ce *ConfigError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, "hosts.json", ce.File)
			assert.Equal(t, tt.field, ce.Field)
			assert.Equal(t, tt.line, ce.Line, "line of %v", err)
			assert.Contains(t, err.Error(), tt.contains)
			assert.Contains(t, err.Error(), "hosts.json")
		})
	}
}

func TestConfigErrorFormat(t *testing.T) {
	_, err := ParseConfig([]byte("{\n  \"server0\": \"127.0.0.1:99999\"\n}"), "conf/hosts.json")
	require.Error(t, err)
	assert.Equal(t, `players: conf/hosts.json:2:14: players.server0.address: address "127.0.0.1:99999": port "99999" is not a number from 1 to 65535`, err.Error())
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hosts.json")
	require.NoError(t, os.WriteFile(file, []byte(tfeHostmap), 0o644))
	c, err := LoadConfig(file)
	require.NoError(t, err)
	assert.Equal(t, 7, c.Len())

	_, err = LoadConfig(filepath.Join(dir, "missing.json"))
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "missing.json")
}

func TestWithCertDirAndInsecure(t *testing.T) {
	c, err := ParseConfig([]byte(tfeHostmap), "hosts.json")
	require.NoError(t, err)
	dir := t.TempDir()
	cc, err := c.WithCertDir(dir)
	require.NoError(t, err)
	assert.Empty(t, c.CAFile(), "original unchanged")
	assert.Equal(t, filepath.Join(dir, "ca.pem"), cc.CAFile())
	p, err := cc.Player("server2")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "server2.pem"), p.Cert)
	assert.Equal(t, filepath.Join(dir, "server2-key.pem"), p.Key)

	_, err = c.WithCertDir("")
	assert.ErrorIs(t, err, ErrInvalidConfig)

	ic := c.WithInsecure(true)
	assert.True(t, ic.Insecure())
	assert.False(t, c.Insecure())
	_, err = ic.WithCertDir(dir)
	assert.ErrorContains(t, err, "insecure")
}

func TestNewConfig(t *testing.T) {
	c, err := NewConfig(Spec{
		Players:        map[string]PlayerSpec{"a": {Address: "127.0.0.1:1"}, "b": {Address: "127.0.0.1:2"}},
		ConnectTimeout: Duration(time.Second),
		CertDir:        "certs",
	}, "/srv")
	require.NoError(t, err)
	assert.Equal(t, time.Second, c.ConnectTimeout())
	assert.Equal(t, "/srv/certs/ca.pem", c.CAFile())

	_, err = NewConfig(Spec{Players: map[string]PlayerSpec{"a": {Address: "x"}}}, "")
	var ce *ConfigError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "players.a.address", ce.Field)
	assert.Contains(t, err.Error(), "players: config: players.a.address")
}

func TestFingerprint(t *testing.T) {
	a, err := ParseConfig([]byte(`{"x": "127.0.0.1:1", "y": "127.0.0.1:2"}`), "a.json")
	require.NoError(t, err)
	b, err := ParseConfig([]byte(`{"y": "10.0.0.1:2", "x": "10.0.0.2:1"}`), "b.json")
	require.NoError(t, err)
	c, err := ParseConfig([]byte(`{"x": "127.0.0.1:1", "z": "127.0.0.1:2"}`), "c.json")
	require.NoError(t, err)
	assert.Equal(t, a.Fingerprint(), b.Fingerprint(), "addresses and order do not matter")
	assert.NotEqual(t, a.Fingerprint(), c.Fingerprint())
	// Which players only dial out is part of it: a host that thinks a
	// player listens would wait for it in vain.
	d, err := ParseConfig([]byte(`{"players": {"x": "127.0.0.1:1", "y": {}}}`), "d.json")
	require.NoError(t, err)
	assert.NotEqual(t, a.Fingerprint(), d.Fingerprint())
	// Unlisted data owners and the membership settings are not.
	e, err := ParseConfig([]byte(`{"players": {"x": "127.0.0.1:1", "y": "127.0.0.1:2"}, "open_membership": true, "max_members": 3}`), "e.json")
	require.NoError(t, err)
	assert.Equal(t, a.Fingerprint(), e.Fingerprint())
}

// TestOpenMembership: a config that lists no data owner admits any data
// owner; one that lists data owners (TF Encrypted's hostmap) stays closed
// unless it says otherwise; nothing but data owners joins unlisted.
func TestOpenMembership(t *testing.T) {
	parse := func(data string) *Config {
		t.Helper()
		c, err := ParseConfig([]byte(data), "hosts.json")
		require.NoError(t, err)
		return c
	}
	open := parse(`{"server0": "10.0.0.1:4440", "server1": "10.0.0.2:4440", "server2": "10.0.0.3:4440", "model-owner": "10.0.0.4:4440"}`)
	assert.True(t, open.OpenMembership(), "no data owner listed")
	assert.Equal(t, DefaultMaxMembers, open.MaxMembers())
	for _, name := range []string{"data-owner-0", "data-owner-41", "server0", "model-owner"} {
		assert.NoError(t, open.Admits(name), name)
	}
	for _, name := range []string{"server9", "model-owner-2", "data-owner-x", "data-owner-", "mallory", "Data-owner-1", ""} {
		err := open.Admits(name)
		assert.ErrorIs(t, err, ErrUnknownPlayer, name)
	}
	assert.ErrorContains(t, open.Admits("server9"), "only data owners (data-owner-N) join without being listed")
	assert.False(t, open.Listens("data-owner-0"))
	assert.True(t, open.Listens("server0"))

	tfe := parse(`{"server0": "10.0.0.1:4440", "server1": "10.0.0.2:4440", "server2": "10.0.0.3:4440", "model-owner": "10.0.0.4:4440", "data-owner-0": "10.0.0.5:4440"}`)
	assert.False(t, tfe.OpenMembership(), "TF Encrypted's hostmap lists every data owner")
	assert.NoError(t, tfe.Admits("data-owner-0"))
	assert.ErrorContains(t, tfe.Admits("data-owner-1"), "open_membership is off")
	assert.True(t, tfe.WithOpenMembership(true).OpenMembership())
	assert.NoError(t, tfe.WithOpenMembership(true).Admits("data-owner-1"))
	assert.False(t, tfe.OpenMembership(), "With returns a copy")

	both := parse(`{"players": {"server0": "10.0.0.1:4440", "data-owner-0": "10.0.0.5:4440"}, "open_membership": true, "max_members": 12}`)
	assert.True(t, both.OpenMembership())
	assert.Equal(t, 12, both.MaxMembers())
	assert.NoError(t, both.Admits("data-owner-7"))
	closed := parse(`{"players": {"server0": "10.0.0.1:4440"}, "open_membership": false}`)
	assert.ErrorContains(t, closed.Admits("data-owner-7"), "open_membership is off")
}

// TestDialOnlyPlayers: a player listed without an address only dials out.
func TestDialOnlyPlayers(t *testing.T) {
	c, err := ParseConfig([]byte(`{"players": {
		"server0": "10.0.0.1:4440",
		"data-owner-0": {},
		"data-owner-1": {"cert": "do1.pem", "key": "do1-key.pem"}}}`), "/etc/sf/hosts.json")
	require.NoError(t, err)
	assert.Equal(t, []string{"data-owner-0", "data-owner-1", "server0"}, c.Names())
	assert.False(t, c.Listens("data-owner-0"))
	assert.False(t, c.Listens("data-owner-1"))
	assert.True(t, c.Listens("server0"))
	assert.False(t, c.OpenMembership(), "data owners are listed")
	p, err := c.Player("data-owner-1")
	require.NoError(t, err)
	assert.Equal(t, "", p.Address)
	assert.Equal(t, "", p.Listen)
	assert.Equal(t, "/etc/sf/do1.pem", p.Cert)
	specs := c.CertSpecs()
	require.Len(t, specs, 3)
	assert.Equal(t, CertSpec{Player: "data-owner-0"}, specs[0], "no hosts for a player that does not listen")

	// NewConfig takes an empty address the same way.
	nc, err := NewConfig(Spec{Players: map[string]PlayerSpec{"server0": {Address: "10.0.0.1:4440"}, "data-owner-0": {}}}, "")
	require.NoError(t, err)
	assert.False(t, nc.Listens("data-owner-0"))
	assert.Equal(t, c.Names()[0], nc.Names()[0])
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"server0", "data-owner-0", "model_owner", "a", "0"} {
		assert.NoError(t, CheckName(ok), ok)
	}
	long := make([]byte, MaxNameLength+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, bad := range []string{"", "Server0", "-a", "a-", "_a", "a.b", "a b", "ü", string(long)} {
		assert.Error(t, CheckName(bad), bad)
	}
}

func TestDurationText(t *testing.T) {
	var d Duration
	require.NoError(t, d.UnmarshalText([]byte("1m30s")))
	assert.Equal(t, Duration(90*time.Second), d)
	b, err := d.MarshalText()
	require.NoError(t, err)
	assert.Equal(t, "1m30s", string(b))
	assert.Error(t, d.UnmarshalText([]byte("x")))
}

// FuzzParseConfig checks that no input makes the parser panic, and that
// every accepted config is self-consistent.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(tfeHostmap))
	f.Add([]byte(`{"players": {"a": {"address": "127.0.0.1:1", "cert": "a.pem", "key": "k.pem"}}, "cert_dir": "c", "max_message_bytes": 5, "insecure": false, "connect_timeout": "1s"}`))
	f.Add([]byte(`{"a": "127.0.0.1:1", "a": "127.0.0.1:2"}`))
	f.Add([]byte(`{"players": "x"}`))
	f.Add([]byte(`{"a": "[::1]:1"} trailing`))
	f.Add([]byte(`{"players": {"a": {"adress": "127.0.0.1:1", "listen": null}}, "CA": "", "message_timeout": [[{}]]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, "fuzz.json")
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *ConfigError", err)
			}
			return
		}
		if c.Len() == 0 {
			t.Fatal("accepted a config without players")
		}
		for _, n := range c.Names() {
			if err := CheckName(n); err != nil {
				t.Fatalf("accepted bad name: %v", err)
			}
			if _, err := c.Address(n); err != nil {
				t.Fatal(err)
			}
		}
		if c.MaxMessageBytes() <= 0 || c.ConnectTimeout() <= 0 || c.MessageTimeout() <= 0 {
			t.Fatal("non-positive setting accepted")
		}
	})
}

// TestIssue8MisspelledPlayer: a misspelled player name in a hostmap used
// to surface as "data-owner-1 is missing", with no position and no
// mention of the stray key. Require names the stray key, where it is and
// what it probably meant, in both forms of the config.
func TestIssue8MisspelledPlayer(t *testing.T) {
	flat := "{\n  \"data-owner-0\": \"127.0.0.1:1\",\n  \"data-ower-1\": \"127.0.0.1:2\",\n  \"server0\": \"127.0.0.1:3\"\n}"
	extended := "{\"players\": {\n  \"data-owner-0\": \"127.0.0.1:1\",\n  \"server0\": {\"address\": \"127.0.0.1:3\"},\n    \"data-ower-1\": {\"address\": \"127.0.0.1:2\"}\n}}"
	for _, tt := range []struct {
		name, data string
		line, col  int
	}{
		{"flat", flat, 3, 3},
		{"extended", extended, 4, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.data), "hosts.json")
			require.NoError(t, err)
			require.NoError(t, c.Require("server0", "data-owner-0"))

			err = c.Require("server0", "data-owner-0", "data-owner-1")
			var ce *ConfigError
			require.ErrorAs(t, err, &ce)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.Equal(t, "players.data-ower-1", ce.Field)
			assert.Equal(t, [2]int{tt.line, tt.col}, [2]int{ce.Line, ce.Column})
			assert.Equal(t, fmt.Sprintf(`players: hosts.json:%d:%d: players.data-ower-1: unknown player "data-ower-1"; did you mean "data-owner-1"?`, tt.line, tt.col), err.Error())

			// Nothing close: name the missing player and what there is.
			err = c.Require("model-owner")
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, "players", ce.Field)
			assert.Contains(t, err.Error(), `no player "model-owner"; the config has data-ower-1, data-owner-0, server0`)

			// A key that is itself required is not taken for a misspelling.
			err = c.Require("data-owner-0", "data-ower-1", "data-owner-1")
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, "players", ce.Field)
			assert.Contains(t, err.Error(), `no player "data-owner-1"`)

			// Asking for a player directly suggests the nearest name.
			_, err = c.Player("sever0")
			assert.ErrorIs(t, err, ErrUnknownPlayer)
			assert.ErrorContains(t, err, `did you mean "server0"?`)
		})
	}

	// A Config built in code has no file positions.
	c, err := NewConfig(Spec{Players: map[string]PlayerSpec{"data-ower-1": {Address: "127.0.0.1:1"}}}, "")
	require.NoError(t, err)
	assert.EqualError(t, c.Require("data-owner-1"), `players: config: players.data-ower-1: unknown player "data-ower-1"; did you mean "data-owner-1"?`)
}

// Unknown fields are reported at their key, with the field they probably
// meant, or the list of known fields when none is close.
func TestParseConfigUnknownFields(t *testing.T) {
	const players = `{"players": {"a": "127.0.0.1:1"},` + "\n"
	tests := []struct{ name, data, want string }{
		{"setting", players + `  "max_mesage_bytes": 5}`,
			`players: hosts.json:2:3: max_mesage_bytes: unknown field "max_mesage_bytes"; did you mean "max_message_bytes"?`},
		{"setting case", players + ` "CA": "ca.pem"}`,
			`players: hosts.json:2:2: CA: unknown field "CA"; did you mean "ca"?`},
		{"player field", "{\"players\": {\"a\": {\n  \"adress\": \"127.0.0.1:1\"}}}",
			`players: hosts.json:2:3: players.a.adress: unknown field "adress"; did you mean "address"?`},
		{"nothing close", players + ` "tls": true}`,
			`players: hosts.json:2:2: tls: unknown field "tls"; known fields are players, ca, cert_dir, connect_timeout, message_timeout, max_message_bytes, insecure, open_membership, max_members, min_owners`},
		{"player field nothing close", `{"players": {"a": {"address": "127.0.0.1:1", "port": 3}}}`,
			`players: hosts.json:1:46: players.a.port: unknown field "port"; known fields are address, listen, cert, key`},
		{"flat with a misspelled players", `{"player": {"a": "127.0.0.1:1"}}`,
			`players: hosts.json:1:12: player: want a "host:port" string, got an object (settings need the extended form {"players": {...}, ...}); did you mean "players"?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.data), "hosts.json")
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.EqualError(t, err, tt.want)
		})
	}
}

// More malformed configs, each reported at the right field and position.
func TestParseConfigMoreErrors(t *testing.T) {
	const players = `{"players": {"a": "127.0.0.1:1"}, `
	deep := `{"a": ` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`
	tests := []struct {
		name, data string
		field      string
		line, col  int
		contains   string
	}{
		{"null setting", players + `"ca": null}`, "ca", 1, 41, "want a string, got null"},
		{"null player", `{"players": {"a": null}}`, "players.a", 1, 19, `want a "host:port" string or an object, got null`},
		{"empty cert path", `{"players": {"a": {"address": "127.0.0.1:1", "cert": "", "key": "k.pem"}}}`, "players.a.cert", 1, 54, "empty path"},
		{"size overflow", players + `"max_message_bytes": 99999999999999999999}`, "max_message_bytes", 1, 56, "want a whole number, got 99999999999999999999"},
		{"size exponent", players + `"max_message_bytes": 1e3}`, "max_message_bytes", 1, 56, "want a whole number, got 1e3"},
		{"escaped duplicate", "{\"a\": \"127.0.0.1:1\",\n \"\\u0061\": \"127.0.0.1:2\"}", "a", 2, 2, `duplicate key "a" (first on line 1)`},
		{"bad escape", "{\"a\": \"127.0.0.1:1\",\n \"b\": \"1\\x\"}", "b", 2, 7, "malformed JSON"},
		{"bad literal", "{\"a\": \"127.0.0.1:1\",\n \"b\": tru}", "b", 2, 7, "malformed JSON"},
		{"trailing garbage", `{"a": "127.0.0.1:1"} x`, "", 1, 22, "data after the top-level object"},
		{"top-level string", `"127.0.0.1:1"`, "", 1, 1, "want a JSON object, got a string"},
		{"deep nesting", deep, "a", 1, 22, "nested deeper than 16 levels"},
		{"truncated in player", "{\"players\": {\"a\": {\"address\": \"127.0.0.1:1\"", "players.a", 1, 44, "unexpected end of input"},
		{"array in player", `{"players": {"a": {"address": ["127.0.0.1:1"]}}}`, "players.a.address", 1, 31, "want a string, got an array"},
		{"privacy floor of one", players + `"min_owners": 1}`, "min_owners", 1, 49, "want at least 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.data), "hosts.json")
			var ce *ConfigError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tt.field, ce.Field)
			assert.Equal(t, [2]int{tt.line, tt.col}, [2]int{ce.Line, ce.Column}, "position of %v", err)
			assert.Contains(t, err.Error(), tt.contains)
		})
	}
}

// Every field of Spec and PlayerSpec, written by encoding/json, reads
// back: the parser knows fields only by their JSON tags.
func TestParseConfigEveryField(t *testing.T) {
	spec := Spec{
		Players: map[string]PlayerSpec{
			"a": {Address: "10.0.0.1:1", Listen: ":1", Cert: "a.pem", Key: "/k/a-key.pem"},
			"b": {Address: "10.0.0.2:2"},
		},
		CA:              "/ca/ca.pem",
		CertDir:         "certs",
		ConnectTimeout:  Duration(3 * time.Second),
		MessageTimeout:  Duration(4 * time.Minute),
		MaxMessageBytes: 12345,
		OpenMembership:  new(true),
		MaxMembers:      7,
		MinOwners:       3,
	}
	data, err := json.Marshal(spec)
	require.NoError(t, err)
	c, err := ParseConfig(data, "/etc/shareflow/hosts.json")
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, c.Names())
	assert.Equal(t, "/ca/ca.pem", c.CAFile())
	assert.Equal(t, 3*time.Second, c.ConnectTimeout())
	assert.Equal(t, 4*time.Minute, c.MessageTimeout())
	assert.Equal(t, int64(12345), c.MaxMessageBytes())
	assert.True(t, c.OpenMembership())
	assert.Equal(t, 7, c.MaxMembers())
	assert.Equal(t, 3, c.MinOwners())
	a, err := c.Player("a")
	require.NoError(t, err)
	assert.Equal(t, Player{Name: "a", Address: "10.0.0.1:1", Listen: ":1", Cert: "/etc/shareflow/a.pem", Key: "/k/a-key.pem",
		certField: "players.a.cert", keyField: "players.a.key"}, a)
	b, err := c.Player("b")
	require.NoError(t, err)
	assert.Equal(t, "/etc/shareflow/certs/b.pem", b.Cert)

	insecure, err := json.Marshal(Spec{Players: spec.Players, Insecure: true})
	require.NoError(t, err)
	_, err = ParseConfig(insecure, "hosts.json")
	assert.ErrorContains(t, err, "choose one", "insecure read as true")
}

func TestNearest(t *testing.T) {
	known := []string{"server0", "server1", "data-owner-1", "ca", "cert", "max_message_bytes"}
	for s, want := range map[string]string{
		"data-ower-1":             "data-owner-1",
		"Data-Owner-1":            "data-owner-1",
		"sever0":                  "server0",
		"server1":                 "server1",
		"CA":                      "ca",
		"ce":                      "ca",
		"port":                    "",
		"max_mesage_bytes":        "max_message_bytes",
		"":                        "",
		strings.Repeat("x", 1000): "",
	} {
		assert.Equal(t, want, nearest(s, known), s)
	}
	assert.Equal(t, 3, editDistance("kitten", "sitting"))
	assert.Equal(t, 0, editDistance("", ""))
	assert.Equal(t, 4, editDistance("", "abcd"))
}
