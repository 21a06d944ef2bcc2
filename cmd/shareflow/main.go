// Command shareflow is the toolbox for running shareflow's secure
// multi-party computations across processes and hosts, in the style of TF
// Encrypted's Pond protocol: it makes the players' development
// certificates and starts every player of a config on one machine.
//
// Usage:
//
//	shareflow <command> [flags]
//
// The players themselves are programs built on package session, such as
// examples/federated-learning: every host runs the same program with the
// same host config and its own --player. See 'shareflow help' for the
// commands and 'shareflow help <command>' for a command's flags. Exit
// status: 0 on success, 1 on failure, 2 on bad command-line use.
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
	"strings"
	"syscall"
)

// command is one subcommand. Each lives in its own file and registers
// itself from an init function:
//
//	func init() {
//		register(&command{
//			name:    "certs",
//			summary: "make a development CA ...",
//			usage:   "--config FILE [--out DIR]",
//			flags: func(fs *flag.FlagSet) runFunc {
//				config := fs.String("config", "", "host config `file` (required)")
//				return func(ctx context.Context, args []string) error { ... }
//			},
//		})
//	}
//
// flags defines the command's flags, so that 'shareflow help NAME' can
// list them without running anything, and returns the function that runs
// the command once they are parsed. That function returns usagef errors
// for other misuse (exit status 2) and any other error for failures (exit
// status 1). It writes through the writers of stdio(ctx), never os.Stdout
// directly, so tests can run it in-process.
type command struct {
	name    string
	summary string // one line for 'shareflow help'
	usage   string // flags synopsis, after "shareflow NAME "
	about   string // paragraphs for 'shareflow help NAME', between the summary and the flags
	args    bool   // the command takes arguments after its flags
	flags   func(fs *flag.FlagSet) runFunc
}

// runFunc runs a command with its flags parsed; args are the arguments
// after the flags.
type runFunc func(ctx context.Context, args []string) error

// commands holds every registered command by name.
var commands = map[string]*command{}

// register adds c to the commands. Registering a name twice is a
// programming error.
func register(c *command) {
	if _, dup := commands[c.name]; dup || c.name == "help" || c.flags == nil {
		panic("shareflow: command " + c.name + " registered twice, reserved or without flags")
	}
	commands[c.name] = c
}

// main parses args, the command line after the command's name, and runs
// the command. Errors in args are usage errors; -h prints the usage and
// returns flag.ErrHelp.
func (c *command) main(ctx context.Context, args []string) error {
	fs := c.flagSet(ctx)
	run := c.flags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err: err, reported: true}
	}
	if !c.args && fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return run(ctx, fs.Args())
}

// flagSet returns the command's empty flag set. It reports errors to
// stdio(ctx)'s error writer instead of exiting, and its Usage prints the
// command's help there.
func (c *command) flagSet(ctx context.Context) *flag.FlagSet {
	_, stderr := stdio(ctx)
	fs := flag.NewFlagSet("shareflow "+c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { c.printUsage(stderr, fs) }
	return fs
}

// printUsage writes the command's help: synopsis, summary, details and
// every flag of fs.
func (c *command) printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: shareflow %s %s\n\n", c.name, c.usage)
	fmt.Fprintf(w, "%s.\n", upperFirst(c.summary))
	if c.about != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.about))
	}
	fmt.Fprint(w, "\nFlags:\n")
	printFlags(w, fs)
}

// printFlags lists the flags of fs as flag.PrintDefaults does, but spelled
// with two dashes, as the synopses and the documentation spell them.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch f.DefValue {
		case "", "0", "0s", "false":
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
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

func upperFirst(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

func main() {
	// The context's cause names the signal, so that a command stopped by
	// one says so.
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
		if len(args) > 2 {
			fmt.Fprintf(stderr, "shareflow help: unexpected argument %q\nRun 'shareflow help' for the commands.\n", args[2])
			return 2
		}
		if len(args) == 2 {
			c, ok := commands[args[1]]
			if !ok {
				fmt.Fprintf(stderr, "shareflow help: unknown command %q\n\n", args[1])
				printHelp(stderr)
				return 2
			}
			fs := c.flagSet(ctx)
			c.flags(fs)
			c.printUsage(stdout, fs)
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
	err := c.main(ctx, args[1:])
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
		// Errors of a package named like the command (launch) already
		// start with its name.
		msg := err.Error()
		if !strings.HasPrefix(msg, name+": ") {
			msg = name + ": " + msg
		}
		fmt.Fprintf(stderr, "shareflow %s\n", msg)
		return 1
	}
}

// printHelp lists the commands.
func printHelp(w io.Writer) {
	fmt.Fprint(w, `shareflow makes the certificates of a multi-party computation's players and
starts them, for secure computations between players on separate hosts in
the style of TF Encrypted's Pond protocol.

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
	fmt.Fprintf(w, "\t%-*s  %s\n", width, "help", "show this list, or a command's usage and flags")
	fmt.Fprint(w, "\nRun 'shareflow help <command>' for a command's usage and flags.\n")
}
