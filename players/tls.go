package players

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// URIScheme and URIHost make up the URI SAN that names a player:
// shareflow://player/NAME.
const (
	URIScheme = "shareflow"
	URIHost   = "player"
)

var (
	// ErrNoPlayerName is returned by PlayerFromCert for a certificate that
	// names no player.
	ErrNoPlayerName = errors.New("players: certificate names no player")
	// ErrInsecure is returned when TLS material is asked of an insecure
	// config.
	ErrInsecure = errors.New("players: config is insecure (no TLS)")
	// ErrPeerCertificate marks every error of the certificate checks of
	// ServerTLS and ClientTLS: the peer presented a certificate this
	// player refuses. Retrying cannot help, so a client that finds it
	// (errors.Is) in a failed handshake can give up at once.
	ErrPeerCertificate = errors.New("players: peer certificate refused")
)

// certError is a refusal of the peer's certificate. Its message is msg
// alone; it matches ErrPeerCertificate and its cause.
type certError struct {
	msg   string
	cause error
}

func (e *certError) Error() string { return e.msg }
func (e *certError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrPeerCertificate}
	}
	return []error{ErrPeerCertificate, e.cause}
}

// refuse returns a certError formatted like fmt.Errorf, whose cause is
// the %w argument, if any.
func refuse(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &certError{msg: err.Error(), cause: errors.Unwrap(err)}
}

// PlayerURI returns the URI SAN that names player name in a certificate.
func PlayerURI(name string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: URIHost, Path: "/" + name}
}

// PlayerFromCert returns the player named by cert: the NAME of its one URI
// SAN shareflow://player/NAME. Other URI SANs are ignored; a certificate
// with no such SAN, with two, or with a malformed one is refused. It does
// not verify the certificate; callers pass a verified leaf.
func PlayerFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", ErrNoPlayerName
	}
	name := ""
	for _, u := range cert.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		if u.Host != URIHost || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return "", fmt.Errorf("players: certificate %q: malformed player URI %q; want %s://%s/NAME", cert.Subject.CommonName, u.String(), URIScheme, URIHost)
		}
		n := u.Path[1:]
		if err := CheckName(n); err != nil {
			return "", fmt.Errorf("players: certificate %q: player URI %q: %w", cert.Subject.CommonName, u.String(), err)
		}
		if name != "" {
			return "", fmt.Errorf("players: certificate %q names two players, %q and %q", cert.Subject.CommonName, name, n)
		}
		name = n
	}
	if name == "" {
		return "", fmt.Errorf("%w (subject %q has no %s://%s/NAME URI SAN)", ErrNoPlayerName, cert.Subject.CommonName, URIScheme, URIHost)
	}
	return name, nil
}

// Identity is one player's loaded and checked TLS material: its
// certificate and key, and the CA it trusts. It is immutable and safe for
// concurrent use.
type Identity struct {
	cfg   *Config
	name  string
	cert  tls.Certificate
	roots *x509.CertPool
}

// LoadIdentity reads and checks the TLS material of player self: the CA
// file must hold CA certificates; the certificate and key files must
// match; the certificate must be signed by the CA, valid now, usable for
// both server and client authentication, and name self. Errors name the
// file and the config field it came from. A data owner the config does not
// list but admits (see Admits) finds its certificate and key in the
// certificate directory.
func (c *Config) LoadIdentity(self string) (*Identity, error) {
	if c.insecure {
		return nil, &ConfigError{File: c.file, Field: "insecure", Err: ErrInsecure}
	}
	p, err := c.Player(self)
	if err != nil {
		if c.Admits(self) != nil {
			return nil, &ConfigError{File: c.file, Field: "players", Err: err}
		}
		// A data owner the config does not list, joining under open
		// membership: its files are in the certificate directory.
		if c.certDir == "" {
			return nil, &ConfigError{File: c.file, Field: "cert_dir", Err: fmt.Errorf(`no certificate for data owner %q: it is not listed in the config, so its certificate and key are NAME.pem and NAME-key.pem in the certificate directory; set "cert_dir" in the config or give a certificate directory`, self)}
		}
		p = Player{Name: self, certField: "cert_dir", keyField: "cert_dir"}
		p.Cert, p.Key = CertFiles(c.certDir, self)
	}
	if c.ca == "" {
		return nil, &ConfigError{File: c.file, Field: "ca", Err: errors.New(`no CA certificate: set "ca" or "cert_dir" in the config, or give a certificate directory`)}
	}
	if p.Cert == "" {
		return nil, &ConfigError{File: c.file, Field: "players." + self + ".cert", Err: fmt.Errorf(`no certificate for player %q: set "cert" and "key" or "cert_dir" in the config, or give a certificate directory`, self)}
	}

	roots, err := loadCAs(c.ca)
	if err != nil {
		return nil, &ConfigError{File: c.file, Field: c.caField, Err: err}
	}
	certPEM, err := os.ReadFile(p.Cert)
	if err != nil {
		return nil, &ConfigError{File: c.file, Field: p.certField, Err: fmt.Errorf("reading certificate of player %q: %w", self, err)}
	}
	chain, err := parseCerts(certPEM, p.Cert)
	if err != nil {
		return nil, &ConfigError{File: c.file, Field: p.certField, Err: err}
	}
	keyPEM, err := os.ReadFile(p.Key)
	if err != nil {
		return nil, &ConfigError{File: c.file, Field: p.keyField, Err: fmt.Errorf("reading key of player %q: %w", self, err)}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &ConfigError{File: c.file, Field: p.keyField, Err: fmt.Errorf("key %s does not go with certificate %s: %w", p.Key, p.Cert, err)}
	}
	leaf := chain[0]
	pair.Leaf = leaf

	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
		if err != nil {
			return nil, &ConfigError{File: c.file, Field: p.certField, Err: fmt.Errorf("certificate %s does not verify against CA %s: %w", p.Cert, c.ca, err)}
		}
	}
	name, err := PlayerFromCert(leaf)
	if err != nil {
		return nil, &ConfigError{File: c.file, Field: p.certField, Err: fmt.Errorf("certificate %s: %w", p.Cert, err)}
	}
	if name != self {
		return nil, &ConfigError{File: c.file, Field: p.certField, Err: fmt.Errorf("certificate %s names player %q, but it is configured for player %q", p.Cert, name, self)}
	}
	return &Identity{cfg: c, name: self, cert: pair, roots: roots}, nil
}

