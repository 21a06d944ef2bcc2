package session

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// assertGolden checks got against testdata/file, which -update rewrites.
func assertGolden(t *testing.T, file, got string) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, string(want), got)
}

// flGraph is TF Encrypted's federated-learning graph in miniature: the
// model owner's weights go to every data owner, whose gradients are
// averaged privately and revealed to the model owner.
func flGraph(owners int) (*graph.Graph, *graph.Op) {
	shapes := []graph.Shape{{2, 2}, {2}}
	g := graph.New()
	weights := g.DefinePublicInput(players.ModelOwner, func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
		return []*tensor.Dense{
			tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{1, 2, 3, 4})),
			tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{5, 6})),
		}, nil
	}, shapes)
	var grads [][]*graph.Private
	for i := range owners {
		grads = append(grads, g.DefinePrivateInput(players.DataOwner(i), func(_ context.Context, w []*tensor.Dense) ([]*tensor.Dense, error) {
			return w, nil
		}, shapes, weights...))
	}
	mean := make([]*graph.Private, len(shapes))
	for i := range mean {
		mean[i] = g.Div(g.AddN(graph.Column(grads, i)...), float64(owners))
	}
	return g, g.DefineOutput(players.ModelOwner, mean, func(context.Context, []*tensor.Dense) error { return nil })
}

func TestPlanGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		opts Options
	}{
		{"plan-fl-clear-division.txt", Options{}},
		{"plan-fl-interactive.txt", Options{PrivateDivision: true}},
		{"plan-fl-local.txt", Options{PrivateDivision: true, Protocol: pond.Config{Truncation: pond.Local}}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			g, op := flGraph(2)
			s, err := NewLocal(g, tc.opts)
			require.NoError(t, err)
			defer s.Close()
			plan, err := s.Plan(op)
			require.NoError(t, err)
			assertGolden(t, tc.file, plan.String())
			require.NoError(t, s.Run(context.Background(), op), "the plan runs")
		})
	}
}

// fingerprintOf compiles the federated-learning miniature with opts and
// returns its plan's fingerprint.
func fingerprintOf(t *testing.T, owners int, opts Options) string {
	t.Helper()
	g, op := flGraph(owners)
	s, err := NewLocal(g, opts)
	require.NoError(t, err)
	defer s.Close()
	p, err := s.Plan(op)
	require.NoError(t, err)
	return p.Fingerprint()
}

// configChanges gives, for every field of pond.Config, a valid setting
// other than the default.
var configChanges = map[string]func(*pond.Config){
	"FracBits":   func(c *pond.Config) { c.FracBits = 20 },
	"IntBits":    func(c *pond.Config) { c.IntBits = 8 },
	"StatGap":    func(c *pond.Config) { c.StatGap = 16 },
	"Truncation": func(c *pond.Config) { c.Truncation = pond.Local },
	"MaskPRG":    func(c *pond.Config) { c.MaskPRG = pond.MaskAES256 },
	"Ring":       func(c *pond.Config) { c.Ring = pond.Ring64 },
}

// optionChanges says, for every field of Options, how to change it and
// whether the change must change the fingerprint; a field that need not
// says why. A new field of Options or pond.Config fails the test until it
// is listed here.
var optionChanges = map[string]struct {
	change  func(*Options)
	changes bool
	why     string
}{
	"Protocol":        {nil, true, "every field, below"},
	"Servers":         {func(o *Options) { o.Servers = [2]string{"server1", "server0"} }, true, ""},
	"CryptoProducer":  {func(o *Options) { o.CryptoProducer = "dealer" }, true, ""},
	"PrivateDivision": {func(o *Options) { o.PrivateDivision = true }, true, ""},
	"SessionID":       {func(o *Options) { o.SessionID = "other" }, false, "the handshake compares session ids on their own"},
	"Rand":            {func(o *Options) { o.Rand = newSeededRand(9) }, false, "randomness changes the masks, not what is computed"},
	"Players":         {func(o *Options) { o.Players = []string{"server0", "server1", "server2"} }, false, "who connects, not what is computed"},
	"Rounds":          {func(o *Options) { o.Rounds.MinOwners = 3 }, false, "a fixed-owner plan has no rounds; TestCohortFingerprint checks plans for rounds"},
}

