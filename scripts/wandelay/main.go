// Command wandelay is a switch for IPv4 hosts in Linux network namespaces
// that delays every packet by a fixed time, so that hosts on one machine
// talk as if across a WAN. The kernel's netem qdisc (tc qdisc ... netem
// delay) does that inside the kernel; wandelay does it in user space, for
// kernels built without sch_netem.
//
// Usage (as root):
//
//	wandelay [-delay 20ms] [-queue 16384] NAME=ADDR...
//
// For each NAME=ADDR it creates a TUN device NAME (layer 3, no packet
// information header) in its own network namespace for the host whose
// IPv4 address is ADDR, prints one line "wandelay: ready ..." on standard
// output, and forwards: an IPv4 packet read from any of its devices is
// written to the device whose ADDR is the packet's destination, -delay
// after it was read. Two hosts therefore see a round-trip time of twice
// -delay plus the machine's own. Each destination has a FIFO queue of at
// most -queue packets; a packet that finds it full is dropped, like a
// router with a full buffer. Packets to other addresses, and anything
// that is not IPv4, are dropped. Bandwidth is not limited.
//
// The caller moves each device into its host's namespace and configures
// it there, e.g. for a host in namespace h0:
//
//	ip link set dev NAME netns h0 name eth0
//	ip -n h0 addr add ADDR/24 dev eth0
//	ip -n h0 link set eth0 up
//
// A device lives as long as wandelay holds it open: when wandelay ends,
// its devices disappear from whatever namespace they are in. On SIGINT or
// SIGTERM it stops and prints, per device, the packets and bytes it read
// and wrote and the packets it dropped, on standard error. It exits with
// status 1 when a device fails, 2 on bad arguments.
//
// scripts/netns-demo.sh --wan-delay uses it to run the federated-learning
// example as seven hosts 2×delay apart (docs/RUNNING.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wandelay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	delay := fs.Duration("delay", 20*time.Millisecond, "one-way delay of every packet")
	queue := fs.Int("queue", 16384, "packets that may wait for one device; more are dropped")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: wandelay [flags] NAME=ADDR...\n\n"+
			"Creates a TUN device NAME for the IPv4 host ADDR, for each argument, and forwards\n"+
			"packets between them with a fixed one-way delay. Needs CAP_NET_ADMIN.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	specs, err := parseDevices(fs.Args())
	if err != nil {
		fmt.Fprintln(stderr, "wandelay:", err)
		return 2
	}

	var devs []device
	for _, s := range specs {
		f, err := openTUN(s.name)
		if err != nil {
			fmt.Fprintln(stderr, "wandelay:", err)
			return 1
		}
		defer f.Close()
		s.dev = f
		devs = append(devs, s)
	}
	fwd, err := newForwarder(*delay, *queue, wallClock{}, devs)
	if err != nil {
		fmt.Fprintln(stderr, "wandelay:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "wandelay: ready: %d devices, one-way delay %v, round trip %v\n", len(devs), *delay, 2**delay)
	err = fwd.run(ctx)
	for _, p := range fwd.ports {
		fmt.Fprintf(stderr, "wandelay: %-10s %-15s read %d packets (%d bytes), wrote %d packets (%d bytes), dropped %d (queue full), %d unroutable\n",
			p.name, p.addr, p.readPackets.Load(), p.readBytes.Load(), p.writtenPackets.Load(), p.writtenBytes.Load(), p.dropped.Load(), p.unroutable.Load())
	}
	if err != nil {
		fmt.Fprintln(stderr, "wandelay:", err)
		return 1
	}
	return 0
}

// parseDevices reads the NAME=ADDR arguments.
func parseDevices(args []string) ([]device, error) {
	if len(args) == 0 {
		return nil, errors.New("no devices: give at least one NAME=ADDR")
	}
	var devs []device
	for _, a := range args {
		name, addr, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("argument %q: want NAME=ADDR", a)
		}
		if name == "" || len(name) >= syscall.IFNAMSIZ || strings.ContainsAny(name, "/ \t\n:") {
			return nil, fmt.Errorf("argument %q: device name %q is not a valid interface name (1 to %d characters, no '/', ':' or blanks)", a, name, syscall.IFNAMSIZ-1)
		}
		ip, err := netip.ParseAddr(addr)
		if err != nil || !ip.Is4() {
			return nil, fmt.Errorf("argument %q: %q is not an IPv4 address", a, addr)
		}
		devs = append(devs, device{name: name, addr: ip})
	}
	return devs, nil
}

// ifreq is the part of struct ifreq (linux/if.h) that TUNSETIFF reads:
// the interface name and flags, padded to the size of the union.
type ifreq struct {
	name  [syscall.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

// openTUN creates the TUN device name in this process's network namespace
// and returns the file its packets are read from and written to: one IP
// packet per Read and per Write, without a packet information header. The
// device goes when the file is closed.
func openTUN(name string) (*os.File, error) {
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/net/tun for device %s: %w (is the tun module loaded? modprobe tun)", name, err)
	}
	var req ifreq
	copy(req.name[:], name)
	req.flags = syscall.IFF_TUN | syscall.IFF_NO_PI
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TUNSETIFF, uintptr(unsafe.Pointer(&req))); errno != 0 {
		syscall.Close(fd)
		return nil, fmt.Errorf("creating TUN device %s: %w (root or CAP_NET_ADMIN needed; does a device of that name exist?)", name, errno)
	}
	// Non-blocking, so reads and writes go through Go's poller and
	// Close ends a blocked Read.
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}
