package session

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/shareflow/shareflow/players"
	"github.com/shareflow/shareflow/protocol/pond"
)

// The messages of the round protocol (see rounds.go). Each is a wire type
// with AppendBinary, MarshalBinary and UnmarshalBinary, little-endian and
// explicit; a decoder checks every length against the data before it
// allocates, and refuses trailing bytes. Lists of members hold at most
// MaxMembers valid player names, strictly sorted (so without repeats);
// reasons are bounded UTF-8 strings.

// MaxMembers bounds the members of a round's cohort, and so every list of
// members a message carries.
const MaxMembers = 10000

// maxDropReason bounds the reason given for a member missing from a
// round: its own, when its function failed, or the server's.
const maxDropReason = 256

// wireReader decodes a message field by field. The first error sticks;
// later reads return zero values.
type wireReader struct {
	b    []byte
	what string
	err  error
}

func (r *wireReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s: %s", ErrWire, r.what, fmt.Sprintf(format, args...))
	}
}

func (r *wireReader) take(n int, field string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.fail("%s needs %d bytes, %d left", field, n, len(r.b))
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *wireReader) u8(field string) uint8 {
	if b := r.take(1, field); b != nil {
		return b[0]
	}
	return 0
}

func (r *wireReader) u16(field string) uint16 {
	if b := r.take(2, field); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *wireReader) u32(field string) uint32 {
	if b := r.take(4, field); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *wireReader) u64(field string) uint64 {
	if b := r.take(8, field); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// str reads a string of at most limit bytes, length-prefixed by a uint16,
// that must be valid UTF-8.
func (r *wireReader) str(limit int, field string) string {
	n := int(r.u16(field + " length"))
	if r.err != nil {
		return ""
	}
	if n > limit {
		r.fail("%s of %d bytes exceeds %d", field, n, limit)
		return ""
	}
	b := r.take(n, field)
	if r.err == nil && !utf8.Valid(b) {
		r.fail("%s is not UTF-8", field)
		return ""
	}
	return string(b)
}

// name reads one player name: a length byte and the name, which must be
// a valid player name.
func (r *wireReader) name(field string) string {
	n := int(r.u8(field + " length"))
	b := r.take(n, field)
	if r.err != nil {
		return ""
	}
	s := string(b)
	if err := players.CheckName(s); err != nil {
		r.fail("%s: %v", field, err)
		return ""
	}
	return s
}

// names reads a list of at most MaxMembers player names, strictly sorted.
// The count is checked against the bytes left before anything is
// allocated: every name takes at least two.
func (r *wireReader) names(field string) []string {
	n := r.u32(field + " count")
	if r.err != nil {
		return nil
	}
	if n > MaxMembers || uint64(n)*2 > uint64(len(r.b)) {
		r.fail("%s lists %d names in %d bytes (at most %d)", field, n, len(r.b), MaxMembers)
		return nil
	}
	out := make([]string, 0, n)
	for i := range n {
		s := r.name(field)
		if r.err != nil {
			return nil
		}
		if i > 0 && s <= out[i-1] {
			r.fail("%s is not strictly sorted: %q after %q", field, s, out[i-1])
			return nil
		}
		out = append(out, s)
	}
	return out
}

// end refuses trailing bytes and returns the first error.
func (r *wireReader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the message", len(r.b))
	}
	return r.err
}

func appendStr(b []byte, s string, limit int) []byte {
	if len(s) > limit {
		s = truncateUTF8(s, limit)
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// truncateUTF8 cuts s to at most n bytes without splitting a character,
// and makes it valid UTF-8.
func truncateUTF8(s string, n int) string {
	s = string([]rune(s)) // replaces invalid bytes
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// checkNames checks a list before it is encoded: at most MaxMembers
// valid names, strictly sorted.
func checkNames(names []string, field string) error {
	if len(names) > MaxMembers {
		return fmt.Errorf("session: %s lists %d members, more than %d", field, len(names), MaxMembers)
	}
	for i, n := range names {
		if err := players.CheckName(n); err != nil {
			return fmt.Errorf("session: %s: %w", field, err)
		}
		if i > 0 && n <= names[i-1] {
			return fmt.Errorf("session: %s is not strictly sorted: %q after %q", field, n, names[i-1])
		}
	}
	return nil
}

func appendNames(b []byte, names []string) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(names)))
	for _, n := range names {
		b = append(b, byte(len(n)))
		b = append(b, n...)
	}
	return b
}

