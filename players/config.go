package players

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults and limits of a Config.
const (
	// DefaultConnectTimeout is how long a player waits for all its peers
	// at start-up when the config does not say.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultMessageTimeout is how long a player waits for one message
	// when the config does not say.
	DefaultMessageTimeout = 60 * time.Second
	// DefaultMaxMessageBytes is the largest message a player accepts when
	// the config does not say (256 MiB).
	DefaultMaxMessageBytes int64 = 256 << 20
	// MaxMessageBytesLimit is the largest max_message_bytes a config may
	// set (64 GiB).
	MaxMessageBytesLimit int64 = 64 << 30
	// DefaultMaxMembers is how many data owners the config does not list
	// may be connected to a player at once under open membership, when
	// the config does not say.
	DefaultMaxMembers = 1000
	// MaxMembersLimit is the largest max_members a config may set.
	MaxMembersLimit = 1 << 20
	// MaxNameLength is the longest player name, the length limit of a DNS
	// label (names are carried in certificates as DNS SANs).
	MaxNameLength = 63
)

var (
	// ErrInvalidConfig is wrapped by every error about a config's content.
	ErrInvalidConfig = errors.New("players: invalid config")
	// ErrUnknownPlayer is returned for a player name the config lacks.
	ErrUnknownPlayer = errors.New("players: unknown player")
)

// ConfigError reports a problem with a config file: which file, where in
// it when known, and which field.
type ConfigError struct {
	// File is the config file as it was named to LoadConfig or
	// ParseConfig ("" for a Spec built in code).
	File string
	// Line and Column locate the problem, both 1-based; zero when unknown.
	Line, Column int
	// Field is the JSON path of the field, such as
	// "players.server0.address"; empty for whole-file problems.
	Field string
	// Err is the problem.
	Err error
}

// Error formats the error as "players: FILE:LINE:COL: FIELD: problem".
func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString("players: ")
	file := e.File
	if file == "" {
		file = "config"
	}
	b.WriteString(file)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns ErrInvalidConfig and the underlying problem, so that
// errors.Is works with both.
func (e *ConfigError) Unwrap() []error { return []error{ErrInvalidConfig, e.Err} }

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string such as "30s" or "1m30s".
type Duration time.Duration

// MarshalText formats the duration as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

// UnmarshalText parses a duration with time.ParseDuration.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf(`bad duration %q; want a Go duration such as "30s" or "2m"`, text)
	}
	*d = Duration(v)
	return nil
}

// Spec is the literal form of the extended config, as written in JSON.
// Build a checked Config from it with NewConfig; zero fields take their
// defaults. A Spec is a plain value, not safe for concurrent mutation.
//
// The JSON tags are the one list of field names: the parser decodes each
// member into the field its tag names. A field tagged config:"path" may be
// left out but not given as "".
type Spec struct {
	// Players maps each player name to where it runs.
	Players map[string]PlayerSpec `json:"players"`
	// CA is the PEM file of the certificate authority all players trust.
	CA string `json:"ca,omitempty" config:"path"`
	// CertDir is a directory laid out as DIR/ca.pem, DIR/NAME.pem,
	// DIR/NAME-key.pem; it supplies CA, Cert and Key where those are empty.
	CertDir string `json:"cert_dir,omitempty" config:"path"`
	// ConnectTimeout bounds the wait for all peers at start-up.
	ConnectTimeout Duration `json:"connect_timeout,omitempty"`
	// MessageTimeout bounds the wait for one message.
	MessageTimeout Duration `json:"message_timeout,omitempty"`
	// MaxMessageBytes is the largest message a player accepts.
	MaxMessageBytes int64 `json:"max_message_bytes,omitempty"`
	// Insecure runs without TLS: no encryption, no authentication. For
	// trying things out only.
	Insecure bool `json:"insecure,omitempty"`
	// OpenMembership lets data owners the config does not list join: any
	// peer whose certificate, signed by the CA, names a data owner
	// (data-owner-N). Nil means on exactly when the config lists no data
	// owner, so a hostmap that lists every data owner, as TF Encrypted's
	// does, stays closed unless it says otherwise.
	OpenMembership *bool `json:"open_membership,omitempty"`
	// MaxMembers bounds the unlisted data owners connected to a player at
	// once; zero means DefaultMaxMembers.
	MaxMembers int `json:"max_members,omitempty"`
	// MinOwners is the privacy floor of rounds of a cohort: the fewest
	// data owners a revealed sum may cover. Zero means the program's
	// default; values below 2 are refused, since a mean over one owner is
	// that owner's input. Every host must agree on it: the servers enforce
	// it, and the plan fingerprint covers it.
	MinOwners int `json:"min_owners,omitempty"`
}

