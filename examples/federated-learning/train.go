package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sort"
	"sync/atomic"
	"time"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/examples/federated-learning/mnist"
	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/graph"
	"github.com/shareflow/shareflow/internal/units"
	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/session"
)

// buildGraph links the players as TF Encrypted's example does: the model
// reaches every data owner as a public edge, each data owner's gradient
// enters the secure computation as a private input, the servers average
// the gradients without decrypting them, and only the mean is revealed to
// the model owner, who updates the model with it.
func buildGraph(modelOwner *ModelOwner, dataOwners []*DataOwner) (*graph.Graph, *graph.Op, error) {
	g := graph.New()
	shapes := make([]graph.Shape, 0, 4)
	for _, s := range modelOwner.ParamShapes() {
		shapes = append(shapes, graph.Shape(s))
	}

	// the current model, sent in the clear to every data owner
	weights := g.DefinePublicInput(modelOwner.Name, modelOwner.Weights, shapes)

	// collect encrypted gradients from data owners
	var modelGrads [][]*graph.Private
	for _, dataOwner := range dataOwners {
		modelGrads = append(modelGrads, g.DefinePrivateInput(dataOwner.Name, dataOwner.ComputeGradient, shapes, weights...))
	}

	// compute mean of gradients (without decrypting)
	aggregatedGrads := make([]*graph.Private, len(shapes))
	for i := range aggregatedGrads {
		grads := graph.Column(modelGrads, i)
		aggregatedGrads[i] = g.Div(g.AddN(grads...), float64(len(grads)))
	}

	// send the encrypted aggregated gradients to the model owner for it to decrypt and update
	iteration := g.DefineOutput(modelOwner.Name, aggregatedGrads, modelOwner.UpdateModel)
	return g, iteration, g.Err()
}

// buildRoundsGraph links the players for rounds with a cohort: the model
// reaches every data owner of the round's cohort as a public edge, each
// computes its gradient on its own data, and the servers average the
// gradients of the round's survivors without decrypting them; only the
// mean reaches the model owner. With weighted, each gradient counts as
// many times as its owner has training examples (FedAvg), the count
// entering as a private input too.
func buildRoundsGraph(modelOwner *ModelOwner, members *memberSet, weighted bool) (*graph.Graph, *graph.Op, error) {
	g := graph.New()
	shapes := make([]graph.Shape, 0, 4)
	for _, s := range modelOwner.ParamShapes() {
		shapes = append(shapes, graph.Shape(s))
	}

	// the current model, sent in the clear to every data owner of the round
	weights := g.DefinePublicInput(modelOwner.Name, modelOwner.Weights, shapes)

	// a cohort of data owners, chosen anew every round from those connected
	dataOwners := g.DefineCohort("data-owners")

	// the training step, from which each data owner picks its batch
	step := g.DefinePublicInput(modelOwner.Name, modelOwner.Step, []graph.Shape{{1}})

	// collect encrypted gradients from the round's cohort
	modelGrads := g.DefineCohortInput(dataOwners, members.ComputeGradient, shapes, append(weights, step...)...)

	// compute mean of the survivors' gradients (without decrypting)
	aggregatedGrads := make([]*graph.Private, len(shapes))
	if weighted {
		examples := g.DefineCohortInput(dataOwners, members.Examples, []graph.Shape{{1}})[0]
		for i := range aggregatedGrads {
			aggregatedGrads[i] = g.WeightedMean(modelGrads[i], examples)
		}
	} else {
		for i := range aggregatedGrads {
			aggregatedGrads[i] = g.Mean(modelGrads[i])
		}
	}

	// send the encrypted aggregated gradients to the model owner for it to decrypt and update
	iteration := g.DefineOutput(modelOwner.Name, aggregatedGrads, modelOwner.UpdateModel)
	return g, iteration, g.Err()
}

