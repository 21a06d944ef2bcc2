package launch

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// script writes a shell script that acts as a player: it prints its
// arguments, then behaves as the player's name says. A slow player waits
// to be stopped, and a failing one fails once the player "slow" is ready
// to be stopped (its TERM trap set), when $SYNC names a directory.
func script(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "player.sh")
	body := `#!/bin/sh
player=$4
case "$player" in slow*) trap 'kill $! 2>/dev/null; echo "stopped"; exit 0' TERM ;; esac
echo "hello from $player args $*"
case "$player" in
  fail) while [ -n "$SYNC" ] && [ ! -e "$SYNC/slow" ]; do sleep 0.01; done; echo "giving up" >&2; exit 3 ;;
  slow*) [ -n "$SYNC" ] && touch "$SYNC/$player"; sleep 30 & wait ;;
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
	err := Run(context.Background(), Spec{Program: script(t), Config: "c.json", Players: []string{"slow", "fail"}, Output: &out, Grace: 2 * time.Second,
		Env: []string{"SYNC=" + t.TempDir()}})
	var ee *ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, "fail", ee.Player)
	assert.Contains(t, err.Error(), "exit status 3")
	assert.Contains(t, out.String(), "[fail] giving up")
	// The slow player's TERM trap ran: it was stopped, not waited for (left
	// alone it would sleep 30 s and exit without a word).
	assert.Contains(t, out.String(), "[slow] stopped")
}

// TestRunStoppedByCaller cancels the run, as a signal to the launcher
// does: every player is stopped and none is blamed.
func TestRunStoppedByCaller(t *testing.T) {
	out := newEventWriter()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Spec{Program: script(t), Config: "c.json", Players: []string{"slow-a", "slow-b"}, Output: out, Grace: 2 * time.Second})
	}()
	wait, stop := context.WithTimeout(context.Background(), time.Minute) // safety net
	defer stop()
	out.waitFor(t, wait, "[slow-a] hello")
	out.waitFor(t, wait, "[slow-b] hello")
	stopped := errors.New("interrupt signal received")
	cancel(stopped)

	err := <-done
	require.ErrorIs(t, err, stopped)
	var ee *ExitError
	assert.False(t, errors.As(err, &ee), "no player is blamed: %v", err)
	assert.EqualError(t, err, "launch: stopped every player: interrupt signal received")
	assert.Contains(t, out.String(), "[slow-a] stopped")
	assert.Contains(t, out.String(), "[slow-b] stopped")
}

// eventWriter collects output and lets a test wait for a line to appear.
type eventWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newEventWriter() *eventWriter { return &eventWriter{changed: make(chan struct{})} }

func (w *eventWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
	return w.buf.Write(p)
}

func (w *eventWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor returns once the output contains s, or fails the test when ctx
// ends first.
func (w *eventWriter) waitFor(t *testing.T, ctx context.Context, s string) {
	t.Helper()
	for {
		w.mu.Lock()
		found, changed := strings.Contains(w.buf.String(), s), w.changed
		w.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no %q in the output:\n%s", s, w.String())
		}
	}
}

func TestRunMissingProgram(t *testing.T) {
	err := Run(context.Background(), Spec{Program: "/nonexistent/player", Config: "c", Players: []string{"a"}})
	assert.ErrorContains(t, err, `player "a"`)
}