// PlayerSpec is one player of a Spec.
type PlayerSpec struct {
	// Address is the host:port the other players dial. Empty means the
	// player only dials out, as data owners behind NAT do: it does not
	// listen, and the others reach it over the connections it opens. In
	// a file such a player is an object without "address".
	Address string `json:"address"`
	// Listen is the host:port the player binds, when it differs from
	// Address (for example "0.0.0.0:4440" behind NAT). The host may be
	// empty.
	Listen string `json:"listen,omitempty"`
	// Cert and Key are the player's PEM certificate and private key.
	Cert string `json:"cert,omitempty" config:"path"`
	Key  string `json:"key,omitempty" config:"path"`
}

// Player is one checked player of a Config. It is a plain value: changing
// a copy does not change the Config.
type Player struct {
	// Name is the player's name.
	Name string
	// Address is the host:port the other players dial, or empty for a
	// player that only dials out (see Config.Listens).
	Address string
	// Listen is the host:port the player binds; it equals Address unless
	// the config says otherwise, and is empty when Address is.
	Listen string
	// Cert and Key are the resolved paths of the player's certificate and
	// key, or empty when the config names none.
	Cert, Key string

	certField, keyField string // where Cert and Key came from, for errors
}

// Config is a checked host configuration. It is immutable and safe for
// concurrent use; the With methods return modified copies.
type Config struct {
	file            string
	names           []string // sorted
	players         map[string]Player
	ca, caField     string
	connectTimeout  time.Duration
	messageTimeout  time.Duration
	maxMessageBytes int64
	insecure        bool
	openMembership  bool
	maxMembers      int
	minOwners       int
	// certDir is the certificate directory (cert_dir or WithCertDir), in
	// which data owners the config does not list find their files.
	certDir string

	// locate maps a field path to its line and column in the file, or
	// is nil for a Config built with NewConfig.
	locate func(field string) (line, col int)
}

// LoadConfig reads and checks the config file at path.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &ConfigError{File: path, Err: err}
	}
	return ParseConfig(data, path)
}

// ParseConfig checks the config in data. file names the data in errors and
// its directory anchors relative paths; it need not exist.
func ParseConfig(data []byte, file string) (*Config, error) {
	p := &parser{data: data, file: file, pos: make(map[string]int)}
	spec, err := p.parse()
	if err != nil {
		return nil, err
	}
	dir := "."
	if file != "" {
		dir = filepath.Dir(file)
	}
	return build(spec, file, dir, p.locate)
}

// NewConfig checks spec and returns it as a Config. Relative paths in spec
// resolve against dir ("" means the working directory).
func NewConfig(spec Spec, dir string) (*Config, error) {
	if dir == "" {
		dir = "."
	}
	return build(spec, "", dir, nil)
}

// File returns the config file name as given, or "" for a Config built
// with NewConfig.
func (c *Config) File() string { return c.file }

// Names returns the player names in sorted order.
func (c *Config) Names() []string { return slices.Clone(c.names) }

// Len returns the number of players.
func (c *Config) Len() int { return len(c.names) }

// Has reports whether name is a player of the config.
func (c *Config) Has(name string) bool {
	_, ok := c.players[name]
	return ok
}

// Players returns every player, sorted by name.
func (c *Config) Players() []Player {
	out := make([]Player, len(c.names))
	for i, n := range c.names {
		out[i] = c.players[n]
	}
	return out
}

// Player returns the named player, or an error wrapping ErrUnknownPlayer.
func (c *Config) Player(name string) (Player, error) {
	p, ok := c.players[name]
	if !ok {
		return Player{}, c.unknown(name)
	}
	return p, nil
}

// Address returns the address the other players dial to reach name.
func (c *Config) Address(name string) (string, error) {
	p, err := c.Player(name)
	return p.Address, err
}

// ListenAddress returns the address player name binds.
func (c *Config) ListenAddress(name string) (string, error) {
	p, err := c.Player(name)
	return p.Listen, err
}

