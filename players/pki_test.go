package players

import (
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const threeHosts = `{"server0": "127.0.0.1:4440", "server1": "localhost:4441", "server2": "[::1]:4442"}`

// devPKI parses data and writes a dev PKI for it into a temporary
// directory; it returns the config with the certificate directory set.
func devPKI(t *testing.T, data string) (*Config, string) {
	t.Helper()
	c, err := ParseConfig([]byte(data), "hosts.json")
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "certs")
	_, err = GenerateDevPKI(dir, c.CertSpecs(), DevPKIOptions{})
	require.NoError(t, err)
	cc, err := c.WithCertDir(dir)
	require.NoError(t, err)
	return cc, dir
}

// readPEM returns the DER bytes of the first PEM block of file.
func readPEM(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block, "%s holds no PEM block", file)
	return block.Bytes
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(readPEM(t, file))
	require.NoError(t, err)
	return cert
}

func TestGenerateDevPKI(t *testing.T) {
	c, err := ParseConfig([]byte(threeHosts), "hosts.json")
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "certs")
	res, err := GenerateDevPKI(dir, c.CertSpecs(), DevPKIOptions{})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "ca.pem"), res.CACert)
	assert.Equal(t, filepath.Join(dir, "ca-key.pem"), res.CAKey)
	require.Len(t, res.Certs, 3)

	for _, f := range []string{res.CAKey, res.Certs[0].Key, res.Certs[1].Key, res.Certs[2].Key} {
		st, err := os.Stat(f)
		require.NoError(t, err)
		assert.Equal(t, fs.FileMode(0o600), st.Mode().Perm(), f)
	}
	st, err := os.Stat(res.CACert)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o644), st.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 8, "no temporary files left behind")

	ca := readCert(t, res.CACert)
	assert.True(t, ca.IsCA)
	s0 := readCert(t, filepath.Join(dir, "server0.pem"))
	assert.Equal(t, "server0", s0.Subject.CommonName)
	assert.Equal(t, []string{"server0"}, s0.DNSNames)
	require.Len(t, s0.IPAddresses, 1)
	assert.True(t, s0.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")))
	require.Len(t, s0.URIs, 1)
	assert.Equal(t, "shareflow://player/server0", s0.URIs[0].String())
	assert.ElementsMatch(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, s0.ExtKeyUsage)
	name, err := PlayerFromCert(s0)
	require.NoError(t, err)
	assert.Equal(t, "server0", name)

	s1 := readCert(t, filepath.Join(dir, "server1.pem"))
	assert.Equal(t, []string{"server1", "localhost"}, s1.DNSNames)
	require.NoError(t, s1.VerifyHostname("localhost"), "ordinary hostname verification works too")
	s2 := readCert(t, filepath.Join(dir, "server2.pem"))
	require.NoError(t, s2.VerifyHostname("::1"))

	// Every player's identity loads.
	cc, err := c.WithCertDir(dir)
	require.NoError(t, err)
	for _, n := range cc.Names() {
		id, err := cc.LoadIdentity(n)
		require.NoError(t, err, n)
		assert.Equal(t, n, id.Player())
		assert.Equal(t, n, id.Certificate().Subject.CommonName)
	}
}

func TestGenerateDevPKIRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	specs := []CertSpec{{Player: "a", Hosts: []string{"127.0.0.1"}}}
	_, err := GenerateDevPKI(dir, specs, DevPKIOptions{})
	require.NoError(t, err)
	before, err := os.ReadFile(CAFile(dir))
	require.NoError(t, err)

	_, err = GenerateDevPKI(dir, specs, DevPKIOptions{})
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrExist)
	assert.Contains(t, err.Error(), CAFile(dir))
	after, err := os.ReadFile(CAFile(dir))
	require.NoError(t, err)
	assert.Equal(t, before, after, "CA untouched")

	// Only a leaf exists: still refused, and nothing written.
	dir2 := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir2, "b-key.pem"), []byte("x"), 0o600))
	_, err = GenerateDevPKI(dir2, []CertSpec{{Player: "a"}, {Player: "b"}}, DevPKIOptions{})
	assert.ErrorIs(t, err, fs.ErrExist)
	_, err = os.Stat(CAFile(dir2))
	assert.ErrorIs(t, err, fs.ErrNotExist)

	_, err = GenerateDevPKI(dir, specs, DevPKIOptions{Force: true})
	require.NoError(t, err)
	after, err = os.ReadFile(CAFile(dir))
	require.NoError(t, err)
	assert.NotEqual(t, before, after, "CA replaced with Force")
}

