package main

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// drivenClock is a clock the test drives: time stands still at now, and
// every SleepUntil reports the time it waits for on waits and returns only
// when the test sends on release.
type drivenClock struct {
	now     time.Time
	waits   chan time.Time
	release chan struct{}
}

func newDrivenClock() *drivenClock {
	return &drivenClock{
		now:     time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		waits:   make(chan time.Time),
		release: make(chan struct{}),
	}
}

func (c *drivenClock) Now() time.Time { return c.now }

func (c *drivenClock) SleepUntil(ctx context.Context, t time.Time) error {
	select {
	case c.waits <- t:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-c.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// host is the far end of one forwarder device: a SOCK_SEQPACKET socket
// pair keeps packet boundaries as a TUN device does.
type host struct {
	addr netip.Addr
	end  *os.File // the host's end: write to send, read to receive
}

// newHosts makes a device and its host for each address.
func newHosts(t *testing.T, addrs ...string) ([]device, []host) {
	t.Helper()
	var devs []device
	var hosts []host
	for _, a := range addrs {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		devEnd, hostEnd := os.NewFile(uintptr(fds[0]), "dev:"+a), os.NewFile(uintptr(fds[1]), "host:"+a)
		t.Cleanup(func() { devEnd.Close(); hostEnd.Close() })
		addr := netip.MustParseAddr(a)
		devs = append(devs, device{name: "dev-" + a, addr: addr, dev: devEnd})
		hosts = append(hosts, host{addr: addr, end: hostEnd})
	}
	return devs, hosts
}

// ipv4 is a minimal IPv4 packet from src to dst carrying payload.
func ipv4(src, dst netip.Addr, payload string) []byte {
	p := make([]byte, 20, 20+len(payload))
	p[0] = 0x45 // version 4, 20-byte header
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	return append(p, payload...)
}

// startForwarder runs f until the returned stop is called, or the test
// ends; stop waits for f to stop and checks that it did so without error.
func startForwarder(t *testing.T, f *forwarder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	t.Cleanup(stop)
	return stop
}

func send(t *testing.T, h host, pkt []byte) {
	t.Helper()
	_, err := h.end.Write(pkt)
	require.NoError(t, err)
}

// receive reads the next packet that reached h.
func receive(t *testing.T, h host) []byte {
	t.Helper()
	require.NoError(t, h.end.SetReadDeadline(time.Now().Add(30*time.Second)))
	buf := make([]byte, maxPacket)
	n, err := h.end.Read(buf)
	require.NoError(t, err, "receiving at %v", h.addr)
	return buf[:n]
}

// assertNothingFor checks that no packet waits at h.
func assertNothingFor(t *testing.T, h host) {
	t.Helper()
	require.NoError(t, h.end.SetReadDeadline(time.Now()))
	n, err := h.end.Read(make([]byte, maxPacket))
	assert.True(t, errors.Is(err, os.ErrDeadlineExceeded), "a packet of %d bytes reached %v (err %v)", n, h.addr, err)
}

func TestForwardDelaysEachPacketToItsDestination(t *testing.T) {
	const delay = 20 * time.Millisecond
	clk := newDrivenClock()
	devs, h := newHosts(t, "10.9.0.1", "10.9.0.2", "10.9.0.3")
	f, err := newForwarder(delay, 16, clk, devs)
	require.NoError(t, err)
	stop := startForwarder(t, f)

	// Two packets from h0 to h1: each is held until it was read plus the
	// delay, and they arrive in the order sent.
	first, second := ipv4(h[0].addr, h[1].addr, "first"), ipv4(h[0].addr, h[1].addr, "second")
	send(t, h[0], first)
	send(t, h[0], second)
	for _, p := range [][]byte{first, second} {
		due := <-clk.waits
		assert.Equal(t, clk.now.Add(delay), due, "a packet is due the delay after it was read")
		// Held by the clock: nothing has reached h1 yet.
		assertNothingFor(t, h[1])
		clk.release <- struct{}{}
		assert.Equal(t, p, receive(t, h[1]))
	}
	// From another host to the same one.
	third := ipv4(h[2].addr, h[1].addr, "third")
	send(t, h[2], third)
	assert.Equal(t, clk.now.Add(delay), <-clk.waits)
	clk.release <- struct{}{}
	assert.Equal(t, third, receive(t, h[1]))
	// The way back.
	reply := ipv4(h[1].addr, h[0].addr, "reply")
	send(t, h[1], reply)
	assert.Equal(t, clk.now.Add(delay), <-clk.waits)
	clk.release <- struct{}{}
	assert.Equal(t, reply, receive(t, h[0]))
	assertNothingFor(t, h[2])

	stop() // the writers have counted what they wrote
	assert.EqualValues(t, 2, f.ports[0].readPackets.Load())
	assert.EqualValues(t, 3, f.ports[1].writtenPackets.Load())
	assert.EqualValues(t, len(first)+len(second)+len(third), f.ports[1].writtenBytes.Load())
	assert.EqualValues(t, 1, f.ports[0].writtenPackets.Load())
}

func TestForwardDropsWhatItCannotRoute(t *testing.T) {
	clk := newDrivenClock()
	devs, h := newHosts(t, "10.9.0.1", "10.9.0.2")
	f, err := newForwarder(time.Millisecond, 16, clk, devs)
	require.NoError(t, err)
	stop := startForwarder(t, f)

	ipv6 := make([]byte, 40)
	ipv6[0] = 0x60
	send(t, h[0], ipv4(h[0].addr, netip.MustParseAddr("10.9.0.77"), "nobody"))
	send(t, h[0], ipv6)
	send(t, h[0], []byte{0x45, 0, 0}) // a truncated header
	ok := ipv4(h[0].addr, h[1].addr, "routable")
	send(t, h[0], ok)
	<-clk.waits // the reader has handled the three before this one
	clk.release <- struct{}{}
	assert.Equal(t, ok, receive(t, h[1]))
	assertNothingFor(t, h[1])
	stop()
	assert.EqualValues(t, 3, f.ports[0].unroutable.Load())
	assert.EqualValues(t, 4, f.ports[0].readPackets.Load())
}

func TestForwardDropsWhenTheQueueIsFull(t *testing.T) {
	clk := newDrivenClock()
	devs, h := newHosts(t, "10.9.0.1", "10.9.0.2", "10.9.0.3")
	f, err := newForwarder(time.Millisecond, 1, clk, devs)
	require.NoError(t, err)
	stop := startForwarder(t, f)

	p1 := ipv4(h[0].addr, h[1].addr, "p1")
	p2 := ipv4(h[0].addr, h[1].addr, "p2")
	p3 := ipv4(h[0].addr, h[1].addr, "p3")
	p4 := ipv4(h[0].addr, h[2].addr, "p4")
	send(t, h[0], p1)
	<-clk.waits       // h1's writer holds p1; its queue is empty
	send(t, h[0], p2) // fills the queue of one
	send(t, h[0], p3) // finds it full: dropped
	send(t, h[0], p4) // to h2
	<-clk.waits       // h2's writer holds p4, so h0's reader is past p3
	assert.EqualValues(t, 1, f.ports[1].dropped.Load())

	clk.release <- struct{}{}
	clk.release <- struct{}{}
	<-clk.waits // p2
	clk.release <- struct{}{}
	assert.Equal(t, p1, receive(t, h[1]))
	assert.Equal(t, p2, receive(t, h[1]))
	assert.Equal(t, p4, receive(t, h[2]))
	assertNothingFor(t, h[1])
	stop()
	assert.EqualValues(t, 2, f.ports[1].writtenPackets.Load())
}

func TestForwardStopsWhenADeviceFails(t *testing.T) {
	devs, h := newHosts(t, "10.9.0.1", "10.9.0.2")
	f, err := newForwarder(time.Millisecond, 4, newDrivenClock(), devs)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- f.run(context.Background()) }()
	// The host hangs up: reading the device ends.
	require.NoError(t, h[1].end.Close())
	err = <-done
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dev-10.9.0.2")
}

func TestNewForwarderRefusesBadDevices(t *testing.T) {
	devs, _ := newHosts(t, "10.9.0.1", "10.9.0.1")
	_, err := newForwarder(time.Millisecond, 4, wallClock{}, devs)
	assert.ErrorContains(t, err, "both have address 10.9.0.1")

	v6 := []device{{name: "v6", addr: netip.MustParseAddr("fd00::1")}}
	_, err = newForwarder(time.Millisecond, 4, wallClock{}, v6)
	assert.ErrorContains(t, err, "device v6: address fd00::1 is not IPv4")

	_, err = newForwarder(-time.Millisecond, 4, wallClock{}, nil)
	assert.ErrorContains(t, err, "negative delay")
	_, err = newForwarder(time.Millisecond, 0, wallClock{}, nil)
	assert.ErrorContains(t, err, "queue length 0")
}

func TestParseDevices(t *testing.T) {
	devs, err := parseDevices([]string{"sfwan0=10.213.0.10", "sfwan1=10.213.0.11"})
	require.NoError(t, err)
	require.Len(t, devs, 2)
	assert.Equal(t, "sfwan1", devs[1].name)
	assert.Equal(t, netip.MustParseAddr("10.213.0.11"), devs[1].addr)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no devices"},
		{[]string{"sfwan0"}, `argument "sfwan0": want NAME=ADDR`},
		{[]string{"=10.0.0.1"}, `device name "" is not a valid interface name`},
		{[]string{"a-name-far-too-long=10.0.0.1"}, "is not a valid interface name"},
		{[]string{"a/b=10.0.0.1"}, "is not a valid interface name"},
		{[]string{"tun0=10.0.0.300"}, `"10.0.0.300" is not an IPv4 address`},
		{[]string{"tun0=fd00::1"}, `"fd00::1" is not an IPv4 address`},
	} {
		_, err := parseDevices(tc.args)
		assert.ErrorContains(t, err, tc.want, "args %q", tc.args)
	}
}
