package grpctransport

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFlowWindowFollowsTheMailboxBound(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	for _, tc := range []struct {
		maxMessage string // the config's max_message_bytes; "" for the default
		want       int32
	}{
		{"", maxWindow}, // 4 × 256 MiB, capped
		{`"max_message_bytes": 1048576`, 4 << 20},
		{`"max_message_bytes": 3145728`, 12 << 20},
		{`"max_message_bytes": 4194304`, maxWindow},
		{`"max_message_bytes": 1024`, minWindow}, // 4 KiB, raised to gRPC's least
	} {
		cfg := n.config(t, nil, tc.maxMessage)
		assert.Equal(t, tc.want, flowWindow(cfg), "config with %s", tc.maxMessage)
	}
}

// The HTTP/2 frames and settings the tests below read (RFC 9113, 6.5 and
// 6.9).
const (
	h2Preface                 = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	h2FrameSettings           = 0x4
	h2FrameWindowUpdate       = 0x8
	h2FlagAck                 = 0x1
	h2SettingMaxStreams       = 0x3
	h2SettingInitialWindow    = 0x4
	h2DefaultWindow           = 65535
	h2FrameHeaderBytes        = 9
	h2MaxFramePayloadForTests = 1 << 20
)

// h2Frame is one HTTP/2 frame.
type h2Frame struct {
	typ, flags byte
	stream     uint32
	payload    []byte
}

func readH2Frame(r io.Reader) (h2Frame, error) {
	var h [h2FrameHeaderBytes]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return h2Frame{}, err
	}
	n := uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2])
	if n > h2MaxFramePayloadForTests {
		return h2Frame{}, fmt.Errorf("frame of %d bytes", n)
	}
	f := h2Frame{typ: h[3], flags: h[4], stream: binary.BigEndian.Uint32(h[5:9]) & 0x7fffffff, payload: make([]byte, n)}
	_, err := io.ReadFull(r, f.payload)
	return f, err
}

// h2Windows is what one side of an HTTP/2 connection announced when it
// opened: its settings and its first connection window update.
type h2Windows struct {
	settings   map[uint16]uint32
	connUpdate uint32
}

// h2EmptySettings is a SETTINGS frame that changes nothing.
var h2EmptySettings = []byte{0, 0, 0, h2FrameSettings, 0, 0, 0, 0, 0}

// readH2Windows reads the frames of a peer that was sent h2EmptySettings
// until it acknowledges them. grpc-go, on either side, writes its own
// SETTINGS and the WINDOW_UPDATE of its connection window (if it is above
// the default) when it opens the connection, before it reads any frame.
func readH2Windows(t *testing.T, r io.Reader) h2Windows {
	t.Helper()
	var w h2Windows
	for {
		f, err := readH2Frame(r)
		require.NoError(t, err, "reading the peer's first frames")
		switch {
		case f.typ == h2FrameSettings && f.flags&h2FlagAck != 0:
			require.NotNil(t, w.settings, "SETTINGS acknowledged before the peer sent its own")
			return w
		case f.typ == h2FrameSettings && w.settings == nil:
			require.Zero(t, len(f.payload)%6, "SETTINGS payload of %d bytes", len(f.payload))
			w.settings = make(map[uint16]uint32)
			for p := f.payload; len(p) > 0; p = p[6:] {
				w.settings[binary.BigEndian.Uint16(p)] = binary.BigEndian.Uint32(p[2:])
			}
		case f.typ == h2FrameWindowUpdate && f.stream == 0 && w.connUpdate == 0:
			require.Len(t, f.payload, 4)
			w.connUpdate = binary.BigEndian.Uint32(f.payload) & 0x7fffffff
		}
	}
}

// TestServerAnnouncesItsWindows: a player's server offers its peers the
// stream window of flowWindow in its SETTINGS, opens the connection window
// to the same size, and allows maxStreamsPerConn streams at once. A plain
// TCP client reads them (insecure mode: HTTP/2 without TLS).
func TestServerAnnouncesItsWindows(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	cfg := n.config(t, nil, `"insecure": true, "max_message_bytes": 3145728`)
	want := flowWindow(cfg)
	require.Equal(t, int32(12<<20), want)
	server := n.start(t, cfg, "server0", Options{})

	conn, err := net.Dial("tcp", server.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second))) // a safety net only
	_, err = conn.Write([]byte(h2Preface))
	require.NoError(t, err)
	_, err = conn.Write(h2EmptySettings)
	require.NoError(t, err)

	w := readH2Windows(t, conn)
	assert.EqualValues(t, want, w.settings[h2SettingInitialWindow], "stream window")
	assert.EqualValues(t, want-h2DefaultWindow, w.connUpdate, "connection window beyond the default")
	assert.EqualValues(t, maxStreamsPerConn, w.settings[h2SettingMaxStreams], "streams per connection")
}

// TestClientAnnouncesItsWindows: a player dialing a peer offers it the
// same windows for what the peer sends back. The peer here is a plain TCP
// listener that reads what the player's client sends first.
func TestClientAnnouncesItsWindows(t *testing.T) {
	n := newNetwork(t, "server0", "server1")
	cfg := n.config(t, nil, `"insecure": true, "max_message_bytes": 1048576`)
	want := flowWindow(cfg)
	require.Equal(t, int32(4<<20), want)
	client := n.start(t, cfg, "server0", Options{})

	ctx, cancel := context.WithCancel(testCtx(t))
	connected := make(chan error, 1)
	go func() { connected <- client.Connect(ctx) }()
	defer func() {
		cancel()
		<-connected // fails: the "peer" never answers its Hello
	}()

	conn, err := n.lns["server1"].Accept()
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second))) // a safety net only
	preface := make([]byte, len(h2Preface))
	_, err = io.ReadFull(conn, preface)
	require.NoError(t, err)
	require.Equal(t, h2Preface, string(preface))
	_, err = conn.Write(h2EmptySettings) // the server's preface
	require.NoError(t, err)

	w := readH2Windows(t, conn)
	assert.EqualValues(t, want, w.settings[h2SettingInitialWindow], "stream window")
	assert.EqualValues(t, want-h2DefaultWindow, w.connUpdate, "connection window beyond the default")
}