// cohortDigest hashes a round's number and cohort, so that the servers
// can check they were told the same.
func cohortDigest(round uint64, cohort []string) [32]byte {
	h := sha256.New()
	h.Write([]byte("shareflow/session/cohort/v1\x00"))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], round)
	h.Write(b[:])
	h.Write(appendNames(nil, cohort))
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// roundStart is what the coordinator tells every other player of the
// plan when a round starts: its number and cohort, sorted. End marks the
// end of the run (Finish) instead: no round follows.
type roundStart struct {
	Round  uint64
	End    bool
	Cohort []string
}

// AppendBinary appends the encoding: round (uint64), end (byte 0 or 1),
// the cohort (a list of names).
func (m *roundStart) AppendBinary(b []byte) ([]byte, error) {
	if err := checkNames(m.Cohort, "round start: cohort"); err != nil {
		return nil, err
	}
	b = binary.LittleEndian.AppendUint64(b, m.Round)
	b = append(b, boolByte(m.End))
	return appendNames(b, m.Cohort), nil
}

// MarshalBinary encodes m.
func (m *roundStart) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes data into m.
func (m *roundStart) UnmarshalBinary(data []byte) error {
	r := &wireReader{b: data, what: "round start"}
	round := r.u64("round")
	end := r.flag("end")
	cohort := r.names("cohort")
	if err := r.end(); err != nil {
		return err
	}
	*m = roundStart{Round: round, End: end, Cohort: cohort}
	return nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// flag reads a byte that must be 0 or 1.
func (r *wireReader) flag(field string) bool {
	v := r.u8(field)
	if v > 1 {
		r.fail("%s is %d, want 0 or 1", field, v)
	}
	return v == 1
}

// The kinds of notice a member receives.
const (
	noticeNotInvited uint8 = iota // the round goes on without it
	noticeInvited                 // it is in the round's cohort, at Position
	noticeEnd                     // the run is over
)

// roundNotice is what the coordinator tells every connected member when
// a round starts: whether it is in the cohort, and at which position (its
// index in the sorted cohort, which decides which server gets its seeds).
type roundNotice struct {
	Round    uint64
	Kind     uint8
	Position uint32
}

// AppendBinary appends the encoding: round (uint64), kind (byte),
// position (uint32).
func (m *roundNotice) AppendBinary(b []byte) ([]byte, error) {
	b = binary.LittleEndian.AppendUint64(b, m.Round)
	b = append(b, m.Kind)
	return binary.LittleEndian.AppendUint32(b, m.Position), nil
}

// MarshalBinary encodes m.
func (m *roundNotice) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes data into m.
func (m *roundNotice) UnmarshalBinary(data []byte) error {
	r := &wireReader{b: data, what: "round notice"}
	round := r.u64("round")
	kind := r.u8("kind")
	pos := r.u32("position")
	if kind > noticeEnd {
		r.fail("kind %d", kind)
	}
	if pos >= MaxMembers {
		r.fail("position %d is beyond %d members", pos, MaxMembers)
	}
	if err := r.end(); err != nil {
		return err
	}
	*m = roundNotice{Round: round, Kind: kind, Position: pos}
	return nil
}

// welcome is the coordinator's answer to a member's hello: its own
// session id and fingerprint, and the round of the first notice the
// member will receive.
type welcome struct {
	Hello hello
	Round uint64
}

// AppendBinary appends the encoding: round (uint64), then the hello.
func (m *welcome) AppendBinary(b []byte) ([]byte, error) {
	b = binary.LittleEndian.AppendUint64(b, m.Round)
	return append(b, m.Hello.marshal()...), nil
}

// MarshalBinary encodes m.
func (m *welcome) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes data into m.
func (m *welcome) UnmarshalBinary(data []byte) error {
	if len(data) < 8 {
		return fmt.Errorf("%w: welcome of %d bytes", ErrWire, len(data))
	}
	var h hello
	if err := h.unmarshal(data[8:]); err != nil {
		return err
	}
	*m = welcome{Hello: h, Round: binary.LittleEndian.Uint64(data)}
	return nil
}

// resume is what a server tells the coordinator after their hello: the
// number the next round must have at least, one past the last round the
// server was told of.
type resume struct{ Next uint64 }

// AppendBinary appends the encoding: next (uint64).
func (m *resume) AppendBinary(b []byte) ([]byte, error) {
	return binary.LittleEndian.AppendUint64(b, m.Next), nil
}

// MarshalBinary encodes m.
func (m *resume) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes data into m.
func (m *resume) UnmarshalBinary(data []byte) error {
	if len(data) != 8 {
		return fmt.Errorf("%w: resume of %d bytes, want 8", ErrWire, len(data))
	}
	m.Next = binary.LittleEndian.Uint64(data)
	return nil
}

// contribution is the first message a member of a round sends each
// server: whether its shares follow, or why it drops out.
type contribution struct {
	Dropped bool
	Reason  string // why it dropped out, at most maxDropReason bytes
}

// AppendBinary appends the encoding: dropped (byte 0 or 1), the reason
// (uint16 length and UTF-8 bytes, cut to maxDropReason).
func (m *contribution) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, boolByte(m.Dropped))
	return appendStr(b, m.Reason, maxDropReason), nil
}

