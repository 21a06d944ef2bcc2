package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/shareflow/shareflow/players"
)

func init() {
	register(&command{
		name:    "certs",
		summary: "make a development CA and a TLS certificate for every player of a config",
		usage:   "--config FILE [--out DIR] [--force] [--validity DURATION]",
		run:     runCerts,
	})
}

// runCerts writes DIR/ca.pem, DIR/ca-key.pem and DIR/NAME.pem,
// DIR/NAME-key.pem for every player of the config, with the hosts of the
// players' addresses as SANs.
func runCerts(ctx context.Context, args []string) error {
	stdout, stderr := stdio(ctx)
	flags := newFlags(ctx, "certs")
	config := flags.String("config", "", "host config `file`: TF Encrypted's hostmap or the extended form (required)")
	out := flags.String("out", "", "output `directory` (default: certs next to the config file)")
	force := flags.Bool("force", false, "replace an existing CA and certificates; every player then needs the new files")
	validity := flags.Duration("validity", players.DefaultCertValidity, "how long player certificates stay valid")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *config == "" {
		return usagef("--config is required")
	}
	if *validity <= 0 {
		return usagef("--validity must be positive, not %s", *validity)
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join(filepath.Dir(*config), "certs")
	}

	cfg, err := players.LoadConfig(*config)
	if err != nil {
		return err
	}
	if cfg.Insecure() {
		fmt.Fprintf(stderr, "note: %s sets \"insecure\": true; players will not use these certificates until it is false\n", *config)
	}
	specs := cfg.CertSpecs()
	res, err := players.GenerateDevPKI(dir, specs, players.DevPKIOptions{Force: *force, Validity: *validity})
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
		if base, err := filepath.Abs(filepath.Dir(*config)); err == nil {
			if rel, err := filepath.Rel(base, abs); err == nil && !strings.HasPrefix(rel, "..") {
				hint = rel // cert_dir is relative to the config file
			}
		}
	}
	fmt.Fprintf(stdout, "\nGive each player's host ca.pem, NAME.pem and NAME-key.pem (not the other keys),\n"+
		"and point the config at them with \"cert_dir\": %q or per-player \"cert\"/\"key\".\n"+
		"These certificates are for development: the CA key sits next to them.\n", hint)
	return nil
}
