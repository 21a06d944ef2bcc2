// Command shareflow runs secure multi-party computations between players
// on separate hosts, in the style of TF Encrypted's Pond protocol.
//
// Usage:
//
//	shareflow <command> [flags]
//
// Every host runs the same program with the same host config; see
// 'shareflow help' for the commands and 'shareflow help <command>' for a
// command's flags. Exit status: 0 on success, 1 on failure, 2 on bad
// command-line use.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

// command is one subcommand. Each lives in its own file and registers
// itself from an init function:
//
//	func init() {
//		register(&command{name: "serve", summary: "run one player", usage: "--config FILE --player NAME", run: runServe})
//	}
//
// run gets the arguments after the command name. It parses them with
// newFlags and parseFlags, returns usagef errors for other misuse (exit
// status 2) and any other error for failures (exit status 1). It writes
// through the writers of stdio(ctx), never os.Stdout directly, so tests can
// run it in-process.
type command struct {
	name    string
	summary string // one line for 'shareflow help'
	usage   string // flags synopsis, after "shareflow NAME "
	run     func(ctx context.Context, args []string) error
}

// commands holds every registered command by name.
var commands = map[string]*command{}

// register adds c to the commands. Registering a name twice is a
// programming error.
func register(c *command) {
	if _, dup := commands[c.name]; dup || c.name == "help" || c.run == nil {
		panic("shareflow: command " + c.name + " registered twice, reserved or without run")
	}
	commands[c.name] = c
}

// usageError marks an error as bad command-line use (exit status 2).
type usageError struct {
	err      error
	reported bool // the flag package already printed it with the usage
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usage error.
func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

type ioKey struct{}

type stdioWriters struct{ out, err io.Writer }

// withStdio returns ctx carrying the writers commands print to.
func withStdio(ctx context.Context, stdout, stderr io.Writer) context.Context {
	return context.WithValue(ctx, ioKey{}, stdioWriters{stdout, stderr})
}

// stdio returns the writers for a command's normal output and its
// messages: those in ctx, or os.Stdout and os.Stderr.
func stdio(ctx context.Context) (stdout, stderr io.Writer) {
	if w, ok := ctx.Value(ioKey{}).(stdioWriters); ok {
		return w.out, w.err
	}
	return os.Stdout, os.Stderr
}

// newFlags returns the flag set of command name. It reports errors instead
// of exiting, and -h prints the command's usage.
func newFlags(ctx context.Context, name string) *flag.FlagSet {
	_, stderr := stdio(ctx)
	fs := flag.NewFlagSet("shareflow "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		c := commands[name]
		fmt.Fprintf(stderr, "usage: shareflow %s %s\n\n", name, c.usage)
		if c.summary != "" {
			fmt.Fprintf(stderr, "%s.\n\nFlags:\n", upperFirst(c.summary))
		}
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args with fs and refuses positional arguments. Errors
// are usage errors; -h returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err: err, reported: true}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func upperFirst(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches args to a command and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	ctx = withStdio(ctx, stdout, stderr)
	if len(args) == 0 {
		printHelp(stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			c, ok := commands[args[1]]
			if !ok {
				fmt.Fprintf(stderr, "shareflow help: unknown command %q\n\n", args[1])
				printHelp(stderr)
				return 2
			}
			newFlags(withStdio(ctx, stdout, stdout), c.name).Usage()
			return 0
		}
		printHelp(stdout)
		return 0
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "shareflow: unknown command %q\n\n", name)
		printHelp(stderr)
		return 2
	}
	err := c.run(ctx, args[1:])
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		if !ue.reported {
			fmt.Fprintf(stderr, "shareflow %s: %v\nRun 'shareflow help %s' for usage.\n", name, err, name)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "shareflow %s: %v\n", name, err)
		return 1
	}
}

// printHelp lists the commands.
func printHelp(w io.Writer) {
	fmt.Fprint(w, `shareflow runs secure multi-party computations between players on
separate hosts, in the style of TF Encrypted's Pond protocol.

Usage:

	shareflow <command> [flags]

Commands:

`)
	names := slices.Sorted(maps.Keys(commands))
	width := len("help")
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		fmt.Fprintf(w, "\t%-*s  %s\n", width, n, commands[n].summary)
	}
	fmt.Fprintf(w, "\t%-*s  %s\n", width, "help", "show this list, or a command's flags")
	fmt.Fprint(w, "\nRun 'shareflow help <command>' for a command's flags.\n")
}