// MarshalBinary encodes m.
func (m *contribution) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes data into m.
func (m *contribution) UnmarshalBinary(data []byte) error {
	r := &wireReader{b: data, what: "contribution"}
	dropped := r.flag("dropped")
	reason := r.str(maxDropReason, "reason")
	if err := r.end(); err != nil {
		return err
	}
	*m = contribution{Dropped: dropped, Reason: reason}
	return nil
}

// arrivedSet is what one server tells the other once it stopped waiting
// for a round's shares: the members whose every share reached it, and the
// digest of the cohort it was told, so that both know they were told the
// same.
type arrivedSet struct {
	Round   uint64
	Digest  [32]byte
	Members []string
}

// AppendBinary appends the encoding: round (uint64), the cohort digest
// (32 bytes), the members (a list of names).
func (m *arrivedSet) AppendBinary(b []byte) ([]byte, error) {
	if err := checkNames(m.Members, "arrived set"); err != nil {
		return nil, err
	}
	b = binary.LittleEndian.AppendUint64(b, m.Round)
	b = append(b, m.Digest[:]...)
	return appendNames(b, m.Members), nil
}

// MarshalBinary encodes m.
func (m *arrivedSet) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes data into m.
func (m *arrivedSet) UnmarshalBinary(data []byte) error {
	r := &wireReader{b: data, what: "arrived set"}
	round := r.u64("round")
	var d [32]byte
	copy(d[:], r.take(32, "cohort digest"))
	members := r.names("members")
	if err := r.end(); err != nil {
		return err
	}
	*m = arrivedSet{Round: round, Digest: d, Members: members}
	return nil
}

// The outcomes of a round on a server.
const (
	resultShares  uint8 = iota // the server's shares of the output follow
	resultSkipped              // too few survivors: no share follows
	resultFailed               // the server failed: no share follows
)

// dropNote is why one member of a round is not among its survivors.
type dropNote struct{ Member, Reason string }

// roundResult is what a server tells the coordinator at the end of a
// round, before any share: the survivors it agreed on with the other
// server, why each other member of the cohort is missing, and whether
// its shares follow.
type roundResult struct {
	Round   uint64
	Kind    uint8
	Reason  string     // why the round was skipped or failed, at most maxReason bytes
	Agreed  []string   // the survivors, sorted
	Dropped []dropNote // sorted by member, at most MaxMembers
}

// AppendBinary appends the encoding: round (uint64), kind (byte), reason
// (uint16 length and bytes), the agreed survivors (a list of names), then
// the number of dropped members (uint32) and each one's name and reason.
func (m *roundResult) AppendBinary(b []byte) ([]byte, error) {
	if err := checkNames(m.Agreed, "round result: survivors"); err != nil {
		return nil, err
	}
	names := make([]string, len(m.Dropped))
	for i, d := range m.Dropped {
		names[i] = d.Member
	}
	if err := checkNames(names, "round result: dropped"); err != nil {
		return nil, err
	}
	b = binary.LittleEndian.AppendUint64(b, m.Round)
	b = append(b, m.Kind)
	b = appendStr(b, m.Reason, maxReason)
	b = appendNames(b, m.Agreed)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Dropped)))
	for _, d := range m.Dropped {
		b = append(b, byte(len(d.Member)))
		b = append(b, d.Member...)
		b = appendStr(b, d.Reason, maxDropReason)
	}
	return b, nil
}

// MarshalBinary encodes m.
func (m *roundResult) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes data into m.
func (m *roundResult) UnmarshalBinary(data []byte) error {
	r := &wireReader{b: data, what: "round result"}
	out := roundResult{Round: r.u64("round"), Kind: r.u8("kind")}
	if out.Kind > resultFailed {
		r.fail("kind %d", out.Kind)
	}
	out.Reason = r.str(maxReason, "reason")
	out.Agreed = r.names("survivors")
	n := r.u32("dropped count")
	// Each dropped member takes at least four bytes.
	if r.err == nil && (n > MaxMembers || uint64(n)*4 > uint64(len(r.b))) {
		r.fail("%d dropped members in %d bytes (at most %d)", n, len(r.b), MaxMembers)
	}
	if r.err == nil {
		out.Dropped = make([]dropNote, 0, n)
	}
	for i := 0; r.err == nil && i < int(n); i++ {
		d := dropNote{Member: r.name("dropped member")}
		d.Reason = r.str(maxDropReason, "drop reason")
		if r.err == nil && i > 0 && d.Member <= out.Dropped[i-1].Member {
			r.fail("dropped members are not strictly sorted: %q after %q", d.Member, out.Dropped[i-1].Member)
		}
		out.Dropped = append(out.Dropped, d)
	}
	if err := r.end(); err != nil {
		return err
	}
	*m = out
	return nil
}