func TestGenerateDevPKIBadInput(t *testing.T) {
	dir := t.TempDir()
	for name, specs := range map[string][]CertSpec{
		"no players":  nil,
		"bad name":    {{Player: "A"}},
		"twice":       {{Player: "a"}, {Player: "a"}},
		"bad host":    {{Player: "a", Hosts: []string{"a b"}}},
		"clash":       {{Player: "x"}, {Player: "x-key"}},
		"clash ca":    {{Player: "ca"}},
		"clash ca-ke": {{Player: "ca-key"}},
	} {
		_, err := GenerateDevPKI(dir, specs, DevPKIOptions{})
		assert.Error(t, err, name)
	}
	_, err := GenerateDevPKI("", []CertSpec{{Player: "a"}}, DevPKIOptions{})
	assert.Error(t, err)
	_, err = GenerateDevPKI(dir, []CertSpec{{Player: "a"}}, DevPKIOptions{Validity: -time.Hour})
	assert.Error(t, err)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries)
}

func TestLoadIdentityErrors(t *testing.T) {
	c, dir := devPKI(t, threeHosts)
	other := filepath.Join(t.TempDir(), "other")
	_, err := GenerateDevPKI(other, c.CertSpecs(), DevPKIOptions{})
	require.NoError(t, err)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a certificate"), 0o644))

	expired := filepath.Join(t.TempDir(), "expired")
	_, err = GenerateDevPKI(expired, c.CertSpecs(), DevPKIOptions{
		Validity: 24 * time.Hour,
		Now:      func() time.Time { return time.Now().Add(-48 * time.Hour) },
	})
	require.NoError(t, err)

	extended := func(ca, cert, key string) string {
		return `{"players": {"server0": {"address": "127.0.0.1:4440", "cert": "` + cert + `", "key": "` + key + `"},
			"server1": "127.0.0.1:4441"}, "ca": "` + ca + `"}`
	}
	s0c, s0k := CertFiles(dir, "server0")
	s1c, s1k := CertFiles(dir, "server1")
	oc, ok := CertFiles(other, "server0")
	ec, ek := CertFiles(expired, "server0")
	tests := []struct {
		name, config, field string
		contains            []string
	}{
		{"missing ca", extended(filepath.Join(dir, "nope.pem"), s0c, s0k), "ca", []string{"nope.pem", "no such file"}},
		{"garbage ca", extended(garbage, s0c, s0k), "ca", []string{"garbage.pem", "no PEM certificate"}},
		{"leaf as ca", extended(s1c, s0c, s0k), "ca", []string{"server1.pem", "not a CA certificate"}},
		{"missing cert", extended(CAFile(dir), filepath.Join(dir, "nope.pem"), s0k), "players.server0.cert", []string{"nope.pem"}},
		{"garbage cert", extended(CAFile(dir), garbage, s0k), "players.server0.cert", []string{"garbage.pem"}},
		{"missing key", extended(CAFile(dir), s0c, filepath.Join(dir, "nope-key.pem")), "players.server0.key", []string{"nope-key.pem"}},
		{"wrong key", extended(CAFile(dir), s0c, s1k), "players.server0.key", []string{"server1-key.pem", "server0.pem", "does not go with"}},
		{"other CA", extended(CAFile(dir), oc, ok), "players.server0.cert", []string{oc, "does not verify", "ca.pem"}},
		{"expired", extended(CAFile(expired), ec, ek), "players.server0.cert", []string{"expired"}},
		{"name mismatch", extended(CAFile(dir), s1c, s1k), "players.server0.cert", []string{`names player "server1"`, `configured for player "server0"`, "server1.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.config), "hosts.json")
			require.NoError(t, err)
			_, err = cfg.LoadIdentity("server0")
			require.Error(t, err)
			var ce *ConfigError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tt.field, ce.Field)
			assert.Contains(t, err.Error(), "hosts.json")
			for _, s := range tt.contains {
				assert.Contains(t, err.Error(), s)
			}
		})
	}

	_, err = c.LoadIdentity("mallory")
	assert.ErrorIs(t, err, ErrUnknownPlayer)
	_, err = c.WithInsecure(true).LoadIdentity("server0")
	assert.ErrorIs(t, err, ErrInsecure)
	bare, err := ParseConfig([]byte(threeHosts), "hosts.json")
	require.NoError(t, err)
	_, err = bare.LoadIdentity("server0")
	assert.ErrorContains(t, err, "no CA certificate")
}

