package session

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	mrand "math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
	"github.com/shareflow/shareflow/session/transport"
)

// creationOnlyRand is a seeded reader that is not safe for concurrent use
// and that fails the test if it is read once sealed.
type creationOnlyRand struct {
	t      *testing.T
	r      *mrand.ChaCha8
	sealed bool
}

func (c *creationOnlyRand) Read(b []byte) (int, error) {
	if c.sealed {
		c.t.Errorf("Options.Rand read after the session was created")
	}
	return c.r.Read(b)
}

// TestIssue8SharedRandIsNotSharedByPlayers: a reader that is not safe for
// concurrent use, given as Options.Rand to a session in which every
// player draws seeds (owners share inputs, server0 truncates), is read
// only while the session is created; the players draw from streams of
// their own. Run with -race. Issue 8, point 5.
func TestIssue8SharedRandIsNotSharedByPlayers(t *testing.T) {
	shapes := []graph.Shape{{3000}}
	inputs := randomInputs(newBenchRand(), 4, shapes, 10)
	g, op, got := meanGraph(inputs, shapes)
	src := &creationOnlyRand{t: t, r: newSeededRand(1)}
	s, err := NewLocal(g, Options{Rand: src, PrivateDivision: true})
	require.NoError(t, err)
	defer s.Close()
	src.sealed = true
	for range 3 {
		require.NoError(t, s.Run(context.Background(), op))
	}
	for k, v := range (*got)[0] {
		var sum float64
		for i := range inputs {
			sum += inputs[i][0][k]
		}
		require.InDelta(t, sum/4, v, 1e-3, "element %d", k)
	}
}

// Each player's stream follows from Options.Rand and the player's name
// alone: reproducible, and different for different players.
func TestPlayerRandIsReproducibleAndPerPlayer(t *testing.T) {
	draw := func(src io.Reader, player string) []byte {
		pr, err := newPlayerRand(src)
		require.NoError(t, err)
		pr.prepare(player)
		b := make([]byte, 64)
		_, err = io.ReadFull(pr.of(player), b)
		require.NoError(t, err)
		return b
	}
	a := draw(newSeededRand(5), "server0")
	assert.Equal(t, a, draw(newSeededRand(5), "server0"), "same source, same player: same stream")
	assert.NotEqual(t, a, draw(newSeededRand(5), "server1"), "another player")
	assert.NotEqual(t, a, draw(newSeededRand(6), "server0"), "another source")

	pr, err := newPlayerRand(nil)
	require.NoError(t, err)
	pr.prepare("server0")
	assert.NotNil(t, pr.of("server0"), "without Options.Rand, crypto/rand")
	_, err = newPlayerRand(strings.NewReader("short"))
	assert.ErrorContains(t, err, "reading a key from Options.Rand")
}

// TestIssue8RemotePlayerSittingOutKeepsIterations runs a graph with two
// ops as Remote players: data-owner-1 has no part in the first op, which
// reveals data-owner-0's input alone, and a part in the second, a sum of
// both owners' inputs. A player that sits out an iteration must count it
// as the others do; otherwise its later messages carry an old iteration
// in their keys and mask domains, and the servers wait for them in vain.
// Issue 8, point 6.
func TestIssue8RemotePlayerSittingOutKeepsIterations(t *testing.T) {
	names := []string{players.Server0, players.Server1, players.ModelOwner, "data-owner-0", "data-owner-1"}
	var solo, both [][]float64
	errs := runPlayers(t, names, func(p string, _ *transport.MemoryEndpoint) playerSetup {
		calls := 0.0
		g := graph.New()
		a := g.DefinePrivateInput("data-owner-0", func(context.Context, []*tensor.Dense) ([]*tensor.Dense, error) {
			calls++
			return []*tensor.Dense{tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{calls, -calls}))}, nil
		}, []graph.Shape{{2}})
		b := g.DefinePrivateInput("data-owner-1", fixed([]float64{3, 4}), []graph.Shape{{2}})
		record := func(dst *[][]float64) graph.OutputFunc {
			return func(_ context.Context, v []*tensor.Dense) error {
				*dst = append(*dst, slices.Clone(v[0].Float64s()))
				return nil
			}
		}
		ops := []*graph.Op{
			g.DefineOutput(players.ModelOwner, a, record(&solo)),
			g.DefineOutput(players.ModelOwner, []*graph.Private{g.Add(a[0], b[0])}, record(&both)),
		}
		return playerSetup{g: g, ops: ops, opts: Options{SessionID: "sit-out", Players: names}}
	}, func(p string, s *Remote, ops []*graph.Op) error {
		for range 2 {
			for _, op := range ops {
				if err := runIterations(s, op, 1, 5*time.Second); err != nil {
					return err
				}
			}
		}
		return nil
	})
	for p, err := range errs {
		require.NoError(t, err, p)
	}
	assert.Equal(t, [][]float64{{1, -1}, {3, -3}}, solo)
	assert.Equal(t, [][]float64{{2 + 3, -2 + 4}, {4 + 3, -4 + 4}}, both)
}

