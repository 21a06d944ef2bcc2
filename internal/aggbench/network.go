package aggbench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"

	"github.com/shareflow/shareflow/players"
)

// Files of a run's directory.
const (
	configFile = "hosts.json"
	specFile   = "bench.json"
	certDir    = "certs"
)

// Network is the players of a run on loopback: their config and
// certificates in a directory, and two listening sockets each. It is not
// safe for concurrent use.
type Network struct {
	// Dir holds hosts.json, certs/ and, for RunProcesses, bench.json.
	Dir string
	// Config is the players' config: every player listed with the
	// address of its aggregation-path listener, mutual TLS.
	Config *players.Config
	// Raw maps each player to the address of its raw-path listener.
	Raw map[string]string
	// Listeners holds each player's sockets, until its part takes them.
	Listeners map[string]Listeners
}

// NewNetwork makes the network of the server0, server1, server2, the
// model owner and owners data owners in dir, which must exist: a
// development CA and certificates for 127.0.0.1, and listeners on
// loopback ports the system picks.
func NewNetwork(dir string, owners int) (_ *Network, err error) {
	n := &Network{Dir: dir, Raw: make(map[string]string), Listeners: make(map[string]Listeners)}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	names := players.Defaults(owners)
	addrs := make(map[string]string)
	var specs []players.CertSpec
	for _, name := range names {
		var lns Listeners
		for _, ln := range []*net.Listener{&lns.Aggregation, &lns.Raw} {
			if *ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				return nil, fmt.Errorf("aggbench: listening for %s: %w", name, err)
			}
		}
		n.Listeners[name] = lns
		addrs[name] = lns.Aggregation.Addr().String()
		n.Raw[name] = lns.Raw.Addr().String()
		specs = append(specs, players.CertSpec{Player: name, Hosts: []string{"127.0.0.1"}})
	}
	if _, err := players.GenerateDevPKI(filepath.Join(dir, certDir), specs, players.DevPKIOptions{}); err != nil {
		return nil, fmt.Errorf("aggbench: %w", err)
	}
	cfg, err := json.MarshalIndent(map[string]any{"players": addrs, "cert_dir": certDir, "connect_timeout": "30s"}, "", "  ")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, configFile)
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("aggbench: %w", err)
	}
	if n.Config, err = players.LoadConfig(path); err != nil {
		return nil, fmt.Errorf("aggbench: %w", err)
	}
	return n, nil
}

// Close closes the listeners no part has taken.
func (n *Network) Close() {
	for name, lns := range n.Listeners {
		for _, ln := range []net.Listener{lns.Aggregation, lns.Raw} {
			if ln != nil {
				ln.Close()
			}
		}
		delete(n.Listeners, name)
	}
}

// RunInProcess runs every player of a new network in dir as goroutines
// of this process, and returns the model owner's result. The first
// player to fail stops the others.
func RunInProcess(ctx context.Context, dir string, o Options) (*Result, error) {
	o, err := o.check()
	if err != nil {
		return nil, err
	}
	n, err := NewNetwork(dir, o.Owners)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg   sync.WaitGroup
		res  *Result
		mu   sync.Mutex
		errs []error
	)
	for _, name := range n.Config.Names() {
		lns := n.Listeners[name]
		delete(n.Listeners, name)
		wg.Go(func() {
			r, err := RunPlayer(ctx, n.Config, name, lns, n.Raw, o)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if len(errs) == 0 {
					cancel(err)
				}
				errs = append(errs, err)
			}
			if r != nil {
				res = r
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0] // the first; the others followed from it
	}
	return res, nil
}

// spec is what RunProcesses tells each player process, in bench.json.
type spec struct {
	Options Options           `json:"options"`
	Raw     map[string]string `json:"raw"`
	// Profile, when set, is the directory each player writes its CPU
	// profile to, as NAME.pprof.
	Profile string `json:"profile,omitempty"`
}

