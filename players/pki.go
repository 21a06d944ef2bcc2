package players

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/shareflow/shareflow/internal/atomicfile"
)

// Validity defaults of GenerateDevPKI.
const (
	// DefaultCertValidity is how long a player certificate made by
	// GenerateDevPKI stays valid.
	DefaultCertValidity = 365 * 24 * time.Hour
	// DevCAValidity is how long the CA made by GenerateDevPKI stays valid
	// (at least as long as the player certificates).
	DevCAValidity = 5 * 365 * 24 * time.Hour
)

// CertSpec asks GenerateDevPKI for one player's certificate.
type CertSpec struct {
	// Player is the player's name, carried as URI SAN
	// shareflow://player/NAME and DNS SAN NAME.
	Player string
	// Hosts are the host names and IP addresses the player is reached at,
	// carried as DNS and IP SANs.
	Hosts []string
}

// CertSpecs returns one CertSpec per player of the config, with the host
// of the player's address (and of its listen address, when that names a
// specific host).
func (c *Config) CertSpecs() []CertSpec {
	out := make([]CertSpec, 0, len(c.names))
	for _, p := range c.Players() {
		var hosts []string
		for _, addr := range []string{p.Address, p.Listen} {
			host, _, err := net.SplitHostPort(addr)
			if err != nil || host == "" {
				continue
			}
			if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
				continue
			}
			if !slices.Contains(hosts, host) {
				hosts = append(hosts, host)
			}
		}
		out = append(out, CertSpec{Player: p.Name, Hosts: hosts})
	}
	return out
}

// DevPKIOptions tunes GenerateDevPKI. The zero value is ready to use.
type DevPKIOptions struct {
	// Force replaces existing files. Without it GenerateDevPKI refuses to
	// overwrite anything, above all an existing CA.
	Force bool
	// Validity is how long player certificates stay valid; zero means
	// DefaultCertValidity.
	Validity time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// DevPKI lists the files GenerateDevPKI wrote.
type DevPKI struct {
	// CACert and CAKey are the CA certificate and private key.
	CACert, CAKey string
	// Certs lists one certificate and key per player, in the order asked.
	Certs []CertFilePair
}

// CertFilePair is the certificate and key file of one player.
type CertFilePair struct {
	Player, Cert, Key string
}

// GenerateDevPKI makes a certificate authority and one certificate per
// player in dir, in the layout Config.WithCertDir expects: ca.pem,
// ca-key.pem, NAME.pem and NAME-key.pem. Keys are ECDSA P-256 from
// crypto/rand, written PKCS#8 with mode 0600; every file is written
// atomically (temporary file, sync, rename). Unless opts.Force is set, it
// refuses, before writing anything, if any of these files exists; the
// error then wraps fs.ErrExist.
//
// The result is meant for development and tests: the CA key sits next to
// the certificates. Production deployments should issue certificates from
// their own CA with the same naming scheme (see the package doc).
func GenerateDevPKI(dir string, specs []CertSpec, opts DevPKIOptions) (*DevPKI, error) {
	out, t0, validity, err := planIssue(dir, specs, opts, true)
	if err != nil {
		return nil, err
	}

	// Make everything in memory first, then write.
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("players: dev PKI: CA key: %w", err)
	}
	caSerial, err := serial()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: "shareflow development CA", Organization: []string{"shareflow (development only)"}},
		NotBefore:             t0,
		NotAfter:              t0.Add(max(DevCAValidity, validity+time.Hour)),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("players: dev PKI: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("players: dev PKI: CA certificate: %w", err)
	}
	caKeyPEM, err := keyPEM(caKey)
	if err != nil {
		return nil, err
	}
	files, err := mintCerts(ca, caKey, specs, out.Certs, t0, validity)
	if err != nil {
		return nil, err
	}
	files = append([]pkiFile{
		{out.CACert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644},
		{out.CAKey, caKeyPEM, 0o600},
	}, files...)

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("players: dev PKI: %w", err)
	}
	if err := writeFiles(files); err != nil {
		return nil, err
	}
	return out, nil
}