// loadCAs reads a PEM file of CA certificates into a pool.
func loadCAs(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	certs, err := parseCerts(data, file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("CA file %s: certificate %q is not a CA certificate", file, c.Subject.CommonName)
		}
		pool.AddCert(c)
	}
	return pool, nil
}

// parseCerts reads every CERTIFICATE block of a PEM file; anything else in
// the file is an error.
func parseCerts(data []byte, file string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: unexpected PEM block %q; want CERTIFICATE", file, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in file", file)
	}
	return out, nil
}

// Player returns the name of the player the identity belongs to.
func (id *Identity) Player() string { return id.name }

// Certificate returns the identity's leaf certificate.
func (id *Identity) Certificate() *x509.Certificate { return id.cert.Leaf }

// ServerTLS returns the TLS configuration for the player's server:
// TLS 1.3 only, a client certificate signed by the CA required, and that
// certificate must name a peer the config admits (a player of the config,
// or with open membership any data owner) other than this one. The
// handler learns the caller's name from the verified certificate with
// PlayerFromCert. The errors of the certificate checks match
// ErrPeerCertificate.
func (id *Identity) ServerTLS() *tls.Config {
	cfg, self := id.cfg, id.name
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			name, err := verifiedPlayer(cs)
			if err != nil {
				return refuse("players: %s refuses client: %w", self, err)
			}
			if err := cfg.Admits(name); err != nil {
				if RoleOf(name) == RoleDataOwner && CheckName(name) == nil {
					return refuse("players: %s refuses client: certificate names data owner %q, which is not in the config, and the config does not admit unlisted data owners (open_membership is off)", self, name)
				}
				return refuse("players: %s refuses client: certificate names player %q, which is not in the config", self, name)
			}
			if name == self {
				return refuse("players: %s refuses client: certificate names this player itself", self)
			}
			return nil
		},
	}
}

// ClientTLS returns the TLS configuration for dialling player peer: TLS 1.3
// only, the player's own certificate offered, and the server's certificate
// must be signed by the CA, usable for server authentication, and name
// peer both as its shareflow://player/ URI and as a DNS name (peer is also
// the TLS server name). Every refusal matches ErrPeerCertificate; one of a
// certificate naming another player reads
//
//	players: SELF refuses server: certificate names player "OTHER", want "PEER"
//
// The checks run in VerifyConnection, in that order, in place of crypto/tls's
// own (InsecureSkipVerify is set for that alone: nothing is skipped), so
// that a certificate of the wrong player is reported as such rather than
// as a host name mismatch.
func (id *Identity) ClientTLS(peer string) (*tls.Config, error) {
	if !id.cfg.Has(peer) {
		return nil, id.cfg.unknown(peer)
	}
	self, roots := id.name, id.roots
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		RootCAs:      roots,
		ServerName:   peer,
		// The chain, the key usage and the server name are checked
		// below, in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return refuse("players: %s refuses server %q: no certificate", self, peer)
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if err != nil {
				return refuse("players: %s refuses server %q: %w", self, peer, err)
			}
			name, err := PlayerFromCert(leaf)
			if err != nil {
				return refuse("players: %s refuses server %q: %w", self, peer, err)
			}
			if name != peer {
				return refuse("players: %s refuses server: certificate names player %q, want %q", self, name, peer)
			}
			if err := leaf.VerifyHostname(peer); err != nil {
				return refuse("players: %s refuses server %q: its certificate lacks the DNS name %q: %w", self, peer, peer, err)
			}
			return nil
		},
	}, nil
}

func verifiedPlayer(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", errors.New("no verified certificate")
	}
	return PlayerFromCert(cs.VerifiedChains[0][0])
}

// ServerTLS loads the identity of player self from cfg and returns its
// server TLS configuration; see Identity.ServerTLS.
func ServerTLS(cfg *Config, self string) (*tls.Config, error) {
	id, err := cfg.LoadIdentity(self)
	if err != nil {
		return nil, err
	}
	return id.ServerTLS(), nil
}

// ClientTLS loads the identity of player self from cfg and returns its TLS
// configuration for dialling peer; see Identity.ClientTLS.
func ClientTLS(cfg *Config, self, peer string) (*tls.Config, error) {
	id, err := cfg.LoadIdentity(self)
	if err != nil {
		return nil, err
	}
	return id.ClientTLS(peer)
}