// TestFingerprintCoversEverySetting: two hosts whose settings would make
// them compute differently (16 or 20 fractional bits, say) compile
// different fingerprints and so refuse to run together. Issue 8, point 4.
func TestFingerprintCoversEverySetting(t *testing.T) {
	base := Options{SessionID: "fp"}
	want := fingerprintOf(t, 3, base)
	assert.Equal(t, want, fingerprintOf(t, 3, base), "same program, same fingerprint")
	assert.NotEqual(t, want, fingerprintOf(t, 2, base), "another graph")
	spelt := base
	// The mean of 3 computes in Z_2^32, with 30 − 16 − ⌊log2 3⌋ integer bits.
	spelt.Protocol = pond.Config{FracBits: pond.DefaultFracBits, IntBits: 13, StatGap: pond.DefaultStatGap, Ring: pond.Ring32}
	spelt.Servers = [2]string{players.Server0, players.Server1}
	assert.Equal(t, want, fingerprintOf(t, 3, spelt), "the defaults spelt out compute alike")

	cfgType := reflect.TypeFor[pond.Config]()
	for i := range cfgType.NumField() {
		name := cfgType.Field(i).Name
		t.Run("Protocol."+name, func(t *testing.T) {
			change, ok := configChanges[name]
			require.True(t, ok, "pond.Config.%s is not in configChanges", name)
			opts := base
			change(&opts.Protocol)
			assert.NotEqual(t, want, fingerprintOf(t, 3, opts), "changing Protocol.%s must change the fingerprint", name)
		})
	}
	optType := reflect.TypeFor[Options]()
	for i := range optType.NumField() {
		name := optType.Field(i).Name
		t.Run(name, func(t *testing.T) {
			c, ok := optionChanges[name]
			require.True(t, ok, "Options.%s is not in optionChanges: say whether it changes the computation", name)
			if c.change == nil {
				return
			}
			opts := base
			c.change(&opts)
			if c.changes {
				assert.NotEqual(t, want, fingerprintOf(t, 3, opts), "changing %s must change the fingerprint", name)
			} else {
				assert.Equal(t, want, fingerprintOf(t, 3, opts), "%s: %s", name, c.why)
			}
		})
	}
}

// Local truncation with a division done in the clear prints the same plan
// as interactive truncation, and still gets another fingerprint: the
// fingerprint hashes the configuration, not only the plan's text.
func TestFingerprintIsNotOnlyThePlanText(t *testing.T) {
	plan := func(opts Options) *Plan {
		g, op := flGraph(2)
		s, err := NewLocal(g, opts)
		require.NoError(t, err)
		defer s.Close()
		p, err := s.Plan(op)
		require.NoError(t, err)
		return p
	}
	a, b := plan(Options{}), plan(Options{Protocol: pond.Config{Truncation: pond.Local}})
	assert.Equal(t, a.String(), b.String())
	assert.NotEqual(t, a.Fingerprint(), b.Fingerprint())
}

func TestPublicTensorWire(t *testing.T) {
	in := publicTensor{Shape: graph.Shape{2, 3}, Data: []float64{1, -2, 3.5, 0, 1e300, -0}}
	b, err := in.MarshalBinary()
	require.NoError(t, err)
	assert.Len(t, b, 8*6, "the elements and nothing else")
	out := publicTensor{Shape: graph.Shape{2, 3}}
	require.NoError(t, out.UnmarshalBinary(b))
	assert.Equal(t, in, out)
	view, ok := wireView(in.Data)
	if ok {
		assert.Equal(t, b, view, "the tensor's memory is its encoding")
	}
	inPlace := publicTensor{Shape: graph.Shape{2, 3}}
	require.NoError(t, inPlace.decodeInPlace(bytes.Clone(b)))
	assert.Equal(t, in, inPlace)

	_, err = (&publicTensor{Shape: graph.Shape{2}, Data: []float64{1}}).MarshalBinary()
	assert.Error(t, err, "data that does not fill its shape")
	for name, data := range map[string][]byte{
		"empty":      {},
		"short data": b[:len(b)-1],
		"one short":  b[:len(b)-8],
		"long data":  append(bytes.Clone(b), 0),
	} {
		out := publicTensor{Shape: graph.Shape{2, 3}}
		assert.ErrorIs(t, out.UnmarshalBinary(data), ErrWire, name)
		assert.ErrorIs(t, out.decodeInPlace(bytes.Clone(data)), ErrWire, name)
	}
}

