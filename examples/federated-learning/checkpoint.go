package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gorgonia.org/tensor"

	"github.com/shareflow/shareflow/examples/federated-learning/model"
	"github.com/shareflow/shareflow/internal/atomicfile"
)

// A checkpoint is the model owner's state after a training step, from
// which a run restarted with the same flags resumes (--checkpoint DIR).
//
// The file, DIR/checkpointFile, is
//
//	magic     8 bytes  "SFFLCKPT"
//	version   uint32   checkpointVersion
//	hlen      uint32   length of the header
//	header    hlen bytes of JSON: checkpointHeader
//	payload   the tensors and lists the header counts, little-endian:
//	          the model's parameters (W1, b1, W2, b2) as float64s,
//	          the evaluations (iteration uint64, loss float64, accuracy float64 each),
//	          the training loss per step (float64 each),
//	          each in-process data owner's batch order (uint32 each)
//	checksum  32 bytes, SHA-256 of everything before it
//
// all integers little-endian. A checkpoint is refused, naming the file and
// the reason, when its checksum or any length does not hold (damaged or
// cut short), when it was written by another version, or when the flags
// that define the run (checkpointHeader.Run) or the network differ from
// this run's: resuming a different run would silently train a different
// model. It is written atomically (internal/atomicfile), so a crash while
// writing leaves the previous checkpoint.

const (
	checkpointMagic   = "SFFLCKPT"
	checkpointVersion = 1
	// checkpointFile is the checkpoint's name in --checkpoint DIR.
	checkpointFile = "federated-learning.ckpt"
	// maxCheckpointHeader bounds the JSON header a reader accepts.
	maxCheckpointHeader = 16 << 20
	// maxCheckpointBytes bounds the whole file a reader accepts: far more
	// than a 784-512-10 network (3.3 MB) with the batch orders of a
	// million training images.
	maxCheckpointBytes = 1 << 30
)

// errCheckpoint is wrapped by every refusal of a checkpoint.
var errCheckpoint = errors.New("checkpoint refused")

// checkpointError is a refused checkpoint: the file and why.
type checkpointError struct {
	File string
	Err  error
}

func (e *checkpointError) Error() string {
	return fmt.Sprintf("checkpoint %s: %v; nothing was overwritten (restart with the flags it was written with, or move it away to start afresh)", e.File, e.Err)
}

func (e *checkpointError) Unwrap() []error { return []error{errCheckpoint, e.Err} }

// runField is one setting that defines a run: a resumed run must have the
// same.
type runField struct {
	Flag  string `json:"flag"`
	Value string `json:"value"`
}

// runFields returns the settings that define the run of o with n data
// owners: what a checkpoint must have been written for to be resumed.
// The number of iterations is not among them, so a run may be resumed to
// train for longer; nor are the settings that only say how to run it
// (checkpoint interval, round log, deadlines, the skip limit).
func runFields(o options, n int, arch model.Architecture) []runField {
	data := o.dataDir
	if data == "" {
		data = "embedded"
	}
	sizes := "equal"
	if o.shardSizes != nil {
		parts := make([]string, len(o.shardSizes))
		for i, f := range o.shardSizes {
			parts[i] = strconv.FormatFloat(f, 'g', -1, 64)
		}
		sizes = strings.Join(parts, ",")
	}
	mode := "secure"
	if o.plaintext {
		mode = "plaintext"
	}
	trunc := "interactive"
	if o.truncation != 0 {
		trunc = "local"
	}
	maxWeight := "-"
	if o.weighted {
		maxWeight = strconv.Itoa(o.maxWeight)
	}
	return []runField{
		{"architecture", arch.String()},
		{"data", data},
		{"data-owners", strconv.Itoa(n)},
		{"shard-sizes", sizes},
		{"seed", strconv.FormatUint(o.seed, 10)},
		{"batch-size", strconv.Itoa(o.batchSize)},
		{"learning-rate", strconv.FormatFloat(o.learningRate, 'g', -1, 64)},
		{"sample", strconv.Itoa(o.sample)},
		{"weighted", strconv.FormatBool(o.weighted)},
		{"max-weight", maxWeight},
		{"min-owners", strconv.Itoa(o.minOwners)},
		{"dropout", strconv.FormatFloat(o.dropout, 'g', -1, 64)},
		{"mode", mode},
		{"truncation", trunc},
		{"private-division", strconv.FormatBool(o.privateDiv)},
	}
}