func (c *Config) unknown(name string) error {
	where := c.file
	if where == "" {
		where = "the config"
	}
	err := fmt.Errorf("%w %q: %s has %s", ErrUnknownPlayer, name, where, strings.Join(c.names, ", "))
	if s := nearest(name, c.names); s != "" {
		err = fmt.Errorf("%w; did you mean %q?", err, s)
	}
	return err
}

// Require checks that the config has every player in names, for a caller
// that needs particular players. For the first one missing it returns a
// *ConfigError. When a player of the config that is not in names looks
// like a misspelling of the missing one, the error points at that
// player's key:
//
//	players: hosts.json:4:3: players.data-ower-1: unknown player "data-ower-1"; did you mean "data-owner-1"?
func (c *Config) Require(names ...string) error {
	var stray []string
	for _, n := range c.names {
		if !slices.Contains(names, n) {
			stray = append(stray, n)
		}
	}
	for _, want := range names {
		if c.Has(want) {
			continue
		}
		if s := nearest(want, stray); s != "" {
			return c.fail("players."+s, fmt.Errorf("unknown player %q; did you mean %q?", s, want))
		}
		return c.fail("players", fmt.Errorf("no player %q; the config has %s", want, strings.Join(c.names, ", ")))
	}
	return nil
}

// fail returns a ConfigError about field, located in the file when the
// Config was parsed from one.
func (c *Config) fail(field string, err error) *ConfigError {
	e := &ConfigError{File: c.file, Field: field, Err: err}
	if c.locate != nil {
		e.Line, e.Column = c.locate(field)
	}
	return e
}

// CAFile returns the resolved path of the CA certificate, or "" if the
// config names none.
func (c *Config) CAFile() string { return c.ca }

// ConnectTimeout returns how long to wait for all peers at start-up.
func (c *Config) ConnectTimeout() time.Duration { return c.connectTimeout }

// MessageTimeout returns how long to wait for one message.
func (c *Config) MessageTimeout() time.Duration { return c.messageTimeout }

// MaxMessageBytes returns the largest message a player accepts.
func (c *Config) MaxMessageBytes() int64 { return c.maxMessageBytes }

// Insecure reports whether players talk without TLS.
func (c *Config) Insecure() bool { return c.insecure }

// OpenMembership reports whether data owners the config does not list may
// join (see Admits).
func (c *Config) OpenMembership() bool { return c.openMembership }

// MaxMembers returns how many unlisted data owners may be connected to a
// player at once.
func (c *Config) MaxMembers() int { return c.maxMembers }

// MinOwners returns the config's privacy floor for rounds of a cohort (see
// Spec.MinOwners), or 0 when the config sets none.
func (c *Config) MinOwners() int { return c.minOwners }

// Listens reports whether name is a player of the config with an address:
// one the others dial. A player listed without an address, and a data
// owner the config does not list, only dial out; the others reach them
// over the connections they open.
func (c *Config) Listens(name string) bool {
	p, ok := c.players[name]
	return ok && p.Address != ""
}

// Admits reports whether a peer named name may connect to the players of
// this config: any player the config lists, and, with open membership,
// any data owner (a valid name whose RoleOf is RoleDataOwner). The error,
// which wraps ErrUnknownPlayer, says why not. Players apply it to the
// name in a peer's verified certificate.
func (c *Config) Admits(name string) error {
	if c.Has(name) {
		return nil
	}
	if err := CheckName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrUnknownPlayer, err)
	}
	if RoleOf(name) != RoleDataOwner {
		return fmt.Errorf("%w %q: not in the config, and only data owners (data-owner-N) join without being listed", ErrUnknownPlayer, name)
	}
	if !c.openMembership {
		return fmt.Errorf("%w %q: not in the config, and the config does not admit unlisted data owners (open_membership is off)", ErrUnknownPlayer, name)
	}
	return nil
}

