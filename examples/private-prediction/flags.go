package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/shareflow/shareflow/internal/multihost"
)

// options are the example's settings, checked.
type options struct {
	dataDir   string
	images    int // 0: the whole test set
	batch     int
	plaintext bool
	out       string
	quiet     bool
	printPlan bool

	// Runs across processes or hosts.
	multihost.Flags
}

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// errHelp is returned after --help printed the usage.
var errHelp = errors.New("help requested")

// maxBatch bounds --batch: a batch of b images makes the first layer's
// opening 8·(784b + 784·512) bytes, 66 MB at 10,000.
const maxBatch = 10000

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("private-prediction", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dataDir, "data", "", "directory with a (Fashion-)MNIST test set in IDX form (t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]); empty means the embedded 1,000 test images")
	fs.IntVar(&o.images, "images", 0, "classify the first `N` test images; 0 means all of them (across processes with --data, give N: only the client reads the data)")
	fs.IntVar(&o.batch, "batch", 100, "images per batch: one secure forward pass, one iteration of the session")
	fs.BoolVar(&o.plaintext, "plaintext", false, "no secure run: compare the exact network with the polynomial one, in float64 and in an emulation of Pond's fixed point, on the training and test sets")
	fs.StringVar(&o.out, "out", "", "on the client: write every image's label, predicted class and logits to this CSV `file`")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&o.printPlan, "print-plan", false, "print what every player does and sends for one batch, then exit")
	o.Register(fs, "private-prediction", "batch")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: private-prediction [flags]\n\n"+
			"Classifies the client's (data-owner-0's) test images with the model owner's trained network,\n"+
			"on secret shares: only the client learns the logits.\n\nFlags:\n")
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
	switch err := o.Check(); {
	case o.images < 0:
		return o, usageError{fmt.Sprintf("--images %d: want a positive number, or 0 for the whole test set", o.images)}
	case o.batch < 1 || o.batch > maxBatch:
		return o, usageError{fmt.Sprintf("--batch %d: want 1 to %d", o.batch, maxBatch)}
	case err != nil:
		return o, usageError{err.Error()}
	case o.Config != "" && o.plaintext:
		return o, usageError{"--plaintext runs in one process; drop --config"}
	case o.plaintext && (o.out != "" || o.printPlan):
		return o, usageError{"--plaintext makes no private prediction: drop --out and --print-plan"}
	case o.Config != "" && !o.printPlan && o.dataDir != "" && o.images == 0:
		return o, usageError{"across processes, --data needs --images N: every player runs the same number of batches, and only the client reads the test set"}
	}
	return o, nil
}
