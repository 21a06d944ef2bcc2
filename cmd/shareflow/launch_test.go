package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// playerScript writes a shell script that stands in for a player program:
// it says who it is, then exits: with status 3 if its name is "fail"
// (once the player "slow" is ready to be stopped, when $SYNC names a
// directory), 0 otherwise, or with a name starting "slow" when it is
// stopped.
func playerScript(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "player.sh")
	body := `#!/bin/sh
player=$4
case "$player" in slow*) trap 'kill $! 2>/dev/null; echo "stopped"; exit 1' TERM ;; esac
echo "player $player ready"
case "$player" in
  slow*) [ -n "$SYNC" ] && touch "$SYNC/$player"; sleep 60 & wait ;;
  fail) while [ -n "$SYNC" ] && [ ! -e "$SYNC/slow" ]; do sleep 0.01; done; exit 3 ;;
  *) exit 0 ;;
esac
`
	require.NoError(t, os.WriteFile(path, []byte(body), 0o755))
	return path
}

const threePlayers = `{"a": "127.0.0.1:1", "b": "127.0.0.1:2", "c": "127.0.0.1:3"}`

func TestLaunchAllPlayers(t *testing.T) {
	file := writeConfig(t, threePlayers)
	code, out, errOut := runArgs("launch", "--config", file, "--", playerScript(t))
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, errOut, "starting 3 players: a, b, c")
	for _, p := range []string{"a", "b", "c"} {
		assert.Contains(t, out, "["+p+"] player "+p+" ready")
	}
}

func TestLaunchNamesTheFailedPlayer(t *testing.T) {
	file := writeConfig(t, `{"fail": "127.0.0.1:1", "slow": "127.0.0.1:2"}`)
	t.Setenv("SYNC", t.TempDir()) // the players inherit it
	code, out, errOut := runArgs("launch", "--config", file, "--", playerScript(t))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "shareflow launch: player \"fail\": exit status 3\n")
	assert.Contains(t, out, "[slow] stopped")
}

func TestLaunchSomePlayers(t *testing.T) {
	file := writeConfig(t, threePlayers)
	code, out, errOut := runArgs("launch", "--config", file, "--players", "c, a", "--", playerScript(t))
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, errOut, "starting 2 of the 3 players: c, a (the others must be started elsewhere)")
	assert.Contains(t, out, "[a] player a ready")
	assert.Contains(t, out, "[c] player c ready")
	assert.NotContains(t, out, "[b]")

	for _, tc := range []struct{ list, want string }{
		{"a,zz", `--players: "zz" is not a player of ` + file + " (players: a, b, c)"},
		{"a,b,a", `--players: "a" is listed twice`},
		{"a,,b", `--players "a,,b": empty name`},
	} {
		code, out, errOut := runArgs("launch", "--config", file, "--players", tc.list, "--", playerScript(t))
		assert.Equal(t, 2, code, tc.list)
		assert.Contains(t, errOut, tc.want)
		assert.Empty(t, out, "nothing started for %q", tc.list)
	}
}

func TestLaunchBadUse(t *testing.T) {
	file := writeConfig(t, threePlayers)
	code, _, errOut := runArgs("launch", "--config", file)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "no program to launch")
	assert.Contains(t, errOut, "shareflow help launch")

	code, _, errOut = runArgs("launch", "--", playerScript(t))
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--config is required")

	code, _, errOut = runArgs("launch", "--config", file, "--grace", "0s", "--", playerScript(t))
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--grace must be positive")

	code, _, errOut = runArgs("launch", "--config", filepath.Join(t.TempDir(), "none.json"), "--", playerScript(t))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "none.json")
}

// TestLaunchStoppedBySignal sends SIGTERM to a real shareflow launch: it
// stops the players and says it was the signal, blaming no player.
func TestLaunchStoppedBySignal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // safety net
	defer cancel()
	bin := filepath.Join(t.TempDir(), "shareflow")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	file := writeConfig(t, `{"slow-a": "127.0.0.1:1", "slow-b": "127.0.0.1:2"}`)
	cmd := exec.CommandContext(ctx, bin, "launch", "--config", file, "--", playerScript(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	// Wait until both players run, then signal the launcher.
	lines := bufio.NewScanner(stdout)
	ready := map[string]bool{}
	var seen []string
	for len(ready) < 2 && lines.Scan() {
		seen = append(seen, lines.Text())
		for _, p := range []string{"slow-a", "slow-b"} {
			if lines.Text() == "["+p+"] player "+p+" ready" {
				ready[p] = true
			}
		}
	}
	require.Len(t, ready, 2, "players never started: %q", seen)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	for lines.Scan() {
		seen = append(seen, lines.Text())
	}
	err = cmd.Wait()

	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, stderr.String())
	assert.Equal(t, 1, ee.ExitCode())
	assert.Contains(t, stderr.String(), "shareflow launch: stopped every player: terminated signal received\n")
	assert.NotContains(t, stderr.String(), `player "`, "no player is blamed")
	assert.Contains(t, strings.Join(seen, "\n"), "[slow-a] stopped")
	assert.Contains(t, strings.Join(seen, "\n"), "[slow-b] stopped")
}
