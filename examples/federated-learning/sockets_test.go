package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// listeningSockets returns the local addresses (hex, as /proc shows them)
// of the TCP sockets in the LISTEN state that process pid holds open. It
// reads /proc, so it works on Linux only.
func listeningSockets(pid int) ([]string, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err != nil {
			continue // closed since the listing
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"tcp", "tcp6"} {
		// The process's own view of the tables: its network namespace.
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 {
				continue
			}
			const listen = "0A"
			if fields[3] == listen && inodes[fields[9]] {
				out = append(out, fields[1])
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TestListeningSocketsSeesAListener checks the helper the tests of data
// owners rely on: it must see this process's own listener, and only
// while it is open.
func TestListeningSocketsSeesAListener(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := strings.ToUpper(strconv.FormatInt(int64(l.Addr().(*net.TCPAddr).Port), 16))
	for len(port) < 4 {
		port = "0" + port
	}
	addr := "0100007F:" + port // 127.0.0.1, little-endian hex
	got, err := listeningSockets(os.Getpid())
	require.NoError(t, err)
	assert.Contains(t, got, addr)
	require.NoError(t, l.Close())
	got, err = listeningSockets(os.Getpid())
	require.NoError(t, err)
	assert.NotContains(t, got, addr)
}
