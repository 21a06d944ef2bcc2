package players

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// handshake runs a TLS handshake between client and server configs over
// loopback and returns both sides' errors and, on success, the player the
// server saw. A client refused in TLS 1.3 learns it on its first read.
func handshake(t *testing.T, client, server *tls.Config) (clientErr, serverErr error, seen string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	type result struct {
		err  error
		name string
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(conn, server)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		name, err := PlayerFromCert(tc.ConnectionState().VerifiedChains[0][0])
		tc.Write([]byte("ok"))
		done <- result{err: err, name: name}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(conn, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		buf := make([]byte, 2)
		_, clientErr = tc.Read(buf)
	}
	r := <-done
	return clientErr, r.err, r.name
}

func TestTLSMutualAuth(t *testing.T) {
	c, _ := devPKI(t, threeHosts)
	srv, err := ServerTLS(c, "server1")
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS13), srv.MinVersion)
	assert.Equal(t, tls.RequireAndVerifyClientCert, srv.ClientAuth)

	cli, err := ClientTLS(c, "server0", "server1")
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS13), cli.MinVersion)
	cerr, serr, seen := handshake(t, cli, srv)
	require.NoError(t, cerr)
	require.NoError(t, serr)
	assert.Equal(t, "server0", seen, "server learns the caller from its certificate")

	_, err = ClientTLS(c, "server0", "mallory")
	assert.ErrorIs(t, err, ErrUnknownPlayer)
	_, err = ServerTLS(c, "mallory")
	assert.ErrorIs(t, err, ErrUnknownPlayer)
}

func TestTLSClientRefusesWrongServer(t *testing.T) {
	c, dir := devPKI(t, threeHosts)
	srv, err := ServerTLS(c, "server1")
	require.NoError(t, err)
	// server0 means to reach server2 but the address answers as server1.
	cli, err := ClientTLS(c, "server0", "server2")
	require.NoError(t, err)
	cerr, serr, _ := handshake(t, cli, srv)
	require.ErrorIs(t, cerr, ErrPeerCertificate)
	assert.Equal(t, `players: server0 refuses server: certificate names player "server1", want "server2"`, cerr.Error())
	assert.ErrorContains(t, serr, "bad certificate", "the server learns of the refusal")

	id, err := c.LoadIdentity("server0")
	require.NoError(t, err)
	cfg, err := id.ClientTLS("server2")
	require.NoError(t, err)
	verify := func(chain ...*x509.Certificate) error {
		return cfg.VerifyConnection(tls.ConnectionState{PeerCertificates: chain})
	}
	caCert := readCert(t, CAFile(dir))
	caKey := readKey(t, CAKeyFile(dir))
	leaf := func(pair tls.Certificate) *x509.Certificate { return pair.Leaf }

	require.NoError(t, verify(readCert(t, c.players["server2"].Cert)), "the right server passes")
	// The URI SAN decides, even when the DNS name is the one dialled.
	err = verify(leaf(issue(t, caCert, caKey, "server2", []*url.URL{PlayerURI("server1")})))
	assert.ErrorIs(t, err, ErrPeerCertificate)
	assert.ErrorContains(t, err, `certificate names player "server1", want "server2"`)
	// ... and the DNS name must be there too.
	err = verify(leaf(issue(t, caCert, caKey, "elsewhere", []*url.URL{PlayerURI("server2")})))
	assert.ErrorIs(t, err, ErrPeerCertificate)
	assert.ErrorContains(t, err, `lacks the DNS name "server2"`)
	// A certificate naming no player.
	err = verify(leaf(issue(t, caCert, caKey, "server2", nil)))
	assert.ErrorIs(t, err, ErrPeerCertificate)
	assert.ErrorIs(t, err, ErrNoPlayerName)
	// Nothing at all.
	assert.ErrorIs(t, verify(), ErrPeerCertificate)

	// A certificate from another CA is refused before its name is read.
	other := filepath.Join(t.TempDir(), "other")
	_, err = GenerateDevPKI(other, c.CertSpecs(), DevPKIOptions{})
	require.NoError(t, err)
	otherCert, _ := CertFiles(other, "server2")
	err = verify(readCert(t, otherCert))
	assert.ErrorIs(t, err, ErrPeerCertificate)
	var unknownCA x509.UnknownAuthorityError
	assert.ErrorAs(t, err, &unknownCA)
	assert.ErrorContains(t, err, `players: server0 refuses server "server2": x509: certificate signed by unknown authority`)
}

