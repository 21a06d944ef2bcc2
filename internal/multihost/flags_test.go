package multihost_test

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/internal/multihost"
	"github.com/shareflow/shareflow/players"
)

func parse(t *testing.T, args ...string) (multihost.Flags, *flag.FlagSet) {
	t.Helper()
	var f multihost.Flags
	fs := flag.NewFlagSet("example", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs, "example", "batch")
	require.NoError(t, fs.Parse(args))
	return f, fs
}

func TestFlagsRegister(t *testing.T) {
	f, fs := parse(t)
	assert.Equal(t, multihost.Flags{SessionID: "example"}, f, "defaults: a run in one process")
	assert.Contains(t, fs.Lookup("timeout").Usage, "deadline of one batch;")

	f, _ = parse(t, "--config", "h.json", "--player", "server0", "--session-id", "s",
		"--certs", "c", "--insecure", "--timeout", "3s")
	assert.Equal(t, multihost.Flags{Config: "h.json", Player: "server0", SessionID: "s",
		Certs: "c", Insecure: true, Timeout: 3 * time.Second}, f)
}

func TestFlagsCheck(t *testing.T) {
	for _, tc := range []struct {
		f   multihost.Flags
		err string
	}{
		{multihost.Flags{}, ""},
		{multihost.Flags{Config: "h.json", Player: "server0"}, ""},
		{multihost.Flags{Config: "h.json"}, "--config needs --player NAME: the player this process is"},
		{multihost.Flags{Player: "server0"}, "--player needs --config FILE"},
		{multihost.Flags{Config: "h.json", Player: "server0", Timeout: -time.Second}, "--timeout -1s: want a positive duration"},
	} {
		err := tc.f.Check()
		if tc.err == "" {
			assert.NoError(t, err, "%+v", tc.f)
		} else {
			assert.EqualError(t, err, tc.err, "%+v", tc.f)
		}
	}
}

func TestFlagsStepTimeout(t *testing.T) {
	cfg, err := players.ParseConfig([]byte(`{"players": {"a": "127.0.0.1:1"}, "message_timeout": "7s"}`), "hosts.json")
	require.NoError(t, err)
	assert.Equal(t, 7*time.Second, multihost.Flags{}.StepTimeout(cfg), "the config's message timeout")
	assert.Equal(t, 2*time.Second, multihost.Flags{Timeout: 2 * time.Second}.StepTimeout(cfg), "--timeout")
}
