package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/shareflow/shareflow/internal/launch"
	"github.com/shareflow/shareflow/players"
)

func init() {
	register(&command{
		name:    "launch",
		summary: "start the players of a config, each as its own process on this machine, for trying a multi-host run",
		usage:   "--config FILE [--players a,b,...] [--grace DURATION] -- PROGRAM [ARGS...]",
		about: `
Runs PROGRAM ARGS... --config FILE --player NAME once for every player NAME
of the config (or of --players), with each line of their output prefixed
"[NAME] ". PROGRAM may be a Go package directory, such as
./examples/federated-learning: it is built once first.

When a player fails, launch stops the others (SIGTERM, then SIGKILL after
--grace) and names the player that failed first. On SIGINT or SIGTERM it
stops every player the same way and says so. It exits with status 0 only
when every player did.

--players starts some of the players here and leaves the others to be
started elsewhere, by hand or by another launch, with the same config.`,
		args:  true,
		flags: launchFlags,
	})
}

// launchFlags defines the flags of launch. The command starts PROGRAM once
// per player with "--config FILE --player NAME" appended, prefixes each
// line of output with the player's name, and stops them all when one
// fails.
func launchFlags(flags *flag.FlagSet) runFunc {
	config := flags.String("config", "", "host config `file` (required)")
	only := flags.String("players", "", "comma-separated `names` of the players to start (default: every player of the config)")
	grace := flags.Duration("grace", 5*time.Second, "how long a stopped player has between SIGTERM and SIGKILL")
	return func(ctx context.Context, argv []string) error {
		return runLaunch(ctx, *config, *only, *grace, argv)
	}
}

func runLaunch(ctx context.Context, config, only string, grace time.Duration, argv []string) error {
	stdout, stderr := stdio(ctx)
	if config == "" {
		return usagef("--config is required")
	}
	if grace <= 0 {
		return usagef("--grace must be positive, not %s", grace)
	}
	if len(argv) == 0 {
		return usagef("no program to launch: shareflow launch --config FILE -- PROGRAM [ARGS...]")
	}
	cfg, err := players.LoadConfig(config)
	if err != nil {
		return err
	}
	names := cfg.Names()
	if only != "" {
		if names, err = choosePlayers(cfg, only); err != nil {
			return err
		}
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
	if len(names) < cfg.Len() {
		fmt.Fprintf(stderr, "starting %d of the %d players: %s (the others must be started elsewhere)\n",
			len(names), cfg.Len(), strings.Join(names, ", "))
	} else {
		fmt.Fprintf(stderr, "starting %d players: %s\n", len(names), strings.Join(names, ", "))
	}
	return launch.Run(ctx, launch.Spec{
		Program: program,
		Args:    argv[1:],
		Config:  config,
		Players: names,
		Output:  stdout,
		Grace:   grace,
	})
}

// choosePlayers parses the --players list: names of the config, each
// once, in the order given.
func choosePlayers(cfg *players.Config, list string) ([]string, error) {
	var names []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
			return nil, usagef("--players %q: empty name", list)
		case !cfg.Has(n):
			return nil, usagef("--players: %q is not a player of %s (players: %s)", n, cfg.File(), strings.Join(cfg.Names(), ", "))
		case slices.Contains(names, n):
			return nil, usagef("--players: %q is listed twice", n)
		}
		names = append(names, n)
	}
	return names, nil
}