func TestTLSServerRefusesClients(t *testing.T) {
	c, dir := devPKI(t, threeHosts)
	srv, err := ServerTLS(c, "server1")
	require.NoError(t, err)
	good, err := ClientTLS(c, "server0", "server1")
	require.NoError(t, err)

	caCert := readCert(t, CAFile(dir))
	caKey := readKey(t, CAKeyFile(dir))

	t.Run("no certificate", func(t *testing.T) {
		cli := good.Clone()
		cli.Certificates = nil
		cerr, serr, _ := handshake(t, cli, srv)
		assert.Error(t, cerr)
		require.Error(t, serr)
		assert.Contains(t, serr.Error(), "certificate")
	})
	t.Run("other CA", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		_, err := GenerateDevPKI(other, c.CertSpecs(), DevPKIOptions{})
		require.NoError(t, err)
		cert, key := CertFiles(other, "server0")
		pair, err := tls.LoadX509KeyPair(cert, key)
		require.NoError(t, err)
		cli := good.Clone()
		cli.Certificates = nil
		cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
		cerr, serr, _ := handshake(t, cli, srv)
		assert.Error(t, cerr)
		require.Error(t, serr)
		assert.Contains(t, serr.Error(), "unknown authority")
	})
	t.Run("player not in config", func(t *testing.T) {
		pair := issue(t, caCert, caKey, "mallory", []*url.URL{PlayerURI("mallory")})
		cli := good.Clone()
		cli.Certificates = []tls.Certificate{pair}
		cerr, serr, _ := handshake(t, cli, srv)
		assert.Error(t, cerr)
		require.Error(t, serr)
		assert.Contains(t, serr.Error(), `"mallory", which is not in the config`)
		assert.ErrorIs(t, serr, ErrPeerCertificate)
	})
	t.Run("no player name", func(t *testing.T) {
		pair := issue(t, caCert, caKey, "server0", nil)
		cli := good.Clone()
		cli.Certificates = []tls.Certificate{pair}
		cerr, serr, _ := handshake(t, cli, srv)
		assert.Error(t, cerr)
		require.Error(t, serr)
		assert.ErrorIs(t, serr, ErrNoPlayerName)
	})
	t.Run("itself", func(t *testing.T) {
		cli, err := ClientTLS(c, "server1", "server1")
		require.NoError(t, err)
		cerr, serr, _ := handshake(t, cli, srv)
		assert.Error(t, cerr)
		require.Error(t, serr)
		assert.Contains(t, serr.Error(), "this player itself")
		assert.ErrorIs(t, serr, ErrPeerCertificate)
	})
	t.Run("TLS 1.2", func(t *testing.T) {
		cli := good.Clone()
		cli.MinVersion, cli.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		cerr, serr, _ := handshake(t, cli, srv)
		assert.Error(t, cerr)
		assert.Error(t, serr)
	})
}

func TestPlayerFromCert(t *testing.T) {
	mk := func(uris ...string) *x509.Certificate {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: "cn"}}
		for _, s := range uris {
			u, err := url.Parse(s)
			require.NoError(t, err)
			c.URIs = append(c.URIs, u)
		}
		return c
	}
	name, err := PlayerFromCert(mk("spiffe://x/y", "shareflow://player/server0"))
	require.NoError(t, err)
	assert.Equal(t, "server0", name)

	_, err = PlayerFromCert(nil)
	assert.ErrorIs(t, err, ErrNoPlayerName)
	_, err = PlayerFromCert(mk())
	assert.ErrorIs(t, err, ErrNoPlayerName)
	_, err = PlayerFromCert(mk("spiffe://player/server0"))
	assert.ErrorIs(t, err, ErrNoPlayerName)
	for _, bad := range [][]string{
		{"shareflow://player/server0", "shareflow://player/server1"},
		{"shareflow://other/server0"},
		{"shareflow://player/Server0"},
		{"shareflow://player/a/b"},
		{"shareflow://player/server0?x=1"},
		{"shareflow://u@player/server0"},
		{"shareflow://player/"},
	} {
		_, err := PlayerFromCert(mk(bad...))
		assert.Error(t, err, bad)
	}
	assert.Equal(t, "shareflow://player/data-owner-0", PlayerURI("data-owner-0").String())
}

func readKey(t *testing.T, file string) *ecdsa.PrivateKey {
	t.Helper()
	k, err := x509.ParsePKCS8PrivateKey(readPEM(t, file))
	require.NoError(t, err)
	return k.(*ecdsa.PrivateKey)
}

// issue signs a client certificate with the given CA, for tests that need
// certificates GenerateDevPKI would not make.
func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, uris []*url.URL) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{cn},
		URIs:         uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestTLSOpenMembership: a server admits a data owner the config does not
// list when its certificate comes from the CA and the config admits
// unlisted data owners; any other unlisted name is refused.
func TestTLSOpenMembership(t *testing.T) {
	c, dir := devPKI(t, threeHosts)
	_, err := IssueCerts(dir, []CertSpec{{Player: "data-owner-4"}, {Player: "server9"}, {Player: "model-owner-2"}}, DevPKIOptions{})
	require.NoError(t, err)
	srv, err := ServerTLS(c, "server1")
	require.NoError(t, err)
	dialAs := func(name string) *tls.Config {
		t.Helper()
		cert, key := CertFiles(dir, name)
		pair, err := tls.LoadX509KeyPair(cert, key)
		require.NoError(t, err)
		cli, err := ClientTLS(c, "server0", "server1")
		require.NoError(t, err)
		cli.Certificates = []tls.Certificate{pair}
		return cli
	}
	cerr, serr, seen := handshake(t, dialAs("data-owner-4"), srv)
	require.NoError(t, cerr)
	require.NoError(t, serr)
	assert.Equal(t, "data-owner-4", seen)

	for _, name := range []string{"server9", "model-owner-2"} {
		cerr, serr, _ := handshake(t, dialAs(name), srv)
		assert.Error(t, cerr, name)
		require.Error(t, serr, name)
		assert.ErrorIs(t, serr, ErrPeerCertificate)
		assert.Contains(t, serr.Error(), fmt.Sprintf("certificate names player %q, which is not in the config", name))
	}

	closed, err := ServerTLS(c.WithOpenMembership(false), "server1")
	require.NoError(t, err)
	cerr, serr, _ = handshake(t, dialAs("data-owner-4"), closed)
	assert.Error(t, cerr)
	require.Error(t, serr)
	assert.Contains(t, serr.Error(), `certificate names data owner "data-owner-4", which is not in the config, and the config does not admit unlisted data owners (open_membership is off)`)
}
