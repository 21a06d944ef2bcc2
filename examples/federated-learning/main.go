// Command federated-learning is TF Encrypted's "secure aggregation for
// federated learning" example in Go: a model owner trains a model by
// repeatedly asking data owners for gradients on their local data; the
// gradients enter a secure computation as private inputs, two compute
// servers average them without seeing them (Pond), and only the mean
// reaches the model owner.
//
//	go run ./examples/federated-learning                       # embedded data, every player in this process
//	go run ./examples/federated-learning --compare             # also train in the clear and compare the cost
//	go run ./examples/federated-learning --data DIR            # a full (Fashion-)MNIST set in IDX form
//	go run ./examples/federated-learning download --dir DIR    # fetch MNIST, as TF Encrypted's download.py
//	go run ./examples/federated-learning --config hosts.json --player NAME   # one player of a multi-host run
//	go run ./cmd/shareflow launch --config hosts.json -- ./examples/federated-learning   # every player, one process each
//
// Run with --help for every flag.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "federated-learning:", err)
			os.Exit(2)
		}
		if !errors.Is(err, errHelp) {
			fmt.Fprintln(os.Stderr, "federated-learning:", err)
			os.Exit(1)
		}
	}
}

// run runs the command line args: training, or the download subcommand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "download" {
		return runDownload(ctx, args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return train(ctx, o, stdout, stderr)
}
