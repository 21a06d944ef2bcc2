package session

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shareflow/shareflow/protocol/pond"
)

// roundWire is a wire type of the round protocol.
type roundWire interface {
	encoding.BinaryMarshaler
	encoding.BinaryUnmarshaler
}

// roundWireSamples gives, for each wire type of the round protocol, a
// fresh value to decode into and messages that round-trip.
var roundWireSamples = map[string]struct {
	fresh func() roundWire
	good  []roundWire
}{
	"roundStart": {func() roundWire { return &roundStart{} }, []roundWire{
		&roundStart{Round: 7, Cohort: []string{"a", "b-1", "data-owner-9"}},
		&roundStart{Round: 1<<63 + 5, End: true, Cohort: []string{}},
	}},
	"roundNotice": {func() roundWire { return &roundNotice{} }, []roundWire{
		&roundNotice{Round: 3, Kind: noticeInvited, Position: 17},
		&roundNotice{Round: 4, Kind: noticeEnd},
	}},
	"welcome": {func() roundWire { return &welcome{} }, []roundWire{
		&welcome{Hello: hello{Session: "s", Fingerprint: "f00d"}, Round: 12},
	}},
	"resume": {func() roundWire { return &resume{} }, []roundWire{&resume{Next: 99}}},
	"contribution": {func() roundWire { return &contribution{} }, []roundWire{
		&contribution{},
		&contribution{Dropped: true, Reason: "battery low — 3%"},
	}},
	"arrivedSet": {func() roundWire { return &arrivedSet{} }, []roundWire{
		&arrivedSet{Round: 2, Digest: cohortDigest(2, []string{"a", "b"}), Members: []string{"a", "b"}},
		&arrivedSet{Round: 2, Members: []string{}},
	}},
	"memberSeeds": {func() roundWire { return &memberSeeds{} }, []roundWire{
		&memberSeeds{Round: 3, Seeds: []pond.Seed{{1, 2, 3}, {31: 9}}},
		&memberSeeds{Round: 4, Seeds: []pond.Seed{}, Reason: "no data today"},
	}},
	"seedsHeld": {func() roundWire { return &seedsHeld{} }, []roundWire{
		&seedsHeld{Round: 3, Position: 17, Member: "member-17", Held: true},
		&seedsHeld{Round: 4, Member: "a", Reason: "sent 1 seed for 2 uploads — refused"},
	}},
	"roundResult": {func() roundWire { return &roundResult{} }, []roundWire{
		&roundResult{Round: 5, Kind: resultShares, Agreed: []string{"a", "c"}, Dropped: []dropNote{{"b", "left"}}},
		&roundResult{Round: 6, Kind: resultSkipped, Reason: "1 of 2", Agreed: []string{"a"}, Dropped: []dropNote{{"b", ""}, {"c", "late"}}},
		&roundResult{Round: 7, Kind: resultFailed, Reason: "peer gone", Agreed: []string{}, Dropped: []dropNote{}},
	}},
}

func TestRoundWireRoundTrips(t *testing.T) {
	for name, tc := range roundWireSamples {
		for _, m := range tc.good {
			b, err := m.MarshalBinary()
			require.NoError(t, err, name)
			got := tc.fresh()
			require.NoError(t, got.UnmarshalBinary(b), name)
			assert.Equal(t, m, got, name)
			for cut := range len(b) {
				assert.ErrorIs(t, tc.fresh().UnmarshalBinary(b[:cut]), ErrWire, "%s cut to %d bytes", name, cut)
			}
			assert.ErrorIs(t, tc.fresh().UnmarshalBinary(append(b, 0)), ErrWire, "%s with a byte more", name)
		}
	}
}

