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
		return err
	}
	*d = Duration(v)
	return nil
}

// Spec is the literal form of the extended config, as written in JSON.
// Build a checked Config from it with NewConfig; zero fields take their
// defaults. A Spec is a plain value, not safe for concurrent mutation.
type Spec struct {
	// Players maps each player name to where it runs.
	Players map[string]PlayerSpec `json:"players"`
	// CA is the PEM file of the certificate authority all players trust.
	CA string `json:"ca,omitempty"`
	// CertDir is a directory laid out as DIR/ca.pem, DIR/NAME.pem,
	// DIR/NAME-key.pem; it supplies CA, Cert and Key where those are empty.
	CertDir string `json:"cert_dir,omitempty"`
	// ConnectTimeout bounds the wait for all peers at start-up.
	ConnectTimeout Duration `json:"connect_timeout,omitempty"`
	// MessageTimeout bounds the wait for one message.
	MessageTimeout Duration `json:"message_timeout,omitempty"`
	// MaxMessageBytes is the largest message a player accepts.
	MaxMessageBytes int64 `json:"max_message_bytes,omitempty"`
	// Insecure runs without TLS: no encryption, no authentication. For
	// trying things out only.
	Insecure bool `json:"insecure,omitempty"`
}

// PlayerSpec is one player of a Spec.
type PlayerSpec struct {
	// Address is the host:port the other players dial.
	Address string `json:"address"`
	// Listen is the host:port the player binds, when it differs from
	// Address (for example "0.0.0.0:4440" behind NAT). The host may be
	// empty.
	Listen string `json:"listen,omitempty"`
	// Cert and Key are the player's PEM certificate and private key.
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
}

