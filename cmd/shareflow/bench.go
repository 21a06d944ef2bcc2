package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/shareflow/shareflow/internal/aggbench"
)

func init() {
	register(&command{
		name:    "bench",
		summary: "measure the transport of a secure mean across seven processes against a raw gRPC transfer of the same bytes",
		usage:   "[--iterations N] [--warmup N] [--params P] [--word-bytes 4|8] [--owners N] [--chunk-bytes N] [--in-process] [--cpuprofile DIR]",
		about: `
Starts the seven players of TF Encrypted's federated-learning example
(server0, server1, server2, model-owner, data-owner-0..2), each as a process
of this program, on loopback ports with a development CA made for the run,
and times iterations of a secure mean of P parameters two ways, alternately:

  aggregation  grpctransport with mutual TLS, as a session uses it: each
               data owner sends a 32-byte seed to one server and its
               masked share (P x 8 bytes) to the other, each server then
               its share of the sum to the model owner
  raw gRPC     the same bytes, in the same order, between the same
               processes over the same TLS: a plain bidi stream per pair,
               a codec that sends bytes as they lie (no protobuf)

It prints each iteration's time on both, as the model owner measured it,
and their ratio. --in-process runs the players as goroutines of one process
instead. --cpuprofile DIR writes each player's CPU profile to DIR/NAME.pprof,
labelled by path; read them with
  go tool pprof -top -tagfocus path=aggregation DIR/*.pprof

--player and --dir are for the player processes the command starts.`,
		flags: benchFlags,
	})
}

// benchFlags defines the flags of bench.
func benchFlags(fs *flag.FlagSet) runFunc {
	var o aggbench.Options
	fs.IntVar(&o.Iterations, "iterations", 20, "iterations of each path to measure")
	fs.IntVar(&o.Warmup, "warmup", 3, "iterations of each path to run first, not measured (-1: none)")
	fs.IntVar(&o.Params, "params", aggbench.DefaultParams, "parameters averaged: each share is `P` x word-bytes bytes")
	fs.IntVar(&o.WordBytes, "word-bytes", 4, "bytes of a share's element: 4 in Z_2^32 (the example's aggregation), 8 in Z_2^64")
	fs.IntVar(&o.Owners, "owners", 3, "data owners")
	fs.IntVar(&o.ChunkBytes, "chunk-bytes", 1<<20, "largest gRPC message a message is cut into, on both paths")
	inProcess := fs.Bool("in-process", false, "run the players as goroutines of this process")
	profile := fs.String("cpuprofile", "", "write each player's CPU profile to `DIR`/NAME.pprof")
	player := fs.String("player", "", "run player `NAME` of the run in --dir (for the processes bench starts)")
	dir := fs.String("dir", "", "the run's `directory` (with --player)")
	return func(ctx context.Context, _ []string) error {
		stdout, stderr := stdio(ctx)
		if *player != "" {
			if *dir == "" {
				return usagef("--player needs --dir")
			}
			return aggbench.RunChild(ctx, *dir, *player, stdout)
		}
		if *dir != "" {
			return usagef("--dir is for the processes bench starts, with --player")
		}
		if o.Iterations < 1 || o.Params < 1 || o.Owners < 1 || o.ChunkBytes < 1 {
			return usagef("--iterations, --params, --owners and --chunk-bytes must be positive")
		}
		if o.WordBytes != 4 && o.WordBytes != 8 {
			return usagef("--word-bytes %d: want 4 (Z_2^32) or 8 (Z_2^64)", o.WordBytes)
		}
		if o.Warmup == 0 {
			o.Warmup = -1 // the flag's 0 means none
		}
		tmp, err := os.MkdirTemp("", "shareflow-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		how := fmt.Sprintf("%d players as processes", o.Owners+4)
		var res *aggbench.Result
		if *inProcess {
			how = fmt.Sprintf("%d players as goroutines of one process", o.Owners+4)
			if *profile != "" {
				return usagef("--cpuprofile is for players as processes; use go test -bench -cpuprofile for one process")
			}
			fmt.Fprintf(stderr, "bench: %s, %d parameters, %d iterations of each path after %d of warm-up\n", how, o.Params, o.Iterations, max(o.Warmup, 0))
			res, err = aggbench.RunInProcess(ctx, tmp, o)
		} else {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding this program to start the players: %w", err)
			}
			if *profile != "" {
				if *profile, err = filepath.Abs(*profile); err == nil {
					err = os.MkdirAll(*profile, 0o755)
				}
				if err != nil {
					return err
				}
			}
			fmt.Fprintf(stderr, "bench: %s, %d parameters, %d iterations of each path after %d of warm-up\n", how, o.Params, o.Iterations, max(o.Warmup, 0))
			res, err = aggbench.RunProcesses(ctx, tmp, o, *profile, func(name string) *exec.Cmd {
				return exec.Command(exe, "bench", "--dir", tmp, "--player", name)
			}, stderr)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "secure mean of %d parameters, %d data owners, %s\n", res.Options.Params, res.Options.Owners, how)
		if err := res.Report(stdout); err != nil {
			return err
		}
		if *profile != "" {
			fmt.Fprintf(stdout, "CPU profiles in %s: go tool pprof -top -tagfocus path=aggregation %s\n", *profile, filepath.Join(*profile, "*.pprof"))
		}
		return nil
	}
}