// RunProcesses runs every player of a new network in dir as its own
// process, and returns the model owner's result. command returns the
// command that runs player's part: it must call RunChild with dir and
// player. Each player gets its two listeners as file descriptors 3 and 4.
// Lines the players write to their standard error go to stderr, prefixed
// "[NAME] ". With profile set, each player writes its CPU profile there,
// as NAME.pprof, with samples labelled path=aggregation or path=raw. The
// first player to fail stops the others; so does the end of ctx.
func RunProcesses(ctx context.Context, dir string, o Options, profile string, command func(player string) *exec.Cmd, stderr io.Writer) (*Result, error) {
	o, err := o.check()
	if err != nil {
		return nil, err
	}
	n, err := NewNetwork(dir, o.Owners)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	b, err := json.Marshal(spec{Options: o, Raw: n.Raw, Profile: profile})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, specFile), b, 0o600); err != nil {
		return nil, fmt.Errorf("aggbench: %w", err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		first  error
		out    strings.Builder // the model owner's standard output
		logMu  sync.Mutex
		logOut = &lockedWriter{w: stderr, mu: &logMu}
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
			cancel(err)
		}
	}
	for _, name := range n.Config.Names() {
		lns := n.Listeners[name]
		cmd := command(name)
		for _, ln := range []net.Listener{lns.Aggregation, lns.Raw} {
			f, err := ln.(*net.TCPListener).File()
			if err != nil {
				cancel(err)
				wg.Wait()
				return nil, fmt.Errorf("aggbench: %s's listener: %w", name, err)
			}
			defer f.Close()
			cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		}
		if name == players.ModelOwner {
			cmd.Stdout = &out
		}
		pr, pw := io.Pipe()
		cmd.Stderr = pw
		wg.Go(func() { prefix(logOut, name, pr) })
		if err := cmd.Start(); err != nil {
			pw.Close()
			fail(fmt.Errorf("aggbench: starting %s: %w", name, err))
			break
		}
		wg.Go(func() {
			defer pw.Close()
			stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
			defer stop()
			if err := cmd.Wait(); err != nil {
				fail(fmt.Errorf("aggbench: player %s: %w", name, err))
			}
		})
	}
	n.Close() // the players have their copies
	wg.Wait()
	if first != nil {
		return nil, first
	}
	var res Result
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		return nil, fmt.Errorf("aggbench: the model owner's result: %w (it printed %q)", err, out.String())
	}
	return &res, nil
}

// RunChild runs player's part in a process RunProcesses started for the
// run in dir, on the listeners it passed as file descriptors 3 and 4. The
// model owner writes its result to out, as JSON.
func RunChild(ctx context.Context, dir, player string, out io.Writer) (err error) {
	b, err := os.ReadFile(filepath.Join(dir, specFile))
	if err != nil {
		return fmt.Errorf("aggbench: %w", err)
	}
	var s spec
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("aggbench: %s: %w", specFile, err)
	}
	cfg, err := players.LoadConfig(filepath.Join(dir, configFile))
	if err != nil {
		return fmt.Errorf("aggbench: %w", err)
	}
	var lns Listeners
	for i, ln := range []*net.Listener{&lns.Aggregation, &lns.Raw} {
		f := os.NewFile(uintptr(3+i), fmt.Sprintf("listener %d", i))
		if f == nil {
			return fmt.Errorf("aggbench: %s: no file descriptor %d: run by RunProcesses?", player, 3+i)
		}
		*ln, err = net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("aggbench: %s: file descriptor %d: %w", player, 3+i, err)
		}
	}
	if s.Profile != "" {
		f, err := os.Create(filepath.Join(s.Profile, player+".pprof"))
		if err != nil {
			return fmt.Errorf("aggbench: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("aggbench: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}()
	}
	res, err := RunPlayer(ctx, cfg, player, lns, s.Raw, s.Options)
	if err != nil || res == nil {
		return err
	}
	return json.NewEncoder(out).Encode(res)
}

// prefix copies r to w line by line, each line prefixed "[name] ".
func prefix(w io.Writer, name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fmt.Fprintf(w, "[%s] %s\n", name, sc.Text())
	}
	io.Copy(io.Discard, r) // past a line too long for the scanner
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