// fingerprint returns the SHA-256 of the run's fields, in hex.
func fingerprint(run []runField) string {
	h := sha256.New()
	for _, f := range run {
		fmt.Fprintf(h, "%s=%s\n", f.Flag, f.Value)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ownerState is an in-process data owner's batch iterator.
type ownerState struct {
	Name    string `json:"name"`
	RNG     []byte `json:"rng"`   // its rand.PCG, marshalled
	Pos     int    `json:"pos"`   // next position in its order
	Epoch   int    `json:"epoch"` // epochs completed
	OrderN  int    `json:"order"` // examples in its order (in the payload)
	order   []uint32
	Batches int `json:"batches"` // batches drawn so far
}

// checkpoint is the state a checkpoint holds.
type checkpoint struct {
	Run       []runField
	Arch      model.Architecture
	Step      int    // model updates applied
	Round     uint64 // rounds run, skipped ones included
	Params    []*tensor.Dense
	Sampler   []byte // the model owner's sample stream (rand.PCG), marshalled
	Owners    []ownerState
	Stats     roundStats
	History   []Evaluation
	TrainLoss []float64
}

// checkpointHeader is the JSON header of the file.
type checkpointHeader struct {
	Format      string             `json:"format"`
	Arch        model.Architecture `json:"architecture"`
	Run         []runField         `json:"run"`
	Fingerprint string             `json:"fingerprint"`
	Step        int                `json:"step"`
	Round       uint64             `json:"round"`
	Sampler     []byte             `json:"sampler"`
	Owners      []ownerState       `json:"owners"`
	Stats       roundStats         `json:"stats"`
	Evaluations int                `json:"evaluations"`
	TrainLoss   int                `json:"train_loss"`
}

const checkpointFormat = "shareflow federated-learning checkpoint"

// encode returns the file's bytes.
func (c *checkpoint) encode() ([]byte, error) {
	h := checkpointHeader{
		Format: checkpointFormat, Arch: c.Arch, Run: c.Run, Fingerprint: fingerprint(c.Run),
		Step: c.Step, Round: c.Round, Sampler: c.Sampler, Owners: c.Owners, Stats: c.Stats,
		Evaluations: len(c.History), TrainLoss: len(c.TrainLoss),
	}
	for i := range h.Owners {
		h.Owners[i].OrderN = len(h.Owners[i].order)
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteString(checkpointMagic)
	le := binary.LittleEndian
	buf.Write(le.AppendUint32(nil, checkpointVersion))
	buf.Write(le.AppendUint32(nil, uint32(len(hb))))
	buf.Write(hb)
	if err := c.Arch.CheckParams("checkpoint", c.Params); err != nil {
		return nil, err
	}
	var b []byte
	for i, p := range c.Params {
		v, err := model.Float64s(p, c.Arch.ParamShapes()[i])
		if err != nil {
			return nil, fmt.Errorf("parameter %s: %w", model.ParamName(i), err)
		}
		for _, x := range v {
			b = le.AppendUint64(b, math.Float64bits(x))
		}
	}
	for _, e := range c.History {
		b = le.AppendUint64(b, uint64(e.Iteration))
		b = le.AppendUint64(b, math.Float64bits(e.Loss))
		b = le.AppendUint64(b, math.Float64bits(e.Accuracy))
	}
	for _, l := range c.TrainLoss {
		b = le.AppendUint64(b, math.Float64bits(l))
	}
	for _, o := range c.Owners {
		for _, x := range o.order {
			b = le.AppendUint32(b, x)
		}
	}
	buf.Write(b)
	sum := sha256.Sum256(buf.Bytes())
	buf.Write(sum[:])
	return buf.Bytes(), nil
}

// decodeCheckpoint parses a checkpoint file's bytes, checking its
// checksum and every length, but not whether it fits this run (see
// checkFits).
func decodeCheckpoint(b []byte) (*checkpoint, error) {
	le := binary.LittleEndian
	const fixed = len(checkpointMagic) + 4 + 4
	if len(b) < fixed+sha256.Size {
		return nil, fmt.Errorf("only %d bytes: not a checkpoint, or cut short", len(b))
	}
	if string(b[:len(checkpointMagic)]) != checkpointMagic {
		return nil, fmt.Errorf("not a federated-learning checkpoint (it starts with %q, want %q)", printable(b[:len(checkpointMagic)]), checkpointMagic)
	}
	if v := le.Uint32(b[8:]); v != checkpointVersion {
		return nil, fmt.Errorf("format version %d; this program reads version %d", v, checkpointVersion)
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, errors.New("corrupt: its SHA-256 checksum does not match (the file was damaged or cut short)")
	}
	return decodeBody(body)
}

// decodeBody parses a checkpoint without its checksum, whose magic and
// version were checked. It trusts no length it has not checked against
// the bytes it holds.
func decodeBody(body []byte) (*checkpoint, error) {
	le := binary.LittleEndian
	const fixed = len(checkpointMagic) + 4 + 4
	if len(body) < fixed {
		return nil, fmt.Errorf("corrupt: %d bytes before the checksum", len(body))
	}
	hlen := le.Uint32(body[12:])
	if hlen > maxCheckpointHeader || int(hlen) > len(body)-fixed {
		return nil, fmt.Errorf("corrupt: header of %d bytes in a file of %d", hlen, len(body)+sha256.Size)
	}
	var h checkpointHeader
	dec := json.NewDecoder(bytes.NewReader(body[fixed : fixed+int(hlen)]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("corrupt header: %w", err)
	}
	if h.Format != checkpointFormat {
		return nil, fmt.Errorf("header format %q, want %q", h.Format, checkpointFormat)
	}
	if err := h.Arch.Validate(); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if fp := fingerprint(h.Run); fp != h.Fingerprint {
		return nil, fmt.Errorf("corrupt header: the run's settings have fingerprint %s, the header says %s", fp, h.Fingerprint)
	}
	if h.Step < 0 || h.Evaluations < 0 || h.TrainLoss < 0 {
		return nil, fmt.Errorf("corrupt header: negative count (step %d, %d evaluations, %d losses)", h.Step, h.Evaluations, h.TrainLoss)
	}
	payload := body[fixed+int(hlen):]
	// Every count is checked against the bytes left before it is used.
	take := func(n, size int, what string) ([]byte, error) {
		if n < 0 || size <= 0 || n > len(payload)/size {
			return nil, fmt.Errorf("corrupt: %d %s do not fit in the %d bytes left", n, what, len(payload))
		}
		out := payload[:n*size]
		payload = payload[n*size:]
		return out, nil
	}
	c := &checkpoint{Run: h.Run, Arch: h.Arch, Step: h.Step, Round: h.Round, Sampler: h.Sampler, Owners: h.Owners, Stats: h.Stats}
	for i, shape := range h.Arch.ParamShapes() {
		n := 1
		for _, d := range shape {
			n *= d
		}
		raw, err := take(n, 8, "values of parameter "+model.ParamName(i))
		if err != nil {
			return nil, err
		}
		v := make([]float64, n)
		for j := range v {
			v[j] = math.Float64frombits(le.Uint64(raw[8*j:]))
		}
		c.Params = append(c.Params, tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v)))
	}
	raw, err := take(h.Evaluations, 24, "evaluations")
	if err != nil {
		return nil, err
	}
	for j := range h.Evaluations {
		e := raw[24*j:]
		it := le.Uint64(e)
		if it > math.MaxInt32 {
			return nil, fmt.Errorf("corrupt: evaluation %d at iteration %d", j, it)
		}
		c.History = append(c.History, Evaluation{Iteration: int(it), Loss: math.Float64frombits(le.Uint64(e[8:])), Accuracy: math.Float64frombits(le.Uint64(e[16:]))})
	}
	if raw, err = take(h.TrainLoss, 8, "training losses"); err != nil {
		return nil, err
	}
	for j := range h.TrainLoss {
		c.TrainLoss = append(c.TrainLoss, math.Float64frombits(le.Uint64(raw[8*j:])))
	}
	for i := range c.Owners {
		o := &c.Owners[i]
		if raw, err = take(o.OrderN, 4, "batch positions of "+strconv.Quote(o.Name)); err != nil {
			return nil, err
		}
		o.order = make([]uint32, o.OrderN)
		for j := range o.order {
			o.order[j] = le.Uint32(raw[4*j:])
		}
	}
	if len(payload) != 0 {
		return nil, fmt.Errorf("corrupt: %d bytes after the last list", len(payload))
	}
	return c, nil
}

// checkFits checks that c was written for the run with settings run and
// network arch.
func (c *checkpoint) checkFits(run []runField, arch model.Architecture) error {
	if c.Arch != arch {
		return fmt.Errorf("written for a %v network, this run trains %v", c.Arch, arch)
	}
	had := map[string]string{}
	for _, f := range c.Run {
		had[f.Flag] = f.Value
	}
	var diffs []string
	for _, f := range run {
		v, ok := had[f.Flag]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("it does not record --%s (this run has %s)", f.Flag, f.Value))
		case v != f.Value:
			diffs = append(diffs, fmt.Sprintf("written with --%s %s, this run has %s", f.Flag, v, f.Value))
		}
		delete(had, f.Flag)
	}
	for flag, v := range had {
		diffs = append(diffs, fmt.Sprintf("written with --%s %s, which this program does not know", flag, v))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("it is from another run: %s", strings.Join(diffs, "; "))
	}
	return nil
}