// Fingerprint returns a SHA-256 digest of the sorted player names, and of
// which of them only dial out. Players compare it at start-up to catch
// hosts that run with different player lists. Addresses are left out on
// purpose: hosts may reach one another under different names. Data owners
// the config does not list are no part of it.
func (c *Config) Fingerprint() [32]byte {
	h := sha256.New()
	io.WriteString(h, "shareflow players v1\n")
	for _, n := range c.names {
		io.WriteString(h, n)
		if !c.Listens(n) {
			io.WriteString(h, " dials out")
		}
		io.WriteString(h, "\n")
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// WithCertDir returns a copy of the config that takes its TLS material
// from dir: the CA from dir/ca.pem and each player's certificate and key
// from dir/NAME.pem and dir/NAME-key.pem, replacing whatever the config
// named. A relative dir resolves against the working directory, as a
// command-line flag would. The files are read by LoadIdentity.
func (c *Config) WithCertDir(dir string) (*Config, error) {
	if dir == "" {
		return nil, &ConfigError{File: c.file, Field: "cert_dir", Err: errors.New("empty certificate directory")}
	}
	if c.insecure {
		return nil, &ConfigError{File: c.file, Field: "cert_dir", Err: errors.New("the config is insecure; certificates would not be used")}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, &ConfigError{File: c.file, Field: "cert_dir", Err: err}
	}
	if err := certDirClash(c.names); err != nil {
		return nil, &ConfigError{File: c.file, Field: "cert_dir", Err: err}
	}
	out := c.clone()
	field := fmt.Sprintf("cert_dir %s", dir)
	out.ca, out.caField = CAFile(abs), field
	out.certDir = abs
	for name, p := range out.players {
		p.Cert, p.Key = CertFiles(abs, name)
		p.certField, p.keyField = field, field
		out.players[name] = p
	}
	return out, nil
}

// WithOpenMembership returns a copy of the config with open membership
// switched on or off.
func (c *Config) WithOpenMembership(on bool) *Config {
	out := c.clone()
	out.openMembership = on
	return out
}

// WithInsecure returns a copy of the config with insecure (plaintext)
// mode switched on or off.
func (c *Config) WithInsecure(on bool) *Config {
	out := c.clone()
	out.insecure = on
	return out
}

func (c *Config) clone() *Config {
	out := *c
	out.names = slices.Clone(c.names)
	out.players = make(map[string]Player, len(c.players))
	for k, v := range c.players {
		out.players[k] = v
	}
	return &out
}

// CAFile returns the CA certificate path of the certificate directory
// convention: dir/ca.pem.
func CAFile(dir string) string { return filepath.Join(dir, "ca.pem") }

// CAKeyFile returns the CA private key path of the certificate directory
// convention: dir/ca-key.pem.
func CAKeyFile(dir string) string { return filepath.Join(dir, "ca-key.pem") }

// CertFiles returns the certificate and key paths of player name in the
// certificate directory convention: dir/NAME.pem and dir/NAME-key.pem.
func CertFiles(dir, name string) (cert, key string) {
	return filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
}

// certDirClash reports two players (or a player and the CA) whose files
// would have the same name in a certificate directory, such as a player
// "ca" or players "x" and "x-key".
func certDirClash(names []string) error {
	owner := map[string]string{"ca.pem": "the CA", "ca-key.pem": "the CA"}
	for _, n := range names {
		for _, f := range []string{n + ".pem", n + "-key.pem"} {
			if o, ok := owner[f]; ok && o != fmt.Sprintf("player %q", n) {
				return fmt.Errorf("player %q and %s would both use the file %s in a certificate directory; rename one", n, o, f)
			}
			owner[f] = fmt.Sprintf("player %q", n)
		}
	}
	return nil
}

// CheckName reports whether name can name a player: 1 to 63 lowercase
// ASCII letters, digits, '-' and '_', starting and ending with a letter or
// digit. Names go into certificates and file names, so this is what both
// need: a DNS label (names are carried as DNS SANs and checked as TLS
// server names), no case-only differences (which DNS and some file systems
// ignore), and nothing that reads like a flag or a path. Graphs, configs
// and the transport all apply this one rule, so a graph that runs in one
// process also runs across hosts.
func CheckName(name string) error {
	if name == "" {
		return errors.New("empty player name")
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("player name %.20q... is longer than %d bytes", name, MaxNameLength)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case (c == '-' || c == '_') && i > 0 && i < len(name)-1:
		default:
			return fmt.Errorf("player name %q: use lowercase letters, digits, '-' and '_' (not first or last)", name)
		}
	}
	return nil
}

// build checks spec and makes the Config. locate maps a field path to a
// line and column, or is nil.
func build(spec Spec, file, dir string, locate func(field string) (int, int)) (*Config, error) {
	resolve := func(path string) string {
		if path == "" || filepath.IsAbs(path) {
			return path
		}
		p := filepath.Join(dir, path)
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}

	c := &Config{
		file:            file,
		players:         make(map[string]Player, len(spec.Players)),
		connectTimeout:  time.Duration(spec.ConnectTimeout),
		messageTimeout:  time.Duration(spec.MessageTimeout),
		maxMessageBytes: spec.MaxMessageBytes,
		insecure:        spec.Insecure,
		locate:          locate,
	}
	fail := func(field string, err error) error { return c.fail(field, err) }
	if len(spec.Players) == 0 {
		return nil, fail("players", errors.New("no players"))
	}
	for name := range spec.Players {
		c.names = append(c.names, name)
	}
	slices.Sort(c.names)

	certDir := resolve(spec.CertDir)
	if spec.Insecure && (spec.CA != "" || spec.CertDir != "") {
		field := "ca"
		if spec.CA == "" {
			field = "cert_dir"
		}
		return nil, fail(field, errors.New(`TLS material is configured but "insecure" is true; choose one`))
	}
	if certDir != "" {
		if err := certDirClash(c.names); err != nil {
			return nil, fail("cert_dir", err)
		}
	}
	switch {
	case spec.CA != "":
		c.ca, c.caField = resolve(spec.CA), "ca"
	case certDir != "":
		c.ca, c.caField = CAFile(certDir), "cert_dir"
	}
	c.certDir = certDir

	addrs := make(map[string]string) // normalised address -> player
	for _, name := range c.names {
		ps := spec.Players[name]
		field := "players." + name
		if err := CheckName(name); err != nil {
			return nil, fail(field, err)
		}
		p := Player{Name: name, Address: ps.Address, Listen: ps.Address}
		if ps.Address == "" {
			if ps.Listen != "" {
				return nil, fail(field+".listen", errors.New(`"listen" without "address": a player without an address only dials out, and listens nowhere`))
			}
		} else {
			norm, err := checkAddress(ps.Address, false)
			if err != nil {
				return nil, fail(field+".address", err)
			}
			if other, ok := addrs[norm]; ok {
				return nil, fail(field+".address", fmt.Errorf("%q is also the address of player %q", ps.Address, other))
			}
			addrs[norm] = name
		}
		if ps.Listen != "" {
			if _, err := checkAddress(ps.Listen, true); err != nil {
				return nil, fail(field+".listen", err)
			}
			p.Listen = ps.Listen
		}
		if spec.Insecure && (ps.Cert != "" || ps.Key != "") {
			return nil, fail(field+".cert", errors.New(`TLS material is configured but "insecure" is true; choose one`))
		}
		if (ps.Cert == "") != (ps.Key == "") {
			missing := "key"
			if ps.Cert == "" {
				missing = "cert"
			}
			return nil, fail(field+"."+missing, errors.New(`"cert" and "key" go together; this player has only one`))
		}
		if ps.Cert != "" {
			p.Cert, p.Key = resolve(ps.Cert), resolve(ps.Key)
			p.certField, p.keyField = field+".cert", field+".key"
		} else if certDir != "" {
			p.Cert, p.Key = CertFiles(certDir, name)
			p.certField, p.keyField = "cert_dir", "cert_dir"
		}
		c.players[name] = p
	}

	if len(addrs) == 0 {
		return nil, fail("players", errors.New(`no player has an address: at least the servers must listen ("host:port")`))
	}
	dataOwners := slices.ContainsFunc(c.names, func(n string) bool { return RoleOf(n) == RoleDataOwner })
	c.openMembership = !dataOwners
	if spec.OpenMembership != nil {
		c.openMembership = *spec.OpenMembership
	}
	switch {
	case spec.MaxMembers < 0:
		return nil, fail("max_members", fmt.Errorf("negative count %d", spec.MaxMembers))
	case spec.MaxMembers > MaxMembersLimit:
		return nil, fail("max_members", fmt.Errorf("%d is above the limit of %d", spec.MaxMembers, MaxMembersLimit))
	case spec.MaxMembers > 0 && !c.openMembership:
		why := `"open_membership" is false`
		if spec.OpenMembership == nil {
			why = `the config lists data owners, so open membership is off unless "open_membership" is true`
		}
		return nil, fail("max_members", fmt.Errorf("max_members has no effect: %s", why))
	case spec.MaxMembers == 0:
		c.maxMembers = DefaultMaxMembers
	default:
		c.maxMembers = spec.MaxMembers
	}
	if spec.MinOwners != 0 && spec.MinOwners < 2 {
		return nil, fail("min_owners", fmt.Errorf("%d: want at least 2; a mean over one data owner is that owner's input", spec.MinOwners))
	}
	c.minOwners = spec.MinOwners
	switch {
	case c.connectTimeout < 0:
		return nil, fail("connect_timeout", fmt.Errorf("negative duration %s", c.connectTimeout))
	case c.connectTimeout == 0:
		c.connectTimeout = DefaultConnectTimeout
	}
	switch {
	case c.messageTimeout < 0:
		return nil, fail("message_timeout", fmt.Errorf("negative duration %s", c.messageTimeout))
	case c.messageTimeout == 0:
		c.messageTimeout = DefaultMessageTimeout
	}
	switch {
	case c.maxMessageBytes < 0:
		return nil, fail("max_message_bytes", fmt.Errorf("negative size %d", c.maxMessageBytes))
	case c.maxMessageBytes > MaxMessageBytesLimit:
		return nil, fail("max_message_bytes", fmt.Errorf("%d is above the limit of %d", c.maxMessageBytes, MaxMessageBytesLimit))
	case c.maxMessageBytes == 0:
		c.maxMessageBytes = DefaultMaxMessageBytes
	}
	return c, nil
}

// errNoAddress is the error of an empty address in a file.
var errNoAddress = errors.New(`empty address; want "host:port" (a player that only dials out is an object without "address", such as {"cert": ..., "key": ...} or {})`)

// checkAddress checks a host:port and returns a normalised form for
// duplicate detection. A listen address may leave the host empty or
// unspecified (0.0.0.0); an address other players dial may not.
func checkAddress(addr string, listen bool) (string, error) {
	if addr == "" {
		return "", errors.New(`missing address; want "host:port"`)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("address %q: want \"host:port\": %w", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Errorf("address %q: port %q is not a number from 1 to 65535", addr, port)
	}
	if host == "" {
		if listen {
			return ":" + port, nil
		}
		return "", fmt.Errorf("address %q: empty host", addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() && !listen {
			return "", fmt.Errorf("address %q: %s is not an address other players can dial (put it in \"listen\")", addr, host)
		}
		return net.JoinHostPort(ip.Unmap().String(), port), nil
	}
	if err := checkHostname(host); err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	return net.JoinHostPort(strings.ToLower(host), port), nil
}

// checkHostname accepts DNS names: dot-separated labels of letters,
// digits, '-' and '_', each 1 to 63 bytes, 253 bytes in all.
func checkHostname(host string) error {
	h := strings.TrimSuffix(host, ".")
	if len(h) == 0 || len(h) > 253 {
		return fmt.Errorf("host %q is not a valid hostname or IP address", host)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host %q is not a valid hostname or IP address", host)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host %q is not a valid hostname or IP address", host)
			}
		}
	}
	return nil
}

