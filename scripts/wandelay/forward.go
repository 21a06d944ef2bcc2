package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// maxPacket is the largest IP packet: a read buffer of this size never
// truncates one.
const maxPacket = 1 << 16

// smallPacket is the size of the pooled packet buffers; packets above it
// (a device with an MTU above 2 kB) get a buffer of their own.
const smallPacket = 2048

// packet is one IP packet on its way to a device, due to be written at
// due.
type packet struct {
	data []byte
	due  time.Time
	pool *[]byte // the pooled buffer data lives in, nil if none
}

// clock is the forwarder's time: Now stamps a packet as it is read and
// SleepUntil holds it until it is due. Tests pass a clock they drive.
type clock interface {
	Now() time.Time
	// SleepUntil returns when t has come, or with ctx's error when ctx
	// ends first.
	SleepUntil(ctx context.Context, t time.Time) error
}

// wallClock is the real time.
type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

func (wallClock) SleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// port is one device of the forwarder: the host behind it has address
// addr, and packets to addr wait in queue until they are due.
type port struct {
	name  string
	addr  netip.Addr
	dev   io.ReadWriter
	queue chan packet

	// Counters, in packets and bytes: read from the device (sent by its
	// host), written to it (delivered to its host), and dropped on the
	// way to it because its queue was full.
	readPackets, readBytes       atomic.Uint64
	writtenPackets, writtenBytes atomic.Uint64
	dropped                      atomic.Uint64
	// unroutable counts packets read from this device that no port
	// takes: not IPv4, or to an address no device has.
	unroutable atomic.Uint64
}

// forwarder is a switch with a fixed one-way delay: every IPv4 packet read
// from one port's device is written to the device of the port that owns
// its destination address, delay after it was read. Each destination has
// a FIFO queue of at most queueLen packets; a packet that finds it full is
// dropped, as a router drops when its buffer overflows. Packets that
// arrive at one port from several others keep the order in which they
// were read. Bandwidth is not limited (beyond what the machine does).
//
// A forwarder is built by newForwarder and run once by run; its counters
// may be read concurrently.
type forwarder struct {
	delay time.Duration
	clock clock
	ports []*port
	route map[netip.Addr]*port
	bufs  sync.Pool
}

// device is one end of the forwarder: a named packet device (a TUN
// device, in wandelay) for the host at addr. Each Read returns one packet
// and each Write sends one.
type device struct {
	name string
	addr netip.Addr
	dev  io.ReadWriter
}

func newForwarder(delay time.Duration, queueLen int, clk clock, devs []device) (*forwarder, error) {
	if delay < 0 {
		return nil, fmt.Errorf("negative delay %v", delay)
	}
	if queueLen < 1 {
		return nil, fmt.Errorf("queue length %d: want at least 1", queueLen)
	}
	f := &forwarder{delay: delay, clock: clk, route: make(map[netip.Addr]*port)}
	f.bufs.New = func() any {
		b := make([]byte, smallPacket)
		return &b
	}
	for _, d := range devs {
		if !d.addr.Is4() {
			return nil, fmt.Errorf("device %s: address %v is not IPv4", d.name, d.addr)
		}
		if other, dup := f.route[d.addr]; dup {
			return nil, fmt.Errorf("devices %s and %s both have address %v", other.name, d.name, d.addr)
		}
		p := &port{name: d.name, addr: d.addr, dev: d.dev, queue: make(chan packet, queueLen)}
		f.ports = append(f.ports, p)
		f.route[d.addr] = p
	}
	return f, nil
}

// destination returns the IPv4 destination address of pkt, if it is an
// IPv4 packet with a whole header.
func destination(pkt []byte) (netip.Addr, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(pkt[16:20])), true
}

// run forwards until ctx ends or a device fails, and returns why. Every
// port has a reader and a writer goroutine; all have ended when run
// returns, except readers blocked in a Read, which end when the caller
// closes their devices.
func (f *forwarder) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	var failure error
	fail := func(err error) {
		once.Do(func() { failure = err })
		cancel()
	}
	var wg sync.WaitGroup
	for _, p := range f.ports {
		wg.Go(func() {
			if err := f.write(ctx, p); err != nil {
				fail(err)
			}
		})
		go func() {
			if err := f.read(ctx, p); err != nil {
				fail(err)
			}
		}()
	}
	<-ctx.Done()
	wg.Wait()
	once.Do(func() {}) // no failure recorded after this
	return failure
}

// read takes packets from p's device and queues each for the port of its
// destination.
func (f *forwarder) read(ctx context.Context, p *port) error {
	buf := make([]byte, maxPacket)
	for {
		n, err := p.dev.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading from %s: %w", p.name, err)
		}
		now := f.clock.Now()
		p.readPackets.Add(1)
		p.readBytes.Add(uint64(n))
		addr, ok := destination(buf[:n])
		to := f.route[addr]
		if !ok || to == nil {
			p.unroutable.Add(1)
			continue
		}
		pkt := packet{due: now.Add(f.delay)}
		if n <= smallPacket {
			pkt.pool = f.bufs.Get().(*[]byte)
			pkt.data = (*pkt.pool)[:n]
		} else {
			pkt.data = make([]byte, n)
		}
		copy(pkt.data, buf[:n])
		select {
		case to.queue <- pkt:
		default:
			to.dropped.Add(1)
			f.recycle(pkt)
		}
	}
}

// write delivers the packets queued for p to its device as each falls
// due.
func (f *forwarder) write(ctx context.Context, p *port) error {
	for {
		var pkt packet
		select {
		case pkt = <-p.queue:
		case <-ctx.Done():
			return nil
		}
		if err := f.clock.SleepUntil(ctx, pkt.due); err != nil {
			return nil
		}
		_, err := p.dev.Write(pkt.data)
		n := len(pkt.data)
		f.recycle(pkt)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("writing to %s: %w", p.name, err)
		}
		p.writtenPackets.Add(1)
		p.writtenBytes.Add(uint64(n))
	}
}

func (f *forwarder) recycle(pkt packet) {
	if pkt.pool != nil {
		f.bufs.Put(pkt.pool)
	}
}