// checkpointPath returns the checkpoint's path in dir.
func checkpointPath(dir string) string { return filepath.Join(dir, checkpointFile) }

// loadCheckpoint reads the checkpoint in dir and checks that it fits the
// run; it returns nil and no error when there is none yet.
func loadCheckpoint(dir string, run []runField, arch model.Architecture) (*checkpoint, error) {
	path := checkpointPath(dir)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &checkpointError{File: path, Err: err}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCheckpointBytes+1))
	if err != nil {
		return nil, &checkpointError{File: path, Err: err}
	}
	if len(b) > maxCheckpointBytes {
		return nil, &checkpointError{File: path, Err: fmt.Errorf("larger than %d bytes", maxCheckpointBytes)}
	}
	c, err := decodeCheckpoint(b)
	if err != nil {
		return nil, &checkpointError{File: path, Err: err}
	}
	if err := c.checkFits(run, arch); err != nil {
		return nil, &checkpointError{File: path, Err: err}
	}
	return c, nil
}

// save writes c to dir atomically, creating dir if need be.
func (c *checkpoint) save(dir string) error {
	b, err := c.encode()
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	path := checkpointPath(dir)
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return nil
}

// state returns the data owner's batch iterator, for a checkpoint.
func (d *DataOwner) state() (ownerState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rng, err := d.src.MarshalBinary()
	if err != nil {
		return ownerState{}, fmt.Errorf("%s: %w", d.Name, err)
	}
	order := make([]uint32, len(d.order))
	for i, x := range d.order {
		order[i] = uint32(x)
	}
	return ownerState{Name: d.Name, RNG: rng, Pos: d.pos, Epoch: d.epoch, order: order, Batches: len(d.losses)}, nil
}

