package multihost

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/shareflow/shareflow/players"
)

// Flags are the settings of one player of a run across processes or
// hosts. The zero value means a run in one process. A Flags is a plain
// value: not safe for concurrent use while Register's FlagSet parses into
// it.
type Flags struct {
	// Config is the hostmap (players.LoadConfig); empty for a run in one
	// process.
	Config string
	// Player is the player this process is.
	Player string
	// SessionID is the session id, the same on every player.
	SessionID string
	// Certs is a directory of ca.pem, NAME.pem and NAME-key.pem; empty
	// means the config's TLS settings or, if it has none, the certs
	// directory next to it.
	Certs string
	// Insecure means plaintext connections, without authentication.
	Insecure bool
	// Timeout is the deadline of one step (a batch, an iteration); zero
	// means the config's message timeout.
	Timeout time.Duration
}

// Register defines --config, --player, --session-id, --certs, --insecure
// and --timeout on fs, parsing into f. program is the default session id;
// step names what --timeout bounds ("batch", "iteration").
func (f *Flags) Register(fs *flag.FlagSet, program, step string) {
	fs.StringVar(&f.Config, "config", "", "hosts file (TF Encrypted's hostmap JSON) for a run across processes or hosts")
	fs.StringVar(&f.Player, "player", "", "with --config: the player this process is")
	fs.StringVar(&f.SessionID, "session-id", program, "with --config: the session id, the same on every player")
	fs.StringVar(&f.Certs, "certs", "", "with --config: directory of ca.pem, NAME.pem and NAME-key.pem (see shareflow certs); default: the config's TLS settings or, if it has none, the certs directory next to it")
	fs.BoolVar(&f.Insecure, "insecure", false, "with --config: plaintext connections, no authentication (INSECURE, for trying things out)")
	fs.DurationVar(&f.Timeout, "timeout", 0, "with --config: deadline of one "+step+"; zero means the config's message timeout")
}

// Check returns what is wrong with the flags, as a message for the
// command line's usage error, or nil: --config and --player go together,
// and --timeout is not negative.
func (f Flags) Check() error {
	switch {
	case f.Config != "" && f.Player == "":
		return errors.New("--config needs --player NAME: the player this process is")
	case f.Config == "" && f.Player != "":
		return errors.New("--player needs --config FILE")
	case f.Timeout < 0:
		return fmt.Errorf("--timeout %v: want a positive duration", f.Timeout)
	}
	return nil
}

// StepTimeout returns the deadline of one step: --timeout, or the
// config's message timeout when it is zero.
func (f Flags) StepTimeout(cfg *players.Config) time.Duration {
	if f.Timeout != 0 {
		return f.Timeout
	}
	return cfg.MessageTimeout()
}
