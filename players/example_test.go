package players_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/shareflow/shareflow/players"
)

// A TF Encrypted hostmap is a valid config as it stands.
func ExampleParseConfig() {
	cfg, err := players.ParseConfig([]byte(`{
		"server0": "10.0.0.1:4440",
		"server1": "10.0.0.2:4440",
		"model-owner": "10.0.0.3:4440"
	}`), "hosts.json")
	if err != nil {
		fmt.Println(err)
		return
	}
	addr, _ := cfg.Address("server1")
	fmt.Println(cfg.Names(), addr, cfg.ConnectTimeout())

	// Mistakes are reported with file, position and field.
	_, err = players.ParseConfig([]byte(`{
		"server0": "10.0.0.1:4440",
		"server0": "10.0.0.2:4440"
	}`), "hosts.json")
	fmt.Println(err)
	// Output:
	// [model-owner server0 server1] 10.0.0.2:4440 30s
	// players: hosts.json:3:3: server0: duplicate key "server0" (first on line 2)
}

// A development PKI for a config, and the TLS configurations of one player.
func ExampleGenerateDevPKI() {
	dir, err := os.MkdirTemp("", "shareflow-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	cfg, err := players.ParseConfig([]byte(`{"server0": "127.0.0.1:4440", "server1": "127.0.0.1:4441"}`), "hosts.json")
	if err != nil {
		fmt.Println(err)
		return
	}
	certs := filepath.Join(dir, "certs")
	if _, err := players.GenerateDevPKI(certs, cfg.CertSpecs(), players.DevPKIOptions{}); err != nil {
		fmt.Println(err)
		return
	}
	cfg, err = cfg.WithCertDir(certs)
	if err != nil {
		fmt.Println(err)
		return
	}
	id, err := cfg.LoadIdentity("server0")
	if err != nil {
		fmt.Println(err)
		return
	}
	name, _ := players.PlayerFromCert(id.Certificate())
	client, _ := id.ClientTLS("server1")
	fmt.Println(name, id.Certificate().URIs[0], client.ServerName)
	// Output:
	// server0 shareflow://player/server0 server1
}