// A config file is read in two passes. scan reads it as a stream of JSON
// tokens: it checks the syntax, refuses duplicate keys (which
// encoding/json would silently collapse) and notes where every member
// starts. Then encoding/json decodes each member's value into the field of
// Spec or PlayerSpec that its JSON tag names. Decoding member by member,
// rather than the whole file at once with DisallowUnknownFields, is what
// lets every error name its field and line: encoding/json reports an
// unknown field with neither, matches keys without regard to case, leaves
// map keys out of UnmarshalTypeError.Field and passes UnmarshalText errors
// on bare.

// maxDepth bounds the nesting of a config file. Three levels are used
// (settings, players, a player's fields); the rest leaves room for
// mistakes to be reported as type errors.
const maxDepth = 16

// parser reads one config file.
type parser struct {
	data []byte
	file string
	pos  map[string]int // field path -> byte offset, for errors found later
}

// member is one member of a JSON object.
type member struct {
	key            string
	keyOff, valOff int      // byte offsets of the key and of the value
	raw            []byte   // the value
	members        []member // the value's members, when it is an object
}

// frame is an object or array that scan is inside.
type frame struct {
	field   string         // JSON path, for errors
	start   int            // offset of the '{' or '['
	obj     bool           // an object, not an array
	members []member       // of an object
	seen    map[string]int // of an object: key -> offset
	open    *member        // of an object: the member whose value is being read
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func (p *parser) errAt(off int, field string, err error) *ConfigError {
	line, col := lineCol(p.data, off)
	return &ConfigError{File: p.file, Line: line, Column: col, Field: field, Err: err}
}

// locate returns the line and column of a field path, or of the nearest
// enclosing field that has one ("players.x.cert" -> "players.x"); zero if
// none does.
func (p *parser) locate(field string) (int, int) {
	for {
		if off, ok := p.pos[field]; ok {
			return lineCol(p.data, off)
		}
		i := strings.LastIndexByte(field, '.')
		if i < 0 {
			return 0, 0
		}
		field = field[:i]
	}
}

// lineCol turns a byte offset into a 1-based line and column.
func lineCol(data []byte, off int) (int, int) {
	off = min(max(off, 0), len(data))
	line := 1 + bytes.Count(data[:off], []byte{'\n'})
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// skip moves an offset past whitespace, ',' and ':' to the start of the
// next token.
func skip(data []byte, off int) int {
	for off < len(data) {
		switch data[off] {
		case ' ', '\t', '\n', '\r', ',', ':':
			off++
		default:
			return off
		}
	}
	return off
}

// scan reads the file as JSON tokens and returns the members of its one
// top-level object.
func (p *parser) scan() ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(p.data))
	dec.UseNumber() // numbers are judged when decoded, not here
	var stack []*frame
	for {
		off := skip(p.data, int(dec.InputOffset()))
		var top *frame
		field := ""
		if len(stack) > 0 {
			top = stack[len(stack)-1]
			field = top.field
			if top.open != nil {
				field = join(field, top.open.key)
			}
		}
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, p.errAt(len(p.data), field, errors.New("malformed JSON: unexpected end of input"))
			}
			// The decoder's offsets inside a value are not reliable;
			// the start of the token that failed is.
			return nil, p.errAt(off, field, fmt.Errorf("malformed JSON: %w", err))
		}
		if top == nil && tok != json.Delim('{') {
			return nil, p.errAt(off, "", fmt.Errorf("want a JSON object, got %s", describe(p.data[off:])))
		}
		if top != nil && top.obj && top.open == nil && tok != json.Delim('}') {
			key := tok.(string) // the decoder allows only strings here
			if first, dup := top.seen[key]; dup {
				line, _ := lineCol(p.data, first)
				return nil, p.errAt(off, join(top.field, key), fmt.Errorf("duplicate key %q (first on line %d)", key, line))
			}
			top.seen[key] = off
			top.open = &member{key: key, keyOff: off}
			continue
		}

		// tok starts a value, or ends the innermost object or array.
		start, members := off, []member(nil)
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) == maxDepth {
				return nil, p.errAt(off, field, fmt.Errorf("malformed JSON: nested deeper than %d levels", maxDepth))
			}
			f := &frame{field: field, start: off, obj: tok == json.Delim('{')}
			if f.obj {
				f.seen = make(map[string]int)
			}
			stack = append(stack, f)
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			start, members = top.start, top.members
			if len(stack) == 0 {
				end := skip(p.data, int(dec.InputOffset()))
				if _, err := dec.Token(); err != io.EOF {
					return nil, p.errAt(end, "", errors.New("malformed JSON: data after the top-level object"))
				}
				return members, nil
			}
			top = stack[len(stack)-1]
		}
		if top.obj { // the value of top.open is complete
			m := top.open
			m.valOff, m.raw, m.members = start, p.data[start:dec.InputOffset()], members
			top.members = append(top.members, *m)
			top.open = nil
		}
	}
}