func TestRoundWireRefusesMalformed(t *testing.T) {
	names := func(n uint32, entries ...string) []byte {
		b := binary.LittleEndian.AppendUint32(nil, n)
		for _, e := range entries {
			b = append(b, byte(len(e)))
			b = append(b, e...)
		}
		return b
	}
	start := func(list []byte) []byte { return append(append(make([]byte, 8), 0), list...) }
	for name, c := range map[string]struct {
		m    roundWire
		data []byte
		want string
	}{
		"unsorted cohort":    {&roundStart{}, start(names(2, "b", "a")), `not strictly sorted: "a" after "b"`},
		"repeated member":    {&roundStart{}, start(names(2, "a", "a")), "not strictly sorted"},
		"bad member name":    {&roundStart{}, start(names(1, "A b")), `player name "A b"`},
		"empty member name":  {&roundStart{}, start(names(2, "", "ab")), "empty player name"},
		"too many members":   {&roundStart{}, start(binary.LittleEndian.AppendUint32(nil, MaxMembers+1)), "lists 10001 names"},
		"count beyond bytes": {&roundStart{}, start(names(3, "a")), "lists 3 names in 2 bytes"},
		"end flag 2":         {&roundStart{}, append(append(make([]byte, 8), 2), names(0)...), "end is 2"},
		"notice kind":        {&roundNotice{}, append(make([]byte, 8), 3, 0, 0, 0, 0), "kind 3"},
		"notice position":    {&roundNotice{}, append(make([]byte, 8), 1, 0x10, 0x27, 0, 0), "position 10000"},
		"resume length":      {&resume{}, make([]byte, 7), "resume of 7 bytes"},
		"reason too long":    {&contribution{}, append([]byte{1}, binary.LittleEndian.AppendUint16(nil, maxDropReason+1)...), "reason of 257 bytes exceeds 256"},
		"reason not UTF-8":   {&contribution{}, []byte{1, 2, 0, 0xff, 0xfe}, "reason is not UTF-8"},
		"result kind":        {&roundResult{}, append(make([]byte, 8), 3, 0, 0), "kind 3"},
		"dropped unsorted": {&roundResult{}, func() []byte {
			b, _ := (&roundResult{Dropped: []dropNote{{"a", ""}, {"b", ""}}}).MarshalBinary()
			return bytes.Replace(b, []byte{1, 'a', 0, 0, 1, 'b'}, []byte{1, 'b', 0, 0, 1, 'a'}, 1)
		}(), `dropped members are not strictly sorted: "a" after "b"`},
		"seeds too many":     {&memberSeeds{}, append(make([]byte, 8), 0x01, 0x10), "4097 seeds in 0 bytes"},
		"seeds beyond bytes": {&memberSeeds{}, append(append(make([]byte, 8), 2, 0), make([]byte, 33)...), "2 seeds in 33 bytes"},
		"seeds reason cut":   {&memberSeeds{}, append(append(make([]byte, 8), 1, 0), make([]byte, 33)...), "reason length needs 2 bytes, 1 left"},
		"held flag 2":        {&seedsHeld{}, append(append(make([]byte, 12), 1, 'a', 2), 0, 0), "held is 2"},
		"held bad member":    {&seedsHeld{}, append(append(make([]byte, 12), 1, '!', 1), 0, 0), `player name "!"`},
		"dropped count":      {&roundResult{}, append(append(append(make([]byte, 8), 0, 0, 0), names(0)...), 0xff, 0xff, 0, 0), "65535 dropped members"},
	} {
		err := c.m.UnmarshalBinary(c.data)
		assert.ErrorIs(t, err, ErrWire, name)
		assert.ErrorContains(t, err, c.want, name)
	}
	// Encoders refuse what decoders would.
	_, err := (&roundStart{Cohort: []string{"b", "a"}}).MarshalBinary()
	assert.ErrorContains(t, err, "not strictly sorted")
	_, err = (&arrivedSet{Members: []string{"Bad"}}).MarshalBinary()
	assert.ErrorContains(t, err, `player name "Bad"`)
	// A reason too long is cut, on a character boundary.
	b, err := (&contribution{Dropped: true, Reason: strings.Repeat("é", 200)}).MarshalBinary()
	require.NoError(t, err)
	var c contribution
	require.NoError(t, c.UnmarshalBinary(b))
	assert.Equal(t, strings.Repeat("é", maxDropReason/2), c.Reason)
}

// fuzzRoundWire decodes arbitrary data as a wire type: whatever decodes
// encodes back to the same bytes (every encoding is canonical).
func fuzzRoundWire(f *testing.F, name string) {
	tc := roundWireSamples[name]
	for _, m := range tc.good {
		b, err := m.MarshalBinary()
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := tc.fresh()
		if err := m.UnmarshalBinary(data); err != nil {
			assert.ErrorIs(t, err, ErrWire)
			return
		}
		out, err := m.MarshalBinary()
		require.NoError(t, err)
		assert.Equal(t, data, out)
	})
}

func FuzzRoundStart(f *testing.F)   { fuzzRoundWire(f, "roundStart") }
func FuzzRoundNotice(f *testing.F)  { fuzzRoundWire(f, "roundNotice") }
func FuzzWelcome(f *testing.F)      { fuzzRoundWire(f, "welcome") }
func FuzzResume(f *testing.F)       { fuzzRoundWire(f, "resume") }
func FuzzContribution(f *testing.F) { fuzzRoundWire(f, "contribution") }
func FuzzArrivedSet(f *testing.F)   { fuzzRoundWire(f, "arrivedSet") }
func FuzzRoundResult(f *testing.F)  { fuzzRoundWire(f, "roundResult") }
func FuzzMemberSeeds(f *testing.F)  { fuzzRoundWire(f, "memberSeeds") }
func FuzzSeedsHeld(f *testing.F)    { fuzzRoundWire(f, "seedsHeld") }
