package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/shareflow/shareflow/internal/multihost"
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
	ring         int // pond.Ring32, pond.Ring64, or 0: the session picks
	privateDiv   bool
	quiet        bool
	cpuProfile   string
	printPlan    bool
	dot          string

	// Rounds: who takes part, what counts, what is kept.
	checkpointDir   string
	checkpointEvery int
	roundLog        string
	shardSizes      []float64 // nil: equal shards
	weighted        bool
	maxWeight       int
	minOwners       int
	minOwnersSet    bool // --min-owners given: it overrides the config's min_owners
	maxSkipped      int
	sample          int // 0: every data owner
	dropout         float64
	roundDeadline   time.Duration
	fixedOwners     bool

	// Runs across processes or hosts.
	multihost.Flags
}

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// errHelp is returned after --help printed the usage.
var errHelp = errors.New("help requested")

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var truncation, ring string
	fs := flag.NewFlagSet("federated-learning", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.iterations, "iterations", 400, "training iterations (TF Encrypted: 2000, one epoch of 60,000 images)")
	fs.IntVar(&o.batchSize, "batch-size", 30, "batch size of each data owner")
	fs.Float64Var(&o.learningRate, "learning-rate", 0.1, "SGD learning rate")
	fs.IntVar(&o.dataOwners, "data-owners", 3, "number of data owners; the training set is split into that many disjoint shards (with --config, the hosts file's data owners if it lists any; otherwise data-owner-N that dial in load shard N, and the model owner waits for this many before the first round)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the weight initialisation and of the data owners' shuffling")
	fs.IntVar(&o.evalEvery, "eval-every", 100, "evaluate on the test set every this many iterations")
	fs.StringVar(&o.dataDir, "data", "", "directory with (Fashion-)MNIST IDX files (train-images-idx3-ubyte[.gz], ...); empty means the embedded subset")
	fs.BoolVar(&o.plaintext, "plaintext", false, "average the gradients in the clear (plain FedAvg) instead of securely")
	fs.BoolVar(&o.compare, "compare", false, "train securely, then in the clear with the same seed, and compare accuracy and time")
	fs.StringVar(&o.plot, "plot", "", "write the training curve (loss and test accuracy) to this PNG file")
	fs.StringVar(&truncation, "truncation", "interactive", "truncation of Pond when the division stays private: interactive or local")
	fs.StringVar(&ring, "ring", "auto", "the ring the shares live in: auto (Z_2^32 where the aggregation only adds and its range allows, 4 bytes a parameter), 32, or 64")
	fs.BoolVar(&o.privateDiv, "private-division", false, "divide inside the protocol (multiply by 1/n, truncate) instead of after reveal on the model owner")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&o.printPlan, "print-plan", false, "print what every player does and sends each iteration, then exit")
	fs.StringVar(&o.dot, "dot", "", "write the graph in Graphviz DOT to this file, then exit")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	o.Register(fs, "federated-learning", "iteration")
	var shardSizes string
	fs.StringVar(&o.checkpointDir, "checkpoint", "", "directory where the model owner keeps its checkpoint (model, round, random-number state); a run restarted with the same flags resumes from it")
	fs.IntVar(&o.checkpointEvery, "checkpoint-every", 50, "with --checkpoint: write the checkpoint every this many rounds, and once more at the end")
	fs.StringVar(&o.roundLog, "round-log", "", "append one JSON object per round to this file on the model owner (cohort, survivors, dropped, skipped, bytes, seconds)")
	fs.StringVar(&shardSizes, "shard-sizes", "", "fractions of the training set held by each data owner, such as 0.6,0.3,0.1 (one per data owner, summing to 1); default equal shards")
	fs.BoolVar(&o.weighted, "weighted", false, "weight each data owner's gradient by its number of local training examples, as FedAvg does")
	fs.IntVar(&o.maxWeight, "max-weight", defaultMaxWeight, "with --weighted: the largest weight (local training examples) a data owner may bring; a larger one is refused")
	fs.IntVar(&o.minOwners, "min-owners", 2, "the fewest data owners whose gradients a round may reveal the mean of; a round with fewer survivors is skipped (at least 2: a mean over one owner is its gradient)")
	fs.IntVar(&o.maxSkipped, "max-skipped", 10, "the run fails after this many consecutive skipped rounds, naming the owners who were missing")
	fs.IntVar(&o.sample, "sample", 0, "data owners sampled for each round (with --seed); 0 means every data owner")
	fs.Float64Var(&o.dropout, "dropout", 0, "in a run in one process: the probability that a sampled data owner fails to answer in a round (seeded by --seed)")
	fs.DurationVar(&o.roundDeadline, "round-deadline", 0, "how long the servers wait for the cohort's gradients after a round starts; zero means the session's default (10s)")
	fs.BoolVar(&o.fixedOwners, "fixed-owners", false, "run TF Encrypted's program as it is: every data owner answers every iteration, and a lost player ends the run (no cohorts)")
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
	switch ring {
	case "auto":
	case "32":
		o.ring = pond.Ring32
	case "64":
		o.ring = pond.Ring64
	default:
		return o, usageError{fmt.Sprintf("--ring %q: want auto, 32 or 64", ring)}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.minOwnersSet = set["min-owners"]
	if shardSizes != "" {
		var err error
		if o.shardSizes, err = parseShardSizes(shardSizes); err != nil {
			return o, err
		}
		if !set["data-owners"] {
			o.dataOwners = len(o.shardSizes)
		}
	}
	switch err := o.Check(); {
	case o.iterations < 1:
		return o, usageError{fmt.Sprintf("--iterations %d: want at least 1", o.iterations)}
	case o.batchSize < 1 || o.batchSize > 10000:
		return o, usageError{fmt.Sprintf("--batch-size %d: want 1 to 10000", o.batchSize)}
	case !(o.learningRate > 0) || math.IsInf(o.learningRate, 0):
		return o, usageError{fmt.Sprintf("--learning-rate %v: want a positive number", o.learningRate)}
	case o.dataOwners < 1 || o.dataOwners > maxDataOwners:
		return o, usageError{fmt.Sprintf("--data-owners %d: want 1 to %d", o.dataOwners, maxDataOwners)}
	case o.evalEvery < 1:
		return o, usageError{fmt.Sprintf("--eval-every %d: want at least 1", o.evalEvery)}
	case o.plaintext && o.compare:
		return o, usageError{"--plaintext and --compare exclude each other"}
	case err != nil:
		return o, usageError{err.Error()}
	case o.Config != "" && (o.plaintext || o.compare):
		return o, usageError{"--plaintext and --compare run in one process; drop --config"}
	}
	return o, checkRoundFlags(o, set)
}