// planIssue checks a request to GenerateDevPKI (withCA) or IssueCerts,
// and returns the files it will write, when the certificates start to be
// valid (an hour ago, to tolerate clock skew) and for how long. Unless
// opts.Force is set, it refuses if any of the files exists.
func planIssue(dir string, specs []CertSpec, opts DevPKIOptions, withCA bool) (out *DevPKI, t0 time.Time, validity time.Duration, err error) {
	if dir == "" {
		return nil, t0, 0, errors.New("players: dev PKI: empty directory")
	}
	if err := checkSpecs(specs); err != nil {
		return nil, t0, 0, err
	}
	validity = opts.Validity
	if validity == 0 {
		validity = DefaultCertValidity
	}
	if validity < 0 {
		return nil, t0, 0, fmt.Errorf("players: dev PKI: negative validity %s", validity)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	t0 = now().Add(-time.Hour).UTC().Truncate(time.Second) // tolerate clock skew

	out = &DevPKI{CACert: CAFile(dir), CAKey: CAKeyFile(dir)}
	for _, s := range specs {
		cert, key := CertFiles(dir, s.Player)
		out.Certs = append(out.Certs, CertFilePair{Player: s.Player, Cert: cert, Key: key})
	}
	if !opts.Force {
		var files []string
		if withCA {
			files = append(files, out.CACert, out.CAKey)
		}
		for _, c := range out.Certs {
			files = append(files, c.Cert, c.Key)
		}
		if err := refuseExisting(files); err != nil {
			return nil, t0, 0, err
		}
	}
	return out, t0, validity, nil
}

// pkiFile is a file GenerateDevPKI or IssueCerts writes.
type pkiFile struct {
	path string
	data []byte
	mode os.FileMode
}

// mintCerts makes the certificate and key of every spec, signed by ca,
// in memory, as the files of pairs (one a spec, in the same order).
func mintCerts(ca *x509.Certificate, caKey *ecdsa.PrivateKey, specs []CertSpec, pairs []CertFilePair, t0 time.Time, validity time.Duration) ([]pkiFile, error) {
	var files []pkiFile
	for i, s := range specs {
		certPEM, kp, err := mintCert(ca, caKey, s, t0, validity)
		if err != nil {
			return nil, err
		}
		files = append(files,
			pkiFile{pairs[i].Cert, certPEM, 0o644},
			pkiFile{pairs[i].Key, kp, 0o600})
	}
	return files, nil
}

// writeFiles writes every file atomically, in order.
func writeFiles(files []pkiFile) error {
	for _, f := range files {
		if err := atomicfile.WriteFile(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("players: dev PKI: %w", err)
		}
	}
	return nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("players: dev PKI: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // serials must be positive
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("players: dev PKI: encoding key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// mintCert makes a key and a certificate for s, signed by ca, valid from
// t0 for validity, and returns both PEM encoded.
func mintCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, s CertSpec, t0 time.Time, validity time.Duration) (certPEM, kp []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("players: dev PKI: key of %q: %w", s.Player, err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: s.Player, Organization: []string{"shareflow (development only)"}},
		NotBefore:    t0,
		NotAfter:     t0.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{s.Player},
		URIs:         []*url.URL{PlayerURI(s.Player)},
	}
	for _, h := range s.Hosts {
		if ip, err := netip.ParseAddr(h); err == nil {
			nip := net.IP(ip.Unmap().AsSlice())
			if !slices.ContainsFunc(tmpl.IPAddresses, nip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, nip)
			}
			continue
		}
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("players: dev PKI: certificate of %q: %w", s.Player, err)
	}
	kp, err = keyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), kp, nil
}

// checkSpecs checks the names and hosts of specs, and that their files
// cannot clash in one directory.
func checkSpecs(specs []CertSpec) error {
	if len(specs) == 0 {
		return errors.New("players: dev PKI: no players")
	}
	seen := make(map[string]bool)
	names := make([]string, len(specs))
	for i, s := range specs {
		if err := CheckName(s.Player); err != nil {
			return fmt.Errorf("players: dev PKI: %w", err)
		}
		if seen[s.Player] {
			return fmt.Errorf("players: dev PKI: player %q listed twice", s.Player)
		}
		seen[s.Player] = true
		names[i] = s.Player
		for _, h := range s.Hosts {
			if _, err := netip.ParseAddr(h); err != nil {
				if err := checkHostname(h); err != nil {
					return fmt.Errorf("players: dev PKI: player %q: %w", s.Player, err)
				}
			}
		}
	}
	if err := certDirClash(names); err != nil {
		return fmt.Errorf("players: dev PKI: %w", err)
	}
	return nil
}

// refuseExisting returns an error wrapping fs.ErrExist for the first of
// files that exists.
func refuseExisting(files []string) error {
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("players: dev PKI: refusing to overwrite %s: %w", f, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("players: dev PKI: %w", err)
		}
	}
	return nil
}

// IssueCerts makes more player certificates with the CA that
// GenerateDevPKI left in dir (ca.pem and ca-key.pem), in the same layout,
// without touching the CA or any other player's files: this is how data
// owners that join an open federation get their certificates once the
// servers run. Unless opts.Force is set, it refuses, before writing
// anything, if a certificate or key it would write exists; the error then
// wraps fs.ErrExist. It refuses a validity that would outlast the CA. The
// result lists the CA (not rewritten) and the files written.
func IssueCerts(dir string, specs []CertSpec, opts DevPKIOptions) (*DevPKI, error) {
	out, t0, validity, err := planIssue(dir, specs, opts, false)
	if err != nil {
		return nil, err
	}
	ca, caKey, err := loadCA(out.CACert, out.CAKey)
	if err != nil {
		return nil, err
	}
	if end := t0.Add(validity); end.After(ca.NotAfter) {
		return nil, fmt.Errorf("players: dev PKI: certificates valid for %s would outlast the CA %s, valid until %s; ask for a shorter validity", validity, out.CACert, ca.NotAfter.Format(time.DateOnly))
	}
	files, err := mintCerts(ca, caKey, specs, out.Certs, t0, validity)
	if err != nil {
		return nil, err
	}
	if err := writeFiles(files); err != nil {
		return nil, err
	}
	return out, nil
}

// loadCA reads the CA certificate and its ECDSA key, and checks that
// they go together and that the certificate is a CA's.
func loadCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("players: dev PKI: reading the CA certificate (made by GenerateDevPKI, or shareflow certs): %w", err)
	}
	certs, err := parseCerts(certPEM, certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("players: dev PKI: %w", err)
	}
	ca := certs[0]
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return nil, nil, fmt.Errorf("players: dev PKI: %s: certificate %q is not a CA certificate", certFile, ca.Subject.CommonName)
	}
	keyData, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("players: dev PKI: reading the CA key: %w", err)
	}
	block, _ := pem.Decode(keyData)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, nil, fmt.Errorf("players: dev PKI: %s: no PKCS#8 \"PRIVATE KEY\" PEM block", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("players: dev PKI: %s: %w", keyFile, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("players: dev PKI: %s: a %T, want an ECDSA key", keyFile, k)
	}
	if !key.PublicKey.Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("players: dev PKI: key %s does not go with CA certificate %s", keyFile, certFile)
	}
	return ca, key, nil
}
