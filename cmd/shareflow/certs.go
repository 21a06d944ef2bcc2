package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shareflow/shareflow/players"
)

func init() {
	register(&command{
		name:    "certs",
		summary: "make a development CA and a TLS certificate for every player of a config",
		usage:   "--config FILE [--out DIR] [--force] [--validity DURATION]",
		about: `
Writes DIR/ca.pem and DIR/ca-key.pem (the CA), and DIR/NAME.pem and
DIR/NAME-key.pem for every player NAME of the config, each naming the player
and the host of its address. DIR defaults to "certs" next to the config
file, where players that run with a flat hostmap look for their certificates
when given no --certs. Give each host ca.pem and its own NAME.pem and
NAME-key.pem only; ca-key.pem can mint players. An existing CA is kept
unless --force is given.`,
		flags: certsFlags,
	})
}

// certsFlags defines the flags of certs. The command writes DIR/ca.pem,
// DIR/ca-key.pem and DIR/NAME.pem, DIR/NAME-key.pem for every player of
// the config, with the hosts of the players' addresses as SANs.
func certsFlags(flags *flag.FlagSet) runFunc {
	config := flags.String("config", "", "host config `file`: TF Encrypted's hostmap or the extended form (required)")
	out := flags.String("out", "", "output `directory` (default: certs next to the config file)")
	force := flags.Bool("force", false, "replace an existing CA and certificates; every player then needs the new files")
	validity := flags.Duration("validity", players.DefaultCertValidity, "how long player certificates stay valid")
	return func(ctx context.Context, _ []string) error {
		return runCerts(ctx, *config, *out, *force, *validity)
	}
}

func runCerts(ctx context.Context, config, out string, force bool, validity time.Duration) error {
	stdout, stderr := stdio(ctx)
	if config == "" {
		return usagef("--config is required")
	}
	if validity <= 0 {
		return usagef("--validity must be positive, not %s", validity)
	}
	dir := out
	if dir == "" {
		dir = filepath.Join(filepath.Dir(config), "certs")
	}

	cfg, err := players.LoadConfig(config)
	if err != nil {
		return err
	}
	if cfg.Insecure() {
		fmt.Fprintf(stderr, "note: %s sets \"insecure\": true; players will not use these certificates until it is false\n", config)
	}
	specs := cfg.CertSpecs()
	res, err := players.GenerateDevPKI(dir, specs, players.DevPKIOptions{Force: force, Validity: validity})
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w (pass --force to replace the CA and every certificate)", err)
		}
		return err
	}

	// Check what was written the way players will read it.
	check, err := cfg.WithInsecure(false).WithCertDir(dir)
	if err != nil {
		return err
	}
	for _, name := range check.Names() {
		if _, err := check.LoadIdentity(name); err != nil {
			return fmt.Errorf("checking the new certificates: %w", err)
		}
	}

	fmt.Fprintf(stdout, "Development CA:  %s\n", res.CACert)
	fmt.Fprintf(stdout, "CA private key:  %s  (keep it private: it can mint players)\n\n", res.CAKey)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PLAYER\tCERTIFICATE\tKEY\tHOSTS")
	for i, c := range res.Certs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Player, c.Cert, c.Key, strings.Join(specs[i].Hosts, ","))
	}
	tw.Flush()
	hint := dir
	if abs, err := filepath.Abs(dir); err == nil {
		if base, err := filepath.Abs(filepath.Dir(config)); err == nil {
			if rel, err := filepath.Rel(base, abs); err == nil && !strings.HasPrefix(rel, "..") {
				hint = rel // cert_dir is relative to the config file
			}
		}
	}
	fmt.Fprint(stdout, "\nGive each player's host ca.pem, NAME.pem and NAME-key.pem (not the other keys).\n")
	if hint == "certs" {
		fmt.Fprint(stdout, "A player whose config names no certificates looks in this directory, next to the config;\n"+
			"elsewhere, pass the player --certs DIR or set \"cert_dir\" in the config.\n")
	} else {
		fmt.Fprintf(stdout, "Point the config at them with \"cert_dir\": %q or per-player \"cert\"/\"key\",\n"+
			"or pass each player --certs DIR.\n", hint)
	}
	fmt.Fprint(stdout, "These certificates are for development: the CA key sits next to them.\n")
	return nil
}
