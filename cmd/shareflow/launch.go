package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/shareflow/shareflow/internal/launch"
	"github.com/shareflow/shareflow/players"
)

func init() {
	register(&command{
		name:    "launch",
		summary: "start every player of a config as its own process on this machine, for trying a multi-host run",
		usage:   "--config FILE [--players a,b,...] [--grace DURATION] -- PROGRAM [ARGS...]",
		run:     runLaunch,
	})
}

// runLaunch starts PROGRAM once per player of the config with
// "--config FILE --player NAME" appended, prefixes each line of output with
// the player's name, and stops them all when one fails. PROGRAM may be a
// Go package directory, which is built once first.
func runLaunch(ctx context.Context, args []string) error {
	stdout, stderr := stdio(ctx)
	flags := newFlags(ctx, "launch")
	config := flags.String("config", "", "host config `file` (required)")
	grace := flags.Duration("grace", 5*time.Second, "how long a stopped player has between SIGTERM and SIGKILL")
	if err := flags.Parse(args); err != nil {
		return &usageError{err: err, reported: true}
	}
	if *config == "" {
		return usagef("--config is required")
	}
	argv := flags.Args()
	if len(argv) == 0 {
		return usagef("no program to launch: shareflow launch --config FILE -- PROGRAM [ARGS...]")
	}
	cfg, err := players.LoadConfig(*config)
	if err != nil {
		return err
	}
	program := argv[0]
	if st, err := os.Stat(program); err == nil && st.IsDir() {
		tmp, err := os.MkdirTemp("", "shareflow-launch-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		fmt.Fprintf(stderr, "building %s\n", program)
		if program, err = launch.Build(ctx, program, tmp); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "starting %d players: %v\n", cfg.Len(), cfg.Names())
	return launch.Run(ctx, launch.Spec{
		Program: program,
		Args:    argv[1:],
		Config:  *config,
		Players: cfg.Names(),
		Output:  stdout,
		Grace:   *grace,
	})
}