// describe names the JSON type of a value for error messages.
func describe(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func (p *parser) parse() (Spec, error) {
	if len(bytes.TrimSpace(p.data)) == 0 {
		return Spec{}, &ConfigError{File: p.file, Err: errors.New("empty file; want a JSON object of players")}
	}
	top, err := p.scan()
	if err != nil {
		return Spec{}, err
	}
	for _, m := range top {
		if m.key == "players" && m.raw[0] == '{' {
			var spec Spec
			return spec, p.fields(top, "", &spec)
		}
	}
	return p.flat(top)
}

// flat reads TF Encrypted's hostmap: {"name": "host:port", ...}.
func (p *parser) flat(top []member) (Spec, error) {
	spec := Spec{Players: make(map[string]PlayerSpec, len(top))}
	for _, m := range top {
		field := "players." + m.key
		p.pos[field] = m.keyOff
		p.pos[field+".address"] = m.valOff
		if m.raw[0] != '"' {
			msg := fmt.Sprintf(`want a "host:port" string, got %s (settings need the extended form {"players": {...}, ...})`, describe(m.raw))
			if s := nearest(m.key, jsonNames(reflect.TypeFor[Spec]())); s != "" && s != m.key {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			return Spec{}, p.errAt(m.valOff, m.key, errors.New(msg))
		}
		var ps PlayerSpec
		if err := p.value(m, m.key, &ps.Address, false); err != nil {
			return Spec{}, err
		}
		if ps.Address == "" {
			return Spec{}, p.errAt(m.valOff, field+".address", errNoAddress)
		}
		spec.Players[m.key] = ps
	}
	return spec, nil
}

// jsonNames returns the JSON names of a struct type's fields, in order.
func jsonNames(t reflect.Type) []string {
	names := make([]string, t.NumField())
	for i := range names {
		names[i], _, _ = strings.Cut(t.Field(i).Tag.Get("json"), ",")
	}
	return names
}

// fields decodes the members of a JSON object at path field into the
// struct dst points to, each member into the field its JSON tag names.
func (p *parser) fields(members []member, field string, dst any) error {
	v := reflect.ValueOf(dst).Elem()
	names := jsonNames(v.Type())
	for _, m := range members {
		sub := join(field, m.key)
		i := slices.Index(names, m.key)
		if i < 0 {
			msg := fmt.Sprintf("unknown field %q; known fields are %s", m.key, strings.Join(names, ", "))
			if s := nearest(m.key, names); s != "" {
				msg = fmt.Sprintf("unknown field %q; did you mean %q?", m.key, s)
			}
			return p.errAt(m.keyOff, sub, errors.New(msg))
		}
		p.pos[sub] = m.valOff
		switch dst := v.Field(i).Addr().Interface().(type) {
		case *map[string]PlayerSpec:
			players, err := p.players(m, sub)
			if err != nil {
				return err
			}
			*dst = players
		default:
			path := v.Type().Field(i).Tag.Get("config") == "path"
			if err := p.value(m, sub, dst, path); err != nil {
				return err
			}
		}
	}
	return nil
}

// value decodes one member's value into dst. A path may not be given as
// an empty string: leaving the field out is how to say "none".
func (p *parser) value(m member, field string, dst any, path bool) error {
	var want string
	switch dst.(type) {
	case *string:
		want = "a string"
	case *Duration:
		want = `a duration string such as "30s"`
	case *int64, *int:
		want = "a whole number"
	case *bool, **bool:
		want = "true or false"
	default:
		want = fmt.Sprintf("a %v", reflect.TypeOf(dst).Elem())
	}
	got := describe(m.raw)
	if got == "a number" {
		got = fmt.Sprintf("%.32s", m.raw)
	}
	if got == "null" { // encoding/json would take null for "absent"
		return p.errAt(m.valOff, field, fmt.Errorf("want %s, got null", want))
	}
	if err := json.Unmarshal(m.raw, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			err = fmt.Errorf("want %s, got %s", want, got)
		}
		return p.errAt(m.valOff, field, err)
	}
	if s, ok := dst.(*string); ok && path && *s == "" {
		return p.errAt(m.valOff, field, errors.New("empty path; leave the field out instead"))
	}
	return nil
}

// players reads the "players" object of the extended form: each player is
// an address string or an object of PlayerSpec fields.
func (p *parser) players(m member, field string) (map[string]PlayerSpec, error) {
	out := make(map[string]PlayerSpec, len(m.members))
	for _, pm := range m.members {
		sub := join(field, pm.key)
		p.pos[sub] = pm.keyOff
		var ps PlayerSpec
		switch pm.raw[0] {
		case '"':
			p.pos[sub+".address"] = pm.valOff
			if err := p.value(pm, sub, &ps.Address, false); err != nil {
				return nil, err
			}
			if ps.Address == "" {
				return nil, p.errAt(pm.valOff, sub+".address", errNoAddress)
			}
		case '{':
			if err := p.fields(pm.members, sub, &ps); err != nil {
				return nil, err
			}
			// Leaving "address" out is how to say the player only
			// dials out; an empty one is more likely a slip.
			for _, f := range pm.members {
				if f.key == "address" && ps.Address == "" {
					return nil, p.errAt(f.valOff, sub+".address", errNoAddress)
				}
			}
		default:
			return nil, p.errAt(pm.valOff, sub, fmt.Errorf(`want a "host:port" string or an object, got %s`, describe(pm.raw)))
		}
		out[pm.key] = ps
	}
	return out, nil
}