// restore sets the data owner's batch iterator to s, after checking that
// s is a state of an iterator over a shard of this size.
func (d *DataOwner) restore(s ownerState) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.Name != d.Name {
		return fmt.Errorf("holds the state of %q where %q was expected", s.Name, d.Name)
	}
	if len(s.order) != len(d.order) {
		return fmt.Errorf("%s: batch order over %d examples, its shard has %d", d.Name, len(s.order), len(d.order))
	}
	if s.Pos < 0 || s.Pos > len(s.order) || s.Epoch < 0 || s.Batches < 0 {
		return fmt.Errorf("%s: position %d, epoch %d, %d batches: out of range", d.Name, s.Pos, s.Epoch, s.Batches)
	}
	seen := make([]bool, len(s.order))
	for _, x := range s.order {
		if int(x) >= len(seen) || seen[x] {
			return fmt.Errorf("%s: batch order is not a permutation of its %d examples", d.Name, len(seen))
		}
		seen[x] = true
	}
	var src rand.PCG
	if err := src.UnmarshalBinary(s.RNG); err != nil {
		return fmt.Errorf("%s: random-number state: %w", d.Name, err)
	}
	*d.src = src
	for i, x := range s.order {
		d.order[i] = int(x)
	}
	d.pos, d.epoch = s.Pos, s.Epoch
	d.losses = make([]float64, 0, s.Batches) // the losses themselves are the checkpoint's TrainLoss
	return nil
}

// snapshot returns copies of the model owner's parameters, step and
// evaluations, for a checkpoint.
func (m *ModelOwner) snapshot() ([]*tensor.Dense, int, []Evaluation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return model.Clone(m.params), m.iteration, append([]Evaluation(nil), m.history...)
}

// restore sets the model owner's parameters, step and evaluations.
func (m *ModelOwner) restore(params []*tensor.Dense, step int, history []Evaluation) error {
	if err := m.arch.CheckParams("checkpointed parameters", params); err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.params = model.Clone(params)
	m.iteration = step
	m.history = append([]Evaluation(nil), history...)
	return nil
}
