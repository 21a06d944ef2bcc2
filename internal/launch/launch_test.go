package launch

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// script writes a shell script that acts as a player: it prints its
// arguments, then behaves as the player's name says.
func script(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "player.sh")
	body := `#!/bin/sh
player=$4
echo "hello from $player args $*"
case "$player" in
  fail) sleep 0.2; echo "giving up" >&2; exit 3 ;;
  slow) trap 'echo "stopped"; exit 0' TERM; sleep 30 & wait ;;
  *) exit 0 ;;
esac
`
	require.NoError(t, os.WriteFile(path, []byte(body), 0o755))
	return path
}

func TestRunAllSucceed(t *testing.T) {
	var out bytes.Buffer
	err := Run(context.Background(), Spec{Program: script(t), Config: "hosts.json", Players: []string{"a", "b"}, Output: &out})
	require.NoError(t, err)
	assert.Contains(t, out.String(), "[a] hello from a args --config hosts.json --player a")
	assert.Contains(t, out.String(), "[b] hello from b")
}

func TestRunStopsOthersWhenOneFails(t *testing.T) {
	var out bytes.Buffer
	start := time.Now()
	err := Run(context.Background(), Spec{Program: script(t), Config: "c.json", Players: []string{"slow", "fail"}, Output: &out, Grace: 2 * time.Second})
	var ee *ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, "fail", ee.Player)
	assert.Contains(t, err.Error(), "exit status 3")
	assert.Less(t, time.Since(start), 10*time.Second, "the slow player was stopped, not waited for")
	assert.Contains(t, out.String(), "[fail] giving up")
	assert.True(t, strings.Contains(out.String(), "[slow] stopped"), out.String())
}

func TestRunMissingProgram(t *testing.T) {
	err := Run(context.Background(), Spec{Program: "/nonexistent/player", Config: "c", Players: []string{"a"}})
	assert.ErrorContains(t, err, `player "a"`)
}
