// Package launch starts every player of a configuration as its own process
// on this machine, as TF Encrypted's run-remote.sh did: each runs the same
// program with --config and --player, its output prefixed with its name.
// When the first player fails, the others are stopped; the run ends when
// all have exited. When the caller stops the run (a signal, say), no
// player is blamed for it.
package launch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Spec says what to launch.
type Spec struct {
	// Program and Args are the command every player runs; each gets
	// "--config", Config, "--player", its name appended.
	Program string
	Args    []string
	// Config is the path of the players' configuration file.
	Config string
	// Players are the names to start, one process each.
	Players []string
	// Output receives every line of every player, prefixed "[name] ".
	Output io.Writer
	// Grace is how long a stopped player has between SIGTERM and SIGKILL;
	// zero means 5 seconds.
	Grace time.Duration
	// Env is added to each process's environment.
	Env []string
}

// ExitError reports the player whose failure ended the run.
type ExitError struct {
	Player string
	Err    error
}

func (e *ExitError) Error() string { return fmt.Sprintf("launch: player %q: %v", e.Player, e.Err) }

func (e *ExitError) Unwrap() error { return e.Err }

// Run starts every player and waits for all to exit. It returns nil when
// all exit successfully, or an *ExitError naming the first that failed,
// after stopping the rest. Cancelling ctx stops every player; Run then
// returns an error wrapping ctx's cause (not an *ExitError: players that
// exit because they were stopped did not fail), unless a player had
// failed before.
func Run(ctx context.Context, spec Spec) error {
	if len(spec.Players) == 0 {
		return errors.New("launch: no players to start")
	}
	if spec.Grace == 0 {
		spec.Grace = 5 * time.Second
	}
	out := &lockedWriter{w: spec.Output}
	if spec.Output == nil {
		out.w = os.Stdout
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	fail := func(err error) {
		if parent.Err() != nil {
			return // stopped by the caller: the players' errors are its doing
		}
		once.Do(func() {
			first = err
			cancel()
		})
	}
	for _, p := range spec.Players {
		args := append(append([]string(nil), spec.Args...), "--config", spec.Config, "--player", p)
		cmd := exec.CommandContext(ctx, spec.Program, args...)
		cmd.Env = append(os.Environ(), spec.Env...)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = spec.Grace
		pr, pw := io.Pipe()
		cmd.Stdout, cmd.Stderr = pw, pw
		if err := cmd.Start(); err != nil {
			pw.Close()
			fail(&ExitError{Player: p, Err: err})
			break
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			prefix(out, p, pr)
		}()
		go func() {
			defer wg.Done()
			err := cmd.Wait()
			pw.Close()
			if err != nil {
				// After the first failure the others are stopped on
				// purpose; once keeps only the first.
				fail(&ExitError{Player: p, Err: err})
			}
		}()
	}
	wg.Wait()
	if first == nil && parent.Err() != nil { // all goroutines are done: no race on first
		return fmt.Errorf("launch: stopped every player: %w", context.Cause(parent))
	}
	return first
}

// prefix copies r to w line by line, each line prefixed with the player.
func prefix(w io.Writer, player string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fmt.Fprintf(w, "[%s] %s\n", player, sc.Text())
	}
	io.Copy(io.Discard, r) // drain a line too long to scan
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Build compiles the Go package in dir into a binary in tmp and returns its
// path, so that every player runs one build instead of compiling it again.
func Build(ctx context.Context, dir, tmp string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("launch: %w", err)
	}
	bin := filepath.Join(tmp, filepath.Base(abs))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("launch: building %s: %v\n%s", dir, err, out)
	}
	return bin, nil
}