// memberSet is the data owners a process hosts as members of the cohort:
// all of them in a run in one process, its own across hosts. It finds the
// one a cohort input runs for by graph.Member, and simulates dropouts
// (--dropout). It is safe for concurrent use.
type memberSet struct {
	owners    map[string]*DataOwner
	seed      uint64
	dropout   float64
	maxWeight int
	round     atomic.Uint64 // the round dropouts are drawn for
}

func newMemberSet(o options, owners []*DataOwner) *memberSet {
	m := &memberSet{owners: map[string]*DataOwner{}, seed: o.seed, dropout: o.dropout, maxWeight: o.maxWeight}
	for _, d := range owners {
		if d.shard != nil {
			m.owners[d.Name] = d
		}
	}
	return m
}

// names returns the members' names, sorted.
func (m *memberSet) names() []string {
	out := make([]string, 0, len(m.owners))
	for name := range m.owners {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// member returns the data owner ctx runs for, or an error that drops it
// out of the round: it is not hosted here, or it fails to answer in this
// round of a simulation.
func (m *memberSet) member(ctx context.Context) (*DataOwner, error) {
	name := graph.Member(ctx)
	d, ok := m.owners[name]
	if !ok {
		return nil, fmt.Errorf("member %q is not hosted in this process", name)
	}
	if dropsOut(m.seed, m.round.Load(), name, m.dropout) {
		return nil, fmt.Errorf("%w: %s", graph.ErrDropout, dropoutReason(m.dropout))
	}
	return d, nil
}

// ComputeGradient is the cohort input of every member: its gradient at
// the weights the model owner sent, on the batch of the step it sent
// with them (inputs: W1, b1, W2, b2, step; see DataOwner.GradientAt).
func (m *memberSet) ComputeGradient(ctx context.Context, inputs []*tensor.Dense) ([]*tensor.Dense, error) {
	d, err := m.member(ctx)
	if err != nil {
		return nil, err
	}
	if len(inputs) != model.NumTensors+1 || inputs[model.NumTensors] == nil {
		return nil, fmt.Errorf("%s: compute gradient: %d inputs, want the %d weights and the step", d.Name, len(inputs), model.NumTensors)
	}
	step, err := model.Float64s(inputs[model.NumTensors], []int{1})
	if err != nil {
		return nil, fmt.Errorf("%s: compute gradient: step: %w", d.Name, err)
	}
	return d.GradientAt(ctx, inputs[:model.NumTensors], step[0])
}

// weightUnit is the number of training examples a weight of 1 stands
// for. The weight and each weighted gradient enter Pond in fixed point,
// whose range is ±1024 by default: in thousands of examples, the default
// --max-weight of 100,000 is a weight of 100, and a weighted gradient
// stays in range as long as no element of a gradient exceeds 10.24. A
// member whose upload does not fit drops out of the round, saying so.
const weightUnit = 1000

// Examples is the weight of every member in a weighted mean: its number
// of local training examples (in thousands, see weightUnit), refused
// above --max-weight.
func (m *memberSet) Examples(ctx context.Context, _ []*tensor.Dense) ([]*tensor.Dense, error) {
	d, err := m.member(ctx)
	if err != nil {
		return nil, err
	}
	w, err := weightOf(d, m.maxWeight)
	if err != nil {
		return nil, err
	}
	return []*tensor.Dense{tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{float64(w) / weightUnit}))}, nil
}

// federation is the example's players and the graph that links them.
type federation struct {
	modelOwner *ModelOwner
	dataOwners []*DataOwner
	members    *memberSet // with rounds of a cohort
	graph      *graph.Graph
	iteration  *graph.Op
}

// localOptions returns the options of a session that runs the whole
// federation in this process: sessionOptions, and with rounds of a cohort
// the members hosted here, which bound the cohort and so the plan's ring
// and input range.
func (f *federation) localOptions(o options) session.Options {
	opts := sessionOptions(o)
	if f.members != nil {
		opts.Rounds.Members = f.members.names()
	}
	return opts
}

