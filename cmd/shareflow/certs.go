package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shareflow/shareflow/players"
)

func init() {
	register(&command{
		name:    "certs",
		summary: "make a development CA and a TLS certificate for every player of a config, and for data owners",
		usage:   "--config FILE [--out DIR] [--data-owners N] [--data-owner NAME] [--force] [--validity DURATION]",
		about: `
Writes DIR/ca.pem and DIR/ca-key.pem (the CA), and DIR/NAME.pem and
DIR/NAME-key.pem for every player NAME of the config, each naming the player
and the host of its address. DIR defaults to "certs" next to the config
file, where players that run with a flat hostmap look for their certificates
when given no --certs. Give each host ca.pem and its own NAME.pem and
NAME-key.pem only; ca-key.pem can mint players. An existing CA is kept
unless --force is given.

With --data-owners N (data-owner-0 to data-owner-N-1) or --data-owner NAME,
it also mints data-owner certificates. When DIR holds a CA already, it mints
only those, signed by that CA, and leaves the CA and every other certificate
alone: this is how data owners join a federation whose hostmap lists only
the servers, the crypto producer and the model owner (open membership). A
data owner whose files exist is kept; with --force its certificate is
issued anew (the CA is not replaced then).`,
		flags: certsFlags,
	})
}

// certsFlags defines the flags of certs. The command writes DIR/ca.pem,
// DIR/ca-key.pem and DIR/NAME.pem, DIR/NAME-key.pem for every player of
// the config, with the hosts of the players' addresses as SANs, and for
// the data owners asked for.
func certsFlags(flags *flag.FlagSet) runFunc {
	var o certsOptions
	flags.StringVar(&o.config, "config", "", "host config `file`: TF Encrypted's hostmap or the extended form (required)")
	flags.StringVar(&o.out, "out", "", "output `directory` (default: certs next to the config file)")
	flags.BoolVar(&o.force, "force", false, "replace an existing CA and certificates, every player then needing the new files; with --data-owners or --data-owner, issue those data owners' certificates anew and keep the CA")
	flags.DurationVar(&o.validity, "validity", players.DefaultCertValidity, "how long player certificates stay valid")
	flags.IntVar(&o.dataOwners, "data-owners", 0, "also mint certificates for the first `N` data owners, data-owner-0 to data-owner-N-1")
	flags.StringVar(&o.dataOwner, "data-owner", "", "also mint a certificate for the data owner `NAME` (data-owner-K)")
	return func(ctx context.Context, _ []string) error {
		return runCerts(ctx, o)
	}
}

// certsOptions are the flags of certs.
type certsOptions struct {
	config, out string
	force       bool
	validity    time.Duration
	dataOwners  int
	dataOwner   string
}