// Player is one checked player of a Config. It is a plain value: changing
// a copy does not change the Config.
type Player struct {
	// Name is the player's name.
	Name string
	// Address is the host:port the other players dial.
	Address string
	// Listen is the host:port the player binds; it equals Address unless
	// the config says otherwise.
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
	return fmt.Errorf("%w %q: %s has %s", ErrUnknownPlayer, name, where, strings.Join(c.names, ", "))
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

// Fingerprint returns a SHA-256 digest of the sorted player names. Players
// compare it at start-up to catch hosts that run with different player
// lists. Addresses are left out on purpose: hosts may reach one another
// under different names.
func (c *Config) Fingerprint() [32]byte {
	h := sha256.New()
	io.WriteString(h, "shareflow players v1\n")
	for _, n := range c.names {
		io.WriteString(h, n)
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
	for name, p := range out.players {
		p.Cert, p.Key = CertFiles(abs, name)
		p.certField, p.keyField = field, field
		out.players[name] = p
	}
	return out, nil
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
	fail := func(field string, err error) error {
		e := &ConfigError{File: file, Field: field, Err: err}
		if locate != nil {
			e.Line, e.Column = locate(field)
		}
		return e
	}
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
	}
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

	addrs := make(map[string]string) // normalised address -> player
	for _, name := range c.names {
		ps := spec.Players[name]
		field := "players." + name
		if err := CheckName(name); err != nil {
			return nil, fail(field, err)
		}
		norm, err := checkAddress(ps.Address, false)
		if err != nil {
			return nil, fail(field+".address", err)
		}
		if other, ok := addrs[norm]; ok {
			return nil, fail(field+".address", fmt.Errorf("%q is also the address of player %q", ps.Address, other))
		}
		addrs[norm] = name
		p := Player{Name: name, Address: ps.Address, Listen: ps.Address}
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

// parser reads the JSON of a config with json.Decoder tokens, so that it
// sees duplicate keys (which encoding/json would silently collapse) and
// knows where every value starts.
type parser struct {
	data []byte
	file string
	pos  map[string]int // field path -> byte offset of its value
}

// entry is one member of a JSON object.
type entry struct {
	key    string
	raw    []byte
	keyOff int // absolute offset of the key
	valOff int // absolute offset of the value
}

func (p *parser) errAt(off int, field string, err error) error {
	line, col := lineCol(p.data, off)
	return &ConfigError{File: p.file, Line: line, Column: col, Field: field, Err: err}
}

func (p *parser) locate(field string) (int, int) {
	off, ok := p.pos[field]
	for !ok && field != "" {
		// Fall back to the enclosing field: "players.x.cert" -> "players.x".
		i := strings.LastIndexByte(field, '.')
		if i < 0 {
			return 0, 0
		}
		field = field[:i]
		off, ok = p.pos[field]
	}
	if !ok {
		return 0, 0
	}
	return lineCol(p.data, off)
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

// syntaxErr converts a decoder error at stream offset base into a
// ConfigError with a position.
func (p *parser) syntaxErr(err error, base int, field string) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return p.errAt(base+int(se.Offset), field, fmt.Errorf("malformed JSON: %w", err))
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return p.errAt(len(p.data), field, errors.New("malformed JSON: unexpected end of input"))
	}
	return p.errAt(base, field, fmt.Errorf("malformed JSON: %w", err))
}

// object reads the JSON object raw (starting at absolute offset base) and
// returns its members in order, refusing duplicate keys.
func (p *parser) object(raw []byte, base int, field string) ([]entry, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	start := skip(raw, 0)
	tok, err := dec.Token()
	if err != nil {
		return nil, p.syntaxErr(err, base, field)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, p.errAt(base+start, field, fmt.Errorf("want a JSON object, got %s", describe(raw[start:])))
	}
	var out []entry
	seen := make(map[string]int)
	for dec.More() {
		keyOff := base + skip(raw, int(dec.InputOffset()))
		tok, err := dec.Token()
		if err != nil {
			return nil, p.syntaxErr(err, base, field)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, p.errAt(keyOff, field, errors.New("malformed JSON: object key is not a string"))
		}
		sub := key
		if field != "" {
			sub = field + "." + key
		}
		if first, dup := seen[key]; dup {
			line, _ := lineCol(p.data, first)
			return nil, p.errAt(keyOff, sub, fmt.Errorf("duplicate key %q (first on line %d)", key, line))
		}
		seen[key] = keyOff
		valOff := base + skip(raw, int(dec.InputOffset()))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, p.syntaxErr(err, base, sub)
		}
		out = append(out, entry{key: key, raw: v, keyOff: keyOff, valOff: valOff})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, p.syntaxErr(err, base, field)
	}
	if field == "" {
		// Top level: nothing may follow the object.
		if _, err := dec.Token(); err != io.EOF {
			off := base + skip(raw, int(dec.InputOffset()))
			if err != nil {
				return nil, p.syntaxErr(err, base, field)
			}
			return nil, p.errAt(off, "", errors.New("malformed JSON: data after the top-level object"))
		}
	}
	return out, nil
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

func (p *parser) str(e entry, field string) (string, error) {
	if len(e.raw) == 0 || e.raw[0] != '"' {
		return "", p.errAt(e.valOff, field, fmt.Errorf("want a string, got %s", describe(e.raw)))
	}
	var s string
	if err := json.Unmarshal(e.raw, &s); err != nil {
		return "", p.syntaxErr(err, e.valOff, field)
	}
	return s, nil
}

func (p *parser) parse() (Spec, error) {
	if len(bytes.TrimSpace(p.data)) == 0 {
		return Spec{}, &ConfigError{File: p.file, Err: errors.New("empty file; want a JSON object of players")}
	}
	top, err := p.object(p.data, 0, "")
	if err != nil {
		return Spec{}, err
	}
	extended := false
	for _, e := range top {
		if e.key == "players" && len(e.raw) > 0 && e.raw[0] == '{' {
			extended = true
		}
	}
	if !extended {
		return p.flat(top)
	}
	return p.extended(top)
}

// flat reads TF Encrypted's hostmap: {"name": "host:port", ...}.
func (p *parser) flat(top []entry) (Spec, error) {
	spec := Spec{Players: make(map[string]PlayerSpec, len(top))}
	for _, e := range top {
		field := "players." + e.key
		p.pos[field] = e.keyOff
		p.pos[field+".address"] = e.valOff
		if len(e.raw) == 0 || e.raw[0] != '"' {
			return Spec{}, p.errAt(e.valOff, e.key, fmt.Errorf(`want a "host:port" string, got %s (settings need the extended form {"players": {...}, ...})`, describe(e.raw)))
		}
		addr, err := p.str(e, e.key)
		if err != nil {
			return Spec{}, err
		}
		spec.Players[e.key] = PlayerSpec{Address: addr}
	}
	return spec, nil
}

// extended reads {"players": {...}, "ca": ..., ...}.
func (p *parser) extended(top []entry) (Spec, error) {
	var spec Spec
	for _, e := range top {
		p.pos[e.key] = e.valOff
		switch e.key {
		case "players":
			players, err := p.players(e)
			if err != nil {
				return Spec{}, err
			}
			spec.Players = players
		case "ca", "cert_dir":
			s, err := p.str(e, e.key)
			if err != nil {
				return Spec{}, err
			}
			if s == "" {
				return Spec{}, p.errAt(e.valOff, e.key, errors.New("empty path"))
			}
			if e.key == "ca" {
				spec.CA = s
			} else {
				spec.CertDir = s
			}
		case "connect_timeout", "message_timeout":
			s, err := p.str(e, e.key)
			if err != nil {
				return Spec{}, p.errAt(e.valOff, e.key, fmt.Errorf(`want a duration string such as "30s", got %s`, describe(e.raw)))
			}
			d, err := time.ParseDuration(s)
			if err != nil {
				return Spec{}, p.errAt(e.valOff, e.key, fmt.Errorf(`bad duration %q; want a Go duration such as "30s" or "2m"`, s))
			}
			if e.key == "connect_timeout" {
				spec.ConnectTimeout = Duration(d)
			} else {
				spec.MessageTimeout = Duration(d)
			}
		case "max_message_bytes":
			if describe(e.raw) != "a number" {
				return Spec{}, p.errAt(e.valOff, e.key, fmt.Errorf("want a whole number of bytes, got %s", describe(e.raw)))
			}
			n, err := strconv.ParseInt(string(e.raw), 10, 64)
			if err != nil {
				return Spec{}, p.errAt(e.valOff, e.key, fmt.Errorf("want a whole number of bytes, got %s", e.raw))
			}
			spec.MaxMessageBytes = n
		case "insecure":
			switch string(e.raw) {
			case "true":
				spec.Insecure = true
			case "false":
			default:
				return Spec{}, p.errAt(e.valOff, e.key, fmt.Errorf("want true or false, got %s", describe(e.raw)))
			}
		default:
			return Spec{}, p.errAt(e.keyOff, e.key, errors.New("unknown field; known fields are players, ca, cert_dir, connect_timeout, message_timeout, max_message_bytes, insecure"))
		}
	}
	return spec, nil
}

func (p *parser) players(e entry) (map[string]PlayerSpec, error) {
	members, err := p.object(e.raw, e.valOff, "players")
	if err != nil {
		return nil, err
	}
	out := make(map[string]PlayerSpec, len(members))
	for _, m := range members {
		field := "players." + m.key
		p.pos[field] = m.keyOff
		if len(m.raw) > 0 && m.raw[0] == '"' {
			addr, err := p.str(m, field)
			if err != nil {
				return nil, err
			}
			p.pos[field+".address"] = m.valOff
			out[m.key] = PlayerSpec{Address: addr}
			continue
		}
		if len(m.raw) == 0 || m.raw[0] != '{' {
			return nil, p.errAt(m.valOff, field, fmt.Errorf(`want a "host:port" string or an object, got %s`, describe(m.raw)))
		}
		fields, err := p.object(m.raw, m.valOff, field)
		if err != nil {
			return nil, err
		}
		var ps PlayerSpec
		for _, f := range fields {
			ff := field + "." + f.key
			p.pos[ff] = f.valOff
			var dst *string
			switch f.key {
			case "address":
				dst = &ps.Address
			case "listen":
				dst = &ps.Listen
			case "cert":
				dst = &ps.Cert
			case "key":
				dst = &ps.Key
			default:
				return nil, p.errAt(f.keyOff, ff, errors.New("unknown field; known fields are address, listen, cert, key"))
			}
			s, err := p.str(f, ff)
			if err != nil {
				return nil, err
			}
			*dst = s
		}
		out[m.key] = ps
	}
	return out, nil
}