// TestStepsDeclareWhatTheyTouch runs plans that hold every kind of step
// and checks every access exec makes to its player's values against the
// step's declarations (step.reads, step.writes), from which the compiler
// derives which buffers may be given away. It also fails when the package
// has a step type that none of these plans executes, so that a new step
// cannot escape the check.
func TestStepsDeclareWhatTheyTouch(t *testing.T) {
	executed := map[string]bool{}
	for _, opts := range []Options{{}, {PrivateDivision: true}, {PrivateDivision: true, Protocol: pond.Config{Truncation: pond.Local}}} {
		for name, build := range map[string]func() (*graph.Graph, *graph.Op){
			"federated learning": func() (*graph.Graph, *graph.Op) { return flGraph(2) },
			"every verb": func() (*graph.Graph, *graph.Op) {
				g, op, _, _ := everyVerbGraph()
				return g, op
			},
			"every product": everyProductGraph,
			"cohort": func() (*graph.Graph, *graph.Op) {
				g, op, _ := everyAggregationGraph()
				return g, op
			},
		} {
			g, op := build()
			opts.Rounds.Members = cohortMembers(3)
			s, err := NewLocal(g, opts)
			require.NoError(t, err)
			var mu sync.Mutex
			var undeclared []string
			s.trace = func(player string, st step, v value, write bool) {
				declared, verb := st.reads(), "reads"
				if write {
					declared, verb = st.writes(), "writes"
				}
				if !slices.Contains(declared, v) {
					mu.Lock()
					undeclared = append(undeclared, player+": "+st.String()+" "+verb+" the "+v.String()+" but does not declare it")
					mu.Unlock()
				}
			}
			require.NoError(t, s.Run(context.Background(), op), "%s, options %+v", name, opts)
			require.NoError(t, s.Close())
			assert.Empty(t, undeclared, "%s, options %+v", name, opts)
			plan, err := s.Plan(op)
			require.NoError(t, err)
			all := slices.Collect(maps.Values(plan.steps))
			if plan.cohort != nil {
				all = append(all, plan.cohort.member)
			}
			for _, steps := range all {
				for _, st := range steps {
					executed[reflect.TypeOf(st).Elem().Name()] = true
				}
			}
		}
	}
	types := stepTypes(t)
	require.NotEmpty(t, types)
	for _, name := range types {
		assert.True(t, executed[name], "step type %s is never executed by this test, so its declarations are not checked: add a plan that uses it", name)
	}
}

// stepTypes returns the names of the types of this package's source (tests
// aside) that have an exec method: the step types.
func stepTypes(t *testing.T) []string {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	var names []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || fn.Name.Name != "exec" {
				continue
			}
			recv := fn.Recv.List[0].Type
			if star, ok := recv.(*ast.StarExpr); ok {
				recv = star.X
			}
			if id, ok := recv.(*ast.Ident); ok {
				names = append(names, id.Name)
			}
		}
	}
	slices.Sort(names)
	return names
}