func runCerts(ctx context.Context, o certsOptions) error {
	stdout, stderr := stdio(ctx)
	if o.config == "" {
		return usagef("--config is required")
	}
	if o.validity <= 0 {
		return usagef("--validity must be positive, not %s", o.validity)
	}
	if o.dataOwners < 0 || o.dataOwners > players.MaxMembersLimit {
		return usagef("--data-owners must be from 0 to %d, not %d", players.MaxMembersLimit, o.dataOwners)
	}
	var owners []string
	for i := range o.dataOwners {
		owners = append(owners, players.DataOwner(i))
	}
	if o.dataOwner != "" {
		if err := players.CheckName(o.dataOwner); err != nil {
			return usagef("--data-owner: %v", err)
		}
		if players.RoleOf(o.dataOwner) != players.RoleDataOwner {
			return usagef("--data-owner: %q is not a data owner's name; want data-owner-K, such as %q", o.dataOwner, players.DataOwner(0))
		}
		if !slices.Contains(owners, o.dataOwner) {
			owners = append(owners, o.dataOwner)
		}
	}
	dir := o.out
	if dir == "" {
		dir = filepath.Join(filepath.Dir(o.config), "certs")
	}

	cfg, err := players.LoadConfig(o.config)
	if err != nil {
		return err
	}
	if cfg.Insecure() {
		fmt.Fprintf(stderr, "note: %s sets \"insecure\": true; players will not use these certificates until it is false\n", o.config)
	}
	hosts := make(map[string][]string) // the hosts of the config's players
	for _, s := range cfg.CertSpecs() {
		hosts[s.Player] = s.Hosts
	}

	// With a CA in dir and data owners asked for, mint only those.
	_, caErr := os.Stat(players.CAFile(dir))
	onlyOwners := len(owners) > 0 && caErr == nil
	var specs []players.CertSpec
	var kept []string
	if onlyOwners {
		for _, name := range owners {
			cert, _ := players.CertFiles(dir, name)
			if _, err := os.Stat(cert); err == nil && !o.force {
				kept = append(kept, name)
				continue
			}
			specs = append(specs, players.CertSpec{Player: name, Hosts: hosts[name]})
		}
	} else {
		specs = cfg.CertSpecs()
		for _, name := range owners {
			if !cfg.Has(name) {
				specs = append(specs, players.CertSpec{Player: name})
			}
		}
	}

	res := &players.DevPKI{CACert: players.CAFile(dir), CAKey: players.CAKeyFile(dir)}
	switch {
	case len(specs) == 0:
	case onlyOwners:
		res, err = players.IssueCerts(dir, specs, players.DevPKIOptions{Force: o.force, Validity: o.validity})
	default:
		res, err = players.GenerateDevPKI(dir, specs, players.DevPKIOptions{Force: o.force, Validity: o.validity})
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%w (pass --force to replace the CA and every certificate, or --data-owners N or --data-owner NAME to add data owners with the CA there is)", err)
		}
	}
	if err != nil {
		return err
	}

	// Check what was written the way players will read it; the config
	// admits the data owners it does not list only with open membership,
	// so the check takes them as if it did.
	check, err := cfg.WithInsecure(false).WithOpenMembership(true).WithCertDir(dir)
	if err != nil {
		return err
	}
	for _, c := range res.Certs {
		if _, err := check.LoadIdentity(c.Player); err != nil {
			return fmt.Errorf("checking the new certificates: %w", err)
		}
	}

	if !onlyOwners {
		fmt.Fprintf(stdout, "Development CA:  %s\n", res.CACert)
		fmt.Fprintf(stdout, "CA private key:  %s  (keep it private: it can mint players)\n\n", res.CAKey)
	} else {
		fmt.Fprintf(stdout, "Signed by the CA %s (kept as it was).\n\n", res.CACert)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PLAYER\tCERTIFICATE\tKEY\tHOSTS")
	for i, c := range res.Certs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Player, c.Cert, c.Key, strings.Join(specs[i].Hosts, ","))
	}
	for _, name := range kept {
		cert, key := players.CertFiles(dir, name)
		fmt.Fprintf(tw, "%s\t%s\t%s\t(exists, kept)\n", name, cert, key)
	}
	tw.Flush()
	var unlisted []string
	for _, name := range owners {
		if !cfg.Has(name) {
			unlisted = append(unlisted, name)
		}
	}
	if len(unlisted) > 0 && !cfg.OpenMembership() {
		fmt.Fprintf(stderr, "note: %s lists data owners, so it admits no other (open_membership is off); %s cannot join until it says \"open_membership\": true\n",
			o.config, strings.Join(unlisted, ", "))
	}
	hint := dir
	if abs, err := filepath.Abs(dir); err == nil {
		if base, err := filepath.Abs(filepath.Dir(o.config)); err == nil {
			if rel, err := filepath.Rel(base, abs); err == nil && !strings.HasPrefix(rel, "..") {
				hint = rel // cert_dir is relative to the config file
			}
		}
	}
	fmt.Fprint(stdout, "\nGive each player's host ca.pem, NAME.pem and NAME-key.pem (not the other keys).\n")
	if len(unlisted) > 0 {
		fmt.Fprint(stdout, "A data owner the config does not list finds its files in the certificate directory\n"+
			"(\"cert_dir\" in the config, or --certs DIR) and needs no address: it only dials out.\n")
	}
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
