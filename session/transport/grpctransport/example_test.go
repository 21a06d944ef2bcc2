package grpctransport_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session/transport"
	"github.com/shareflow/shareflow/session/transport/grpctransport"
)

// Two players on loopback with mutual TLS. On real hosts each player runs
// in its own process with the same config, and New listens on the
// player's address itself.
func Example() {
	dir, err := os.MkdirTemp("", "grpctransport-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	lns := map[string]net.Listener{}
	for _, name := range []string{"server0", "server1"} {
		if lns[name], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			fmt.Println(err)
			return
		}
	}
	cfg, err := players.ParseConfig(fmt.Appendf(nil, `{"players": {"server0": %q, "server1": %q}, "cert_dir": "certs"}`,
		lns["server0"].Addr(), lns["server1"].Addr()), filepath.Join(dir, "hosts.json"))
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := players.GenerateDevPKI(filepath.Join(dir, "certs"), cfg.CertSpecs(), players.DevPKIOptions{}); err != nil {
		fmt.Println(err)
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ts := map[string]*grpctransport.Transport{}
	for name, ln := range lns {
		t, err := grpctransport.New(cfg, name, grpctransport.Options{Listener: ln})
		if err != nil {
			fmt.Println(err)
			return
		}
		defer t.Close()
		ts[name] = t
	}
	done := make(chan error, 1)
	go func() { done <- ts["server1"].Connect(ctx) }()
	if err := ts["server0"].Connect(ctx); err != nil {
		fmt.Println(err)
		return
	}
	if err := <-done; err != nil {
		fmt.Println(err)
		return
	}

	key := transport.Key{Session: "example", Iteration: 0, Edge: 1}
	if err := ts["server0"].Send(ctx, "server1", key, []byte("a share")); err != nil {
		fmt.Println(err)
		return
	}
	msg, err := ts["server1"].Recv(ctx, "server0", key)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s\n", msg)
	// Output: a share
}