// Bounds of the round flags.
const (
	// maxDataOwners bounds --data-owners, the owners of a run in one
	// process (a run across hosts takes them from the hosts file).
	maxDataOwners = 1000
	// defaultMaxWeight is --max-weight's default: more than the 60,000
	// images of a whole MNIST training set, so that any shard of it
	// passes, while a weighted sum of gradients stays far inside Pond's
	// fixed-point range.
	defaultMaxWeight = 100000
	// shardSizesTolerance is how far from 1 the sum of --shard-sizes may
	// be: 0.33,0.33,0.33 is meant as thirds.
	shardSizesTolerance = 0.01
)

// parseShardSizes parses --shard-sizes: comma-separated positive fractions
// summing to 1.
func parseShardSizes(v string) ([]float64, error) {
	parts := strings.Split(v, ",")
	sizes := make([]float64, len(parts))
	var sum float64
	for i, p := range parts {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(f > 0) || math.IsInf(f, 0) {
			return nil, usageError{fmt.Sprintf("--shard-sizes %q: size %d is %q, want a positive fraction", v, i+1, p)}
		}
		sizes[i] = f
		sum += f
	}
	if math.Abs(sum-1) > shardSizesTolerance {
		return nil, usageError{fmt.Sprintf("--shard-sizes %q: the sizes sum to %.4g, want 1 (they are fractions of the training set)", v, sum)}
	}
	return sizes, nil
}

// checkRoundFlags checks the round flags against each other and the
// number of data owners (of a run in one process; a run across hosts
// checks them again against its hosts file, see checkOwnerCount). set
// holds the flags given on the command line.
func checkRoundFlags(o options, set map[string]bool) error {
	switch {
	case o.checkpointEvery < 1:
		return usageError{fmt.Sprintf("--checkpoint-every %d: want at least 1", o.checkpointEvery)}
	case set["checkpoint-every"] && o.checkpointDir == "":
		return usageError{"--checkpoint-every needs --checkpoint DIR"}
	case o.maxWeight < 1:
		return usageError{fmt.Sprintf("--max-weight %d: want at least 1", o.maxWeight)}
	case set["max-weight"] && !o.weighted:
		return usageError{"--max-weight needs --weighted"}
	case o.minOwners < 2:
		return usageError{fmt.Sprintf("--min-owners %d: want at least 2; a mean over one data owner is that owner's gradient", o.minOwners)}
	case o.maxSkipped < 1:
		return usageError{fmt.Sprintf("--max-skipped %d: want at least 1", o.maxSkipped)}
	case o.sample < 0:
		return usageError{fmt.Sprintf("--sample %d: want a positive number of data owners, or 0 for all of them", o.sample)}
	case o.sample > 0 && o.sample < o.minOwners:
		return usageError{fmt.Sprintf("--sample %d is below --min-owners %d: every round would be skipped", o.sample, o.minOwners)}
	case !(o.dropout >= 0 && o.dropout < 1):
		return usageError{fmt.Sprintf("--dropout %v: want a probability in [0, 1)", o.dropout)}
	case o.dropout > 0 && o.Config != "":
		return usageError{"--dropout simulates dropouts in a run in one process; across hosts owners drop out for real: drop --config or --dropout"}
	case o.roundDeadline < 0:
		return usageError{fmt.Sprintf("--round-deadline %v: want a positive duration", o.roundDeadline)}
	case o.fixedOwners && (o.sample > 0 || o.dropout > 0 || o.weighted || o.roundDeadline > 0 || set["min-owners"] || set["max-skipped"]):
		return usageError{"--fixed-owners runs every data owner every iteration: --sample, --dropout, --weighted, --min-owners, --max-skipped and --round-deadline are for rounds of a cohort"}
	case (o.plaintext || o.compare) && o.checkpointDir != "":
		return usageError{"--checkpoint resumes secure training; drop --plaintext and --compare"}
	}
	if o.Config != "" {
		return nil // the data owners are the hosts file's; see checkOwnerCount
	}
	return checkOwnerCount(o, o.dataOwners, "--data-owners")
}

// checkOwnerCount checks the round flags that depend on the number of
// data owners, n, which from says where it came from (a flag or a hosts
// file).
func checkOwnerCount(o options, n int, from string) error {
	switch {
	case o.shardSizes != nil && len(o.shardSizes) != n:
		return usageError{fmt.Sprintf("--shard-sizes gives %d sizes for %d data owners (%s)", len(o.shardSizes), n, from)}
	case o.sample > n:
		return usageError{fmt.Sprintf("--sample %d: there are only %d data owners (%s)", o.sample, n, from)}
	case o.minOwners > n:
		return usageError{fmt.Sprintf("--min-owners %d: there are only %d data owners (%s); every round would be skipped", o.minOwners, n, from)}
	}
	return nil
}