// TestIssueCerts: certificates minted later with the CA in the directory
// verify like the first ones, leave the CA and the other players' files
// untouched, and are refused over existing files unless forced.
func TestIssueCerts(t *testing.T) {
	c, dir := devPKI(t, threeHosts)
	caBefore, err := os.ReadFile(CAFile(dir))
	require.NoError(t, err)
	s0Before, err := os.ReadFile(filepath.Join(dir, "server0.pem"))
	require.NoError(t, err)

	res, err := IssueCerts(dir, []CertSpec{{Player: "data-owner-0"}, {Player: "data-owner-1"}}, DevPKIOptions{})
	require.NoError(t, err)
	require.Len(t, res.Certs, 2)
	assert.Equal(t, filepath.Join(dir, "data-owner-1.pem"), res.Certs[1].Cert)
	caAfter, err := os.ReadFile(CAFile(dir))
	require.NoError(t, err)
	assert.Equal(t, caBefore, caAfter, "the CA is not rewritten")
	s0After, err := os.ReadFile(filepath.Join(dir, "server0.pem"))
	require.NoError(t, err)
	assert.Equal(t, s0Before, s0After, "other players' files are not rewritten")

	// The config lists no data owner, so it admits them, and each loads
	// its identity from the certificate directory.
	require.True(t, c.OpenMembership())
	id, err := c.LoadIdentity("data-owner-1")
	require.NoError(t, err)
	assert.Equal(t, "data-owner-1", id.Player())
	st, err := os.Stat(res.Certs[0].Key)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o600), st.Mode().Perm())

	// Existing files are kept unless forced.
	before, err := os.ReadFile(res.Certs[0].Cert)
	require.NoError(t, err)
	_, err = IssueCerts(dir, []CertSpec{{Player: "data-owner-2"}, {Player: "data-owner-0"}}, DevPKIOptions{})
	assert.ErrorIs(t, err, fs.ErrExist)
	_, err = os.Stat(filepath.Join(dir, "data-owner-2.pem"))
	assert.ErrorIs(t, err, fs.ErrNotExist, "nothing written when one file exists")
	_, err = IssueCerts(dir, []CertSpec{{Player: "data-owner-0"}}, DevPKIOptions{Force: true})
	require.NoError(t, err)
	after, err := os.ReadFile(res.Certs[0].Cert)
	require.NoError(t, err)
	assert.NotEqual(t, before, after)

	// No CA, a validity past the CA's, bad names.
	_, err = IssueCerts(t.TempDir(), []CertSpec{{Player: "data-owner-0"}}, DevPKIOptions{})
	assert.ErrorContains(t, err, "CA certificate")
	_, err = IssueCerts(dir, []CertSpec{{Player: "data-owner-5"}}, DevPKIOptions{Validity: 10 * DevCAValidity})
	assert.ErrorContains(t, err, "outlast the CA")
	_, err = IssueCerts(dir, []CertSpec{{Player: "Data-Owner"}}, DevPKIOptions{})
	assert.Error(t, err)
	// A CA key that does not go with the certificate.
	other := t.TempDir()
	_, err = GenerateDevPKI(other, []CertSpec{{Player: "a"}}, DevPKIOptions{})
	require.NoError(t, err)
	require.NoError(t, os.Rename(CAKeyFile(other), CAKeyFile(dir)))
	_, err = IssueCerts(dir, []CertSpec{{Player: "data-owner-6"}}, DevPKIOptions{})
	assert.ErrorContains(t, err, "does not go with CA certificate")
}

// TestLoadIdentityOfMember: an unlisted data owner needs the certificate
// directory, and a config that admits it.
func TestLoadIdentityOfMember(t *testing.T) {
	c, dir := devPKI(t, threeHosts)
	_, err := IssueCerts(dir, []CertSpec{{Player: "data-owner-3"}, {Player: "server9"}}, DevPKIOptions{})
	require.NoError(t, err)
	_, err = c.LoadIdentity("server9")
	assert.ErrorIs(t, err, ErrUnknownPlayer, "only data owners join unlisted")
	_, err = c.WithOpenMembership(false).LoadIdentity("data-owner-3")
	assert.ErrorIs(t, err, ErrUnknownPlayer)

	bare, err := ParseConfig([]byte(threeHosts), "hosts.json")
	require.NoError(t, err)
	_, err = bare.LoadIdentity("data-owner-3")
	var ce *ConfigError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "cert_dir", ce.Field)
	assert.Contains(t, err.Error(), `no certificate for data owner "data-owner-3"`)
}
