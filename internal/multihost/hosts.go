package multihost

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shareflow/shareflow/players"
)

// LoadConfig reads the hostmap f.Config and applies the TLS flags. With
// neither --certs nor --insecure, a config that names no TLS material (TF
// Encrypted's flat hostmap, say) takes its certificates from the certs
// directory next to it, where 'shareflow certs' writes them, and says so
// on stdout. It then checks that f.Player is in the config, and that the
// config has every player want returns for it (Config.Require); needs,
// appended in parentheses to that error, tells the user what the example
// needs ("the example needs server0, ...").
func (f Flags) LoadConfig(stdout io.Writer, want func(*players.Config) []string, needs string) (*players.Config, error) {
	cfg, err := f.LoadHostmap(stdout)
	if err != nil {
		return nil, err
	}
	if !cfg.Has(f.Player) {
		return nil, fmt.Errorf("--player %q is not in %s (players: %v)", f.Player, f.Config, cfg.Names())
	}
	if err := cfg.Require(want(cfg)...); err != nil {
		return nil, fmt.Errorf("%w (%s)", err, needs)
	}
	return cfg, nil
}

// LoadHostmap is the first half of LoadConfig, for an example that checks
// the players itself (one that admits data owners the hostmap does not
// list, say): it reads the hostmap f.Config and applies the TLS flags, as
// LoadConfig does, but checks no player.
func (f Flags) LoadHostmap(stdout io.Writer) (*players.Config, error) {
	cfg, err := players.LoadConfig(f.Config)
	if err != nil {
		return nil, err
	}
	switch {
	case f.Insecure:
		cfg = cfg.WithInsecure(true)
	case f.Certs != "":
		if cfg, err = cfg.WithCertDir(f.Certs); err != nil {
			return nil, err
		}
	case !cfg.Insecure() && !namesTLS(cfg):
		dir := filepath.Join(filepath.Dir(f.Config), "certs")
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%s names no certificates, and there is no directory %s: "+
				"make them with 'shareflow certs --config %s', pass --certs DIR, "+
				"or --insecure to try without TLS", f.Config, dir, f.Config)
		}
		if cfg, err = cfg.WithCertDir(dir); err != nil {
			return nil, err
		}
		fmt.Fprintf(stdout, "%s: certificates from %s\n", f.Player, dir)
	}
	return cfg, nil
}

// namesTLS reports whether cfg names a CA or any player's certificate.
func namesTLS(cfg *players.Config) bool {
	if cfg.CAFile() != "" {
		return true
	}
	for _, p := range cfg.Players() {
		if p.Cert != "" || p.Key != "" {
			return true
		}
	}
	return false
}

// WithDataOwners returns fixed followed by data-owner-0 to
// data-owner-(n-1), for LoadConfig's want: n is at least atLeast and
// counts both the config's data owners and its names of no known role,
// which are most likely misspelt data owners. Config.Require then names a
// stray key and what it probably meant ("data-ower-1": did you mean
// "data-owner-1"?) rather than a missing data owner. fixed is not
// modified.
func WithDataOwners(cfg *players.Config, fixed []string, atLeast int) []string {
	want := append([]string(nil), fixed...)
	n := 0
	for _, name := range cfg.Names() {
		if r := players.RoleOf(name); r == players.RoleDataOwner || r == players.RoleOther {
			n++
		}
	}
	for i := range max(n, atLeast) {
		want = append(want, players.DataOwner(i))
	}
	return want
}
