package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/shareflow/shareflow/protocol/pond"
)

// options are the example's settings, checked.
type options struct {
	iterations   int
	batchSize    int
	learningRate float64
	dataOwners   int
	seed         uint64
	evalEvery    int
	dataDir      string
	plaintext    bool
	compare      bool
	plot         string
	truncation   pond.Truncation
	privateDiv   bool
	quiet        bool
	cpuProfile   string
	printPlan    bool
	dot          string

	// Multi-host runs.
	config    string
	player    string
	sessionID string
	certs     string
	insecure  bool
	timeout   time.Duration
}

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// errHelp is returned after --help printed the usage.
var errHelp = errors.New("help requested")

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var truncation string
	fs := flag.NewFlagSet("federated-learning", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.iterations, "iterations", 400, "training iterations (TF Encrypted: 2000, one epoch of 60,000 images)")
	fs.IntVar(&o.batchSize, "batch-size", 30, "batch size of each data owner")
	fs.Float64Var(&o.learningRate, "learning-rate", 0.1, "SGD learning rate")
	fs.IntVar(&o.dataOwners, "data-owners", 3, "number of data owners; the training set is split into that many disjoint shards")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the weight initialisation and of the data owners' shuffling")
	fs.IntVar(&o.evalEvery, "eval-every", 100, "evaluate on the test set every this many iterations")
	fs.StringVar(&o.dataDir, "data", "", "directory with (Fashion-)MNIST IDX files (train-images-idx3-ubyte[.gz], ...); empty means the embedded subset")
	fs.BoolVar(&o.plaintext, "plaintext", false, "average the gradients in the clear (plain FedAvg) instead of securely")
	fs.BoolVar(&o.compare, "compare", false, "train securely, then in the clear with the same seed, and compare accuracy and time")
	fs.StringVar(&o.plot, "plot", "", "write the training curve (loss and test accuracy) to this PNG file")
	fs.StringVar(&truncation, "truncation", "interactive", "truncation of Pond when the division stays private: interactive or local")
	fs.BoolVar(&o.privateDiv, "private-division", false, "divide inside the protocol (multiply by 1/n, truncate) instead of after reveal on the model owner")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&o.printPlan, "print-plan", false, "print what every player does and sends each iteration, then exit")
	fs.StringVar(&o.dot, "dot", "", "write the graph in Graphviz DOT to this file, then exit")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	fs.StringVar(&o.config, "config", "", "hosts file (TF Encrypted's hostmap JSON) for a run across processes or hosts")
	fs.StringVar(&o.player, "player", "", "with --config: the player this process is")
	fs.StringVar(&o.sessionID, "session-id", "federated-learning", "with --config: the session id, the same on every player")
	fs.StringVar(&o.certs, "certs", "", "with --config: directory of ca.pem, NAME.pem and NAME-key.pem (see shareflow certs); default: the config's TLS settings or, if it has none, the certs directory next to it")
	fs.BoolVar(&o.insecure, "insecure", false, "with --config: plaintext connections, no authentication (INSECURE, for trying things out)")
	fs.DurationVar(&o.timeout, "timeout", 0, "with --config: deadline of one iteration; zero means the config's message timeout")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: federated-learning [flags]\n       federated-learning download [flags]\n\n"+
			"Trains TF Encrypted's 784-512-10 network with secure aggregation of the data owners' gradients.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, errHelp
		}
		return o, usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return o, usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	switch truncation {
	case "interactive":
		o.truncation = pond.Interactive
	case "local":
		o.truncation = pond.Local
	default:
		return o, usageError{fmt.Sprintf("--truncation %q: want interactive or local", truncation)}
	}
	switch {
	case o.iterations < 1:
		return o, usageError{fmt.Sprintf("--iterations %d: want at least 1", o.iterations)}
	case o.batchSize < 1 || o.batchSize > 10000:
		return o, usageError{fmt.Sprintf("--batch-size %d: want 1 to 10000", o.batchSize)}
	case !(o.learningRate > 0) || math.IsInf(o.learningRate, 0):
		return o, usageError{fmt.Sprintf("--learning-rate %v: want a positive number", o.learningRate)}
	case o.dataOwners < 1 || o.dataOwners > 100:
		return o, usageError{fmt.Sprintf("--data-owners %d: want 1 to 100", o.dataOwners)}
	case o.evalEvery < 1:
		return o, usageError{fmt.Sprintf("--eval-every %d: want at least 1", o.evalEvery)}
	case o.plaintext && o.compare:
		return o, usageError{"--plaintext and --compare exclude each other"}
	case o.config != "" && o.player == "":
		return o, usageError{"--config needs --player NAME: the player this process is"}
	case o.config == "" && o.player != "":
		return o, usageError{"--player needs --config FILE"}
	case o.config != "" && (o.plaintext || o.compare):
		return o, usageError{"--plaintext and --compare run in one process; drop --config"}
	case o.timeout < 0:
		return o, usageError{fmt.Sprintf("--timeout %v: want a positive duration", o.timeout)}
	}
	return o, nil
}