// newFederation builds the players, each with its own data, and the graph:
// the classic one of buildGraph with --fixed-owners, buildRoundsGraph's
// otherwise. With self empty every player is built for this process;
// otherwise only player self is, and the others are stand-ins that name
// them in the graph (see newPlayers).
func newFederation(o options, self string, shards []*mnist.Dataset, test *mnist.Dataset) (*federation, error) {
	modelOwner, dataOwners, err := newPlayers(o, self, shards, test)
	if err != nil {
		return nil, err
	}
	f := &federation{modelOwner: modelOwner, dataOwners: dataOwners}
	if o.fixedOwners {
		f.graph, f.iteration, err = buildGraph(modelOwner, dataOwners)
	} else {
		f.members = newMemberSet(o, dataOwners)
		f.graph, f.iteration, err = buildRoundsGraph(modelOwner, f.members, o.weighted)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Close releases the data owners' gradient machinery.
func (f *federation) Close() {
	for _, d := range f.dataOwners {
		d.Close()
	}
}

// newPlayers builds the model owner and the data owners, each with its own
// data: the model owner the test set, data owner i shards[i], its disjoint
// shard of the training set.
//
// In a run across hosts (self not empty) only player self is real, and
// only its data need be given (see loadPlayerData). Every other player is
// a stand-in: the model owner without a test set (so it never evaluates)
// and data owners without data, whose functions the session never calls
// here, as they run on their own hosts. A host thus uses only its own
// player's data, and a server reads none.
func newPlayers(o options, self string, shards []*mnist.Dataset, test *mnist.Dataset) (*ModelOwner, []*DataOwner, error) {
	here := func(name string) bool { return self == "" || self == name }
	mo := ModelOwnerConfig{LearningRate: o.learningRate, Seed: o.seed, EvalEvery: o.evalEvery}
	if here(players.ModelOwner) {
		mo.TestSet = test
	}
	modelOwner, err := NewModelOwner(players.ModelOwner, mo)
	if err != nil {
		return nil, nil, err
	}
	dataOwners := make([]*DataOwner, o.dataOwners)
	for i := range dataOwners {
		name := players.DataOwner(i)
		if !here(name) {
			dataOwners[i] = &DataOwner{Name: name}
			continue
		}
		var shard *mnist.Dataset
		if i < len(shards) {
			shard = shards[i]
		}
		d, err := NewDataOwner(name, shard, o.batchSize, o.seed*1000+uint64(i))
		if err != nil {
			return nil, nil, err
		}
		dataOwners[i] = d
	}
	return modelOwner, dataOwners, nil
}

// splitTrain cuts the training set into one shard per data owner, for a
// run in one process: equal shards, or in the proportions of
// --shard-sizes.
func splitTrain(o options, train *mnist.Dataset) ([]*mnist.Dataset, error) {
	if o.shardSizes != nil {
		shards, err := train.SplitOf(o.shardSizes)
		if err != nil {
			return nil, fmt.Errorf("splitting the training set in the proportions of --shard-sizes: %w", err)
		}
		return shards, nil
	}
	shards, err := train.Split(o.dataOwners)
	if err != nil {
		return nil, fmt.Errorf("splitting the training set over %d data owners: %w", o.dataOwners, err)
	}
	return shards, nil
}

// loadData loads the whole data set, for a run in one process.
func loadData(o options) (train, test *mnist.Dataset, source string, err error) {
	if o.dataDir == "" {
		train, test, err = mnist.Embedded()
		return train, test, fmt.Sprintf("embedded Fashion-MNIST subset (%d training, %d test images)", mnist.EmbeddedTrainN, mnist.EmbeddedTestN), err
	}
	train, test, err = mnist.Load(o.dataDir)
	if err != nil {
		return nil, nil, "", err
	}
	return train, test, fmt.Sprintf("%s (%d training, %d test images)", o.dataDir, train.N, test.N), nil
}

// loadPlayerData loads what player reads in a run across hosts, and only
// that: data owner i its own shard of the training set (shards[i], the
// other entries nil), the model owner the test set, any other player
// nothing. The shard holds the examples splitTrain would give data owner
// i, read without keeping the rest of the training set (see
// mnist.LoadShard). source says what was loaded, for the player's log.
func loadPlayerData(o options, player string) (shards []*mnist.Dataset, test *mnist.Dataset, source string, err error) {
	from := o.dataDir
	if from == "" {
		from = "the embedded Fashion-MNIST subset"
	}
	switch players.RoleOf(player) {
	case players.RoleModelOwner:
		if o.dataDir == "" {
			test, err = mnist.LoadTestFS(mnist.EmbeddedFS(), ".")
		} else {
			test, err = mnist.LoadTest(o.dataDir)
		}
		if err != nil {
			return nil, nil, "", fmt.Errorf("%s: loading the test set: %w", player, err)
		}
		return nil, test, fmt.Sprintf("the %d test images of %s", test.N, from), nil
	case players.RoleDataOwner:
		for i := range o.dataOwners {
			if players.DataOwner(i) != player {
				continue
			}
			var shard *mnist.Dataset
			switch {
			case o.shardSizes != nil && o.dataDir == "":
				shard, err = mnist.LoadShardOfFS(mnist.EmbeddedFS(), ".", i, o.shardSizes)
			case o.shardSizes != nil:
				shard, err = mnist.LoadShardOf(o.dataDir, i, o.shardSizes)
			case o.dataDir == "":
				shard, err = mnist.LoadShardFS(mnist.EmbeddedFS(), ".", i, o.dataOwners)
			default:
				shard, err = mnist.LoadShard(o.dataDir, i, o.dataOwners)
			}
			if err != nil {
				return nil, nil, "", fmt.Errorf("%s: loading shard %d of %d of the training set: %w", player, i, o.dataOwners, err)
			}
			shards = make([]*mnist.Dataset, o.dataOwners)
			shards[i] = shard
			return shards, nil, fmt.Sprintf("%d training images, shard %d of %d of %s", shard.N, i, o.dataOwners, from), nil
		}
		return nil, nil, "", fmt.Errorf("%s is not one of the %d data owners", player, o.dataOwners)
	}
	return nil, nil, "", nil
}

// result is what one training run measured.
type result struct {
	mode       string
	accuracy   float64
	loss       float64
	perIter    time.Duration
	stats      []session.LinkStats
	history    []Evaluation
	trainLoss  []float64
	iterations int // rounds this process ran, skipped ones included
	steps      int // the model's updates, over the whole run
	rounds     roundStats
	cohorts    bool            // the run sampled cohorts or simulated dropouts
	model      []*tensor.Dense // the model owner's final parameters
}

// cohortRounds reports whether o runs rounds of a cohort (the default)
// rather than the classic program of --fixed-owners, in which every data
// owner answers every iteration.
func cohortRounds(o options) bool { return !o.fixedOwners }

// trainOnce trains with the given mode ("secure" or "plaintext"), from
// scratch or from the checkpoint, and returns what it measured. log gets
// the per-round lines (nil: none).
func trainOnce(ctx context.Context, o options, mode string, train, test *mnist.Dataset, progress *progress, log *slog.Logger) (*result, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	shards, err := splitTrain(o, train)
	if err != nil {
		return nil, err
	}
	f, err := newFederation(o, "", shards, test)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	modelOwner, dataOwners := f.modelOwner, f.dataOwners

	d := &driver{o: o, mo: modelOwner, owners: dataOwners, log: log, progress: progress,
		sampler: sampleStream(o.seed)} // in one process the progress line shows every round; the log, those that lost an owner
	if o.checkpointDir != "" {
		d.run = runFields(o, len(dataOwners), modelOwner.Architecture())
	}
	if err := d.resume(); err != nil {
		return nil, err
	}
	defer d.Close()

	var stats func() []session.LinkStats
	switch {
	case o.fixedOwners:
		fixed := &fixedRounds{names: ownerNames(dataOwners), mo: modelOwner, local: true,
			step: func(ctx context.Context) error { return plainIteration(ctx, modelOwner, dataOwners) }}
		if mode == "secure" {
			agg, err := session.NewLocal(f.graph, f.localOptions(o))
			if err != nil {
				return nil, err
			}
			defer agg.Close()
			fixed.step = func(ctx context.Context) error { return agg.Run(ctx, f.iteration) }
			fixed.stats = agg.Stats
		}
		d.rounds, stats = fixed, fixed.stats
	case mode == "secure":
		if o.weighted {
			for _, o := range dataOwners { // refused at the door, before any round
				if _, err := weightOf(o, d.o.maxWeight); err != nil {
					return nil, err
				}
			}
		}
		opts := f.localOptions(o)
		opts.Rounds.SampleSeed = d.sampler.Uint64() | 1 // a new sample stream after a resume, drawn from the checkpointed one
		s, err := session.NewLocal(f.graph, opts)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		d.rounds = &sessionRounds{
			run:  func(ctx context.Context) error { return s.Run(ctx, f.iteration) },
			last: s.LastRound, mo: modelOwner, members: f.members, index: ownerIndex(dataOwners), ownNumbers: true,
		}
		stats = s.Stats
	default:
		plain, err := newPlainRounds(o, modelOwner, dataOwners, d.sampler)
		if err != nil {
			return nil, err
		}
		d.rounds = plain
	}

	start := time.Now()
	if err := d.train(ctx, mode); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	if err := d.Close(); err != nil {
		return nil, err
	}

	// Time per iteration is training time: the periodic evaluations on the
	// test set are the same in every mode and are left out.
	r := &result{mode: mode, perIter: d.perRound(elapsed), iterations: d.ran, steps: modelOwner.Iteration(), rounds: d.stats, cohorts: cohortRounds(o)}
	r.loss, r.accuracy = modelOwner.Evaluate()
	r.history = append(modelOwner.History(), Evaluation{Iteration: modelOwner.Iteration(), Loss: r.loss, Accuracy: r.accuracy})
	r.trainLoss = d.trainLoss
	r.model, _, _ = modelOwner.snapshot()
	if stats != nil {
		r.stats = stats()
	}
	return r, nil
}

// ownerIndex maps the data owners' names to their places.
func ownerIndex(owners []*DataOwner) map[string]int {
	m := make(map[string]int, len(owners))
	for i, d := range owners {
		m[d.Name] = i
	}
	return m
}

// ownerNames returns the data owners' names.
func ownerNames(owners []*DataOwner) []string {
	names := make([]string, len(owners))
	for i, d := range owners {
		names[i] = d.Name
	}
	return names
}

// train runs the example as the options say and prints the summary.
func train(ctx context.Context, o options, stdout, stderr io.Writer) error {
	if o.Config != "" && !o.printPlan && o.dot == "" {
		return trainRemote(ctx, o, stdout, stderr) // loads only this player's data
	}
	trainSet, testSet, source, err := loadData(o)
	if err != nil {
		return err
	}
	if o.printPlan || o.dot != "" {
		return describe(o, trainSet, testSet, stdout)
	}
	split := fmt.Sprintf("split over %d data owners", o.dataOwners)
	if o.shardSizes != nil {
		split = fmt.Sprintf("split over %d data owners in the proportions %v", o.dataOwners, o.shardSizes)
	}
	fmt.Fprintf(stdout, "data: %s, %s\n", source, split)
	prog := newProgress(stderr, o.quiet)
	level := slog.LevelInfo
	if o.quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	mode := "secure"
	if o.plaintext {
		mode = "plaintext"
	}
	r, err := trainOnce(ctx, o, mode, trainSet, testSet, prog, log)
	if err != nil {
		return err
	}
	printSummary(stdout, r, r.iterations)
	results := []*result{r}
	if o.compare {
		p, err := trainOnce(ctx, o, "plaintext", trainSet, testSet, prog, log)
		if err != nil {
			return err
		}
		printSummary(stdout, p, p.iterations)
		printComparison(stdout, r, p)
		results = append(results, p)
	}
	if o.plot != "" {
		if err := writePlot(o.plot, results[0].trainLoss, results[0].history); err != nil {
			return fmt.Errorf("writing the plot: %w", err)
		}
		fmt.Fprintf(stdout, "training curve written to %s\n", o.plot)
	}
	return nil
}

// printSummary prints what r measured; iterations is the number of
// rounds the link statistics cover.
func printSummary(w io.Writer, r *result, iterations int) {
	if r.steps == iterations {
		fmt.Fprintf(w, "\n%s training: %d iterations, %v per iteration (evaluation excluded)\n", r.mode, iterations, r.perIter.Round(time.Microsecond))
	} else {
		// Skipped rounds, or a resumed run: say both.
		fmt.Fprintf(w, "\n%s training: %d iterations, %d rounds run here, %v per round (evaluation excluded)\n", r.mode, r.steps, iterations, r.perIter.Round(time.Microsecond))
	}
	fmt.Fprintf(w, "  test accuracy %.4f, test loss %.4f\n", r.accuracy, r.loss)
	if r.cohorts || r.rounds.Skipped > 0 || r.rounds.Dropouts > 0 {
		fmt.Fprintf(w, "  rounds: %v\n", r.rounds)
	}
	if len(r.stats) == 0 || iterations == 0 {
		return
	}
	unit := "iteration"
	if r.steps != iterations {
		unit = "round"
	}
	fmt.Fprintf(w, "  bytes sent per %s, by link:\n", unit)
	stats := append([]session.LinkStats(nil), r.stats...)
	sort.SliceStable(stats, func(i, j int) bool { return stats[i].Bytes > stats[j].Bytes })
	var total uint64
	for _, l := range stats {
		total += l.Bytes
		fmt.Fprintf(w, "    %-14s -> %-14s %10s  (%d messages)\n", l.From, l.To,
			units.Bytes(float64(l.Bytes)/float64(iterations)), l.Messages/uint64(iterations))
	}
	fmt.Fprintf(w, "    %-32s %10s\n", "total", units.Bytes(float64(total)/float64(iterations)))
}

func printComparison(w io.Writer, secure, plain *result) {
	fmt.Fprintf(w, "\ncost of secure aggregation (same seed, same data, one run):\n")
	fmt.Fprintf(w, "  time per iteration: secure %v / plaintext %v = %.2f\n",
		secure.perIter.Round(time.Microsecond), plain.perIter.Round(time.Microsecond),
		float64(secure.perIter)/float64(plain.perIter))
	fmt.Fprintf(w, "  test accuracy: secure %.4f, plaintext %.4f (difference %.2f percentage points)\n",
		secure.accuracy, plain.accuracy, 100*math.Abs(secure.accuracy-plain.accuracy))
}

// describe prints the compiled plan or writes the graph, without training:
// where each gradient is shared, and who receives what.
func describe(o options, trainSet, testSet *mnist.Dataset, stdout io.Writer) error {
	shards, err := splitTrain(o, trainSet)
	if err != nil {
		return err
	}
	fed, err := newFederation(o, "", shards, testSet)
	if err != nil {
		return err
	}
	defer fed.Close()
	g, iteration := fed.graph, fed.iteration
	if o.dot != "" {
		f, err := os.Create(o.dot)
		if err != nil {
			return err
		}
		if err := g.WriteDOT(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "graph written to %s (render with: dot -Tpng %s -o graph.png)\n", o.dot, o.dot)
	}
	if o.printPlan {
		s, err := session.NewLocal(g, fed.localOptions(o))
		if err != nil {
			return err
		}
		defer s.Close()
		plan, err := s.Plan(iteration)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "fingerprint %s\n", plan.Fingerprint())
		_, err = plan.WriteTo(stdout)
		return err
	}
	return nil
}