func FuzzPublicTensorUnmarshal(f *testing.F) {
	b, _ := (&publicTensor{Shape: graph.Shape{2}, Data: []float64{1, 2}}).MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, q := publicTensor{Shape: graph.Shape{2}}, publicTensor{Shape: graph.Shape{2}}
		err := p.UnmarshalBinary(data)
		errInPlace := q.decodeInPlace(bytes.Clone(data))
		require.Equal(t, err == nil, errInPlace == nil, "both decoders agree on validity")
		if err != nil {
			return
		}
		assert.Equal(t, len(p.Data), len(q.Data))
		out, err := p.MarshalBinary()
		require.NoError(t, err)
		assert.Equal(t, data, out)
		out, err = q.MarshalBinary()
		require.NoError(t, err)
		assert.Equal(t, data, out)
	})
}

// messageOrder lists, per (sender, receiver) pair, the edges of the
// messages the sender's plan sends and those the receiver's plan receives,
// in plan order.
func messageOrder(p *Plan) (sent, received map[[2]string][]uint64) {
	sent, received = map[[2]string][]uint64{}, map[[2]string][]uint64{}
	add := func(m map[[2]string][]uint64, from, to string, e uint64) {
		m[[2]string{from, to}] = append(m[[2]string{from, to}], e)
	}
	truncate := func(t truncation, player string) {
		switch {
		case t.local:
		case t.party == pond.Server0:
			add(sent, player, t.peer, t.edge)
		default:
			add(received, t.peer, player, t.edge)
		}
	}
	for player, steps := range p.steps {
		for _, s := range steps {
			switch s := s.(type) {
			case *sendPublicStep:
				add(sent, player, s.to, s.edge)
			case *recvPublicStep:
				add(received, s.from, player, s.edge)
			case *shareStep:
				add(sent, player, s.seedTo, s.seedEdge)
				add(sent, player, s.maskedTo, s.maskedEdge)
			case *recvSeedStep:
				add(received, s.from, player, s.edge)
			case *recvMaskedStep:
				add(received, s.from, player, s.edge)
			case *mulPublicStep:
				truncate(s.trunc, player)
			case *tripleStep:
				add(sent, player, s.servers[0], s.edges[0])
				add(sent, player, s.servers[1], s.edges[1])
			case *recvTripleStep:
				add(received, s.from, player, s.edge)
			case *productStep:
				add(sent, player, s.peer, s.sendEdge)
				add(received, s.peer, player, s.recvEdge)
				truncate(s.trunc, player)
			case *publicProductStep:
				truncate(s.trunc, player)
			case *sendShareStep:
				add(sent, player, s.to, s.edge)
			case *revealStep:
				for _, e := range s.edges {
					add(received, s.servers[0], player, e[0])
					add(received, s.servers[1], player, e[1])
				}
			}
		}
	}
	return sent, received
}

// TestPlansReceiveInSendOrder checks what makes backpressure safe (see
// transport.Mailbox.Deliver): every player receives each sender's messages
// in the order that sender sends them, so a receiver never needs a message
// that is stuck behind unread ones from the same sender.
func TestPlansReceiveInSendOrder(t *testing.T) {
	shapes := []graph.Shape{{3}, {2, 2}}
	for _, opts := range []Options{{}, {PrivateDivision: true}, {PrivateDivision: true, Protocol: pond.Config{Truncation: pond.Local}}} {
		for name, build := range map[string]func() (*graph.Graph, *graph.Op){
			"federated learning": func() (*graph.Graph, *graph.Op) { return flGraph(3) },
			"mean": func() (*graph.Graph, *graph.Op) {
				g, op, _ := meanGraph(randomInputs(newBenchRand(), 3, shapes, 1), shapes)
				return g, op
			},
		} {
			g, op := build()
			s, err := NewLocal(g, opts)
			require.NoError(t, err)
			plan, err := s.Plan(op)
			require.NoError(t, err)
			sent, received := messageOrder(plan)
			assert.NotEmpty(t, sent)
			assert.Equal(t, sent, received, "%s, options %+v", name, opts)
			require.NoError(t, s.Close())
		}
	}
}
