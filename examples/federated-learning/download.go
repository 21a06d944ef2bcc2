package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
)

// runDownload fetches a data set into a directory, as TF Encrypted's
// download.py: every file is checked against its published SHA-256 and
// written atomically.
func runDownload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("download", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "data", "directory to write the IDX files into")
	set := fs.String("set", "mnist", "data set: mnist or fashion-mnist")
	url := fs.String("url", "", "base URL to fetch the files from; empty means the data set's usual mirror")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: federated-learning download [flags]\n\nFetches (Fashion-)MNIST and checks every file's SHA-256.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageError{err.Error()}
	}
	var files []mnist.File
	base := *url
	switch *set {
	case "mnist":
		files = mnist.MNISTFiles
		if base == "" {
			base = mnist.MNISTBaseURL
		}
	case "fashion-mnist":
		files = mnist.FashionMNISTFiles
		if base == "" {
			base = mnist.FashionMNISTBaseURL
		}
	default:
		return usageError{fmt.Sprintf("--set %q: want mnist or fashion-mnist", *set)}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := mnist.Download(ctx, http.DefaultClient, base, *dir, files); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d files of %s in %s, checksums verified\n", len(files), *set, *dir)
	return nil
}