// maxUploads bounds the uploads of a round, and so the seeds a member
// sends in one message (memberSeeds). A plan has a few: one per cohort
// tensor a mean or sum takes, two per weighted mean.
const maxUploads = 1 << 12

// memberSeeds is what a member of a round sends the server that holds its
// seeds (its seed server) as it calls its functions, a whole call before
// its masked tensors: the seed of each of its uploads, in the plan's
// order. No
// seed at all says it dropped out before it drew them; the reason goes to
// the other server with its status (contribution) and here, as Reason.
type memberSeeds struct {
	Round  uint64
	Seeds  []pond.Seed
	Reason string // with no seed: why the member dropped out, at most maxDropReason bytes
}

// AppendBinary appends the encoding: round (uint64), the number of seeds
// (uint16), each seed (pond.SeedSize bytes), then the reason (uint16
// length and UTF-8 bytes, cut to maxDropReason).
func (m *memberSeeds) AppendBinary(b []byte) ([]byte, error) {
	if len(m.Seeds) > maxUploads {
		return nil, fmt.Errorf("session: member seeds: %d seeds, more than %d", len(m.Seeds), maxUploads)
	}
	b = binary.LittleEndian.AppendUint64(b, m.Round)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(m.Seeds)))
	for _, s := range m.Seeds {
		b = append(b, s[:]...)
	}
	return appendStr(b, m.Reason, maxDropReason), nil
}

// MarshalBinary encodes m.
func (m *memberSeeds) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes data into m. The count is checked against the
// bytes left before anything is allocated.
func (m *memberSeeds) UnmarshalBinary(data []byte) error {
	r := &wireReader{b: data, what: "member seeds"}
	round := r.u64("round")
	n := int(r.u16("seed count"))
	if r.err == nil && (n > maxUploads || n*pond.SeedSize > len(r.b)) {
		r.fail("%d seeds in %d bytes (at most %d seeds of %d bytes)", n, len(r.b), maxUploads, pond.SeedSize)
	}
	var seeds []pond.Seed
	if r.err == nil {
		seeds = make([]pond.Seed, n)
		for i := range seeds {
			copy(seeds[i][:], r.take(pond.SeedSize, "seed"))
		}
	}
	reason := r.str(maxDropReason, "reason")
	if err := r.end(); err != nil {
		return err
	}
	*m = memberSeeds{Round: round, Seeds: seeds, Reason: reason}
	return nil
}

// seedsHeld is what a member's seed server tells the other server, its
// masked server, once it has the member's seeds (Held): from then on it
// counts the member as arrived, whatever else happens, so that the masked
// server may add the member's masked tensors into its sums as they come
// and let them go. Without Held, the seeds did not come or were refused,
// and Reason says why. It is keyed by the member's position (heldEdge).
type seedsHeld struct {
	Round    uint64
	Position uint32
	Member   string
	Held     bool
	Reason   string // at most maxDropReason bytes
}

// AppendBinary appends the encoding: round (uint64), position (uint32),
// the member (a name), held (byte 0 or 1), the reason (uint16 length and
// UTF-8 bytes, cut to maxDropReason).
func (m *seedsHeld) AppendBinary(b []byte) ([]byte, error) {
	if err := players.CheckName(m.Member); err != nil {
		return nil, fmt.Errorf("session: seeds held: %w", err)
	}
	b = binary.LittleEndian.AppendUint64(b, m.Round)
	b = binary.LittleEndian.AppendUint32(b, m.Position)
	b = append(b, byte(len(m.Member)))
	b = append(b, m.Member...)
	b = append(b, boolByte(m.Held))
	return appendStr(b, m.Reason, maxDropReason), nil
}

// MarshalBinary encodes m.
func (m *seedsHeld) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes data into m.
func (m *seedsHeld) UnmarshalBinary(data []byte) error {
	r := &wireReader{b: data, what: "seeds held"}
	round := r.u64("round")
	pos := r.u32("position")
	member := r.name("member")
	held := r.flag("held")
	reason := r.str(maxDropReason, "reason")
	if err := r.end(); err != nil {
		return err
	}
	*m = seedsHeld{Round: round, Position: pos, Member: member, Held: held, Reason: reason}
	return nil
}
